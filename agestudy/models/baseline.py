"""The lab's baseline CNN: plain convolutions, max-pooling and fully connected layers.

Read top to bottom: three conv -> ReLU -> max-pool stages halve the image each time,
then two linear layers turn the feature map into two class scores (logits).
This is the network that question 1 of the lab describes layer by layer.
"""

from __future__ import annotations

import torch
from torch import nn


class BaselineCNN(nn.Module):
    def __init__(self, crop: int = 88, hidden: int = 256, dropout: float = 0.5, num_classes: int = 2):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, kernel_size=3, padding=1),  # 3 x c x c -> 32 x c x c
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # -> 32 x c/2 x c/2
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # -> 64 x c/4 x c/4
            nn.Conv2d(64, 128, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # -> 128 x c/8 x c/8
        )
        side = crop // 2 // 2 // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(128 * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
