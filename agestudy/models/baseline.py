"""The lab's baseline CNN: plain convolutions, max-pooling and fully connected layers.

Read top to bottom: three conv -> ReLU -> max-pool stages halve the image each time,
then two linear layers turn the feature map into two class scores (logits).
This is the network that question 1 of the lab describes layer by layer. With
``members=M`` every layer holds M independent copies (see ``members.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from agestudy.models.members import GroupedLinear, MemberFlatten, MemberNetwork


class BaselineCNN(MemberNetwork):
    def __init__(self, crop: int = 88, hidden: int = 256, dropout: float = 0.5, members: int = 1,
                 num_classes: int = 2):
        super().__init__()
        self.members = m = members
        self.knobs = {"crop": crop, "hidden": hidden, "dropout": dropout, "num_classes": num_classes}
        self.features = nn.Sequential(
            nn.Conv2d(3 * m, 32 * m, kernel_size=3, padding=1, groups=m),  # 3 x c x c -> 32 x c x c
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # -> 32 x c/2 x c/2
            nn.Conv2d(32 * m, 64 * m, kernel_size=3, padding=1, groups=m),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # -> 64 x c/4 x c/4
            nn.Conv2d(64 * m, 128 * m, kernel_size=3, padding=1, groups=m),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # -> 128 x c/8 x c/8
        )
        side = crop // 2 // 2 // 2
        self.classifier = nn.Sequential(
            MemberFlatten(m),
            GroupedLinear(128 * side * side, hidden, m),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            GroupedLinear(hidden, num_classes, m),
        )

    def grouped_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
