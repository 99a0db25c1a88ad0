"""Channel importance sorting for elastic expand in bottleneck blocks (OFA's ``re_organize_middle_weights``
for ``DynamicResNetBottleneckBlock``).

The 3x3 conv's output channels are ordered by the L1 norm of the last 1x1 conv's weights that read them,
then the first 1x1 conv's output channels by the L1 norm of the 3x3 conv's weights that read them; every
tensor touching a hidden channel is permuted consistently, so the widest subnet computes the same function.
Bottleneck widths already trained (every kept ratio at every output width) keep their channel sets.
"""

from __future__ import annotations

from typing import Sequence

import torch

from elastic.resnet.supernet import ElasticBottleneck
from elastic.permute import grouped_order, permute_bn


def sort_bottleneck(block: ElasticBottleneck, keep: Sequence[float] = ()) -> torch.Tensor:
    """Sort one block's hidden channels in place; returns the permutation of the 3x3 conv's outputs."""
    spec = block.spec
    outs = sorted({c for b in spec.stage_widths for c in spec.scaled(b) if c <= block.conv3.weight.shape[0]})
    bounds = [spec.mid_channels(o, e) for e in keep for o in outs]
    order2 = grouped_order(block.conv3.weight.abs().sum((0, 2, 3)), bounds)
    block.conv3.weight.copy_(block.conv3.weight[:, order2])
    permute_bn(block.bn2, order2)
    block.conv2.weight.copy_(block.conv2.weight[order2])
    order1 = grouped_order(block.conv2.weight.abs().sum((0, 2, 3)), bounds)
    block.conv2.weight.copy_(block.conv2.weight[:, order1])
    permute_bn(block.bn1, order1)
    block.conv1.weight.copy_(block.conv1.weight[order1])
    return order2
