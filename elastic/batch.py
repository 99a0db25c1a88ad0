"""Vectorised populations of subnets: many configs as one gene array, OFA's one-hot encoding, exact costs.

Search and predictors handle thousands of subnets at a time; a :class:`ConfigBatch` holds them as one small
integer array (per gene, an index into its allowed values) so that sampling, encoding and cost lookups are
a few numpy operations for the whole population (the search's mutation and crossover work on
:meth:`ConfigBatch.genome` the same way). The genes and their meaning come from the space's family
(:class:`elastic.space.SearchSpace` for MBConv supernets, :class:`elastic.resnet.ResNetSpace`), which
provides:

- ``gene_groups()``: ``(name, allowed values per column)`` in genome order, the resolution ``r`` last;
- ``encoded_groups``: ``(name, per_slot)`` of the groups in the one-hot encoding after the resolution
  (a per-slot group shows only for active slots);
- ``active_slots(genes)``, ``slot_variants(genes)``, ``fixed_variants(genes)`` on ``{name: index array}``
  and ``n_slot_variants``/``n_fixed_variants``: which block slots run, which variant each slot runs (the
  index into per-slot cost and latency tables), and which variant of the always-present layers runs;
- ``config_values(cfg)`` / ``config_from_values(values)``: between a config value and per-group values.

The config value (``SubnetConfig``, ``ResNetConfig``) stays what crosses API boundaries;
:meth:`ConfigBatch.from_configs` / :meth:`ConfigBatch.configs` convert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class _Genes:
    names: tuple[str, ...]
    starts: tuple[int, ...]
    sizes: tuple[int, ...]
    card: np.ndarray  # choices per column (read-only)
    values: tuple[tuple, ...]  # allowed values per column
    slices: dict[str, slice]  # columns of every group
    encoding: tuple[tuple[slice, int, bool, np.ndarray], ...]  # (columns, width, per_slot, one-hot offsets)
    slot_cols: np.ndarray  # the per-slot encoded groups' columns, group after group (one gather for all)
    slot_offsets: np.ndarray  # their one-hot offsets, in the same order
    fixed_cols: np.ndarray  # the other encoded groups' columns
    fixed_offsets: np.ndarray


def _genes(space: Any) -> _Genes:
    """The space's gene layout, computed once and kept on the space (no hashing on the search's hot path)."""
    cached = space.__dict__.get("_gene_layout")
    if cached is None:
        cached = _layout(space)
        object.__setattr__(space, "_gene_layout", cached)  # frozen dataclasses: a cache, not a field
    return cached


def _layout(space: Any) -> _Genes:
    groups = space.gene_groups()
    names = tuple(n for n, _ in groups)
    if names[-1] != "r":
        raise ValueError(f"the resolution must be the last gene group, got {list(names)}")
    sizes = tuple(len(cols) for _, cols in groups)
    starts = tuple(int(s) for s in np.cumsum((0,) + sizes)[:-1])
    values = tuple(tuple(c) for _, cols in groups for c in cols)
    card = np.array([len(v) for v in values])
    card.flags.writeable = False
    slices = {n: slice(a, a + b) for n, a, b in zip(names, starts, sizes)}
    encoding, at = [], len(space.r)
    for name, per_slot in space.encoded_groups:
        widths = card[slices[name]]
        encoding.append((slices[name], int(widths.sum()), per_slot,
                         (at + np.concatenate([[0], np.cumsum(widths)[:-1]])).astype(np.intp)))
        at += int(widths.sum())

    def cols(per_slot: bool) -> tuple[np.ndarray, np.ndarray]:
        parts = [(np.arange(c.start, c.stop), off) for c, _, ps, off in encoding if ps == per_slot]
        return tuple(np.concatenate([p[i] for p in parts]).astype(np.intp) if parts else np.zeros(0, np.intp)
                     for i in (0, 1))

    return _Genes(names, starts, sizes, card, values, slices, tuple(encoding), *cols(True), *cols(False))


def space_cardinalities(space: Any) -> list[int]:
    """Number of choices of every gene of :meth:`ConfigBatch.genome`."""
    return _genes(space).card.tolist()


def genome_length(space: Any) -> int:
    """Genes per subnet."""
    return len(_genes(space).card)


@dataclass(frozen=True, eq=False)
class ConfigBatch:
    """``N`` subnets of ``space`` as one ``int8 [N, genes]`` array of choice indices.

    Each gene group is a view by its name (``batch.ks``, ``batch.e``, ``batch.d`` for MBConv spaces;
    ``batch.d``, ``batch.e``, ``batch.w`` for ResNet spaces; ``batch.r`` is ``[N]``).
    """

    space: Any
    g: np.ndarray

    def __len__(self) -> int:
        return int(self.g.shape[0])

    def __getattr__(self, name: str) -> np.ndarray:
        if name.startswith("_") or name in ("space", "g"):
            raise AttributeError(name)
        genes = _genes(self.space)
        if name not in genes.slices:
            raise AttributeError(f"{type(self.space).__name__} has no gene group {name!r}; groups: {list(genes.names)}")
        view = self.g[:, genes.slices[name]]
        return view[:, 0] if name == "r" else view

    def groups(self) -> dict[str, np.ndarray]:
        """``{name: index array}`` of every gene group (``r`` as ``[N]``)."""
        g = self.g
        out = {n: g[:, s] for n, s in _genes(self.space).slices.items()}
        out["r"] = out["r"][:, 0]
        return out

    # ------------------------------------------------------------ building
    @classmethod
    def from_configs(cls, space: Any, cfgs: Sequence[Any]) -> "ConfigBatch":
        """Index arrays of ``cfgs``; any value outside ``space`` raises ``ValueError`` naming it."""
        genes = _genes(space)
        if not cfgs:
            return cls(space, np.zeros((0, len(genes.card)), dtype=np.int8))
        kind = space.config_type
        bad_type = next((c for c in cfgs if not isinstance(c, kind)), None)
        if bad_type is not None:
            raise ValueError(f"{str(bad_type)[:80]!r} is a {type(bad_type).__name__}, not a {kind.__name__} "
                             f"(build one with {kind.__name__}.from_dict)")
        rows = []
        for c in cfgs:
            vals = space.config_values(c)
            if any(len(vals[n]) != s for n, s in zip(genes.names, genes.sizes)):
                space.validate(c)  # raises with the precise message
            rows.append([v for n in genes.names for v in vals[n]])
        arrays = np.array(rows, dtype=object)
        return cls.from_values(space, **{n: arrays[:, genes.slices[n]] for n in genes.names})

    @classmethod
    def from_values(cls, space: Any, **groups: np.ndarray) -> "ConfigBatch":
        """From value arrays per gene group (e.g. ``ks``, ``e``, ``d``, ``r``); raises on values outside the space."""
        genes = _genes(space)
        missing = [n for n in genes.names if n not in groups]
        unknown = sorted(set(groups) - set(genes.names))
        if missing or unknown:
            raise ValueError(f"config arrays {sorted(groups)} do not fit the space; required: {list(genes.names)}")
        n = len(np.asarray(groups["r"]).reshape(-1))
        out = np.empty((n, len(genes.card)), dtype=np.int8)
        for name, start, size in zip(genes.names, genes.starts, genes.sizes):
            vals = np.asarray(groups[name], dtype=object if name != "r" else None).reshape(n, -1)
            if vals.shape[1] != size:
                raise ValueError(f"config array {name!r} has shape {np.shape(groups[name])}; expected {(n, size)}")
            for j in range(size):
                allowed = np.asarray(genes.values[start + j])
                col = np.asarray(vals[:, j].tolist()) if n else np.zeros(0, dtype=allowed.dtype)
                pos = np.clip(np.searchsorted(allowed, col), 0, len(allowed) - 1)
                bad = allowed[pos] != col
                if np.any(bad):
                    raise ValueError(f"{space.config_type.__name__}.{name}={col[bad].flat[0].item()!r} is outside "
                                     f"the space; allowed: {allowed.tolist()}")
                out[:, start + j] = pos
        return cls(space, out)

    @classmethod
    def random(cls, space: Any, n: int, rng: np.random.Generator) -> "ConfigBatch":
        """``n`` subnets with every gene drawn uniformly."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n={n!r} must be a number of subnets (an integer >= 0)")
        card = _genes(space).card
        return cls.from_genome(space, (rng.random((n, len(card))) * card).astype(np.int8))

    # ------------------------------------------------------------- genome
    def genome(self) -> np.ndarray:
        """One int8 row per subnet, the gene groups in order, the resolution index last."""
        return self.g

    @classmethod
    def from_genome(cls, space: Any, g: np.ndarray) -> "ConfigBatch":
        """Inverse of :meth:`genome`; a row of the wrong length or a gene outside its choices raises."""
        g = np.asarray(g)
        card = _genes(space).card
        if g.ndim != 2 or g.shape[1] != len(card):
            raise ValueError(f"genome of shape {g.shape} does not fit the space; allowed: (N, {len(card)})")
        if g.size and (np.any(g < 0) or np.any(g >= card)):
            raise ValueError(f"genome holds a gene outside its choices; allowed per column: 0 to {(card - 1).tolist()}")
        return cls(space, g.astype(np.int8, copy=False))

    def take(self, idx: np.ndarray) -> "ConfigBatch":
        """The subnets at ``idx`` (indices or a boolean mask)."""
        return ConfigBatch(self.space, self.g[idx])

    @property
    def _groups(self) -> dict[str, np.ndarray]:
        return self._cached("_groups_views", self.groups)

    def _cached(self, key: str, make: Any) -> Any:
        value = self.__dict__.get(key)
        if value is None:
            value = make()
            object.__setattr__(self, key, value)
        return value

    @property
    def active(self) -> np.ndarray:
        """``[N, slots]`` booleans: which block slots run (computed once per batch)."""
        return self._cached("_active", lambda: self.space.active_slots(self._groups))

    @property
    def active_weight(self) -> np.ndarray:
        """:attr:`active` as float32 0/1, for weighted sums over the active slots (computed once per batch)."""
        return self._cached("_active_w", lambda: self.active.astype(np.float32))

    @property
    def slot_choice(self) -> np.ndarray:
        """``[N, slots]`` intp: each slot's variant as ``slot * n_slot_variants + variant``, one flat index per
        slot into any per-slot table laid out ``[slot, variant]`` (computed once per batch)."""
        def make() -> np.ndarray:
            nv = self.space.n_slot_variants
            v = self.space.slot_variants(self._groups).astype(np.intp)
            return v + np.arange(v.shape[1], dtype=np.intp) * nv
        return self._cached("_slot_choice", make)

    @property
    def fixed_choice(self) -> np.ndarray:
        """``[N]`` intp: the variant of the layers every subnet runs (stem, head), ``0`` where they never vary."""
        return self._cached("_fixed_choice", lambda: self.space.fixed_variants(self._groups).astype(np.intp))

    def canonical_genome(self) -> np.ndarray:
        """:meth:`genome` with inactive slots' genes set to index 0: equal rows mean the same network."""
        act, out = self.active, self.g.copy()
        for cols, _, per_slot, _ in _genes(self.space).encoding:
            if per_slot:
                out[:, cols][~act] = 0
        return out

    # ------------------------------------------------------------ output
    def values(self) -> dict[str, np.ndarray]:
        """Value arrays per gene group (what predictors that take mappings accept)."""
        genes = _genes(self.space)
        out = {}
        for name, start, size in zip(genes.names, genes.starts, genes.sizes):
            cols = [np.asarray(genes.values[start + j])[self.g[:, start + j]] for j in range(size)]
            out[name] = cols[0] if name == "r" else np.stack(cols, axis=1) if cols else np.zeros((len(self), 0))
        return out

    def config(self, i: int) -> Any:
        """Subnet ``i`` as its family's config value."""
        genes = _genes(self.space)
        row = self.g[i]
        vals = {n: tuple(genes.values[s + j][row[s + j]] for j in range(size))
                for n, s, size in zip(genes.names, genes.starts, genes.sizes)}
        return self.space.config_from_values(vals)

    def configs(self) -> list[Any]:
        """All subnets as config values."""
        return [self.config(i) for i in range(len(self))]


    def onehot(self) -> np.ndarray:
        """OFA's architecture encoding, float32 ``[N, width]``: one-hot resolution, then for every encoded group
        each column one-hot (a per-slot group's inactive slots all zeros).

        For MobileNetV3 spaces this is OFA's ``MobileNetArchEncoder`` layout: resolution, per slot a kernel
        size, per slot an expand ratio.
        """
        n, nr = len(self), len(self.space.r)
        parts = [np.eye(nr, dtype=np.float32)[self.r]]
        for cols, width, per_slot, offsets in _genes(self.space).encoding:
            flat = self.g[:, cols] + (offsets - offsets[0])
            if per_slot:
                flat = np.where(self.active, flat, width)
            block = np.zeros((n, width + 1), dtype=np.float32)  # a spare column for masked genes
            np.put_along_axis(block, flat, 1.0, axis=1)
            parts.append(block[:, :-1])
        return np.concatenate(parts, axis=1)

    def onehot_dot(self, w: np.ndarray) -> np.ndarray:
        """``self.onehot() @ w`` for a weight vector ``w`` ``[width]``, by gathering the active entries."""
        genes, g, w = _genes(self.space), self.g, np.asarray(w)
        out = w.take(g[:, -1])
        if genes.slot_cols.size:  # every per-slot group in one gather, weighted by the active slots
            picked = w.take(g[:, genes.slot_cols] + genes.slot_offsets).reshape(len(g), -1, self.active.shape[1])
            out = out + np.einsum("ikj,ij->i", picked, self.active_weight)
        if genes.fixed_cols.size:
            out = out + w.take(g[:, genes.fixed_cols] + genes.fixed_offsets).sum(1)
        return out


