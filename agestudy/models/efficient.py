"""An efficient residual CNN, with width, depth, dropout and ensemble-size knobs.

Why it is fast: a strided stem shrinks the image before any wide layer, so most work
happens on small feature maps; BatchNorm lets it train with large learning rates; global
average pooling keeps the classifier tiny (and makes the net crop-size agnostic).
With ``members=M`` every layer holds M independent copies side by side (grouped
convolutions, see ``members.py``): an ensemble trained and evaluated as one network.
"""

from __future__ import annotations

import torch
from torch import nn

from agestudy.models.members import GroupedLinear, MemberFlatten, MemberNetwork

STEM_STRIDES = (1, 2, 4)  # how much the stem may shrink the image: the one list the config and the CLIs check


def conv_bn_relu(cin: int, cout: int, stride: int = 1, members: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin * members, cout * members, 3, stride=stride, padding=1, bias=False, groups=members),
        nn.BatchNorm2d(cout * members),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with an identity shortcut (same channels, same size)."""

    def __init__(self, channels: int, members: int = 1):
        super().__init__()
        self.conv1 = conv_bn_relu(channels, channels, members=members)
        self.conv2 = nn.Conv2d(channels * members, channels * members, 3, padding=1, bias=False, groups=members)
        self.bn2 = nn.BatchNorm2d(channels * members)
        nn.init.zeros_(self.bn2.weight)  # each block starts as the identity: stable early training
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.bn2(self.conv2(self.conv1(x))))


class EfficientCNN(MemberNetwork):
    def __init__(self, width: int = 16, depth: int = 1, dropout: float = 0.2, stem_stride: int = 2,
                 members: int = 1, num_classes: int = 2):
        super().__init__()
        if stem_stride not in STEM_STRIDES:
            raise ValueError(f"stem_stride must be one of {STEM_STRIDES}")
        self.members = members
        self.knobs = {"width": width, "depth": depth, "dropout": dropout, "stem_stride": stem_stride,
                      "num_classes": num_classes}
        widths = [width, width * 2, width * 4, width * 8]
        # stem_stride 2 keeps twice the resolution for the first stage (fine textures such as
        # wrinkles survive longer) at about 4x the cost for the same width; 1 keeps the full
        # resolution, 4x dearer again
        self.stem = nn.Sequential(
            conv_bn_relu(3, width // 2, stride=min(2, stem_stride), members=members),  # c -> c/2 (1: stays c)
            conv_bn_relu(width // 2, width, stride=max(1, stem_stride // 2), members=members),  # -> c/4 (or stays)
        )
        stages = []
        for i, channels in enumerate(widths):
            # each stage after the first halves the map and doubles the channels
            layers = [conv_bn_relu(widths[i - 1], channels, stride=2, members=members)] if i else []
            layers += [ResidualBlock(channels, members) for _ in range(depth)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            MemberFlatten(members),
            nn.Dropout(dropout),
            GroupedLinear(widths[-1], num_classes, members),
        )

    def grouped_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))
