"""The training schedule as data: a list of :class:`Phase` records, plus the OFA and sandwich presets.

A phase says which elastic dimensions are sampled and from which values, for how many epochs, with which
learning rate, how many subnets per step, how subnets are drawn (``random`` or ``sandwich``) and how much
distillation is used. Progressive shrinking is OFA's default list: full network (the teacher) -> elastic
kernel -> elastic depth (two stages) -> elastic expand (two stages), each later phase distilling from the
frozen full network.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Sequence

from elastic.config import SubnetConfig
from elastic.space import SearchSpace
from elastic.strict import dataclass_kwargs

# Allowed ranges of the numeric Phase fields (inclusive).
_PHASE_RANGES = {"epochs": (1, 100_000), "lr": (1e-12, 100.0), "subnets_per_step": (1, 64),
                 "kd_weight": (0.0, 1000.0), "warmup_epochs": (0.0, 100_000.0)}
SAMPLERS = ("random", "sandwich")
RESOLUTION_RULES = ("shared", "sandwich")
LR_SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class Phase:
    """One phase of supernet training.

    Attributes:
        name: Label used in logs, metrics and checkpoints.
        epochs: Epochs of this phase.
        lr: Peak learning rate (per 256 images is *not* implied: used as given).
        ks, e, d, r: Values sampled for each elastic dimension; ``None`` fixes it at the space's largest
            value (resolution: ``None`` samples every resolution of the space).
        subnets_per_step: Subnets whose gradients are accumulated per optimizer step.
        sampler: ``random`` (uniform) or ``sandwich`` (largest + smallest + random ones).
        resolution: ``shared`` (OFA: one resolution drawn per step for all its subnets) or ``sandwich``
            (BigNAS/AttentiveNAS: the largest subnet at the largest resolution, the smallest at the
            smallest, every random one at its own drawn resolution; needs the sandwich sampler).
        kd_weight: Weight of the distillation loss (soft cross-entropy to the teacher's predictions).
        kd_source: ``teacher`` (frozen full network) or ``inplace`` (the largest subnet of the same step).
        sort_channels: Reorder hidden channels by importance before the phase starts, keeping the
            widths trained by earlier phases (OFA does this before each elastic-expand stage).
        warmup_epochs: Linear warm-up length (may be fractional).
        lr_schedule: ``cosine`` (per step, to zero) or ``constant``.
        subnet: Train exactly this subnet every step (e.g. a from-scratch baseline or a fine-tune);
            the elastic-dimension fields must then be left unset.
    """

    name: str
    epochs: int
    lr: float
    ks: tuple[int, ...] | None = None
    e: tuple[float, ...] | None = None
    d: tuple[int, ...] | None = None
    r: tuple[int, ...] | None = None
    subnets_per_step: int = 1
    sampler: str = "random"
    resolution: str = "shared"
    kd_weight: float = 0.0
    kd_source: str = "teacher"
    sort_channels: bool = False
    warmup_epochs: float = 0.0
    lr_schedule: str = "cosine"
    subnet: SubnetConfig | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            check_value(f"phase {self.name!r}: {f.name}", getattr(self, f.name), f.type, _PHASE_RANGES.get(f.name))
        for name in ("ks", "e", "d", "r"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (list, tuple)) or not v
                                  or not all(_is_number(x) for x in v)):
                raise ValueError(f"phase {self.name!r}: {name}={v!r} must be a non-empty list of numbers")
        if isinstance(self.subnet, Mapping):
            object.__setattr__(self, "subnet", SubnetConfig.from_dict(self.subnet))
        if self.subnet is not None and (any(getattr(self, n) is not None for n in ("ks", "e", "d", "r"))
                                        or self.subnets_per_step != 1 or self.sampler != "random"):
            raise ValueError(f"phase {self.name!r}: a fixed subnet excludes ks/e/d/r, sampler and subnets_per_step")
        for name in ("ks", "e", "d", "r"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(sorted(set(v))))
        if not self.name:
            raise ValueError("Phase.name must not be empty")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"phase {self.name!r}: sampler={self.sampler!r}; allowed: {list(SAMPLERS)}")
        if self.resolution not in RESOLUTION_RULES:
            raise ValueError(f"phase {self.name!r}: resolution={self.resolution!r}; allowed: {list(RESOLUTION_RULES)}")
        if self.resolution == "sandwich" and self.sampler != "sandwich":
            raise ValueError(f"phase {self.name!r}: resolution='sandwich' needs sampler='sandwich' "
                             f"(got {self.sampler!r})")
        if self.kd_source not in ("teacher", "inplace"):
            raise ValueError(f"phase {self.name!r}: kd_source={self.kd_source!r}; allowed: ['teacher', 'inplace']")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"phase {self.name!r}: lr_schedule={self.lr_schedule!r}; allowed: {list(LR_SCHEDULES)}")
        min_subnets = 2 if self.sampler == "sandwich" else 1
        if self.subnets_per_step < min_subnets:
            raise ValueError(f"phase {self.name!r}: subnets_per_step={self.subnets_per_step} must be >= "
                             f"{min_subnets} for the {self.sampler} sampler")
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"phase {self.name!r}: warmup_epochs={self.warmup_epochs} exceeds epochs={self.epochs}")

    def space(self, full: SearchSpace) -> SearchSpace:
        """The sub-space this phase samples from; values outside ``full`` are an error."""
        if self.subnet is not None:
            c = full.validate(self.subnet)
            depths = {v for v in c.d if v in full.d} | {full.max_depth}  # a short stage's depth is a clip
            return SearchSpace(ks=set(c.ks), e=set(c.e), d=depths, r=(c.r,), n_stages=full.n_stages,
                               stage_slots=full.stage_slots)
        chosen = {}
        for name in ("ks", "e", "d", "r"):
            allowed = getattr(full, name)
            v = getattr(self, name)
            if v is None:
                v = allowed if name == "r" else (max(allowed),)
            bad = [x for x in v if x not in allowed]
            if bad:
                raise ValueError(f"phase {self.name!r}: {name}={list(v)} has {bad} outside the space; "
                                 f"allowed: {list(allowed)}")
            chosen[name] = v
        if max(chosen["d"]) != full.max_depth:
            raise ValueError(f"phase {self.name!r}: d={list(chosen['d'])} must include the space's largest "
                             f"depth {full.max_depth} (the number of block slots per stage is fixed)")
        return SearchSpace(n_stages=full.n_stages, stage_slots=full.stage_slots, **chosen)

    @property
    def uses_teacher(self) -> bool:
        """Whether the phase distils from the frozen full network."""
        return self.kd_weight > 0 and self.kd_source == "teacher"

    def to_dict(self) -> dict[str, Any]:
        """JSON/TOML-ready dict."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if v is not None}
        if self.subnet is not None:
            out["subnet"] = self.subnet.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Phase":
        """Build from a mapping; unknown keys are an error naming them."""
        kwargs = dataclass_kwargs(cls, data, "phase")
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ValueError(f"bad phase {dict(data)!r}: {exc}") from None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_value(what: str, value: Any, type_name: Any, bounds: tuple[float, float] | None = None) -> None:
    """Raise ``ValueError`` unless ``value`` has the dataclass field type ``type_name`` and lies in ``bounds``.

    Plain ``int``/``float``/``bool``/``str`` fields are checked (a float must be finite, an int must not be a
    bool); other annotations are left to their own validation.
    """
    kind = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", "")
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = _is_number(value) and math.isfinite(value)
    elif kind == "str":
        ok = isinstance(value, str)
    else:
        return
    if not ok:
        raise ValueError(f"{what}={value!r}: expected a{' finite' if kind == 'float' else ''} {kind}")
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"{what}={value!r} is out of range; allowed: {bounds[0]} to {bounds[1]}")


