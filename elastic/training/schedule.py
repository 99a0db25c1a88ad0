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

from elastic.families import config_from_dict
from elastic.space import SearchSpace
from elastic.strict import dataclass_kwargs

# Allowed ranges of the numeric Phase fields (inclusive).
_PHASE_RANGES = {"epochs": (1, 100_000), "lr": (1e-12, 100.0), "subnets_per_step": (1, 64),
                 "kd_weight": (0.0, 1000.0), "warmup_epochs": (0.0, 100_000.0)}
SAMPLERS = ("random", "sandwich")
RESOLUTION_RULES = ("shared", "sandwich")
LR_SCHEDULES = ("cosine", "constant")
_DIMS = ("ks", "e", "d", "r", "w")  # the elastic dimensions a phase may restrict (a space has some of them)


@dataclass(frozen=True)
class Phase:
    """One phase of supernet training.

    Attributes:
        name: Label used in logs, metrics and checkpoints.
        epochs: Epochs of this phase.
        lr: Peak learning rate (per 256 images is *not* implied: used as given).
        ks, e, d, r, w: Values sampled for each elastic dimension the supernet has (``w``: ResNet width
            multiplier indices); ``None`` fixes it at the space's largest value (resolution: ``None``
            samples every resolution of the space).
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
    w: tuple[int, ...] | None = None
    subnets_per_step: int = 1
    sampler: str = "random"
    resolution: str = "shared"
    kd_weight: float = 0.0
    kd_source: str = "teacher"
    sort_channels: bool = False
    warmup_epochs: float = 0.0
    lr_schedule: str = "cosine"
    subnet: Any = None  # a SubnetConfig / ResNetConfig (a JSON object is parsed by its keys)

    def __post_init__(self) -> None:
        for f in fields(self):
            check_value(f"phase {self.name!r}: {f.name}", getattr(self, f.name), f.type, _PHASE_RANGES.get(f.name))
        for name in _DIMS:
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (list, tuple)) or not v
                                  or not all(_is_number(x) for x in v)):
                raise ValueError(f"phase {self.name!r}: {name}={v!r} must be a non-empty list of numbers")
        if isinstance(self.subnet, Mapping):
            object.__setattr__(self, "subnet", config_from_dict(self.subnet))
        if self.subnet is not None and (any(getattr(self, n) is not None for n in _DIMS)
                                        or self.subnets_per_step != 1 or self.sampler != "random"):
            raise ValueError(f"phase {self.name!r}: a fixed subnet excludes ks/e/d/r/w, sampler and subnets_per_step")
        for name in _DIMS:
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(sorted(set(v))))
        if not self.name or len(self.name) > 100 or not self.name.isprintable() or self.name != self.name.strip():
            raise ValueError(f"Phase.name={self.name!r}; allowed: 1 to 100 printable characters, no surrounding "
                             "spaces (it names the phase in logs, records and resumed runs)")
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

    def space(self, full: Any) -> Any:
        """The sub-space this phase samples from (``full.restrict``); values outside ``full`` and dimensions it
        does not have are errors."""
        if self.subnet is not None:
            if not isinstance(self.subnet, full.config_type):
                raise ValueError(f"phase {self.name!r}: subnet is a {type(self.subnet).__name__}; this supernet's "
                                 f"subnets are {full.config_type.__name__} values")
            return full.around(self.subnet)
        chosen = {n: getattr(self, n) for n in _DIMS if getattr(self, n) is not None}
        return full.restrict(f"phase {self.name!r}", **chosen)  # restrict refuses a dimension the space lacks

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
    """OFA's progressive shrinking: teacher -> kernel -> depth x2 -> expand x2 (-> width x2 for spaces with
    elastic width, such as OFA-ResNet50's; no kernel phase for spaces without elastic kernels).

    Args:
        epochs: Per-phase epochs by name (``teacher``, ``kernel``, ``depth1``, ``depth2``, ``expand1``,
            ``expand2``, ``width1``, ``width2``); the defaults are a small CPU budget.
        lr: Learning rate of the teacher phase; later phases use OFA's ratios of it.
        kd_weight: Distillation weight of the shrinking phases.
        subnets_per_step: Subnets per step in the depth and expand phases (OFA uses 2 and 4).
        space: The supernet's space; its values define each stage (defaults: OFA's k357/d234/e346).
    """
    ep = {"teacher": 4, "kernel": 3, "depth1": 1, "depth2": 2, "expand1": 1, "expand2": 3, "width1": 1, "width2": 2}
    if epochs is not None and not isinstance(epochs, Mapping):
        raise ValueError(f"epochs={epochs!r} must be a table of per-phase epochs, e.g. {{teacher = 4}}; "
                         f"phases: {list(ep)}")
    dims = space.elastic_dims if space else ("ks", "e", "d", "r")
    here = [n for n in ep if not (n == "kernel" and "ks" not in dims or n.startswith("width") and "w" not in dims)]
    unknown = sorted(set(epochs or {}) - set(here))
    if unknown:  # a phase this space has no elastic dimension for would be silently ignored
        raise ValueError(f"unknown phase name(s) {unknown} in epochs; allowed for this space: {here}")
    ep.update(epochs or {})
    d = space.d if space else (2, 3, 4)
    e = space.e if space else (3, 4, 6)
    ks = {"ks": space.ks if space else (3, 5, 7)} if "ks" in dims else {}
    common = dict(kd_weight=kd_weight, kd_source="teacher", **ks)
    many = dict(subnets_per_step=subnets_per_step, **common)
    phases = [Phase("teacher", ep["teacher"], lr, warmup_epochs=min(1.0, ep["teacher"] / 4))]
    if ks:
        phases.append(Phase("kernel", ep["kernel"], lr * 0.3, **common))
    phases += [
        Phase("depth1", ep["depth1"], lr * 0.08, d=d[-2:], **many),
        Phase("depth2", ep["depth2"], lr * 0.24, d=d, **many),
        Phase("expand1", ep["expand1"], lr * 0.08, d=d, e=e[-2:], sort_channels=True, **many),
        Phase("expand2", ep["expand2"], lr * 0.24, d=d, e=e, sort_channels=True, **many),
    ]
    if "w" in dims:
        w = tuple(range(len(space.widths)))
        phases += [Phase("width1", ep["width1"], lr * 0.08, d=d, e=e, w=w[-2:], **many),
                   Phase("width2", ep["width2"], lr * 0.24, d=d, e=e, w=w, **many)]
    return phases


def sandwich_schedule(epochs: int, lr: float = 0.1, random_subnets: int = 2, kd_weight: float = 1.0,
                      resolution: str = "shared", space: SearchSpace | None = None) -> list[Phase]:
    """BigNAS/AttentiveNAS sandwich rule: largest + smallest + N random subnets per step, in-place KD.

    ``resolution="sandwich"`` also gives the largest subnet the largest resolution and the smallest the
    smallest (BigNAS); ``"shared"`` draws one resolution per step for all of them (OFA).
    """
    check_value("random_subnets", random_subnets, "int", (0, 62))
    check_value("epochs", epochs, "int", _PHASE_RANGES["epochs"])
    dims = space.elastic_dims if space else ("ks", "e", "d", "r")
    d = space.d if space else (2, 3, 4)
    e = space.e if space else (3, 4, 6)
    extra = {"ks": space.ks if space else (3, 5, 7)} if "ks" in dims else {}
    if "w" in dims:
        extra["w"] = tuple(range(len(space.widths)))
    return [Phase("sandwich", epochs, lr, e=e, d=d, **extra, subnets_per_step=2 + random_subnets,
                  sampler="sandwich", resolution=resolution, kd_weight=kd_weight, kd_source="inplace",
                  warmup_epochs=min(1.0, epochs / 8))]
