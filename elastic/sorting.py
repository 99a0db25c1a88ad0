"""Channel importance sorting for elastic expand (OFA's ``re_organize_middle_weights``).

Before training narrower hidden widths, each block's hidden channels are reordered so that the most
important ones (largest L1 norm of the projection weights that read them) come first: a width-``w``
subnet uses the leading ``w`` channels. Every tensor touching the hidden channels is permuted
consistently, so the widest subnet computes exactly the same function. Widths already trained in an
earlier phase are protected: channels never move across their boundaries, so each trained width keeps
its set of channels (only their order changes, which does not change the function).
"""

from __future__ import annotations

from typing import Sequence

import torch

from elastic.blocks import ElasticMBConv
from elastic.permute import grouped_order, permute_bn
from elastic.resnet.sorting import sort_bottleneck
from elastic.resnet.supernet import ElasticBottleneck


def sort_block(block: ElasticMBConv, keep: Sequence[float] = ()) -> torch.Tensor | None:
    """Sort one block's hidden channels in place; returns the permutation (``None`` if nothing to sort)."""
    if block.expand_conv is None:
        return None
    max_mid = block.dw_conv.weight.shape[0]
    bounds = [block.mid_channels(e) for e in keep]
    order = grouped_order(block.project_conv.weight.abs().sum((0, 2, 3)), bounds)
    block.expand_conv.weight.copy_(block.expand_conv.weight[order])
    permute_bn(block.expand_bn, order)
    block.dw_conv.weight.copy_(block.dw_conv.weight[order])
    permute_bn(block.dw_bn, order)
    block.project_conv.weight.copy_(block.project_conv.weight[:, order])
    se = block.se
    if se is not None:
        se.reduce.weight.copy_(se.reduce.weight[:, order])
        se.expand.weight.copy_(se.expand.weight[order])
        se.expand.bias.copy_(se.expand.bias[order])
        se_bounds = [se.mid_channels(b) for b in bounds if b < max_mid]
        se_order = grouped_order(se.expand.weight.abs().sum((0, 2, 3)), se_bounds)
        se.reduce.weight.copy_(se.reduce.weight[se_order])
        se.reduce.bias.copy_(se.reduce.bias[se_order])
        se.expand.weight.copy_(se.expand.weight[:, se_order])
    return order


def sort_channels(supernet: torch.nn.Module, keep: Sequence[float] = ()) -> None:
    """Reorder every elastic block's hidden channels by importance, in place.

    Args:
        supernet: An :class:`~elastic.supernet.ElasticMobileNetV3` or :class:`~elastic.resnet.ElasticResNet`.
        keep: Expand ratios whose widths were already trained; their channel sets are preserved.

    Permuting parameters invalidates optimizer state (momentum buffers): sort at phase boundaries, before
    the phase's optimizer is created.
    """
    allowed = set(supernet.space.e)
    bad = [e for e in keep if e not in allowed]
    if bad:
        raise ValueError(f"keep={list(keep)} has expand ratios {bad} outside the space; allowed: {sorted(allowed)}")
    sorters = {ElasticMBConv: sort_block, ElasticBottleneck: sort_bottleneck}
    with torch.no_grad():
        for block in supernet.blocks:
            sorters[type(block)](block, keep)
