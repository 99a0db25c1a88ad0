"""Whole-subnet latency from a lookup table: the sum of layer latencies, calibrated per device and runtime.

A layer measured alone keeps its weights in cache between runs; inside a whole network they are streamed
from memory, and the runtime's per-call costs (session call, layout reorders at the model boundary) are paid
once rather than once per layer. So the raw sum of layer entries is biased, and by an amount that depends on
the subnet. :func:`fit_correction` fits ``measured ≈ a * layer_sum + b * blocks + c`` (or with the weights in
millions) on a few whole-subnet measurements (relative least squares; the candidate with the lowest
leave-one-out error, fewer features when there are few samples). ``blocks``, the number of active blocks,
takes out the per-layer call overhead that every layer measured alone pays once (on onnxruntime CPU it
cut the error on 47 new subnets from 5.4% to 1.4% MAPE, max 15% to 8%: benchmarks/RESULTS.md), and
:class:`LatencyPredictor` applies it to any number of configs at once with array lookups.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from elastic.batch import ConfigBatch, CostGrid, SlotTable
from elastic.families import Config, Spec, spec_from_dict
from profilers.correction import Correction
from profilers.layers import slot_grid
from profilers.record import Protocol
from profilers.store import LatencyTable, RuntimeKey, spec_id

log = logging.getLogger(__name__)

# Candidate feature sets of the correction, tried in this order (ties go to the earlier one).
CANDIDATES = (("layer_sum_ms", "blocks", "one"), ("layer_sum_ms", "weights_m", "blocks", "one"),
              ("layer_sum_ms", "weights_m", "one"), ("layer_sum_ms", "one"), ("layer_sum_ms",))
STATS = ("median_ms", "p10_ms", "p90_ms", "min_ms", "mean_ms")


def _lstsq_rel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    w = 1.0 / y
    return np.linalg.lstsq(x * w[:, None], y * w, rcond=None)[0]


def fit_correction(feats: Mapping[str, np.ndarray], measured: np.ndarray) -> Correction:
    """Fit the correction from features of calibration subnets and their measured latencies (ms).

    Candidates: :data:`CANDIDATES` whose features ``feats`` holds, each when there are enough samples (twice as many as features for three
    or more features, 3 for scale and offset, 1 for scale only). A candidate whose layer-sum coefficient is
    not positive is dropped; of the rest, the one with the lowest leave-one-out error is kept.
    """
    y = np.asarray(measured, dtype=np.float64)
    n = y.size
    if n == 0:
        return Correction()
    if not np.all(y > 0) or not np.all(np.isfinite(y)):
        raise ValueError("calibration latencies must be positive, finite milliseconds")
    if "layer_sum_ms" not in feats:
        raise ValueError(f"features {sorted(feats)} lack 'layer_sum_ms' (the table's layer sum per subnet)")
    bad = sorted(f for f, v in feats.items() if np.shape(v) != y.shape or not np.all(np.isfinite(v)))
    if bad or not np.all(np.asarray(feats["layer_sum_ms"], dtype=np.float64) > 0):
        raise ValueError(f"features {bad or ['layer_sum_ms']} must be {y.size} finite values per subnet "
                         "(layer sums > 0)")
    floor = 0.5 * float(np.min(y / np.asarray(feats["layer_sum_ms"], dtype=np.float64)))
    fits = []
    usable = [c for c in CANDIDATES if all(f in feats for f in c)]
    for names in (c for c in usable if n >= (2 * len(c) if len(c) > 2 else 2 * len(c) - 1)):
        x = np.stack([np.asarray(feats[f], dtype=np.float64) for f in names], 1)
        coef = _lstsq_rel(x, y)
        if coef[0] <= 0:
            continue
        fit = float(np.mean(np.abs(x @ coef / y - 1)))
        loo = None
        if n > len(names) + 1:
            errs = [abs(x[i] @ _lstsq_rel(np.delete(x, i, 0), np.delete(y, i)) / y[i] - 1) for i in range(n)]
            loo = float(np.mean(errs))
        fits.append(Correction(names, tuple(float(c) for c in coef), n, fit, loo, floor))
    if fits:  # the model that generalises best (leave-one-out), the richest one when LOO is not computable
        return min(fits, key=lambda c: (c.loo_mape is None, c.loo_mape or 0.0))
    scale = float(np.median(y / np.asarray(feats["layer_sum_ms"])))
    return Correction(("layer_sum_ms",), (scale,), n, None, None, floor)


class LatencyPredictor:
    """Predicts whole-subnet latency (ms) of one space on one device and runtime configuration.

    Build with :meth:`load`. Attributes: ``spec``, ``device``, ``runtime`` (:class:`RuntimeKey`),
    ``correction`` (:class:`Correction`), ``stat`` (which layer statistic is summed), ``drift`` (the factor
    predictions are multiplied by: how much slower the machine is now than when its table was calibrated;
    1.0 unless :meth:`rescaled`).
    """

    drift: float = 1.0

    def __init__(self, spec: Spec, layer_ms: Mapping[str, float], correction: Correction,
                 device: str = "local", runtime: RuntimeKey | None = None, stat: str = "median_ms"):
        self.spec, self.device, self.runtime, self.stat = spec, device, runtime, stat
        self.correction = correction
        grid = slot_grid(spec)
        needed = {k for slot in grid.block_keys for vs in slot for k in vs}
        needed |= {k for fs in grid.fixed_keys for ks in fs for k in ks}
        missing = sorted(needed - set(layer_ms))
        if missing:
            raise ValueError(f"the table lacks {len(missing)} layer(s) of this space (e.g. {missing[0]}); "
                             "run `ofakit profile build` (or `refresh`) for this recipe, device and runtime")
        self._layers = SlotTable(np.array([[[layer_ms[k] for k in vs] for vs in rs] for rs in grid.block_keys]),
                                 np.array([[sum(layer_ms[k] for k in ks) for ks in fs] for fs in grid.fixed_keys]))
        self._costs = CostGrid.build(spec)

    # ------------------------------------------------------------- loading
    @classmethod
    def load(cls, table_path: str | Path, device: str, runtime: str | RuntimeKey,
             recipe: str | Spec, stat: str = "median_ms") -> "LatencyPredictor":
        """The predictor for ``recipe`` (a name in the table or a spec) on ``device`` and ``runtime``.

        Args:
            table_path: The SQLite table.
            device: Device name in the table (``"local"`` for this machine).
            runtime: A runtime name (when the table holds one configuration of it), a label such as
                ``onnxruntime/CPUExecutionProvider/1t/fp32/b1``, or a :class:`RuntimeKey`.
            recipe: Recipe name recorded in the table, or the architecture spec itself.
            stat: The layer statistic to sum (``median_ms`` by default).
        """
        if stat not in STATS:
            raise ValueError(f"stat={stat!r} is not supported; allowed: {list(STATS)}")
        check_table_file(table_path)
        with LatencyTable(table_path, readonly=True) as table:
            spec = spec_from_dict(table.recipe(recipe)) if isinstance(recipe, str) else recipe
            if device not in table.devices():
                raise ValueError(f"device {device!r} is not in {table_path}; devices there: {sorted(table.devices())}")
            rk = resolve_runtime(table, runtime, device)
            entries = table.entries(device, rk)
            stored = table.correction(device, rk, spec_id(spec.to_dict()))
            uncalibrated = (None if stored is not None and stored.samples
                            else _uncalibrated(table, device, rk, spec, recipe))
        quick = sum(Protocol.stored_is_shorter(e.protocol, Protocol()) for e in entries)
        if quick:
            log.warning("%d of %d layers of %s on %s/%s were timed with the short --quick protocol: predictions "
                        "are rough; rebuild without --quick to re-measure them", quick, len(entries), table_path,
                        device, rk.label())
        layer_ms = {e.key: getattr(e, stat) for e in entries}
        corr = stored if stored is not None else Correction()
        if uncalibrated:
            log.warning("%s", uncalibrated)
        return cls(spec, layer_ms, corr, device, rk, stat)

    # ----------------------------------------------------------- encoding
    def batch(self, cfgs: Sequence[Config] | Mapping[str, Any] | ConfigBatch) -> ConfigBatch:
        """``cfgs`` as a :class:`ConfigBatch` of this space (values outside the space raise ``ValueError``).

        ``cfgs`` is a sequence of :class:`SubnetConfig`, a mapping of value arrays ``ks`` ``[N, slots]``, ``e``
        ``[N, slots]``, ``d`` ``[N, stages]``, ``r`` ``[N]``, or a ``ConfigBatch`` (the search's fast path).
        """
        space = self.spec.space
        if isinstance(cfgs, ConfigBatch):
            if cfgs.space != space:
                raise ValueError("the config batch belongs to another search space than this latency predictor")
            return cfgs
        if isinstance(cfgs, Mapping):
            return ConfigBatch.from_values(space, **{k: np.asarray(v) for k, v in cfgs.items()})
        return ConfigBatch.from_configs(space, list(cfgs))

    # --------------------------------------------------------- prediction
    def features(self, cfgs: Sequence[Config] | Mapping[str, Any] | ConfigBatch) -> dict[str, np.ndarray]:
        """The correction's input features of every config (raw layer sum, weights in millions, active
        blocks, 1)."""
        b = self.batch(cfgs)
        return {"layer_sum_ms": self._layers.sum(b), "weights_m": self._costs.params(b) / 1e6,
                "blocks": b.active.sum(1).astype(np.float64), "one": np.ones(len(b))}

    def predict_raw(self, cfgs: Sequence[Config] | Mapping[str, Any] | ConfigBatch) -> np.ndarray:
        """Uncalibrated latency: the sum of the subnet's layer entries (ms)."""
        return self.features(cfgs)["layer_sum_ms"]

    def predict(self, cfgs: Sequence[Config] | Mapping[str, Any] | Config | ConfigBatch) -> np.ndarray:
        """Calibrated whole-subnet latency in milliseconds, one per config (or per row of a ConfigBatch)."""
        if isinstance(cfgs, self.spec.space.config_type):
            cfgs = [cfgs]
        out = self.correction.apply(self.features(cfgs))
        return out * self.drift if self.drift != 1.0 else out

    def rescaled(self, drift: float) -> "LatencyPredictor":
        """A copy whose predictions are multiplied by ``drift`` (see :func:`profilers.drift.check_drift`)."""
        if isinstance(drift, bool) or not isinstance(drift, (int, float)) or not 1e-6 <= drift <= 1e6:
            raise ValueError(f"drift={str(drift)[:40]} must be a positive factor from 1e-6 to 1e6")
        twin = copy.copy(self)
        twin.drift = float(drift)
        return twin

    def describe(self) -> dict[str, Any]:
        """What this predictor is: device, runtime, statistic, calibration, drift factor."""
        return {"device": self.device, "runtime": self.runtime.label() if self.runtime else None, "stat": self.stat,
                "spec_id": spec_id(self.spec.to_dict()), "correction": self.correction.to_dict(),
                "drift": self.drift, "loaded_at": time.time()}


