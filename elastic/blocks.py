"""The elastic MBConv block: elastic kernel size and expand ratio, fixed input/output width."""

from __future__ import annotations

import torch
from torch import nn

from elastic.ops import (ElasticBatchNorm2d, ElasticConv2d, ElasticDepthwiseConv2d, ElasticSqueezeExcite,
                         apply_act, make_divisible)
from elastic.static import MBConv, SqueezeExcite, make_bn, make_conv


class ElasticMBConv(nn.Module):
    """MBConv whose depthwise kernel and hidden width are chosen per call.

    The hidden width for expand ratio ``e`` is ``make_divisible(round(in_ch * e), divisor)`` and always
    uses the leading channels of the widest block, so narrower blocks are nested inside wider ones.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, act: str, se: bool, kernel_sizes: tuple[int, ...],
                 expand_ratios: tuple[float, ...], divisor: int = 8, se_reduction: int = 4):
        super().__init__()
        self.in_ch, self.out_ch, self.stride, self.act = in_ch, out_ch, stride, act
        self.divisor = divisor
        self.residual = stride == 1 and in_ch == out_ch
        has_expand = max(expand_ratios) != 1
        max_mid = make_divisible(round(in_ch * max(expand_ratios)), divisor) if has_expand else in_ch
        self.expand_conv = ElasticConv2d(in_ch, max_mid) if has_expand else None
        self.expand_bn = ElasticBatchNorm2d(max_mid) if has_expand else None
        self.dw_conv = ElasticDepthwiseConv2d(max_mid, kernel_sizes, stride)
        self.dw_bn = ElasticBatchNorm2d(max_mid)
        self.se = ElasticSqueezeExcite(max_mid, se_reduction, divisor) if se else None
        self.project_conv = ElasticConv2d(max_mid, out_ch)
        self.project_bn = ElasticBatchNorm2d(out_ch)

    def mid_channels(self, e: float) -> int:
        """Hidden width for expand ratio ``e``."""
        if self.expand_conv is None:
            return self.in_ch
        return make_divisible(round(self.in_ch * e), self.divisor)

    def forward(self, x: torch.Tensor, kernel_size: int, e: float) -> torch.Tensor:
        y = x
        if self.expand_conv is not None:
            y = apply_act(self.expand_bn(self.expand_conv(y, self.mid_channels(e))), self.act)
        y = apply_act(self.dw_bn(self.dw_conv(y, kernel_size)), self.act)
        if self.se is not None:
            y = self.se(y)
        y = self.project_bn(self.project_conv(y, self.out_ch))
        return y + x if self.residual else y

    def extract(self, kernel_size: int, e: float) -> tuple[MBConv, list[tuple[nn.BatchNorm2d, nn.BatchNorm2d]]]:
        """Static copy of the block for ``(kernel_size, e)`` and its ``(static_bn, elastic_bn)`` pairs."""
        mid = self.mid_channels(e)
        pairs: list[tuple[nn.BatchNorm2d, nn.BatchNorm2d]] = []

        def bn(src: nn.BatchNorm2d, c: int) -> nn.BatchNorm2d:
            pairs.append((make_bn(src, c), src))
            return pairs[-1][0]

        expand = None
        if self.expand_conv is not None:
            expand = (make_conv(self.expand_conv.active_weight(mid, self.in_ch)), bn(self.expand_bn, mid))
        with torch.no_grad():
            dw_w = self.dw_conv.active_weight(mid, kernel_size)
        dw = (make_conv(dw_w, stride=self.stride, groups=mid), bn(self.dw_bn, mid))
        se = None
        if self.se is not None:
            rw, rb, ew, eb = self.se.active_params(mid)
            se = SqueezeExcite(make_conv(rw, rb), make_conv(ew, eb))
        project = (make_conv(self.project_conv.active_weight(self.out_ch, mid)), bn(self.project_bn, self.out_ch))
        return MBConv(expand, dw, se, project, self.act, self.residual), pairs
