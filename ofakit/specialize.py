"""Specialise a trained supernet: latency budgets on named devices/runtimes from calibrated tables, plus
MACs/parameter caps, searched with the checkpoint's accuracy predictor.

This module only composes: latency predictors come from :mod:`profilers`, costs from :mod:`elastic`,
accuracy from :mod:`ofakit.context`, the search algorithms from :mod:`ofakit.search.evolution` / :mod:`ofakit.search.pareto`.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from ofakit.context import CheckpointContext
from ofakit.search.evolution import BudgetError, Candidate, Constraint, EvolutionSettings, Metric, SearchResult, evolve
from ofakit.search.pareto import pareto_front
from ofakit.search.precision import PrecisionAccuracy, PrecisionDrop
from profilers import LatencyPredictor, LatencyTable, Measurement
from profilers.builder import refit
from profilers.drift import SETTLE_TOLERANCE, DriftCheck, check_drift
from profilers.predictor import check_table_file, named_runtimes
from profilers.runtimes import get_runtime, open_runtime
from profilers.store import spec_id

log = logging.getLogger(__name__)


SHORTLIST_FRACTIONS = (1.1, 1.0, 0.95, 0.9, 0.85)  # of each latency budget: candidates to measure


@dataclass(frozen=True)
class Budget:
    """A latency budget: at most ``ms`` milliseconds on ``device`` (``local`` or an agent URL) with ``runtime``."""

    device: str
    runtime: str
    ms: float

    def __post_init__(self) -> None:
        if isinstance(self.ms, bool) or not (isinstance(self.ms, (int, float)) and math.isfinite(self.ms)
                                             and self.ms > 0):
            raise ValueError(f"latency budget {self.ms!r} ms must be a positive number")
        for name in ("device", "runtime"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v.strip() or v != v.strip():
                raise ValueError(f"budget {name}={v!r} is not allowed: give a name without surrounding spaces "
                                 "(device: 'local' or an agent URL; runtime: e.g. onnxruntime)")

    @property
    def metric_name(self) -> str:
        """Name of its latency metric in results."""
        return latency_name(self.device, self.runtime)

    @classmethod
    def parse(cls, text: str) -> "Budget":
        """``DEVICE,RUNTIME,MS`` (e.g. ``http://jetson:8470,tensorrt,20``)."""
        if not isinstance(text, str):
            raise ValueError(f"budget {text!r} must be a string DEVICE,RUNTIME,MS, e.g. local,onnxruntime,2.5")
        parts = text.rsplit(",", 2)
        if len(parts) != 3:
            raise ValueError(f"budget {text!r} must be DEVICE,RUNTIME,MS, e.g. local,onnxruntime,2.5")
        try:
            ms = float(parts[2])
        except ValueError:
            raise ValueError(f"budget {text!r}: {parts[2]!r} is not a number of milliseconds") from None
        return cls(parts[0], parts[1], ms)


def latency_name(device: str, runtime: str) -> str:
    """``latency_ms[DEVICE/RUNTIME]``."""
    return f"latency_ms[{device}/{runtime}]"


def at_precision(table_path: str | Path, budget: Budget, precision: str) -> Budget:
    """``budget`` on the table's configuration of its runtime at ``precision`` (its runtime given by the
    configuration's label, which names the precision). A budget whose runtime is already a label keeps it when
    the precision agrees."""
    keys = _runtime_keys(table_path, budget)
    matches = [k for k in keys if k.precision == precision]
    if len(matches) != 1:
        labels = [k.label() for k in keys]
        what = "no configuration" if not matches else "several configurations"
        raise ValueError(f"{table_path} has {what} of runtime {budget.runtime!r} at precision {precision!r} on "
                         f"device {budget.device!r}; measured there: {labels}" + (
                             " (build one with `ofakit profile build --precision ...`)" if not matches else
                             "; name one with --runtime LABEL"))
    return Budget(budget.device, matches[0].label(), budget.ms)


def table_precisions(table_path: str | Path, budget: Budget) -> list[str]:
    """The precisions ``table_path`` holds for ``budget``'s device and runtime, fp32 first."""
    from deploy_targets.base import PRECISIONS

    have = {k.precision for k in _runtime_keys(table_path, budget)}
    return [p for p in PRECISIONS if p in have]


def _runtime_keys(table_path: str | Path, budget: Budget) -> list[Any]:
    """The table's configurations of ``budget``'s runtime on its device."""
    check_table_file(table_path)
    with LatencyTable(table_path, readonly=True) as table:
        return named_runtimes(table, budget.runtime, budget.device)[1]


def precision_plans(table_path: str | Path, budgets: Sequence[Budget], precision: str | None,
                    exportable: Sequence[str] = ("fp32", "fp16", "int8")) -> list[tuple[str, list[Budget]]]:
    """The (precision, budgets at that precision) pairs to search: one for ``fp32``/``fp16``/``int8``; for
    ``auto``, every precision the table holds for all budgets' runtimes and the shipping target can export
    (fp32 first); for ``None``, fp32 where the primary budget's table holds it, else its one precision (the
    budgets as given when the table holds one configuration of the runtime)."""
    from deploy_targets.base import PRECISIONS

    if precision is None:
        keys = _runtime_keys(table_path, budgets[0])
        held = sorted({k.precision for k in keys})
        if len(keys) <= 1:
            return [(keys[0].precision if keys else "fp32", list(budgets))]  # (none: the predictor says why)
        if "fp32" not in held and len(held) > 1:
            raise ValueError(f"{table_path} holds {budgets[0].runtime!r} on {budgets[0].device!r} at {held}; pass "
                             f"--precision {'|'.join(held)}|auto")
        precision = "fp32" if "fp32" in held else held[0]
    if precision == "auto":
        tables = [table_precisions(table_path, b) for b in budgets]  # the table read once per budget
        held = [p for p in PRECISIONS if p in exportable and all(p in t for t in tables)]
        if not held:
            raise ValueError(f"--precision auto: {table_path} holds no precision of {budgets[0].runtime!r} on "
                             f"{budgets[0].device!r} that every budget's runtime has and the target exports "
                             f"({list(exportable)}); build tables with `ofakit profile build --precision ...`")
        return [(p, [at_precision(table_path, b, p) for b in budgets]) for p in held]
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r} is not supported; allowed: {[*PRECISIONS, 'auto']}")
    return [(precision, [at_precision(table_path, b, precision) for b in budgets])]


