"""Architecture spec of an elastic OFA-style ResNet and the per-subnet layer plan derived from it.

:func:`plan` turns a spec and a :class:`ResNetConfig` into the exact stem and bottleneck blocks that run,
with their channels and feature-map sizes; costs, extraction and latency tables read it.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from elastic.ops import make_divisible
from elastic.resnet.config import ResNetConfig
from elastic.resnet.space import ResNetSpace
from elastic.spec import conv_out
from elastic.strict import check_numerics


@dataclass(frozen=True)
class ResNetSpec:
    """An OFA-ResNet supernet: a three-conv stem (the middle one residual and skippable), an optional max-pool,
    stages of bottleneck blocks (avg-pool + 1x1 conv shortcuts where the shape changes), pool, classifier.

    Channel widths are ``make_divisible(base * multiplier, divisor)`` for each multiplier in ``widths``;
    the stem's first two convs have half the stem's width.
    """

    in_channels: int
    num_classes: int
    stem_width: int
    stage_widths: tuple[int, ...]
    strides: tuple[int, ...]
    base_depth: tuple[int, ...]
    d: tuple[int, ...]
    e: tuple[int | float, ...]
    widths: tuple[float, ...]
    r: tuple[int, ...]
    stem_stride: int = 2
    max_pool: bool = True
    dropout: float = 0.0
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    divisor: int = 8
    family: str = "resnet"
    space: ResNetSpace = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("stage_widths", "strides", "base_depth", "d", "e", "widths", "r"):
            v = getattr(self, name)
            if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)):
                raise ValueError(f"ResNetSpec.{name}={v!r} must be a list")
            object.__setattr__(self, name, tuple(v))
        for name, top in (("in_channels", 4096), ("num_classes", 1_000_000), ("stem_width", 1 << 16)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top:
                raise ValueError(f"ResNetSpec.{name}={v!r} must be an integer; allowed: 1 to {top:,}")
        if any(isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= 1 << 16 for w in self.stage_widths):
            raise ValueError(f"ResNetSpec.stage_widths={list(self.stage_widths)!r}; allowed: integers from 1 to "
                             f"{1 << 16:,}")
        if not isinstance(self.max_pool, bool):
            raise ValueError(f"ResNetSpec.max_pool={self.max_pool!r}; allowed: true or false")
        check_numerics("ResNetSpec", self.bn_momentum, self.bn_eps, self.divisor)
        n = len(self.stage_widths)
        if not n or len(self.strides) != n or len(self.base_depth) != n:
            raise ValueError(f"ResNetSpec has {n} stage widths, {len(self.strides)} strides and "
                             f"{len(self.base_depth)} base depths; they must agree (one per stage)")
        if any(s not in (1, 2) for s in (*self.strides, self.stem_stride)):
            raise ValueError(f"ResNetSpec strides {list(self.strides)} / stem_stride={self.stem_stride!r}: allowed 1 or 2")
        if self.family != "resnet":
            raise ValueError(f"ResNetSpec.family={self.family!r}; allowed: ['resnet']")
        if (isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float))
                or not 0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout={self.dropout!r} must be within [0, 1)")
        space = ResNetSpace(self.d, self.e, self.widths, self.r, self.base_depth)
        object.__setattr__(self, "space", space)
        for name in ("d", "e", "widths", "r"):
            object.__setattr__(self, name, getattr(space, name))

    # ------------------------------------------------------------- channels
    def scaled(self, base: int) -> tuple[int, ...]:
        """``base`` at every width multiplier."""
        return tuple(make_divisible(base * m, self.divisor) for m in self.widths)

    @property
    def stem_channels(self) -> tuple[int, ...]:
        """Output widths of the stem's last conv, per multiplier index."""
        return self.scaled(self.stem_width)

    @property
    def stem_mid_channels(self) -> tuple[int, ...]:
        """Output widths of the stem's first two convs, per multiplier index."""
        return tuple(make_divisible(c // 2, self.divisor) for c in self.stem_channels)

    def mid_channels(self, out_ch: int, e: float) -> int:
        """Bottleneck width of a block with output ``out_ch`` and expand ratio ``e``."""
        return make_divisible(round(out_ch * e), self.divisor)

    def variant_costs(self) -> tuple[np.ndarray, np.ndarray]:
        """``(block[slot, r, variant, 2], fixed[r, fixed_variant, 2])``: MACs and parameters of every block
        slot's (ratio, input width, output width) variant and of the stem and classifier per (stem residual
        conv or not, stem widths, last width), per resolution index (``elastic.batch.CostGrid``; variants as
        :func:`block_variants` / :func:`stem_variants` number them)."""
        sp = self.space
        block = np.zeros((sp.n_blocks, len(sp.r), sp.n_slot_variants, 2), dtype=np.int64)
        fixed = np.zeros((len(sp.r), sp.n_fixed_variants, 2), dtype=np.int64)
        lasts = self.scaled(self.stage_widths[-1])
        for ri, r in enumerate(sp.r):
            for si, stem in enumerate(stem_variants(self, r)):
                m, p = stem_costs(stem)
                for wl, last in enumerate(lasts):
                    fixed[ri, si * len(lasts) + wl] = (m + last * self.num_classes,
                                                       p + last * self.num_classes + self.num_classes)
            for slot, row in enumerate(block_variants(self, r)):
                block[slot, ri] = [block_costs(b) for b in row]
        return block, fixed

    # ------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (inverse of :meth:`from_dict`)."""
        out = asdict(self)
        out.pop("space")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ResNetSpec":
        """Build from :meth:`to_dict` output; a malformed dict is a ``ValueError`` naming what is wrong."""
        try:
            return cls(**dict(data))
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"ResNet spec {str(data)[:80]!r} is malformed ({type(exc).__name__}: {exc}); "
                             "allowed: ResNetSpec.to_dict() output") from None


@dataclass(frozen=True)
class StemPlan:
    """The stem as it runs: conv 3x3/stride (``in -> mid``), [residual conv 3x3 ``mid -> mid``], conv 3x3
    ``mid -> out``; then an optional 3x3/2 max-pool."""

    in_ch: int
    mid_ch: int
    out_ch: int
    stride: int
    residual: bool
    max_pool: bool
    hw_in: int

    @property
    def hw_conv(self) -> int:
        """Feature-map size after the convs."""
        return conv_out(self.hw_in, self.stride)

    @property
    def hw_out(self) -> int:
        """Feature-map size after the max-pool (if any)."""
        return conv_out(self.hw_conv, 2) if self.max_pool else self.hw_conv


@dataclass(frozen=True)
class BottleneckPlan:
    """One bottleneck block as it runs: 1x1 ``in -> mid``, 3x3/stride ``mid -> mid``, 1x1 ``mid -> out``; the
    shortcut is the identity, or (``downsample``) an avg-pool of the stride and a 1x1 conv ``in -> out``."""

    slot: int
    in_ch: int
    mid_ch: int
    out_ch: int
    stride: int
    downsample: bool
    hw_in: int

    @property
    def hw_out(self) -> int:
        """Output feature-map size."""
        return conv_out(self.hw_in, self.stride)


def slot_layout(spec: ResNetSpec) -> list[tuple[int, int, bool]]:
    """``(stage, stride, downsample)`` of every block slot, in order (the first slot of a stage changes shape)."""
    out, prev = [], spec.stem_width
    for i, (base, stride, n) in enumerate(zip(spec.stage_widths, spec.strides, spec.space.slots)):
        for j in range(n):
            first = j == 0
            out.append((i, stride if first else 1, first and (stride != 1 or prev != base)))
        prev = base
    return out


def plan(spec: ResNetSpec, cfg: ResNetConfig) -> tuple[StemPlan, list[BottleneckPlan]]:
    """The stem and the blocks that run for ``cfg``, with exact channels and sizes."""
    sp = spec.space
    sp.validate(cfg)
    stem = StemPlan(spec.in_channels, spec.stem_mid_channels[cfg.w[0]], spec.stem_channels[cfg.w[1]],
                    spec.stem_stride, sp.stem_residual(cfg), spec.max_pool, cfg.r)
    in_ch, hw, blocks = stem.out_ch, stem.hw_out, []
    layout = slot_layout(spec)
    stage_out = [spec.scaled(b) for b in spec.stage_widths]
    for i in sp.active_blocks(cfg):
        stage, stride, down = layout[i]
        out_ch = stage_out[stage][cfg.w[2 + stage]]
        blocks.append(BottleneckPlan(i, in_ch, spec.mid_channels(out_ch, cfg.e[i]), out_ch, stride, down, hw))
        in_ch, hw = out_ch, blocks[-1].hw_out
    return stem, blocks


def stem_costs(s: StemPlan) -> tuple[int, int]:
    """``(MACs, parameters)`` of the stem as planned."""
    hw2 = s.hw_conv**2
    convs = [(s.in_ch, s.mid_ch), *([(s.mid_ch, s.mid_ch)] if s.residual else []), (s.mid_ch, s.out_ch)]
    return sum(hw2 * i * o * 9 for i, o in convs), sum(i * o * 9 + 2 * o for i, o in convs)


def block_costs(b: BottleneckPlan) -> tuple[int, int]:
    """``(MACs, parameters)`` of one bottleneck block as planned."""
    ho2 = b.hw_out**2
    macs = b.hw_in**2 * b.in_ch * b.mid_ch + ho2 * b.mid_ch * b.mid_ch * 9 + ho2 * b.mid_ch * b.out_ch
    params = b.in_ch * b.mid_ch + b.mid_ch * b.mid_ch * 9 + b.mid_ch * b.out_ch + 4 * b.mid_ch + 2 * b.out_ch
    if b.downsample:
        macs += ho2 * b.in_ch * b.out_ch
        params += b.in_ch * b.out_ch + 2 * b.out_ch
    return macs, params


def costs(spec: ResNetSpec, cfg: ResNetConfig) -> tuple[int, int]:
    """``(MACs, parameters)`` of subnet ``cfg``, analytically (convs and the classifier; pooling is free)."""
    stem, blocks = plan(spec, cfg)
    macs, params = stem_costs(stem)
    for b in blocks:
        bm, bp = block_costs(b)
        macs, params = macs + bm, params + bp
    last = blocks[-1].out_ch
    return macs + last * spec.num_classes, params + last * spec.num_classes + spec.num_classes


def stem_variants(spec: ResNetSpec, r: int) -> list[StemPlan]:
    """Every stem at resolution ``r``, ordered (residual conv or not, w0, w1) as the space's fixed variants
    number them (each then times the last stage's width)."""
    nw = range(len(spec.widths))
    return [StemPlan(spec.in_channels, spec.stem_mid_channels[w0], spec.stem_channels[w1], spec.stem_stride,
                     res, spec.max_pool, r) for res in (False, True) for w0 in nw for w1 in nw]


def block_variants(spec: ResNetSpec, r: int) -> list[list[BottleneckPlan]]:
    """``[slot][variant]``: every block variant at resolution ``r``, ordered (ratio, input width, output width)
    as :meth:`ResNetSpace.slot_variants` numbers them (inside a stage a block's input width is its output
    width; the other input widths never run and repeat that plan)."""
    sp, nw = spec.space, len(spec.widths)
    stage_out = [spec.scaled(b) for b in spec.stage_widths]
    ins = [spec.stem_channels, *stage_out[:-1]]
    hw = StemPlan(spec.in_channels, 1, 1, spec.stem_stride, False, spec.max_pool, r).hw_out
    out = []
    for slot, (stage, stride, down) in enumerate(slot_layout(spec)):
        first = sp.stage_offsets[stage] == slot
        row = []
        for e, wi, wo in itertools.product(sp.e, range(nw), range(nw)):
            out_ch = stage_out[stage][wo]
            in_ch = ins[stage][wi] if first else out_ch
            row.append(BottleneckPlan(slot, in_ch, spec.mid_channels(out_ch, e), out_ch, stride, down, hw))
        out.append(row)
        hw = row[0].hw_out
    return out