@dataclass(frozen=True, eq=False)
class SlotTable:
    """A value for every block variant, ``per_block[slot, r, variant]`` (choice indices), plus
    ``fixed[r, fixed_variant]`` for the layers every subnet runs; :meth:`sum` totals them over each subnet's
    active slots (costs, latencies)."""

    per_block: np.ndarray
    fixed: np.ndarray

    def __post_init__(self) -> None:
        slots, _, nv = self.per_block.shape  # stored [r, slot, variant]: one offset per r + batch.slot_choice
        fixed = self.fixed if self.fixed.ndim == 2 else self.fixed[:, None]
        object.__setattr__(self, "_by_r", np.ascontiguousarray(np.transpose(self.per_block, (1, 0, 2))).ravel())
        object.__setattr__(self, "_per_r", slots * nv)
        object.__setattr__(self, "_fixed", np.ascontiguousarray(fixed).ravel())
        object.__setattr__(self, "_nf", fixed.shape[1])

    def sum(self, batch: ConfigBatch) -> np.ndarray:
        """``[N]``: the fixed value at each subnet's resolution plus its active blocks' values."""
        r = batch.g[:, -1].astype(np.intp)  # the resolution is the last gene
        picked = self._by_r.take((r * self._per_r)[:, None] + batch.slot_choice)
        fixed = self._fixed.take(r if self._nf == 1 else r * self._nf + batch.fixed_choice)
        return np.einsum("ij,ij->i", picked, batch.active) + fixed