def table_recipe(table: LatencyTable, spec_dict: dict[str, Any]) -> str:
    """The recipe name under which ``table`` holds this exact architecture."""
    sid = spec_id(spec_dict)
    for name in table.recipes():
        if spec_id(table.recipe(name)) == sid:
            return name
    raise ValueError(f"{table.path} has no latency entries for this checkpoint's architecture (spec {sid}); "
                     "build them with `ofakit profile build --recipe CHECKPOINT`")


class Specializer:
    """A checkpoint with its accuracy predictor, latency predictors per (device, runtime) and cost metrics.

    Args:
        ctx: The checkpoint.
        table: The latency table file.
        targets: ``(device, runtime)`` pairs to predict latency for.
        accuracy_samples: Random subnets of the accuracy dataset (cached next to the checkpoint); default: all
            the cache holds, at least :data:`~ofakit.context.QUICK_ACCURACY_SAMPLES`.
        seed: Seeds data sampling, predictor training and search.
        accuracy: A ready accuracy objective (anything with ``predict_batch(ConfigBatch) -> [N]``) to use
            instead of one trained on the checkpoint's accuracy dataset (then ``accuracy_samples`` is unused).
    """

    def __init__(self, ctx: CheckpointContext, table: str | Path, targets: Sequence[tuple[str, str]],
                 accuracy_samples: int | None = None, seed: int = 0, progress=None,  # noqa: ANN001 - (done, total) callback
                 accuracy: Any = None):
        self.ctx, self.table, self.seed = ctx, Path(table), seed
        self.space = ctx.supernet.space
        self.spec = ctx.supernet.spec
        self.latency: dict[str, LatencyPredictor] = {}
        self.drift_checks: dict[str, DriftCheck] = {}
        self.reference_cache: dict[Any, list] = {}  # exported reference subnets, reused by every measurement
        self._scratch: tempfile.TemporaryDirectory | None = None
        for device, runtime in dict.fromkeys(targets):
            self.latency[latency_name(device, runtime)] = LatencyPredictor.load(self.table, device, runtime, self.spec)
        if accuracy is None:
            self.accuracy, self.accuracy_report = ctx.accuracy_predictor(accuracy_samples, seed, progress)
        elif callable(getattr(accuracy, "predict_batch", None)):
            self.accuracy, self.accuracy_report = accuracy, {"predictor": type(accuracy).__name__, "given": True}
        else:
            raise ValueError(f"accuracy={accuracy!r} has no predict_batch(batch) method; allowed: an accuracy "
                             "objective, or None to train one")
        self.base_accuracy, self.base_report = self.accuracy, dict(self.accuracy_report)
        grid = ctx.cost_grid
        self.metrics: dict[str, Metric] = {
            "macs": Metric("macs", grid.macs, "M", 1e6), "params": Metric("params", grid.params, "M", 1e6),
            **{name: Metric(name, p.predict, "ms") for name, p in self.latency.items()}}

    def use_precision(self, drop: PrecisionDrop | None) -> None:
        """Search at a reduced precision: the fp32 accuracy objective minus ``drop``'s measured mean loss
        (``None``: fp32 again). The report says which."""
        if drop is None or drop.precision == "fp32":
            self.accuracy, self.accuracy_report = self.base_accuracy, dict(self.base_report)
            return
        self.accuracy = PrecisionAccuracy(self.base_accuracy, drop)
        self.accuracy_report = {**self.base_report, "precision": drop.to_dict()}

    def precision_drop(self, budget: Budget, precision: str, samples: int | None,
                       progress: Callable[[int, int], None] | None = None) -> PrecisionDrop | None:
        """What ``precision`` costs in top-1 when shipped for ``budget``'s runtime (measured with that runtime's
        artifact format; ``None`` for fp32)."""
        if precision == "fp32":
            return None
        target = get_runtime(self.latency[budget.metric_name].runtime.name).artifact_format
        return self.ctx.precision_drop(target, precision, samples, self.seed, progress=progress)

    def choose_precision(self, plans: Sequence[tuple[str, list[Budget]]], drops: dict[str, PrecisionDrop | None],
                         max_macs: float | None = None, max_params: float | None = None,
                         settings: EvolutionSettings | None = None
                         ) -> tuple[str, list[Budget], SearchResult, dict[str, Any]]:
        """Search every plan (precision, budgets) with that precision's accuracy and return the one whose pick
        is predicted most accurate (the first on a tie: higher precision), its search result and what each
        plan offered; the specializer is left at the chosen precision. ``BudgetError`` when no plan fits."""
        best, offers, error = None, {}, None
        for p, budgets in plans:
            self.use_precision(drops.get(p))
            try:
                result = self.search(self.constraints(budgets, max_macs, max_params), settings)
            except BudgetError as exc:
                offers[p], error = {"error": str(exc)}, error or exc
                continue
            offers[p] = {"predicted_accuracy": result.best.accuracy,
                         "predicted_latency_ms": result.best.metrics[budgets[0].metric_name]}
            if best is None or result.best.accuracy > best[2].best.accuracy:
                best = (p, budgets, result)
        if best is None:
            raise error  # type: ignore[misc]
        self.use_precision(drops.get(best[0]))
        return (*best, offers)

    def scratch(self) -> Path:
        """A private working folder that lives as long as this specializer (removed with it)."""
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="ofakit-specializer-")
        return Path(self._scratch.name)

    def constraints(self, budgets: Sequence[Budget], max_macs: float | None = None,
                    max_params: float | None = None) -> list[Constraint]:
        """Constraints for latency budgets and optional MACs / parameter caps (raw counts)."""
        out = [Constraint(self.metrics[b.metric_name], b.ms) for b in budgets]
        if max_macs is not None:
            out.append(Constraint(self.metrics["macs"], max_macs))
        if max_params is not None:
            out.append(Constraint(self.metrics["params"], max_params))
        return out

    def search(self, constraints: Sequence[Constraint], settings: EvolutionSettings | None = None) -> SearchResult:
        """The most accurate subnet meeting every constraint (OFA evolution)."""
        return evolve(self.space, self.accuracy.predict_batch, constraints, self.seed, settings,
                      report=list(self.metrics.values()))

    def shortlist(self, budgets: Sequence[Budget], max_macs: float | None = None, max_params: float | None = None,
                  settings: EvolutionSettings | None = None, fractions: Sequence[float] = SHORTLIST_FRACTIONS
                  ) -> list[Candidate]:
        """The picks of searches at several fractions of the latency budgets, most accurate first (distinct
        subnets): candidates around the budget to measure, since the single pick at the budget is the subnet
        whose latency the table underestimates most. A fraction that no subnet meets is skipped."""
        out: dict[Any, Candidate] = {}
        error: BudgetError | None = None
        for f in fractions:
            scaled = [Budget(b.device, b.runtime, f * b.ms) for b in budgets]
            try:
                c = self.search(self.constraints(scaled, max_macs, max_params), settings).best
            except BudgetError as exc:
                error = error or exc
                continue
            out.setdefault(c.config, c)
        if not out:
            raise error  # type: ignore[misc]
        return sorted(out.values(), key=lambda c: -c.accuracy)

    def pareto(self, objective: str, constraints: Sequence[Constraint] = (), generations: int = 200
               ) -> tuple[list[Candidate], float]:
        """Accuracy-vs-``objective`` front (NSGA-II), under ``constraints``."""
        return pareto_front(self.space, self.accuracy.predict_batch, self.metrics[objective], constraints, self.seed,
                            generations=generations, report=list(self.metrics.values()))

    def check_drift(self, device: str, runtime: str, token: str | None = None) -> DriftCheck:
        """Re-time the table's reference subnets on ``device``/``runtime`` now and rescale that predictor.

        Raises ``RuntimeUnavailable`` (or an agent error) when the runtime cannot run there, and
        ``ValueError`` when the table has no calibration subnets to re-time.
        """
        name = latency_name(device, runtime)
        pred = self.latency[name]
        rt = open_runtime(pred.runtime.name, device, token)
        check = check_drift(self.table, self.spec, device, rt, pred.runtime)
        self._set_latency(name, pred.rescaled(check.ratio))
        self.drift_checks[name] = check
        return check

    def adopt_drift(self, name: str, ratio: float) -> None:
        """Rescale latency predictor ``name`` to a machine ratio seen lasting through settling pauses
        (:attr:`profilers.drift.Referenced.lasting`): later measurements expect the machine's speed now."""
        log.info("%s: the machine runs %.2fx its table's speed through the settling pauses; predictions rescaled",
                 name, ratio)
        self._set_latency(name, self.latency[name].rescaled(ratio))

    def recalibrate(self, device: str, runtime: str, cfg_json: str, measurement: Measurement,
                    machine_ratio: float | None = None) -> None:
        """Add a whole-subnet measurement to the table's calibration, refit, and reload that predictor.

        The measurement is stored in the table's own time frame, like the other calibration samples: divided
        by ``machine_ratio`` (how much slower the table's reference subnets ran in the same interleaved
        measurement than when stored) when given, else by the predictor's drift factor. The reloaded
        predictor keeps its drift factor, unless ``machine_ratio`` differs from it by more than the settling
        tolerance (:data:`profilers.drift.SETTLE_TOLERANCE`; the meter measured again after pauses and the
        machine stayed there): then the machine has drifted and the factor becomes ``machine_ratio``.
        """
        name = latency_name(device, runtime)
        pred = self.latency[name]
        frame = machine_ratio if machine_ratio is not None else pred.drift
        if not (isinstance(frame, (int, float)) and math.isfinite(frame) and frame > 0):
            raise ValueError(f"machine_ratio={machine_ratio!r} must be a positive factor")
        if frame != 1.0:
            measurement = replace(measurement, stats=measurement.stats.scaled(1 / frame))
        drift = pred.drift
        if machine_ratio is not None and abs(machine_ratio / pred.drift - 1) > SETTLE_TOLERANCE:
            log.info("%s: the machine runs %.2fx its table's speed (reference subnets timed with the subnet); "
                     "predictions rescaled", name, machine_ratio)
            drift = float(machine_ratio)
        with LatencyTable(self.table) as table:
            recipe = table_recipe(table, self.spec.to_dict())
            table.add_calibration(device, spec_id(self.spec.to_dict()), cfg_json, measurement)
            refit(table, recipe, device, pred.runtime)
        self._set_latency(name, LatencyPredictor.load(self.table, device, pred.runtime, self.spec).rescaled(drift))

    def _set_latency(self, name: str, pred: LatencyPredictor) -> None:
        self.latency[name] = pred
        self.metrics[name] = Metric(name, pred.predict, "ms")
