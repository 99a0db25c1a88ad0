"""`ResNetSpace`: the allowed depths, expand ratios, width multipliers and resolutions of an elastic ResNet.

OFA-ResNet50's rules: stage ``i`` has ``base_depth[i] + max(d)`` block slots and runs the first
``base_depth[i] + d[i + 1]``; the stem's residual 3x3 conv runs only when ``d[0]`` is the largest depth
(``d[0]`` is either the smallest or the largest); every block of a stage has the stage's width.
Randomness goes through an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping

import numpy as np

from elastic.resnet.config import ResNetConfig
from elastic.space import _choices

_KEYS = ("d", "e", "widths", "r", "base_depth")


@dataclass(frozen=True)
class ResNetSpace:
    """Allowed values of every elastic dimension of an OFA-style ResNet.

    Attributes:
        d: Allowed extra depths per stage (e.g. ``(0, 1, 2)``).
        e: Allowed expand ratios (bottleneck width over output width).
        widths: Width multipliers; configs hold indices into them (OFA's ``w``).
        r: Allowed input resolutions.
        base_depth: Blocks every subnet runs in each stage.
    """

    d: tuple[int, ...]
    e: tuple[int | float, ...]
    widths: tuple[float, ...]
    r: tuple[int, ...]
    base_depth: tuple[int, ...]

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
    def n_blocks(self) -> int:
        """Length of a config's ``e``."""
        return sum(self.slots)

    @property
    def stage_offsets(self) -> tuple[int, ...]:
        """Index into ``e`` of every stage's first slot."""
        return tuple(itertools.accumulate(self.slots, initial=0))[:-1]

    @property
    def stem_depths(self) -> tuple[int, ...]:
        """Allowed ``d[0]``: the smallest depth (stem residual conv skipped) or the largest (it runs)."""
        return tuple(sorted({min(self.d), max(self.d)}))

    def stem_residual(self, cfg: ResNetConfig) -> bool:
        """Whether the stem's residual 3x3 conv runs for ``cfg``."""
        return cfg.d[0] == max(self.d)

    # ------------------------------------------------- genes (elastic.batch)
    def gene_groups(self) -> tuple[tuple[str, tuple[tuple, ...]], ...]:
        """``(name, allowed values per column)`` of the genome: depths (the stem's first), ratios per slot,
        width indices, the resolution last."""
        n, w = self.n_stages, tuple(range(len(self.widths)))
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

    def slot_variants(self, genes: Mapping[str, np.ndarray]) -> np.ndarray:
        """``[N, slots]``: each slot's variant ``(e_index * |w| + w_in) * |w| + w_out``."""
        stage, _, w_in, _ = self._slot_arrays
        nw, w = len(self.widths), genes["w"].astype(np.intp)
        return (genes["e"].astype(np.intp) * nw + w[:, w_in]) * nw + w[:, 2 + stage]

    @property
    def n_fixed_variants(self) -> int:
        """Variants of the stem and classifier: stem depth x its two widths x the last stage's width."""
        return len(self.stem_depths) * len(self.widths) ** 3

    def fixed_variants(self, genes: Mapping[str, np.ndarray]) -> np.ndarray:
        """``[N]``: ``((d0_index * |w| + w0) * |w| + w1) * |w| + w_last``."""
        nw, w = len(self.widths), genes["w"].astype(np.intp)
        return ((genes["d"][:, 0].astype(np.intp) * nw + w[:, 0]) * nw + w[:, 1]) * nw + w[:, -1]

    def config_values(self, cfg: ResNetConfig) -> dict[str, tuple]:
        """Per gene group values of ``cfg`` (structure only; :meth:`validate` checks membership)."""
        if not isinstance(cfg, ResNetConfig):
            raise ValueError(f"expected a ResNetConfig, got {type(cfg).__name__}")
        return {"d": cfg.d, "e": cfg.e, "w": cfg.w, "r": (cfg.r,)}

    @staticmethod
    def config_from_values(values: Mapping[str, tuple]) -> ResNetConfig:
        """Inverse of :meth:`config_values`."""
        return ResNetConfig(d=values["d"], e=values["e"], w=tuple(int(v) for v in values["w"]), r=values["r"][0])

    def choices(self) -> dict[str, list]:
        """The elastic dimensions' allowed values by their plain names (summaries, ``ofakit zoo list``)."""
        return {"depths": list(self.d), "expand_ratios": list(self.e), "width_multipliers": list(self.widths),
                "base_depths": list(self.base_depth)}

    def active_blocks(self, cfg: ResNetConfig) -> list[int]:
        """Indices (into ``cfg.e``) of the blocks that run, in order."""
        return [o + i for o, b, extra in zip(self.stage_offsets, self.base_depth, cfg.d[1:]) for i in range(b + extra)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"d": list(self.d), "e": list(self.e), "widths": list(self.widths), "r": list(self.r),
                "base_depth": list(self.base_depth)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ResNetSpace":
        """Inverse of :meth:`to_dict`."""
        missing = [k for k in _KEYS if not isinstance(data, Mapping) or k not in data]
        if missing:
            raise ValueError(f"ResNetSpace is missing key(s) {missing}; required: {list(_KEYS)}")
        return cls(**{k: data[k] for k in _KEYS})

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
        for name, values, allowed in (("d", cfg.d[1:], self.d), ("w", cfg.w, range(len(self.widths))),
                                      ("e", cfg.e, self.e)):
            for i, v in enumerate(values):
                if v not in allowed:
                    where = i + 1 if name == "d" else i
                    raise ValueError(f"ResNetConfig.{name}[{where}]={v!r} is outside the space; "
                                     f"allowed: {list(allowed)}")
        if cfg.r not in self.r:
            raise ValueError(f"ResNetConfig.r={cfg.r!r} is outside the space; allowed: {list(self.r)}")
        return cfg

    def __contains__(self, cfg: object) -> bool:
        try:
            self.validate(cfg)  # type: ignore[arg-type]
        except ValueError:
            return False
        return True

    # ---------------------------------------------------------------- members
    def _resolution(self, r: Any) -> int:
        if isinstance(r, bool) or r not in self.r:
            raise ValueError(f"r={r!r} is outside the space; allowed: {list(self.r)}")
        return int(r)

    def largest(self, r: int | None = None) -> ResNetConfig:
        """Every stage at its deepest, widest, with the largest expand ratio (largest resolution by default)."""
        n = self.n_stages
        return ResNetConfig(d=(max(self.d),) * (n + 1), e=(max(self.e),) * self.n_blocks,
                            w=(len(self.widths) - 1,) * (n + 2), r=max(self.r) if r is None else self._resolution(r))

    def smallest(self, r: int | None = None) -> ResNetConfig:
        """The shallowest, narrowest subnet (smallest resolution by default)."""
        n = self.n_stages
        return ResNetConfig(d=(min(self.d),) * (n + 1), e=(min(self.e),) * self.n_blocks, w=(0,) * (n + 2),
                            r=min(self.r) if r is None else self._resolution(r))

    def sample(self, rng: np.random.Generator, r: int | None = None) -> ResNetConfig:
        """Draw every gene uniformly and independently, as OFA's ``sample_active_subnet`` (``r`` fixes the
        resolution)."""
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng={rng!r} must be a numpy.random.Generator, e.g. np.random.default_rng(0)")
        n = self.n_stages
        e = rng.choice(len(self.e), size=self.n_blocks)
        stem = self.stem_depths[rng.choice(len(self.stem_depths))]
        d = rng.choice(len(self.d), size=n)
        w = rng.choice(len(self.widths), size=n + 2)
        ri = rng.choice(len(self.r))
        return ResNetConfig(d=(stem, *(self.d[i] for i in d)), e=tuple(self.e[i] for i in e),
                            w=tuple(int(i) for i in w), r=self.r[ri] if r is None else self._resolution(r))

    def canonical(self, cfg: ResNetConfig) -> ResNetConfig:
        """Same architecture with inactive block slots at the smallest expand ratio."""
        self.validate(cfg)
        active = set(self.active_blocks(cfg))
        e = tuple(v if i in active else min(self.e) for i, v in enumerate(cfg.e))
        return ResNetConfig(d=cfg.d, e=e, w=cfg.w, r=cfg.r)

    def size(self, with_resolution: bool = True) -> int:
        """Number of distinct subnets (architectures, times resolutions by default)."""
        nw, ne = len(self.widths), len(self.e)
        total = len(self.stem_depths) * nw * nw
        total *= math.prod(nw * sum(ne ** (b + x) for x in self.d) for b in self.base_depth)
        return total * len(self.r) if with_resolution else total
