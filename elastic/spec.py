"""Architecture spec of an elastic MobileNetV3 supernet and the per-subnet layer plan derived from it.

The spec is a frozen, JSON-round-trippable description (widths, strides, activations, SE, the elastic
space). :func:`plan` turns a spec and a :class:`SubnetConfig` into the exact list of blocks that run, with
their channels and feature-map sizes; FLOPs, parameter counts, extraction and latency tables all read it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from elastic.config import SubnetConfig
from elastic.ops import make_divisible
from elastic.space import SearchSpace
from elastic.strict import check_numerics

_ACTS = ("relu", "relu6", "h_swish")
FAMILIES = ("mobilenetv3", "proxylessnas")  # the MBConv families this spec describes


def _check_act(where: str, act: object) -> None:
    if act not in _ACTS:
        raise ValueError(f"{where}={act!r} is not supported; allowed: {list(_ACTS)}")


@dataclass(frozen=True)
class StageSpec:
    """One stage: output width, stride of its first block, activation, squeeze-excite and, for a stage shorter
    than the others (OFA-ProxylessNAS's last), its number of block slots (``None``: the space's largest depth)."""

    width: int
    stride: int
    act: str
    se: bool
    slots: int | None = None

    def __post_init__(self) -> None:
        _check_act("StageSpec.act", self.act)
        if self.stride not in (1, 2) or self.width < 1:
            raise ValueError(f"StageSpec(width={self.width}, stride={self.stride}): width >= 1, stride 1 or 2")
        if self.slots is not None and (isinstance(self.slots, bool) or not isinstance(self.slots, int)
                                       or self.slots < 1):
            raise ValueError(f"StageSpec.slots={self.slots!r} must be a positive integer or None")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``slots`` only when set, so older specs keep their form)."""
        out = asdict(self)
        if self.slots is None:
            out.pop("slots")
        return out


