"""Plain static ResNet subnets produced by extraction (``nn.Conv2d``/``nn.BatchNorm2d``/``nn.Linear``,
ReLU, max- and avg-pooling only), exportable without special cases."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidualConv(nn.Module):
    """``x + body(x)`` (the stem's middle conv)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Bottleneck(nn.Module):
    """1x1 -> 3x3/stride -> 1x1 with BatchNorms and ReLU; shortcut identity or avg-pool + 1x1 conv + BN."""

    def __init__(self, convs: list[tuple[nn.Conv2d, nn.BatchNorm2d]],
                 downsample: tuple[nn.Conv2d, nn.BatchNorm2d] | None, stride: int):
        super().__init__()
        (self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3) = convs
        self.down_conv, self.down_bn = downsample if downsample is not None else (None, None)
        self.stride = stride

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch: the input, or its avg-pooled 1x1 projection."""
        if self.down_conv is None:
            return x
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride, self.stride, 0, ceil_mode=True)
        return self.down_bn(self.down_conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(self.bn3(self.conv3(y)) + self.shortcut(x))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, downsample={self.down_conv is not None}"


class StaticResNet(nn.Module):
    """An extracted ResNet subnet: stem, [max-pool], blocks, global average pool, classifier.

    Attributes:
        input_shape: ``(channels, height, width)`` the subnet was specialised for.
        subnet_json: The ``ResNetConfig`` JSON it was extracted with.
    """

    def __init__(self, stem: nn.Sequential, max_pool: bool, blocks: nn.Sequential, classifier: nn.Module,
                 input_shape: tuple[int, int, int], subnet_json: str):
        super().__init__()
        self.stem, self.blocks, self.classifier = stem, blocks, classifier
        self.pool = nn.MaxPool2d(3, 2, 1) if max_pool else nn.Identity()
        self.input_shape = tuple(input_shape)
        self.subnet_json = subnet_json

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.pool(self.stem(x)))
        return self.classifier(torch.flatten(x.mean((2, 3)), 1))
