"""`SearchSpace`: the allowed values of every elastic dimension, with sampling and search helpers.

All randomness goes through an explicit ``numpy.random.Generator`` so that runs are reproducible and
several samplers never share hidden global state.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
import itertools
import math
import numbers
from typing import Any, Iterable, Mapping

import numpy as np

from elastic.config import SubnetConfig


def _choices(name: str, values: Any) -> tuple:
    """The sorted distinct allowed values of one dimension: positive integers (positive finite numbers for
    the expand ratios ``e``); ``ValueError`` naming the first bad value otherwise."""
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise ValueError(f"SearchSpace.{name}={values!r} must be a list of values")
    values = list(values)
    for v in values:
        ok = (isinstance(v, numbers.Real) and math.isfinite(v) and v > 0 if name == "e"
              else isinstance(v, numbers.Integral) and v > 0)
        if isinstance(v, bool) or not ok:
            kind = "positive finite numbers" if name == "e" else "positive integers"
            raise ValueError(f"SearchSpace.{name} holds {v!r}; allowed: {kind}")
    vals = tuple(sorted({int(v) if isinstance(v, numbers.Integral) else float(v) for v in values}))
    if not vals:
        raise ValueError(f"SearchSpace.{name} must list at least one value")
    return vals


class SlotSpace:
    """What every family's space shares: block slots per stage (``slots``), resolutions ``r`` and
    ``validate(cfg)``; from them the slot count and offsets, membership and resolution checks."""

    @property
    def n_blocks(self) -> int:
        """Block slots in all (the length of a config's per-slot genes)."""
        return sum(self.slots)  # type: ignore[attr-defined]

    @property
    def stage_offsets(self) -> tuple[int, ...]:
        """Index of every stage's first slot in a config's per-slot genes."""
        return tuple(itertools.accumulate(self.slots, initial=0))[:-1]  # type: ignore[attr-defined]

    def __contains__(self, cfg: object) -> bool:
        try:
            self.validate(cfg)  # type: ignore[attr-defined]
        except ValueError:
            return False
        return True

    def _restricted(self, what: str, allowed: Mapping[str, tuple], chosen: Mapping[str, Any]) -> dict[str, tuple]:
        """The values ``chosen`` per dimension, checked against ``allowed`` (unset: the largest value; the
        resolution: all); the largest depth must stay, since it fixes the number of block slots."""
        unknown = sorted(set(chosen) - set(allowed))
        if unknown:  # a dimension this space does not have (another family's, a typo) is never ignored
            name = unknown[0]
            raise ValueError(f"{what}: {name}={list(chosen[name])} is not an elastic dimension of this supernet; "
                             f"allowed: {list(allowed)}")
        values = {}
        for name, ok in allowed.items():
            v = chosen.get(name)
            v = (ok if name == "r" else (max(ok),)) if v is None else tuple(v)
            bad = [x for x in v if x not in ok]
            if bad:
                raise ValueError(f"{what}: {name}={list(v)} has {bad} outside the space; allowed: {list(ok)}")
            values[name] = v
        top = max(allowed["d"])
        if max(values["d"]) != top:
            raise ValueError(f"{what}: d={list(values['d'])} must include the space's largest depth {top} "
                             "(the number of block slots per stage is fixed)")
        return values

    def _resolution(self, r: Any) -> int:
        """``r`` if it is one of the space's resolutions; a ``ValueError`` naming the allowed ones otherwise."""
        if isinstance(r, bool) or r not in self.r:  # type: ignore[attr-defined]
            raise ValueError(f"r={r!r} is outside the space; allowed: {list(self.r)}")  # type: ignore[attr-defined]
        return int(r)


@dataclass(frozen=True)
class SearchSpace(SlotSpace):
    """Allowed kernel sizes, expand ratios, stage depths and resolutions of a supernet.

    Attributes:
        ks: Allowed depthwise kernel sizes.
        e: Allowed expand ratios.
        d: Allowed depths per stage.
        r: Allowed input resolutions.
        n_stages: Number of elastic-depth stages.
        stage_slots: Block slots of each stage; ``None`` (the usual case) gives every stage ``max(d)``.
            A stage with fewer slots runs ``min(depth, slots)`` blocks, so its depth choices are
            ``{min(v, slots) for v in d}`` (OFA-ProxylessNAS's last stage: one slot, depth always 1).
    """

    ks: tuple[int, ...]
    e: tuple[int | float, ...]
    d: tuple[int, ...]
    r: tuple[int, ...]
    n_stages: int
    stage_slots: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("ks", "e", "d", "r"):
            object.__setattr__(self, name, _choices(name, getattr(self, name)))
        if any(k % 2 == 0 for k in self.ks):
            raise ValueError(f"SearchSpace.ks={self.ks} must hold odd kernel sizes only")
        if isinstance(self.n_stages, bool) or not isinstance(self.n_stages, int) or self.n_stages < 1:
            raise ValueError(f"SearchSpace.n_stages={self.n_stages!r} must be a positive integer")
        slots = self.stage_slots
        if slots is not None:
            if isinstance(slots, (str, bytes, Mapping)) or not isinstance(slots, Iterable):
                raise ValueError(f"SearchSpace.stage_slots={slots!r} must be a list of {self.n_stages} slot counts")
            slots = tuple(slots)
            if len(slots) != self.n_stages or any(isinstance(v, bool) or not isinstance(v, numbers.Integral)
                                                  or not 1 <= v <= max(self.d) for v in slots):
                raise ValueError(f"SearchSpace.stage_slots={list(slots)!r} must hold {self.n_stages} integers; "
                                 f"allowed: 1 to {max(self.d)} (the largest depth)")
            slots = tuple(int(v) for v in slots)
            if all(v == max(self.d) for v in slots):
                slots = None  # the uniform layout has one spelling, so equal spaces compare equal
        object.__setattr__(self, "stage_slots", slots)

    # ------------------------------------------------------------------ shape
    @property
    def max_depth(self) -> int:
        """The largest depth (block slots of a full stage)."""
        return max(self.d)

    @property
    def slots(self) -> tuple[int, ...]:
        """Block slots of every stage."""
        return self.stage_slots or (self.max_depth,) * self.n_stages

    @property
    def uniform(self) -> bool:
        """Whether every stage has ``max(d)`` slots (then ``SubnetConfig.active_blocks`` needs no space)."""
        return self.stage_slots is None

    @property
    def depth_choices(self) -> tuple[tuple[int, ...], ...]:
        """Allowed depths of every stage (``d``, clipped to the stage's slots)."""
        return tuple(tuple(sorted({min(v, n) for v in self.d})) for n in self.slots)

    @property
    def deepest(self) -> tuple[int, ...]:
        """Every stage at its largest depth."""
        return self.slots

    # ------------------------------------------------- genes (elastic.batch)
    def gene_groups(self) -> tuple[tuple[str, tuple[tuple, ...]], ...]:
        """``(name, allowed values per column)`` of the genome: kernels and ratios per slot, depths per stage,
        the resolution last."""
        n = self.n_blocks
        return (("ks", (self.ks,) * n), ("e", (self.e,) * n), ("d", self.depth_choices), ("r", (self.r,)))

    config_type = SubnetConfig  # the config value of this family
    encoded_groups = (("ks", True), ("e", True))  # OFA's MobileNetArchEncoder: kernel and ratio per active slot

    @cached_property
    def _slot_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        stage = np.repeat(np.arange(self.n_stages, dtype=np.intp), self.slots)
        pos = np.arange(self.n_blocks, dtype=np.intp) - np.asarray(self.stage_offsets, dtype=np.intp)[stage]
        width = max(len(c) for c in self.depth_choices)
        depths = np.array([list(c) + [c[-1]] * (width - len(c)) for c in self.depth_choices], dtype=np.intp)
        masks = np.arange(self.max_depth)[None, :] < np.asarray(self.d)[:, None]  # [depth index, slot of a stage]
        return stage, pos, depths, masks

    def active_slots(self, genes: Mapping[str, np.ndarray]) -> np.ndarray:
        """``[N, slots]``: the slots that run, from depth indices ``genes["d"]`` ``[N, stages]``."""
        stage, pos, depths, masks = self._slot_arrays
        d = genes["d"]
        if self.uniform:  # one mask row per stage, gathered at once (the search's hot path)
            return np.take(masks, d, axis=0).reshape(len(d), -1)
        return pos < depths[stage, d[:, stage]]

    @property
    def n_slot_variants(self) -> int:
        """Variants of one block slot: every (kernel, ratio) pair."""
        return len(self.ks) * len(self.e)

    def slot_variants(self, genes: Mapping[str, np.ndarray]) -> np.ndarray:
        """``[N, slots]``: each slot's variant ``k_index * |e| + e_index``."""
        return genes["ks"].astype(np.intp) * len(self.e) + genes["e"]

    n_fixed_variants = 1  # the stem, first block and head depend on the resolution only

    def fixed_variants(self, genes: Mapping[str, np.ndarray]) -> np.ndarray:
        """``[N]`` zeros: one variant of the always-present layers per resolution."""
        return np.zeros(len(genes["r"]), dtype=np.intp)

    def config_values(self, cfg: SubnetConfig) -> dict[str, tuple]:
        """Per gene group values of ``cfg`` (structure only; :meth:`validate` checks membership)."""
        if not isinstance(cfg, SubnetConfig):
            raise ValueError(f"expected a SubnetConfig, got {type(cfg).__name__}")
        return {"ks": cfg.ks, "e": cfg.e, "d": cfg.d, "r": (cfg.r,)}

    @staticmethod
    def config_from_values(values: Mapping[str, tuple]) -> SubnetConfig:
        """Inverse of :meth:`config_values`."""
        return SubnetConfig(ks=values["ks"], e=values["e"], d=values["d"], r=values["r"][0])

    elastic_dims = ("ks", "e", "d", "r")  # what a training phase may restrict

    def restrict(self, what: str = "restriction", **chosen: Any) -> "SearchSpace":
        """The sub-space allowing only ``chosen`` values (``ks``, ``e``, ``d``, ``r``; an unset dimension keeps
        its largest value, the resolution all of them); its configs fit this space's supernet."""
        values = self._restricted(what, {n: getattr(self, n) for n in self.elastic_dims}, chosen)
        return SearchSpace(n_stages=self.n_stages, stage_slots=self.stage_slots, **values)

    def around(self, cfg: SubnetConfig) -> "SearchSpace":
        """The smallest sub-space holding ``cfg`` (its own values; a short stage's depth is a clip)."""
        c = self.validate(cfg)
        depths = {v for v in c.d if v in self.d} | {self.max_depth}
        return SearchSpace(ks=set(c.ks), e=set(c.e), d=depths, r=(c.r,), n_stages=self.n_stages,
                           stage_slots=self.stage_slots)

    def choices(self) -> dict[str, list]:
        """The elastic dimensions' allowed values by their plain names (summaries, ``ofakit zoo list``)."""
        return {"kernel_sizes": list(self.ks), "expand_ratios": list(self.e), "depths": list(self.d)}

    def active_blocks(self, cfg: SubnetConfig) -> list[int]:
        """Indices (into ``cfg.ks``/``cfg.e``) of the blocks that run, in order (``cfg`` must fit the space)."""
        return [o + i for o, depth in zip(self.stage_offsets, cfg.d) for i in range(depth)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``stage_slots`` only when not every stage has ``max(d)`` slots)."""
        out = {"ks": list(self.ks), "e": list(self.e), "d": list(self.d), "r": list(self.r),
               "n_stages": self.n_stages}
        if self.stage_slots is not None:
            out["stage_slots"] = list(self.stage_slots)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SearchSpace":
        """Inverse of :meth:`to_dict`."""
        missing = [k for k in ("ks", "e", "d", "r", "n_stages") if not isinstance(data, Mapping) or k not in data]
        if missing:
            raise ValueError(f"SearchSpace is missing key(s) {missing}; required: ['ks', 'e', 'd', 'r', 'n_stages']")
        return cls(ks=data["ks"], e=data["e"], d=data["d"], r=data["r"],
                   n_stages=data["n_stages"], stage_slots=data.get("stage_slots"))

    # ------------------------------------------------------------- validation
    def validate(self, cfg: SubnetConfig) -> SubnetConfig:
        """Return ``cfg`` if it belongs to this space, else raise ``ValueError`` naming the bad value."""
        if not isinstance(cfg, SubnetConfig):
            raise ValueError(f"expected a SubnetConfig, got {type(cfg).__name__}")
        if len(cfg.d) != self.n_stages:
            raise ValueError(f"SubnetConfig.d has {len(cfg.d)} entries; this space has {self.n_stages} stages")
        layout = (f"{self.n_stages} stages x {self.max_depth} blocks" if self.uniform
                  else f"block slots per stage: {list(self.slots)}")
        for name, n in (("ks", self.n_blocks), ("e", self.n_blocks)):
            got = len(getattr(cfg, name))
            if got != n:
                raise ValueError(f"SubnetConfig.{name} has {got} entries; this space needs {n} ({layout})")
        for name in ("ks", "e"):
            allowed = getattr(self, name)
            for i, v in enumerate(getattr(cfg, name)):
                if v not in allowed:
                    raise ValueError(f"SubnetConfig.{name}[{i}]={v!r} is outside the space; allowed: {list(allowed)}")
        for i, (v, allowed) in enumerate(zip(cfg.d, self.depth_choices)):
            if v not in allowed:
                raise ValueError(f"SubnetConfig.d[{i}]={v!r} is outside the space; allowed: {list(allowed)}")
        if cfg.r not in self.r:
            raise ValueError(f"SubnetConfig.r={cfg.r!r} is outside the space; allowed: {list(self.r)}")
        return cfg

    # ---------------------------------------------------------------- members
    def largest(self, r: int | None = None) -> SubnetConfig:
        """The widest, deepest subnet with the largest kernels (at the largest resolution by default)."""
        n = self.n_blocks
        return SubnetConfig(ks=(max(self.ks),) * n, e=(max(self.e),) * n, d=self.deepest,
                            r=max(self.r) if r is None else self._resolution(r))

    def smallest(self, r: int | None = None) -> SubnetConfig:
        """The narrowest, shallowest subnet with the smallest kernels (smallest resolution by default)."""
        n = self.n_blocks
        return SubnetConfig(ks=(min(self.ks),) * n, e=(min(self.e),) * n, d=tuple(c[0] for c in self.depth_choices),
                            r=min(self.r) if r is None else self._resolution(r))

    def sample(self, rng: np.random.Generator, r: int | None = None) -> SubnetConfig:
        """Draw every dimension uniformly and independently, as OFA does (``r`` fixes the resolution; a stage
        with fewer slots than the drawn depth runs all of them, as OFA-ProxylessNAS's last stage does)."""
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng={rng!r} must be a numpy.random.Generator, e.g. np.random.default_rng(0)")
        n = self.n_blocks
        ks = rng.choice(len(self.ks), size=n)
        e = rng.choice(len(self.e), size=n)
        d = rng.choice(len(self.d), size=self.n_stages)
        ri = rng.choice(len(self.r))
        return SubnetConfig(ks=tuple(self.ks[i] for i in ks), e=tuple(self.e[i] for i in e),
                            d=tuple(min(self.d[i], n) for i, n in zip(d, self.slots)),
                            r=self.r[ri] if r is None else self._resolution(r))

    def canonical(self, cfg: SubnetConfig) -> SubnetConfig:
        """Same architecture with inactive block slots set to the smallest choices.

        Two configs describe the same network exactly when their canonical forms are equal.
        """
        self.validate(cfg)
        active = set(self.active_blocks(cfg))
        ks = tuple(k if i in active else min(self.ks) for i, k in enumerate(cfg.ks))
        e = tuple(v if i in active else min(self.e) for i, v in enumerate(cfg.e))
        return SubnetConfig(ks=ks, e=e, d=cfg.d, r=cfg.r)

    def size(self, with_resolution: bool = True) -> int:
        """Number of distinct subnets (architectures, times resolutions by default).

        A stage of depth ``d`` has ``(|ks| * |e|) ** d`` variants; inactive slots do not count.
        """
        per_block = len(self.ks) * len(self.e)
        total = math.prod(sum(per_block**depth for depth in choices) for choices in self.depth_choices)
        return total * len(self.r) if with_resolution else total