@dataclass(frozen=True)
class MobileNetV3Spec:
    """An OFA-style MBConv supernet: fixed stem and head, elastic stages of MBConv blocks.

    It describes OFA-MobileNetV3 (the defaults) and OFA-ProxylessNAS (``family="proxylessnas"``: ReLU6
    everywhere via ``stem_act``/``head_act``/stage activations, no squeeze-excite, ``feature_mix_width=0``
    for a head without the post-pool layer, a one-slot last stage).
    """

    in_channels: int
    num_classes: int
    stem_width: int
    stem_stride: int
    first_block: StageSpec
    stages: tuple[StageSpec, ...]
    final_expand_width: int
    feature_mix_width: int
    ks: tuple[int, ...]
    e: tuple[int | float, ...]
    d: tuple[int, ...]
    r: tuple[int, ...]
    dropout: float = 0.1
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    divisor: int = 8
    se_reduction: int = 4
    stem_act: str = "h_swish"
    head_act: str = "h_swish"
    family: str = "mobilenetv3"
    space: SearchSpace = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        for name, top in (("in_channels", 4096), ("num_classes", 1_000_000)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top:
                raise ValueError(f"{name}={v!r} must be an integer; allowed: 1 to {top:,}")
        if (isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float))
                or not 0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout={self.dropout!r} must be within [0, 1)")
        check_numerics("MobileNetV3Spec", self.bn_momentum, self.bn_eps, self.divisor)
        _check_act("stem_act", self.stem_act)
        _check_act("head_act", self.head_act)
        if self.family not in FAMILIES:
            raise ValueError(f"family={self.family!r} is not an MBConv family; allowed: {list(FAMILIES)}")
        fm = self.feature_mix_width
        if isinstance(fm, bool) or not isinstance(fm, int) or fm < 0:
            raise ValueError(f"feature_mix_width={fm!r} must be an integer >= 0 (0: no post-pool feature-mix layer)")
        slots = [st.slots for st in self.stages]
        stage_slots = None if all(v is None for v in slots) else [max(self.d) if v is None else v for v in slots]
        object.__setattr__(self, "space", SearchSpace(self.ks, self.e, self.d, self.r, len(self.stages),
                                                      stage_slots))
        for name in ("ks", "e", "d", "r"):
            object.__setattr__(self, name, getattr(self.space, name))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (inverse of :meth:`from_dict`)."""
        out = asdict(self)
        out.pop("space")
        out["first_block"] = self.first_block.to_dict()
        out["stages"] = [st.to_dict() for st in self.stages]
        for name, default in _OPTIONAL.items():  # older specs (and their ids) keep their exact form
            if out[name] == default:
                out.pop(name)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def variant_costs(self) -> tuple[np.ndarray, np.ndarray]:
        """``(block[slot, r, variant, 2], fixed[r, 1, 2])``: MACs and parameters of every block slot's
        (kernel, ratio) variant and of the layers every subnet runs (stem, first block, head), per
        resolution index (``elastic.batch.CostGrid``)."""
        sp = self.space
        nk, ne = len(sp.ks), len(sp.e)
        block = np.zeros((sp.n_blocks, len(sp.r), nk * ne, 2), dtype=np.int64)
        fixed = np.zeros((len(sp.r), 1, 2), dtype=np.int64)
        for ri, r in enumerate(sp.r):
            for ki, k in enumerate(sp.ks):
                for ei, e in enumerate(sp.e):
                    cfg = SubnetConfig((k,) * sp.n_blocks, (e,) * sp.n_blocks, sp.deepest, r)
                    for b in plan(self, cfg)[1:]:
                        block[b.slot, ri, ki * ne + ei] = block_costs(b)
            smallest = sp.smallest(r)
            active = sp.active_blocks(smallest)
            fixed[ri, 0] = np.array(costs(self, smallest)) - block[active, ri, 0].sum(0)  # smallest: variant 0
        return block, fixed

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MobileNetV3Spec":
        """Build from :meth:`to_dict` output; a malformed dict is a ``ValueError`` naming what is wrong."""
        try:
            data = dict(data)
            for key in ("first_block", "stages"):
                want = dict if key == "first_block" else list
                if not isinstance(data.get(key), want):
                    raise ValueError(f"architecture spec {str(data)[:80]!r} is malformed: {key}="
                                     f"{str(data.get(key))[:60]}; allowed: "
                                     f"{'an object' if want is dict else 'a list of stage objects'}")
            data["first_block"] = StageSpec(**data["first_block"])
            data["stages"] = tuple(StageSpec(**s) for s in data["stages"])
            for k in ("ks", "e", "d", "r"):
                data[k] = tuple(data[k])
            return cls(**data)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"architecture spec {str(data)[:80]!r} is malformed ({type(exc).__name__}: {exc}); "
                             "allowed: MobileNetV3Spec.to_dict() output") from None


_OPTIONAL = {"stem_act": "h_swish", "head_act": "h_swish", "family": "mobilenetv3"}


@dataclass(frozen=True)
class BlockPlan:
    """One MBConv block as it runs in a subnet (``slot`` is -1 for the fixed first block)."""

    slot: int
    in_ch: int
    mid_ch: int
    out_ch: int
    kernel: int
    stride: int
    act: str
    se_mid: int  # 0 when the block has no squeeze-excite
    has_expand: bool
    hw_in: int

    @property
    def hw_out(self) -> int:
        """Output feature-map size (``same`` padding)."""
        return conv_out(self.hw_in, self.stride)

    @property
    def residual(self) -> bool:
        """Whether the block adds its input back."""
        return self.stride == 1 and self.in_ch == self.out_ch


def conv_out(hw: int, stride: int) -> int:
    """Output size of an odd-kernel conv with ``k // 2`` padding."""
    return (hw - 1) // stride + 1


def mid_channels(spec: MobileNetV3Spec, in_ch: int, e: float) -> int:
    """Hidden width of an MBConv block with input ``in_ch`` and expand ratio ``e``."""
    return make_divisible(round(in_ch * e), spec.divisor)


