"""Channel permutations shared by the families' importance sorting (``elastic.sorting``)."""

from __future__ import annotations

from typing import Sequence

import torch


def grouped_order(importance: torch.Tensor, bounds: Sequence[int]) -> torch.Tensor:
    """Indices sorting by descending importance within the groups ``[0,b0), [b0,b1), ...``."""
    n = importance.numel()
    group = torch.bucketize(torch.arange(n), torch.tensor(sorted(set(bounds)), dtype=torch.long), right=True)
    by_importance = torch.argsort(importance, descending=True, stable=True)
    return by_importance[torch.argsort(group[by_importance], stable=True)]


def permute_bn(bn: torch.nn.BatchNorm2d, order: torch.Tensor) -> None:
    """Reorder a BatchNorm's channels (affine terms and running statistics) in place."""
    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        t.copy_(t[order])
