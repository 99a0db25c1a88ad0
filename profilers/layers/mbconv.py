"""The layers of MBConv subnets (MobileNetV3, ProxylessNAS) for latency tables, as tiny standalone models.

A subnet runs a stem, the fixed first block, its active MBConv blocks and a head. Each of them depends
only on its own shape (channels, kernel, stride, activation, squeeze-excite, input size), so the layers of
every subnet of a space come from a small set: per resolution, the stem, the first block, each block slot
at every (kernel, expand) and the head. :func:`space_layers` enumerates that set, :func:`subnet_layers`
lists the keys one subnet uses, and :func:`slot_grid` lays them out for the vectorised predictor.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from elastic import BlockPlan, MobileNetV3Spec, SubnetConfig, plan
from elastic.spec import conv_out
from elastic.static import MBConv, SqueezeExcite, conv_bn_act, head_forward, make_conv, make_linear
from profilers.layers.common import Layer, LayerGrid, rand_bn, rand_weight


def block_module(b: BlockPlan, seed: int = 0) -> MBConv:
    """A static MBConv with the shape of ``b`` and random weights (latency does not depend on them)."""
    g = torch.Generator().manual_seed(seed)
    expand = (make_conv(rand_weight(g, b.mid_ch, b.in_ch, 1, 1)), rand_bn(b.mid_ch, g)) if b.has_expand else None
    dw = (make_conv(rand_weight(g, b.mid_ch, 1, b.kernel, b.kernel), stride=b.stride, groups=b.mid_ch), rand_bn(b.mid_ch, g))
    se = None
    if b.se_mid:
        se = SqueezeExcite(make_conv(rand_weight(g, b.se_mid, b.mid_ch, 1, 1), torch.zeros(b.se_mid)),
                           make_conv(rand_weight(g, b.mid_ch, b.se_mid, 1, 1), torch.zeros(b.mid_ch)))
    project = (make_conv(rand_weight(g, b.out_ch, b.mid_ch, 1, 1)), rand_bn(b.out_ch, g))
    return MBConv(expand, dw, se, project, b.act, b.residual).eval()


class Head(nn.Module):
    """The network's head: final 1x1 expand + BN + activation, global pool, feature mix + activation (none when
    ``fm`` is 0, as in ProxylessNAS), classifier."""

    def __init__(self, in_ch: int, fe: int, fm: int, nc: int, seed: int = 0, act: str = "h_swish"):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.final_expand = conv_bn_act(make_conv(rand_weight(g, fe, in_ch, 1, 1)), rand_bn(fe, g), act)
        self.feature_mix = conv_bn_act(make_conv(rand_weight(g, fm, fe, 1, 1)), None, act) if fm else nn.Identity()
        feat = fm or fe
        self.classifier = make_linear(torch.randn(nc, feat, generator=g) / feat**0.5, torch.zeros(nc))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return head_forward(self.final_expand, self.feature_mix, self.classifier, x)


def block_key(b: BlockPlan) -> str:
    """Table key of an MBConv block (everything its latency depends on)."""
    return (f"mbconv:in{b.in_ch}:mid{b.mid_ch}:out{b.out_ch}:k{b.kernel}:s{b.stride}:{b.act}:se{b.se_mid}"
            f":x{int(b.has_expand)}:hw{b.hw_in}")


def stem_key(spec: MobileNetV3Spec, r: int) -> str:
    """Table key of the stem at input resolution ``r``."""
    return f"stem:in{spec.in_channels}:out{spec.stem_width}:k3:s{spec.stem_stride}:{spec.stem_act}:hw{r}"


def head_key(spec: MobileNetV3Spec, hw: int) -> str:
    """Table key of the head on a ``hw x hw`` final feature map."""
    last = spec.stages[-1].width
    act = "" if spec.head_act == "h_swish" else f":{spec.head_act}"  # MobileNetV3 keys keep their form
    return (f"head:in{last}:fe{spec.final_expand_width}:fm{spec.feature_mix_width}"
            f":nc{spec.num_classes}{act}:hw{hw}")


def _stem_layer(spec: MobileNetV3Spec, r: int) -> Layer:
    def build() -> nn.Module:
        g = torch.Generator().manual_seed(0)
        conv = make_conv(rand_weight(g, spec.stem_width, spec.in_channels, 3, 3), stride=spec.stem_stride)
        return conv_bn_act(conv, rand_bn(spec.stem_width, g), spec.stem_act).eval()

    return Layer(stem_key(spec, r), (1, spec.in_channels, r, r), build)


def _block_layer(b: BlockPlan) -> Layer:
    return Layer(block_key(b), (1, b.in_ch, b.hw_in, b.hw_in), lambda: block_module(b))


def _head_layer(spec: MobileNetV3Spec, hw: int) -> Layer:
    last = spec.stages[-1].width
    return Layer(head_key(spec, hw), (1, last, hw, hw),
                 lambda: Head(last, spec.final_expand_width, spec.feature_mix_width, spec.num_classes,
                              act=spec.head_act).eval())


def _uniform(spec: MobileNetV3Spec, k: int, e: float, r: int) -> SubnetConfig:
    sp = spec.space
    return SubnetConfig((k,) * sp.n_blocks, (e,) * sp.n_blocks, sp.deepest, r)


def final_hw(spec: MobileNetV3Spec, r: int) -> int:
    """Size of the last feature map at input resolution ``r`` (independent of the subnet's depths)."""
    hw = conv_out(conv_out(r, spec.stem_stride), spec.first_block.stride)
    for stage in spec.stages:
        hw = conv_out(hw, stage.stride)
    return hw


def slot_grid(spec: MobileNetV3Spec) -> LayerGrid:
    """The :class:`LayerGrid` of ``spec``'s space."""
    sp = spec.space
    keys = [[[""] * sp.n_slot_variants for _ in sp.r] for _ in range(sp.n_blocks)]
    fixed = []
    for ri, r in enumerate(sp.r):
        for ki, k in enumerate(sp.ks):
            for ei, e in enumerate(sp.e):
                for slot, b in enumerate(plan(spec, _uniform(spec, k, e, r))[1:]):
                    keys[slot][ri][ki * len(sp.e) + ei] = block_key(b)
        first = plan(spec, _uniform(spec, sp.ks[0], sp.e[0], r))[0]
        fixed.append([[stem_key(spec, r), block_key(first), head_key(spec, final_hw(spec, r))]])
    return LayerGrid(keys, fixed)


def space_layers(spec: MobileNetV3Spec) -> list[Layer]:
    """Every distinct layer any subnet of ``spec``'s space runs, at every resolution (deduplicated)."""
    sp = spec.space
    out: dict[str, Layer] = {}
    for r in sp.r:
        out.setdefault(stem_key(spec, r), _stem_layer(spec, r))
        for k, e in itertools.product(sp.ks, sp.e):
            for b in plan(spec, _uniform(spec, k, e, r)):
                out.setdefault(block_key(b), _block_layer(b))
        hw = final_hw(spec, r)
        out.setdefault(head_key(spec, hw), _head_layer(spec, hw))
    return list(out.values())


def subnet_layers(spec: MobileNetV3Spec, cfg: SubnetConfig) -> list[str]:
    """Table keys of the layers subnet ``cfg`` runs, in order."""
    blocks = plan(spec, cfg)
    return [stem_key(spec, cfg.r), *(block_key(b) for b in blocks), head_key(spec, blocks[-1].hw_out)]