def se_mid_channels(spec: MobileNetV3Spec, channels: int) -> int:
    """Hidden width of a squeeze-excite over ``channels``."""
    return make_divisible(channels // spec.se_reduction, spec.divisor)


def slot_layout(spec: MobileNetV3Spec) -> list[tuple[int, int, StageSpec, int]]:
    """``(in_ch, out_ch, stage, stride)`` of every elastic block slot, in order."""
    out, in_ch = [], spec.first_block.width
    for stage, n in zip(spec.stages, spec.space.slots):
        for i in range(n):
            out.append((in_ch, stage.width, stage, stage.stride if i == 0 else 1))
            in_ch = stage.width
    return out


def plan(spec: MobileNetV3Spec, cfg: SubnetConfig) -> list[BlockPlan]:
    """The blocks that run for ``cfg`` (first block included), with exact channels and sizes."""
    spec.space.validate(cfg)
    hw = conv_out(cfg.r, spec.stem_stride)
    fb = spec.first_block
    blocks = [BlockPlan(-1, spec.stem_width, spec.stem_width, fb.width, 3, fb.stride, fb.act,
                        se_mid_channels(spec, spec.stem_width) if fb.se else 0, False, hw)]
    hw = blocks[0].hw_out
    has_expand = max(spec.e) != 1
    layout = slot_layout(spec)
    for i in spec.space.active_blocks(cfg):
        in_ch, out_ch, stage, stride = layout[i]
        mid = mid_channels(spec, in_ch, cfg.e[i]) if has_expand else in_ch
        blocks.append(BlockPlan(i, in_ch, mid, out_ch, cfg.ks[i], stride, stage.act,
                                se_mid_channels(spec, mid) if stage.se else 0, has_expand, hw))
        hw = blocks[-1].hw_out
    return blocks


def block_costs(b: BlockPlan) -> tuple[int, int]:
    """``(MACs, parameters)`` of one MBConv block as planned."""
    macs = params = 0
    if b.has_expand:
        macs += b.hw_in**2 * b.in_ch * b.mid_ch
        params += b.in_ch * b.mid_ch + 2 * b.mid_ch
    macs += b.hw_out**2 * b.mid_ch * b.kernel**2
    params += b.mid_ch * b.kernel**2 + 2 * b.mid_ch
    if b.se_mid:
        macs += 2 * b.mid_ch * b.se_mid
        params += 2 * b.mid_ch * b.se_mid + b.se_mid + b.mid_ch
    macs += b.hw_out**2 * b.mid_ch * b.out_ch
    params += b.mid_ch * b.out_ch + 2 * b.out_ch
    return macs, params


def costs(spec: MobileNetV3Spec, cfg: SubnetConfig) -> tuple[int, int]:
    """``(MACs, parameters)`` of the subnet ``cfg``, analytically, without a forward pass.

    MACs count multiply-accumulates of every conv and linear layer (the "FLOPs" of the OFA paper);
    parameters are those of the extracted static network (BatchNorm affine terms included).
    """
    blocks = plan(spec, cfg)
    hw0 = conv_out(cfg.r, spec.stem_stride)
    macs = hw0**2 * spec.in_channels * spec.stem_width * 9
    params = spec.in_channels * spec.stem_width * 9 + 2 * spec.stem_width
    for b in blocks:
        bm, bp = block_costs(b)
        macs, params = macs + bm, params + bp
    last, hw = blocks[-1].out_ch, blocks[-1].hw_out
    fe, fm, nc = spec.final_expand_width, spec.feature_mix_width, spec.num_classes
    feat = fm or fe  # the classifier reads the post-pool mix layer, or the pooled final expand without one
    macs += hw**2 * last * fe + fe * fm + feat * nc
    params += last * fe + 2 * fe + fe * fm + feat * nc + nc
    return macs, params