def _uncalibrated(table: LatencyTable, device: str, rk: RuntimeKey, spec: Spec,
                  recipe: str | Spec) -> str:
    """What a predictor without calibration warns: the recipe lacking it and the recipes the table does
    calibrate on that device and runtime (another architecture's calibration does not apply), and how to build
    it."""
    sid = spec_id(spec.to_dict())
    try:
        sids = {n: spec_id(table.recipe(n)) for n in table.recipes()}
        others = sorted(n for n, s in sids.items()
                        if s != sid and getattr(table.correction(device, rk, s), "samples", 0))
    except ValueError:  # another recipe's corrupt rows: not this warning's to report
        sids, others = {}, []
    own = recipe if isinstance(recipe, str) else next((n for n, s in sids.items() if s == sid), f"spec {sid}")
    held = f"only other recipes are calibrated there: {others}" if others else "nothing is calibrated there"
    return (f"no calibration for {own!r} on {device}/{rk.label()} in {table.path} ({held}): predictions are raw "
            f"layer sums; calibrate it with `ofakit profile build --recipe RECIPE_OR_CHECKPOINT --device {device} "
            f"--runtime {rk.name}`")


def check_table_file(table_path: str | Path) -> None:
    """A one-line ``ValueError`` unless ``table_path`` is an existing table file (not a folder)."""
    if Path(table_path).is_dir():
        raise ValueError(f"latency table {table_path} is a directory; give the .sqlite file")
    if not Path(table_path).is_file():
        raise ValueError(f"latency table {table_path} does not exist; build one with `ofakit profile build`")


def named_runtimes(table: LatencyTable, runtime: str | RuntimeKey, device: str) -> tuple[list[RuntimeKey],
                                                                                         list[RuntimeKey]]:
    """The runtime configurations ``table`` holds on ``device`` (sorted by label), and those ``runtime`` names
    (a :class:`RuntimeKey`, a label, or a runtime name, which names every configuration of that runtime)."""
    have = sorted({e.runtime for e in table.entries(device)}, key=RuntimeKey.label)
    if isinstance(runtime, RuntimeKey):
        return have, [r for r in have if r == runtime]
    return have, [r for r in have if runtime in (r.name, r.label())]


def resolve_runtime(table: LatencyTable, runtime: str | RuntimeKey, device: str) -> RuntimeKey:
    """The one runtime configuration of ``table`` on ``device`` that ``runtime`` names."""
    have, matches = named_runtimes(table, runtime, device)
    if len(matches) == 1:
        return matches[0]
    labels = [r.label() for r in have]
    if not matches:
        raise ValueError(f"runtime {runtime!r} has no entries for device {device!r}; measured there: {labels}")
    raise ValueError(f"runtime {runtime!r} is ambiguous on device {device!r}; give one of {labels}")