def validate_schedule(phases: Sequence[Phase], space: SearchSpace) -> list[Phase]:
    """Check every phase against ``space`` and the schedule as a whole; returns the phases as a list."""
    phases = list(phases)
    if not phases:
        raise ValueError("the schedule has no phases")
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        raise ValueError(f"phase names must be unique, got {names}")
    for p in phases:
        p.space(space)
    return phases


def ofa_schedule(epochs: Mapping[str, int] | None = None, lr: float = 0.1, kd_weight: float = 1.0,
                 subnets_per_step: int = 2, space: SearchSpace | None = None) -> list[Phase]:
    """OFA's progressive shrinking: teacher -> kernel -> depth x2 -> expand x2.

    Args:
        epochs: Per-phase epochs by name (``teacher``, ``kernel``, ``depth1``, ``depth2``, ``expand1``,
            ``expand2``); the defaults are a small CPU budget.
        lr: Learning rate of the teacher phase; later phases use OFA's ratios of it.
        kd_weight: Distillation weight of the shrinking phases.
        subnets_per_step: Subnets per step in the depth and expand phases (OFA uses 2 and 4).
        space: The supernet's space; its values define each stage (defaults: OFA's k357/d234/e346).
    """
    ep = {"teacher": 4, "kernel": 3, "depth1": 1, "depth2": 2, "expand1": 1, "expand2": 3}
    if epochs is not None and not isinstance(epochs, Mapping):
        raise ValueError(f"epochs={epochs!r} must be a table of per-phase epochs, e.g. {{teacher = 4}}; "
                         f"phases: {list(ep)}")
    unknown = sorted(set(epochs or {}) - set(ep))
    if unknown:
        raise ValueError(f"unknown phase name(s) {unknown} in epochs; allowed: {list(ep)}")
    ep.update(epochs or {})
    ks = space.ks if space else (3, 5, 7)
    d = space.d if space else (2, 3, 4)
    e = space.e if space else (3, 4, 6)
    common = dict(kd_weight=kd_weight, kd_source="teacher")
    return [
        Phase("teacher", ep["teacher"], lr, warmup_epochs=min(1.0, ep["teacher"] / 4)),
        Phase("kernel", ep["kernel"], lr * 0.3, ks=ks, **common),
        Phase("depth1", ep["depth1"], lr * 0.08, ks=ks, d=d[-2:], subnets_per_step=subnets_per_step, **common),
        Phase("depth2", ep["depth2"], lr * 0.24, ks=ks, d=d, subnets_per_step=subnets_per_step, **common),
        Phase("expand1", ep["expand1"], lr * 0.08, ks=ks, d=d, e=e[-2:], subnets_per_step=subnets_per_step,
              sort_channels=True, **common),
        Phase("expand2", ep["expand2"], lr * 0.24, ks=ks, d=d, e=e, subnets_per_step=subnets_per_step,
              sort_channels=True, **common),
    ]


def sandwich_schedule(epochs: int, lr: float = 0.1, random_subnets: int = 2, kd_weight: float = 1.0,
                      resolution: str = "shared", space: SearchSpace | None = None) -> list[Phase]:
    """BigNAS/AttentiveNAS sandwich rule: largest + smallest + N random subnets per step, in-place KD.

    ``resolution="sandwich"`` also gives the largest subnet the largest resolution and the smallest the
    smallest (BigNAS); ``"shared"`` draws one resolution per step for all of them (OFA).
    """
    check_value("random_subnets", random_subnets, "int", (0, 62))
    check_value("epochs", epochs, "int", _PHASE_RANGES["epochs"])
    ks = space.ks if space else (3, 5, 7)
    d = space.d if space else (2, 3, 4)
    e = space.e if space else (3, 4, 6)
    return [Phase("sandwich", epochs, lr, ks=ks, e=e, d=d, subnets_per_step=2 + random_subnets,
                  sampler="sandwich", resolution=resolution, kd_weight=kd_weight, kd_source="inplace",
                  warmup_epochs=min(1.0, epochs / 8))]
