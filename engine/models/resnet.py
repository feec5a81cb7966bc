"""The project's own ResNet-50 (He et al., "Deep Residual Learning", CVPR 2016), written from the
paper as the study did ("we implemented a ResNet architecture and adopted its ResNet-50 variant").

Same architecture, parameter names and count as torchvision's `resnet50` (the v1.5 variant: the
stride sits on the 3x3 convolution of each bottleneck), so torchvision's state dict loads into it.
"""
from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand (x4), plus the identity or projection."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """ResNet-50: stem (7x7/2 conv, 3x3/2 max-pool), stages of 3, 4, 6, 3 bottlenecks, GAP, linear.

    A 224 px input gives a 7x7x2048 final feature map (the study's S=7, K=2048).
    """

    layers = (3, 4, 6, 3)

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        for i, (blocks, width) in enumerate(zip(self.layers, (64, 128, 256, 512))):
            stride = 1 if i == 0 else 2
            downsample = nn.Sequential(nn.Conv2d(in_channels, width * 4, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(width * 4))
            stage = [Bottleneck(in_channels, width, stride, downsample)]
            in_channels = width * 4
            stage += [Bottleneck(in_channels, width) for _ in range(blocks - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # He initialisation for convolutions; the last BN of each residual branch starts at 1 as in
        # the paper (torchvision's zero_init_residual=False default).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))
