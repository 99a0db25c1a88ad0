"""The layers of OFA-ResNet subnets for latency tables: stems, bottleneck blocks and classifier heads.

A ResNet subnet runs a stem (three 3x3 convs, the middle one residual and skipped at the smaller stem
depth, then an optional max-pool), its active bottlenecks and a head (global pool and classifier). A
bottleneck's latency depends on its input width, which the previous block's width gene decides; the
variants of a slot are therefore ``(ratio, input width, output width)`` (numbered as
:meth:`elastic.resnet.ResNetSpace.slot_variants`), and the stem and head variants
``(stem residual conv or not, stem widths, last width)`` (:meth:`elastic.resnet.ResNetSpace.fixed_variants`).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from elastic.resnet import ResNetConfig, ResNetSpec
from elastic.resnet.spec import BottleneckPlan, StemPlan, block_variants, plan, stem_variants
from elastic.resnet.static import Bottleneck, ResidualConv
from elastic.static import conv_bn_act, make_conv, make_linear
from profilers.layers.common import Layer, LayerGrid, rand_bn, rand_weight


def _stem_key(s: StemPlan) -> str:
    return (f"rstem:in{s.in_ch}:mid{s.mid_ch}:out{s.out_ch}:s{s.stride}:res{int(s.residual)}"
            f":pool{int(s.max_pool)}:hw{s.hw_in}")


def _block_key(b: BottleneckPlan) -> str:
    return f"bottleneck:in{b.in_ch}:mid{b.mid_ch}:out{b.out_ch}:s{b.stride}:down{int(b.downsample)}:hw{b.hw_in}"


def _head_key(spec: ResNetSpec, in_ch: int, hw: int) -> str:
    return f"rhead:in{in_ch}:nc{spec.num_classes}:hw{hw}"


def stem_module(s: StemPlan, seed: int = 0) -> nn.Module:
    """A static stem with the shape of ``s`` and random weights."""
    g = torch.Generator().manual_seed(seed)

    def cba(o: int, i: int, stride: int = 1) -> nn.Sequential:
        return conv_bn_act(make_conv(rand_weight(g, o, i, 3, 3), stride=stride), rand_bn(o, g), "relu")

    layers = [cba(s.mid_ch, s.in_ch, s.stride), *([ResidualConv(cba(s.mid_ch, s.mid_ch))] if s.residual else []),
              cba(s.out_ch, s.mid_ch)]
    if s.max_pool:
        layers.append(nn.MaxPool2d(3, 2, 1))
    return nn.Sequential(*layers).eval()


def block_module(b: BottleneckPlan, seed: int = 0) -> Bottleneck:
    """A static bottleneck with the shape of ``b`` and random weights."""
    g = torch.Generator().manual_seed(seed)
    convs = [(make_conv(rand_weight(g, b.mid_ch, b.in_ch, 1, 1)), rand_bn(b.mid_ch, g)),
             (make_conv(rand_weight(g, b.mid_ch, b.mid_ch, 3, 3), stride=b.stride), rand_bn(b.mid_ch, g)),
             (make_conv(rand_weight(g, b.out_ch, b.mid_ch, 1, 1)), rand_bn(b.out_ch, g))]
    down = (make_conv(rand_weight(g, b.out_ch, b.in_ch, 1, 1)), rand_bn(b.out_ch, g)) if b.downsample else None
    return Bottleneck(convs, down, b.stride).eval()


class Head(nn.Module):
    """Global average pool and classifier."""

    def __init__(self, in_ch: int, nc: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.classifier = make_linear(torch.randn(nc, in_ch, generator=g) / in_ch**0.5, torch.zeros(nc))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.mean((2, 3)))


def slot_grid(spec: ResNetSpec) -> LayerGrid:
    """The table keys of ``spec``'s space laid out ``[slot][r][variant]`` and ``[r][fixed variant]``."""
    sp = spec.space
    keys = [[[] for _ in sp.r] for _ in range(sp.n_blocks)]
    fixed = []
    for ri, r in enumerate(sp.r):
        blocks = block_variants(spec, r)
        for slot, row in enumerate(blocks):
            keys[slot][ri] = [_block_key(b) for b in row]
        hw = blocks[-1][0].hw_out
        lasts = spec.scaled(spec.stage_widths[-1])
        fixed.append([[_stem_key(s), _head_key(spec, last, hw)] for s in stem_variants(spec, r) for last in lasts])
    return LayerGrid(keys, fixed)


def space_layers(spec: ResNetSpec) -> list[Layer]:
    """Every distinct layer any subnet of ``spec``'s space runs, at every resolution (deduplicated)."""
    out: dict[str, Layer] = {}
    for r in spec.space.r:
        for s in stem_variants(spec, r):
            out.setdefault(_stem_key(s), Layer(_stem_key(s), (1, s.in_ch, r, r), lambda s=s: stem_module(s)))
        blocks = block_variants(spec, r)
        for b in itertools.chain.from_iterable(blocks):
            key = _block_key(b)
            if key not in out:
                out[key] = Layer(key, (1, b.in_ch, b.hw_in, b.hw_in), lambda b=b: block_module(b))
        hw = blocks[-1][0].hw_out
        for last in spec.scaled(spec.stage_widths[-1]):
            key = _head_key(spec, last, hw)
            out.setdefault(key, Layer(key, (1, last, hw, hw),
                                      lambda last=last: Head(last, spec.num_classes).eval()))
    return list(out.values())


def subnet_layers(spec: ResNetSpec, cfg: ResNetConfig) -> list[str]:
    """Table keys of the layers subnet ``cfg`` runs, in order."""
    stem, blocks = plan(spec, cfg)
    return [_stem_key(stem), *(_block_key(b) for b in blocks), _head_key(spec, blocks[-1].out_ch, blocks[-1].hw_out)]
