"""`ResNetSpace`: the allowed depths, expand ratios, width multipliers and resolutions of an elastic ResNet.

OFA-ResNet50's rules: stage ``i`` has ``base_depth[i] + max(d)`` block slots and runs the first
``base_depth[i] + d[i + 1]``; the stem's residual 3x3 conv runs only when ``d[0]`` is the largest depth
(``d[0]`` is either the smallest or the largest); every block of a stage has the stage's width.
Randomness goes through an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping

import numpy as np

from elastic.resnet.config import ResNetConfig
from elastic.space import SlotSpace, _choices

_KEYS = ("d", "e", "widths", "r", "base_depth")


@dataclass(frozen=True)
class ResNetSpace(SlotSpace):
    """Allowed values of every elastic dimension of an OFA-style ResNet.

    Attributes:
        d: Allowed extra depths per stage (e.g. ``(0, 1, 2)``).
        e: Allowed expand ratios (bottleneck width over output width).
        widths: Width multipliers; configs hold indices into them (OFA's ``w``).
        r: Allowed input resolutions.
        base_depth: Blocks every subnet runs in each stage.
        w: Allowed width indices (``None``: all of ``widths``; a training phase may allow fewer).
        stem_d: Allowed stem depth genes (``None``: the smallest and the largest depth).
    """

    d: tuple[int, ...]
    e: tuple[int | float, ...]
    widths: tuple[float, ...]
    r: tuple[int, ...]
    base_depth: tuple[int, ...]
    w: tuple[int, ...] | None = None
    stem_d: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        d = tuple(sorted(set(self.d))) if isinstance(self.d, (list, tuple, set)) else self.d
        if not isinstance(d, tuple) or not d or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in d):
            raise ValueError(f"ResNetSpace.d={self.d!r} must list integers >= 0")
        object.__setattr__(self, "d", d)
        for name, kind in (("e", "e"), ("widths", "e"), ("r", "r")):
            try:
                values = _choices(kind, getattr(self, name))
            except ValueError:
                allowed = "positive integers" if kind == "r" else "positive finite numbers"
                raise ValueError(f"ResNetSpace.{name}={getattr(self, name)!r} must list {allowed}") from None
            object.__setattr__(self, name, tuple(float(v) for v in values) if name == "widths" else values)
        base = tuple(self.base_depth) if isinstance(self.base_depth, (list, tuple)) else ()
        if not base or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in base):
            raise ValueError(f"ResNetSpace.base_depth={self.base_depth!r} must list one positive integer per stage")
        object.__setattr__(self, "base_depth", base)
        for name, full in (("w", tuple(range(len(self.widths)))), ("stem_d", tuple(sorted({min(d), max(d)})))):
            v = getattr(self, name)
            v = full if v is None else tuple(sorted(set(v))) if isinstance(v, (list, tuple, set)) else v
            if not isinstance(v, tuple) or not v or any(x not in full for x in v):
                raise ValueError(f"ResNetSpace.{name}={getattr(self, name)!r} must list some of {list(full)}")
            object.__setattr__(self, name, None if v == full else v)

    # ------------------------------------------------------------------ shape
    @property
    def n_stages(self) -> int:
        """Number of stages."""
        return len(self.base_depth)

    @property
    def slots(self) -> tuple[int, ...]:
        """Block slots of every stage."""
        return tuple(b + max(self.d) for b in self.base_depth)

    @property
    def stem_depths(self) -> tuple[int, ...]:
        """Allowed ``d[0]``: the smallest depth (stem residual conv skipped) or the largest (it runs)."""
        return self.stem_d or tuple(sorted({min(self.d), max(self.d)}))

    @property
    def width_choices(self) -> tuple[int, ...]:
        """Allowed width indices."""
        return self.w or tuple(range(len(self.widths)))

    def stem_residual(self, cfg: ResNetConfig) -> bool:
        """Whether the stem's residual 3x3 conv runs for ``cfg``."""
        return cfg.d[0] == max(self.d)

    # ------------------------------------------------- genes (elastic.batch)
    def gene_groups(self) -> tuple[tuple[str, tuple[tuple, ...]], ...]:
        """``(name, allowed values per column)`` of the genome: depths (the stem's first), ratios per slot,
        width indices, the resolution last."""
        n, w = self.n_stages, self.width_choices
        return (("d", (self.stem_depths,) + (self.d,) * n), ("e", (self.e,) * self.n_blocks), ("w", (w,) * (n + 2)),
                ("r", (self.r,)))

    config_type = ResNetConfig  # the config value of this family
    encoded_groups = (("d", False), ("e", True), ("w", False))  # depths and widths one-hot, ratios per active slot

    @cached_property
    def _slot_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        stage = np.repeat(np.arange(self.n_stages, dtype=np.intp), self.slots)
        pos = np.arange(self.n_blocks, dtype=np.intp) - np.asarray(self.stage_offsets, dtype=np.intp)[stage]
        w_in = np.where(pos == 0, 1 + stage, 2 + stage)  # a stage's first block reads the previous width
        return stage, pos, w_in, np.asarray(self.base_depth, dtype=np.intp)

    def active_slots(self, genes: Mapping[str, np.ndarray]) -> np.ndarray:
        """``[N, slots]``: the slots that run (a stage runs its base depth plus its depth gene)."""
        stage, pos, _, base = self._slot_arrays
        extra = np.asarray(self.d, dtype=np.intp)[genes["d"][:, 1 + stage]]
        return pos < base[stage] + extra

    @property
    def n_slot_variants(self) -> int:
        """Variants of one block slot: every (ratio, input width, output width)."""
        return len(self.e) * len(self.widths) ** 2

    def _width_indices(self, genes: Mapping[str, np.ndarray]) -> np.ndarray:
        """Width indices (into ``widths``) from the genome's indices into :attr:`width_choices`."""
        return np.asarray(self.width_choices, dtype=np.intp)[genes["w"]]

    def slot_variants(self, genes: Mapping[str, np.ndarray]) -> np.ndarray:
        """``[N, slots]``: each slot's variant ``(e_index * |widths| + w_in) * |widths| + w_out``."""
        stage, _, w_in, _ = self._slot_arrays
        nw, w = len(self.widths), self._width_indices(genes)
        return (genes["e"].astype(np.intp) * nw + w[:, w_in]) * nw + w[:, 2 + stage]

    @property
    def n_fixed_variants(self) -> int:
        """Variants of the stem and classifier: stem residual conv or not x its two widths x the last width."""
        return 2 * len(self.widths) ** 3

    def fixed_variants(self, genes: Mapping[str, np.ndarray]) -> np.ndarray:
        """``[N]``: ``((residual * |widths| + w0) * |widths| + w1) * |widths| + w_last``."""
        nw, w = len(self.widths), self._width_indices(genes)
        residual = (np.asarray(self.stem_depths)[genes["d"][:, 0]] == max(self.d)).astype(np.intp)
        return ((residual * nw + w[:, 0]) * nw + w[:, 1]) * nw + w[:, -1]

    def config_values(self, cfg: ResNetConfig) -> dict[str, tuple]:
        """Per gene group values of ``cfg`` (structure only; :meth:`validate` checks membership)."""
        if not isinstance(cfg, ResNetConfig):
            raise ValueError(f"expected a ResNetConfig, got {type(cfg).__name__}")
        return {"d": cfg.d, "e": cfg.e, "w": cfg.w, "r": (cfg.r,)}

    @staticmethod
    def config_from_values(values: Mapping[str, tuple]) -> ResNetConfig:
        """Inverse of :meth:`config_values`."""
        return ResNetConfig(d=values["d"], e=values["e"], w=tuple(int(v) for v in values["w"]), r=values["r"][0])

    elastic_dims = ("d", "e", "w", "r")  # what a training phase may restrict

    def restrict(self, what: str = "restriction", **chosen: Any) -> "ResNetSpace":
        """The sub-space allowing only ``chosen`` values (``d``, ``e``, ``w`` width indices, ``r``; an unset
        dimension keeps its largest value, the resolution all of them); its configs fit this space's supernet
        (widths keep their indices, the stem may skip its residual conv only where the smallest depth is
        allowed)."""
        values = self._restricted(what, {"d": self.d, "e": self.e, "w": self.width_choices, "r": self.r}, chosen)
        stem = tuple(x for x in self.stem_depths if x in values["d"])
        return ResNetSpace(values["d"], values["e"], self.widths, values["r"], self.base_depth, values["w"], stem)

    def around(self, cfg: ResNetConfig) -> "ResNetSpace":
        """The smallest sub-space holding ``cfg``."""
        c = self.validate(cfg)
        return ResNetSpace(set(c.d[1:]) | {max(self.d)}, set(c.e), self.widths, (c.r,), self.base_depth,
                           set(c.w), (c.d[0],))

    def choices(self) -> dict[str, list]:
        """The elastic dimensions' allowed values by their plain names (summaries, ``ofakit zoo list``)."""
        return {"depths": list(self.d), "expand_ratios": list(self.e), "width_multipliers": list(self.widths),
                "base_depths": list(self.base_depth)}

    def active_blocks(self, cfg: ResNetConfig) -> list[int]:
        """Indices (into ``cfg.e``) of the blocks that run, in order."""
        return [o + i for o, b, extra in zip(self.stage_offsets, self.base_depth, cfg.d[1:]) for i in range(b + extra)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = {"d": list(self.d), "e": list(self.e), "widths": list(self.widths), "r": list(self.r),
               "base_depth": list(self.base_depth)}
        out.update({k: list(getattr(self, k)) for k in ("w", "stem_d") if getattr(self, k) is not None})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ResNetSpace":
        """Inverse of :meth:`to_dict`."""
        missing = [k for k in _KEYS if not isinstance(data, Mapping) or k not in data]
        if missing:
            raise ValueError(f"ResNetSpace is missing key(s) {missing}; required: {list(_KEYS)}")
        unknown = sorted(set(data) - set(_KEYS) - {"w", "stem_d"})
        if unknown:
            raise ValueError(f"ResNetSpace has unknown key(s) {unknown}; allowed: {list(_KEYS) + ['w', 'stem_d']}")
        return cls(**{k: data[k] for k in _KEYS}, w=data.get("w"), stem_d=data.get("stem_d"))

    # ------------------------------------------------------------- validation
    def validate(self, cfg: ResNetConfig) -> ResNetConfig:
        """Return ``cfg`` if it belongs to this space, else raise ``ValueError`` naming the bad value."""
        if not isinstance(cfg, ResNetConfig):
            raise ValueError(f"expected a ResNetConfig, got {type(cfg).__name__}")
        n = self.n_stages
        for name, want in (("d", n + 1), ("w", n + 2), ("e", self.n_blocks)):
            got = len(getattr(cfg, name))
            if got != want:
                raise ValueError(f"ResNetConfig.{name} has {got} entries; this space needs {want} "
                                 f"({n} stages, block slots per stage: {list(self.slots)})")
        if cfg.d[0] not in self.stem_depths:
            raise ValueError(f"ResNetConfig.d[0]={cfg.d[0]!r} is outside the space; allowed: {list(self.stem_depths)}")
        for name, values, allowed in (("d", cfg.d[1:], self.d), ("w", cfg.w, self.width_choices),
                                      ("e", cfg.e, self.e)):
            for i, v in enumerate(values):
                if v not in allowed:
                    where = i + 1 if name == "d" else i
                    raise ValueError(f"ResNetConfig.{name}[{where}]={v!r} is outside the space; "
                                     f"allowed: {list(allowed)}")
        if cfg.r not in self.r:
            raise ValueError(f"ResNetConfig.r={cfg.r!r} is outside the space; allowed: {list(self.r)}")
        return cfg

    # ---------------------------------------------------------------- members
    def largest(self, r: int | None = None) -> ResNetConfig:
        """Every stage at its deepest, widest, with the largest expand ratio (largest resolution by default)."""
        n = self.n_stages
        return ResNetConfig(d=(max(self.stem_depths),) + (max(self.d),) * n, e=(max(self.e),) * self.n_blocks,
                            w=(max(self.width_choices),) * (n + 2), r=max(self.r) if r is None else self._resolution(r))

    def smallest(self, r: int | None = None) -> ResNetConfig:
        """The shallowest, narrowest subnet (smallest resolution by default)."""
        n = self.n_stages
        return ResNetConfig(d=(min(self.stem_depths),) + (min(self.d),) * n, e=(min(self.e),) * self.n_blocks,
                            w=(min(self.width_choices),) * (n + 2), r=min(self.r) if r is None else self._resolution(r))

    def sample(self, rng: np.random.Generator, r: int | None = None) -> ResNetConfig:
        """Draw every gene uniformly and independently, as OFA's ``sample_active_subnet`` (``r`` fixes the
        resolution)."""
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng={rng!r} must be a numpy.random.Generator, e.g. np.random.default_rng(0)")
        n = self.n_stages
        e = rng.choice(len(self.e), size=self.n_blocks)
        stem = self.stem_depths[rng.choice(len(self.stem_depths))]
        d = rng.choice(len(self.d), size=n)
        w = rng.choice(len(self.width_choices), size=n + 2)
        ri = rng.choice(len(self.r))
        return ResNetConfig(d=(stem, *(self.d[i] for i in d)), e=tuple(self.e[i] for i in e),
                            w=tuple(self.width_choices[i] for i in w), r=self.r[ri] if r is None else self._resolution(r))

    def canonical(self, cfg: ResNetConfig) -> ResNetConfig:
        """Same architecture with inactive block slots at the smallest expand ratio."""
        self.validate(cfg)
        active = set(self.active_blocks(cfg))
        e = tuple(v if i in active else min(self.e) for i, v in enumerate(cfg.e))
        return ResNetConfig(d=cfg.d, e=e, w=cfg.w, r=cfg.r)

    def size(self, with_resolution: bool = True) -> int:
        """Number of distinct subnets (architectures, times resolutions by default)."""
        nw, ne = len(self.width_choices), len(self.e)
        total = len(self.stem_depths) * nw * nw
        total *= math.prod(nw * sum(ne ** (b + x) for x in self.d) for b in self.base_depth)
        return total * len(self.r) if with_resolution else total
