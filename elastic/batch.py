"""Vectorised populations of subnets: many configs as index arrays, OFA's one-hot encoding, exact costs.

Search and predictors handle thousands of subnets at a time; a :class:`ConfigBatch` holds them as small
integer arrays (indices into the space's choices) so that sampling, encoding and cost lookups are a few
numpy operations for the whole population (the search's mutation and crossover work on
:meth:`ConfigBatch.genome` the same way). :class:`SubnetConfig` stays the value that
crosses API boundaries; :meth:`ConfigBatch.from_configs` / :meth:`ConfigBatch.configs` convert.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

from elastic.config import SubnetConfig
from elastic.space import SearchSpace
from elastic.spec import MobileNetV3Spec, block_costs, costs, plan

_FIELDS = ("ks", "e", "d", "r")


@dataclass(frozen=True, eq=False)
class ConfigBatch:
    """``N`` subnets of ``space``: ``ks``/``e`` ``[N, slots]``, ``d`` ``[N, stages]``, ``r`` ``[N]`` (choice indices;
    ``d`` indexes each stage's own ``space.depth_choices``)."""

    space: SearchSpace
    ks: np.ndarray
    e: np.ndarray
    d: np.ndarray
    r: np.ndarray

    def __len__(self) -> int:
        return int(self.r.shape[0])

    # ------------------------------------------------------------ building
    @classmethod
    def from_configs(cls, space: SearchSpace, cfgs: Sequence[SubnetConfig]) -> "ConfigBatch":
        """Index arrays of ``cfgs``; any value outside ``space`` raises ``ValueError`` naming it."""
        if not cfgs:
            return cls.from_values(space, np.zeros((0, space.n_blocks)), np.zeros((0, space.n_blocks)),
                                   np.zeros((0, space.n_stages)), np.zeros(0))
        bad_type = next((c for c in cfgs if not isinstance(c, SubnetConfig)), None)
        if bad_type is not None:
            raise ValueError(f"{str(bad_type)[:80]!r} is a {type(bad_type).__name__}, not a SubnetConfig "
                             "(build one with SubnetConfig.from_dict)")
        for name, n in (("ks", space.n_blocks), ("e", space.n_blocks), ("d", space.n_stages)):
            bad = next((c for c in cfgs if len(getattr(c, name)) != n), None)
            if bad is not None:
                space.validate(bad)  # raises with the precise message
        return cls.from_values(space, np.array([c.ks for c in cfgs]), np.array([c.e for c in cfgs]),
                               np.array([c.d for c in cfgs]), np.array([c.r for c in cfgs]))

    @classmethod
    def from_values(cls, space: SearchSpace, ks: np.ndarray, e: np.ndarray, d: np.ndarray,
                    r: np.ndarray) -> "ConfigBatch":
        """From value arrays (kernel sizes, ratios, depths, resolutions); raises on values outside the space."""
        def index(name: str, values: np.ndarray, allowed: tuple | None = None) -> np.ndarray:
            allowed = np.asarray(getattr(space, name) if allowed is None else allowed)
            values = np.asarray(values)
            pos = np.clip(np.searchsorted(allowed, values), 0, len(allowed) - 1)
            bad = allowed[pos] != values
            if np.any(bad):
                raise ValueError(f"SubnetConfig.{name}={values[bad].flat[0].item()!r} is outside the space; "
                                 f"allowed: {allowed.tolist()}")
            return pos.astype(np.int8)

        d = np.asarray(d)
        if space.uniform or d.ndim != 2 or d.shape[1] != space.n_stages:
            d_idx = index("d", d)
        else:  # each stage has its own depth choices
            d_idx = np.stack([index("d", d[:, i], c) for i, c in enumerate(space.depth_choices)], axis=1)
        batch = cls(space, index("ks", ks), index("e", e), d_idx.reshape(d.shape), index("r", r))
        n = len(batch)
        for name, shape in (("ks", (n, space.n_blocks)), ("e", (n, space.n_blocks)), ("d", (n, space.n_stages))):
            if getattr(batch, name).shape != shape:
                raise ValueError(f"config array {name!r} has shape {getattr(batch, name).shape}; expected {shape}")
        return batch

    @classmethod
    def random(cls, space: SearchSpace, n: int, rng: np.random.Generator) -> "ConfigBatch":
        """``n`` subnets with every choice drawn uniformly (as :meth:`SearchSpace.sample`)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n={n!r} must be a number of subnets (an integer >= 0)")
        g = (rng.random((n, genome_length(space))) * _cardinalities(space)).astype(np.int8)
        return cls.from_genome(space, g)

    # ------------------------------------------------------------- genome
    def genome(self) -> np.ndarray:
        """One int8 row per subnet: ``ks``, ``e``, ``d`` indices then the resolution index."""
        return np.concatenate([self.ks, self.e, self.d, self.r[:, None]], axis=1)

    @classmethod
    def from_genome(cls, space: SearchSpace, g: np.ndarray) -> "ConfigBatch":
        """Inverse of :meth:`genome`; a row of the wrong length or a gene outside its choices raises."""
        g = np.asarray(g)
        if g.ndim != 2 or g.shape[1] != genome_length(space):
            raise ValueError(f"genome of shape {g.shape} does not fit the space; allowed: (N, {genome_length(space)})")
        if g.size and (np.any(g < 0) or np.any(g >= _cardinalities(space))):
            raise ValueError(f"genome holds a gene outside its choices; allowed per column: 0 to "
                             f"{(_cardinalities(space) - 1).tolist()}")
        b, s = space.n_blocks, space.n_stages
        return cls(space, g[:, :b], g[:, b:2 * b], g[:, 2 * b:2 * b + s], g[:, 2 * b + s])

    def take(self, idx: np.ndarray) -> "ConfigBatch":
        """The subnets at ``idx`` (indices or a boolean mask)."""
        return ConfigBatch(self.space, self.ks[idx], self.e[idx], self.d[idx], self.r[idx])

    @property
    def active(self) -> np.ndarray:
        """``[N, slots]`` booleans: which block slots run (computed once per batch)."""
        act = self.__dict__.get("_active")
        if act is None:
            lay = _layout(self.space)
            depth = lay.depths[lay.slot_stage, self.d[:, lay.slot_stage]]  # [N, slots]: the slot's stage depth
            act = lay.slot_pos < depth
            object.__setattr__(self, "_active", act)
        return act

    @property
    def slot_choice(self) -> np.ndarray:
        """``[N, slots]`` intp: each slot's (kernel, expand) variant as ``slot * n_ks * n_e + k * n_e + e``.

        One flat index per slot into any per-slot table laid out ``[slot, k, e]`` (computed once per batch).
        """
        idx = self.__dict__.get("_slot_choice")
        if idx is None:
            lay = _layout(self.space)
            idx = lay.slot_offsets + self.ks.astype(np.intp) * lay.n_e + self.e
            object.__setattr__(self, "_slot_choice", idx)
        return idx

    def canonical_genome(self) -> np.ndarray:
        """:meth:`genome` with inactive slots set to index 0: equal rows mean the same network."""
        act = self.active
        return np.concatenate([np.where(act, self.ks, 0), np.where(act, self.e, 0), self.d, self.r[:, None]],
                              axis=1).astype(np.int8)

    # ------------------------------------------------------------ output
    def values(self) -> dict[str, np.ndarray]:
        """Value arrays ``ks``, ``e``, ``d``, ``r`` (what predictors that take mappings accept)."""
        sp = self.space
        depths = _layout(sp).depths
        return {"ks": np.asarray(sp.ks)[self.ks], "e": np.asarray(sp.e)[self.e],
                "d": depths[np.arange(sp.n_stages), self.d], "r": np.asarray(sp.r)[self.r]}

    def config(self, i: int) -> SubnetConfig:
        """Subnet ``i`` as a :class:`SubnetConfig`."""
        sp = self.space
        return SubnetConfig(ks=tuple(sp.ks[j] for j in self.ks[i]), e=tuple(sp.e[j] for j in self.e[i]),
                            d=tuple(c[j] for c, j in zip(sp.depth_choices, self.d[i])), r=sp.r[int(self.r[i])])

    def configs(self) -> list[SubnetConfig]:
        """All subnets as :class:`SubnetConfig` values."""
        return [self.config(i) for i in range(len(self))]

    def onehot(self) -> np.ndarray:
        """OFA's architecture encoding, ``[N, n_r + slots * (n_ks + n_e)]`` float32.

        Layout as in OFA's ``MobileNetArchEncoder``: one-hot resolution, then per slot a one-hot kernel
        size, then per slot a one-hot expand ratio; inactive slots are all zeros.
        """
        sp, n = self.space, len(self)
        nr, nk, ne, b = len(sp.r), len(sp.ks), len(sp.e), sp.n_blocks
        width = nr + b * (nk + ne)
        slot = np.arange(b, dtype=np.intp)
        act = self.active
        cols = np.empty((n, 1 + 2 * b), dtype=np.intp)  # inactive slots write to a spare last column
        cols[:, 0] = self.r
        np.copyto(cols[:, 1:b + 1], nr + slot * nk + self.ks)
        np.copyto(cols[:, b + 1:], nr + b * nk + slot * ne + self.e)
        cols[:, 1:b + 1][~act] = width
        cols[:, b + 1:][~act] = width
        cols += (np.arange(n, dtype=np.intp) * (width + 1))[:, None]
        out = np.zeros((n, width + 1), dtype=np.float32)
        np.put(out, cols, 1.0)
        return out[:, :width]

    def onehot_dot(self, w: np.ndarray) -> np.ndarray:
        """``self.onehot() @ w`` for a weight vector ``w`` ``[width]``, by gathering the active entries."""
        sp = self.space
        nr, nk, ne, b = len(sp.r), len(sp.ks), len(sp.e), sp.n_blocks
        per_variant = w[nr:nr + b * nk].reshape(b, nk, 1) + w[nr + b * nk:].reshape(b, 1, ne)
        picked = np.take(per_variant, self.slot_choice)
        return np.take(w, self.r) + np.einsum("ij,ij->i", picked, self.active)


def space_cardinalities(space: SearchSpace) -> list[int]:
    """Number of choices of every gene of :meth:`ConfigBatch.genome`."""
    return _cardinalities(space).tolist()


@lru_cache(maxsize=32)
def _cardinalities(space: SearchSpace) -> np.ndarray:
    """Choices per genome column (shared, read-only)."""
    b = space.n_blocks
    out = np.array([len(space.ks)] * b + [len(space.e)] * b + [len(c) for c in space.depth_choices]
                   + [len(space.r)])
    out.flags.writeable = False
    return out


@dataclass(frozen=True)
class _Layout:
    n_e: int
    slot_offsets: np.ndarray  # [slots]: offset of each slot's [k, e] block in a flat per-slot table
    slot_stage: np.ndarray  # [slots]: the stage of each slot
    slot_pos: np.ndarray  # [slots]: position of each slot inside its stage
    depths: np.ndarray  # [stages, max choices]: depth value of each stage's depth index (padded)


@lru_cache(maxsize=32)
def _layout(space: SearchSpace) -> _Layout:
    per_slot = len(space.ks) * len(space.e)
    stage = np.repeat(np.arange(space.n_stages, dtype=np.intp), space.slots)
    pos = np.arange(space.n_blocks, dtype=np.intp) - np.asarray(space.stage_offsets, dtype=np.intp)[stage]
    width = max(len(c) for c in space.depth_choices)
    depths = np.array([list(c) + [c[-1]] * (width - len(c)) for c in space.depth_choices], dtype=np.intp)
    return _Layout(len(space.e), np.arange(space.n_blocks, dtype=np.intp) * per_slot, stage, pos, depths)


def genome_length(space: SearchSpace) -> int:
    """Genes per subnet."""
    return 2 * space.n_blocks + space.n_stages + 1


@dataclass(frozen=True, eq=False)
class SlotTable:
    """A value for every block variant, ``per_block[slot, r, k, e]`` (choice indices), plus ``fixed[r]`` for
    the layers every subnet runs; :meth:`sum` totals them over each subnet's active slots (costs, latencies)."""

    per_block: np.ndarray
    fixed: np.ndarray

    def __post_init__(self) -> None:
        slots, _, nk, ne = self.per_block.shape  # stored [r, slot, k, e]: one offset per r + batch.slot_choice
        object.__setattr__(self, "_by_r", np.ascontiguousarray(np.transpose(self.per_block, (1, 0, 2, 3))).ravel())
        object.__setattr__(self, "_per_r", slots * nk * ne)

    def sum(self, batch: ConfigBatch) -> np.ndarray:
        """``[N]``: the fixed value at each subnet's resolution plus its active blocks' values."""
        r = batch.r.astype(np.intp)
        picked = np.take(self._by_r, (r * self._per_r)[:, None] + batch.slot_choice)
        return np.einsum("ij,ij->i", picked, batch.active) + np.take(self.fixed, r)


@dataclass(frozen=True, eq=False)
class CostGrid:
    """Exact MACs and parameters of every block variant, for vectorised cost lookups.

    ``block_macs[slot, r, k, e]`` / ``block_params[...]`` (choice indices), and the cost of the always-present
    layers (stem, first block, head) per resolution in ``fixed_macs[r]`` / ``fixed_params[r]``.
    """

    block_macs: np.ndarray
    block_params: np.ndarray
    fixed_macs: np.ndarray
    fixed_params: np.ndarray

    @classmethod
    def build(cls, spec: MobileNetV3Spec) -> "CostGrid":
        """Plan every variant of ``spec``'s space once (a few hundred blocks)."""
        sp = spec.space
        shape = (sp.n_blocks, len(sp.r), len(sp.ks), len(sp.e))
        macs, params = np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
        fixed_m, fixed_p = np.zeros(len(sp.r), dtype=np.int64), np.zeros(len(sp.r), dtype=np.int64)
        deepest = sp.deepest
        for ri, r in enumerate(sp.r):
            for ki, k in enumerate(sp.ks):
                for ei, e in enumerate(sp.e):
                    cfg = SubnetConfig((k,) * sp.n_blocks, (e,) * sp.n_blocks, deepest, r)
                    for b in plan(spec, cfg)[1:]:
                        macs[b.slot, ri, ki, ei], params[b.slot, ri, ki, ei] = block_costs(b)
            smallest = sp.smallest(r)
            total_m, total_p = costs(spec, smallest)
            act = ConfigBatch.from_configs(sp, [smallest])
            fixed_m[ri] = total_m - macs[np.arange(sp.n_blocks), ri, act.ks[0], act.e[0]][act.active[0]].sum()
            fixed_p[ri] = total_p - params[np.arange(sp.n_blocks), ri, act.ks[0], act.e[0]][act.active[0]].sum()
        return cls(macs, params, fixed_m, fixed_p)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_macs", SlotTable(self.block_macs, self.fixed_macs))
        object.__setattr__(self, "_params", SlotTable(self.block_params, self.fixed_params))

    def macs(self, batch: ConfigBatch) -> np.ndarray:
        """Multiply-accumulates of every subnet (OFA's "FLOPs")."""
        return self._macs.sum(batch)

    def params(self, batch: ConfigBatch) -> np.ndarray:
        """Parameters of every extracted subnet."""
        return self._params.sum(batch)
