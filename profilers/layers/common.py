"""What every family's layer set shares: a layer to time, the grid of table keys, random weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

LAYOUT_VERSION = 1  # bump when a key's meaning (or the module built for it) changes


@dataclass(frozen=True)
class Layer:
    """One distinct layer: its table key, input shape and a factory for a standalone module."""

    key: str
    input_shape: tuple[int, int, int, int]
    build: Callable[[], nn.Module]


@dataclass(frozen=True)
class LayerGrid:
    """Table keys of a space's layers, laid out for vectorised lookups (their costs: ``elastic.batch.CostGrid``).

    Attributes:
        block_keys: ``block_keys[slot][r_i][variant]``: the key of block slot ``slot`` at the space's
            ``r_i``-th resolution and the slot's ``variant`` (numbered as the space's ``slot_variants``).
        fixed_keys: ``fixed_keys[r_i][fixed_variant]``: the keys of the layers every subnet runs (stem, head,
            ...) at each resolution, per variant of them (the space's ``fixed_variants``).
    """

    block_keys: list[list[list[str]]]
    fixed_keys: list[list[list[str]]]


def rand_bn(channels: int, gen: torch.Generator) -> nn.BatchNorm2d:
    """A BatchNorm with random, non-degenerate affine terms and statistics."""
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5, generator=gen)
        bn.bias.normal_(0, 0.1, generator=gen)
        bn.running_mean.normal_(0, 0.1, generator=gen)
        bn.running_var.uniform_(0.5, 1.5, generator=gen)
    return bn


def rand_weight(gen: torch.Generator, *shape: int) -> torch.Tensor:
    """A random weight of ``shape`` scaled by its fan-in."""
    fan_in = max(1, shape[1] * shape[2] * shape[3]) if len(shape) == 4 else shape[1]
    return torch.randn(*shape, generator=gen) / fan_in**0.5
