"""Tiny static networks for exporter tests (shared by the exporter and conformance suites)."""

from __future__ import annotations

import torch
from torch import nn


def tiny_net(seed: int = 3) -> nn.Module:
    """A small static conv net with random BN statistics (outputs far from zero), left in train mode."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    bn = net[1]
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.3, 0.3)
    return net


CLASSIFIER_SHAPE = (1, 3, 16, 16)


def tiny_classifier() -> nn.Module:
    """A tiny classifier whose top-1 class varies with the input (a BN-biased net predicts one class for all):
    the subject of the int8 exporters' top-1 agreement tests."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()


def images(n: int, seed: int, shape: tuple[int, ...] = CLASSIFIER_SHAPE) -> torch.Tensor:
    """``n`` seeded random images of ``shape``'s channels and size."""
    return torch.randn((n, *shape[1:]), generator=torch.Generator().manual_seed(seed))
