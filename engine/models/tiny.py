"""A tiny CNN for tests and smoke runs: the whole trainer, CAM and every page in about a second.

In the spirit of Lightning's `BoringModel` and torchvision's small test models: five 3x3 conv blocks,
each halving the side, so its final feature map has the same stride (32) as DenseNet-121's and
ResNet-50's, and the same `features` / `classifier` names as torchvision's DenseNet. About 25,000
parameters. Its numbers mean nothing; it exists so that tests pay for a real model only where the
architecture is the point.
"""
from __future__ import annotations

import torch
from torch import nn

WIDTHS = (8, 16, 16, 32, 32)


class TinyCNN(nn.Module):
    """(N, 3, H, W) -> features (N, 32, H/32, W/32) after ReLU -> GAP -> classifier."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers, cin = [], 3
        for cout in WIDTHS:
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))