@dataclass(frozen=True, eq=False)
class CostGrid:
    """Exact MACs and parameters of every block variant, for vectorised cost lookups.

    ``block_macs[slot, r, variant]`` / ``block_params[...]`` (choice indices), and the cost of the
    always-present layers (stem, first block, head) in ``fixed_macs[r, fixed_variant]`` / ``fixed_params``.
    The spec's family computes them (``spec.variant_costs()``).
    """

    block_macs: np.ndarray
    block_params: np.ndarray
    fixed_macs: np.ndarray
    fixed_params: np.ndarray

    @classmethod
    def build(cls, spec: Any) -> "CostGrid":
        """Plan every variant of ``spec``'s space once (a few hundred blocks)."""
        block, fixed = spec.variant_costs()
        grid = cls(block[..., 0], block[..., 1], fixed[..., 0], fixed[..., 1])
        object.__setattr__(grid, "_space", spec.space)
        return grid

    def __post_init__(self) -> None:
        object.__setattr__(self, "_macs", SlotTable(self.block_macs, self.fixed_macs))
        object.__setattr__(self, "_params", SlotTable(self.block_params, self.fixed_params))
        object.__setattr__(self, "_space", None)

    def _check(self, batch: ConfigBatch) -> ConfigBatch:
        """``batch``, if it is of the space this grid was built for (another space's subnets index other tables)."""
        if self._space is not None and batch.space is not self._space and batch.space != self._space:
            raise ValueError(f"a batch of {type(batch.space).__name__} subnets does not belong to the space this cost "
                             "grid was built for (CostGrid.build(spec) of its own supernet)")
        return batch

    def macs(self, batch: ConfigBatch) -> np.ndarray:
        """Multiply-accumulates of every subnet (OFA's "FLOPs")."""
        return self._macs.sum(self._check(batch))

    def params(self, batch: ConfigBatch) -> np.ndarray:
        """Parameters of every extracted subnet."""
        return self._params.sum(self._check(batch))

