"""Ship a subnet: export it with a sidecar JSON, measure the artifact on the budget's runtime, and close the
loop (a missed budget recalibrates the latency predictor with that measurement and searches again).

The sidecar (``<artifact>.json``) records the subnet config, the source checkpoint and its sha256, the
input preprocessing, predicted accuracy and latency, measured latency (when measured), tool and runtime
versions, and the export settings, so a deployed file can always be traced and fed correctly.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from deploy_targets import ExporterUnavailable, ExportResult, ExportSpec, get_exporter
from elastic import SubnetConfig
from elastic.fileio import atomic_write_text, sha256_file
from ofakit.context import CheckpointContext
from ofakit.search.evolution import BudgetError, Candidate, EvolutionSettings
from ofakit.specialize import Budget, Specializer
from profilers import LOCAL, BuildSettings, Measurement, MeasureSpec, Protocol, RuntimeKey, open_runtime
from profilers.agent.client import AgentError
from profilers.builder import subnet_specs, time_subnets
from profilers.drift import Referenced, measure_referenced, reference_specs, settled, table_references
from profilers.runtimes import Runtime, RuntimeUnavailable

log = logging.getLogger(__name__)
Meter = Callable[[SubnetConfig, ExportResult, Budget], "Measurement | tuple[Measurement, float]"]
"""Times an exported subnet for one budget: ``meter(config, artifact, budget)``, a measurement or a
measurement and the machine ratio at that moment (see :func:`profilers.drift.measure_referenced`)."""
SIDECAR_FORMAT = "ofa-kit-artifact"
UNDER_BUDGET = 0.8  # a pick predicted at >= 80% of its budget that measures under 80% of it wastes the budget
USE_BUDGET = 0.9  # a measured shortlist whose best candidate uses less of a budget is searched again, rescaled
ACCURACY_TIE = 0.0005  # candidates predicted within 0.05 pp of the best tie (far below the predictor's error):
# of those, the one that uses its budgets most is picked
SECOND_ROUND = (1.0, 0.95, 0.9)  # fractions of the rescaled budgets searched in a shortlist's second round


def sidecar_path(artifact: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` (also for ``.mlpackage`` directories)."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def export_subnet(ctx: CheckpointContext, cfg: SubnetConfig, target: str, out: str | Path, precision: str = "fp32",
                  dynamic_batch: bool = False, info: dict[str, Any] | None = None, device: str = LOCAL,
                  token: str | None = None) -> tuple[ExportResult, Path]:
    """Export subnet ``cfg`` of ``ctx`` (BatchNorm recalibrated) to ``out`` and write its sidecar.

    Parity is checked on real validation images; int8 targets get their calibration batches from the
    validation split. ``info`` (predictions, measurements ...) is merged into the sidecar. A TensorRT engine
    for a remote ``device`` (an agent URL) is built there, for that device's GPU.
    """
    cfg = ctx.supernet.space.validate(cfg)
    shape = (1, ctx.supernet.spec.in_channels, cfg.r, cfg.r)
    calibration = tuple(ctx.real_inputs(cfg, 256).split(32)) if precision == "int8" else ()
    if device != LOCAL and target != "tensorrt":
        raise ValueError(f"--device {device} is for building TensorRT engines on the target; {target} "
                         "artifacts are portable: export them here")
    options = {"builder": open_runtime("tensorrt", device, token)} if device != LOCAL else {}
    metadata = {"short_description": f"ofa-kit subnet of {ctx.name}", "com.ofakit.config": cfg.to_json(),
                "com.ofakit.checkpoint_sha256": ctx.meta["sha256"]}
    spec = ExportSpec(ctx.subnet(cfg), shape, Path(out), precision=precision, dynamic_batch=dynamic_batch,
                      inputs=ctx.real_inputs(cfg, 8 if dynamic_batch else 1), calibration=calibration,
                      options=options, metadata=metadata)
    with _parked_sidecar(Path(out)):
        result = get_exporter(target).export(spec)
        return result, write_sidecar(ctx, cfg, result, precision, info)


def _finite(obj: Any) -> Any:
    """``obj`` with NaN and infinite floats as ``None`` (JSON has neither; e.g. a Kendall τ of constant data)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """Identity of a file or folder as written (inode, mtime, size); ``None`` when absent."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


@contextmanager
def _parked_sidecar(out: Path) -> Iterator[None]:
    """Move ``out``'s old sidecar aside while a new artifact is written, so that a crash never leaves a new
    artifact beside the old artifact's description; put it back when the export fails and the old
    artifact is still there untouched (a refused export loses nothing)."""
    side = sidecar_path(out)
    parked = side.with_name(side.name + ".old")
    parked.unlink(missing_ok=True)  # left by an export killed earlier: it describes no artifact here now
    before = _stamp(out)
    moved = side.is_file()
    if moved:
        os.replace(side, parked)
    try:
        yield
    except BaseException:
        if moved and before is not None and _stamp(out) == before:
            os.replace(parked, side)  # the old pair is whole again
        else:
            parked.unlink(missing_ok=True)  # the artifact changed: its old description must not come back
        raise
    parked.unlink(missing_ok=True)


def write_sidecar(ctx: CheckpointContext, cfg: SubnetConfig, result: ExportResult, precision: str,
                  info: dict[str, Any] | None = None) -> Path:
    """Write (atomically) the sidecar of an exported artifact; returns its path."""
    meta = ctx.meta
    pre = {k: v for k, v in meta.get("preprocess", {}).items() if k not in ("resolutions", "image_size", "scale")}
    size = meta.get("preprocess", {}).get("image_size")
    side = {"format": SIDECAR_FORMAT, "artifact": result.path.name, "target": result.target,
            "artifact_sha256": sha256_file(result.path) if result.path.is_file() else None,
            "config": cfg.to_dict(), "checkpoint": {"name": ctx.name, "sha256": meta["sha256"],
                                                    "recipe": meta["recipe"]},
            "input": {"shape": [1, ctx.supernet.spec.in_channels, cfg.r, cfg.r],
                      "name": result.settings.get("input_name", "input"), **pre,
                      "steps": [f"load the image as {'greyscale' if pre.get('in_channels') == 1 else 'RGB'}"
                                + (f" at {size}x{size} px (the training data's size)" if size else ""),
                                "pixel / 255, then (x - mean) / std per channel",
                                f"resize bilinearly (align_corners=False) to {cfg.r}x{cfg.r}: the shape above"]},
            "export": {**result.settings, "precision": precision, "max_abs_diff": result.max_abs_diff,
                       "notes": list(result.notes)},
            "versions": result.versions, "macs": ctx.supernet.flops(cfg), "params": ctx.supernet.params(cfg),
            "written_at": time.time(), **(info or {})}
    path = sidecar_path(result.path)
    atomic_write_text(path, json.dumps(_finite(side), indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path


def _open(budget: Budget, name: str, token: str | None) -> Runtime:
    """Runtime ``name`` on ``budget``'s device; ``RuntimeUnavailable`` when it cannot run there."""
    rt = open_runtime(name, budget.device, token)
    reason = rt.unavailable()
    if reason is not None:
        raise RuntimeUnavailable(f"unavailable: {name} on {budget.device}: {reason}")
    return rt


def measure(ctx: CheckpointContext, cfg: SubnetConfig, artifact: ExportResult | None, budget: Budget,
            token: str | None = None, protocol: Protocol | None = None, runtime: RuntimeKey | None = None
            ) -> Measurement:
    """Time the shipped subnet on ``budget``'s device and runtime.

    The artifact itself is timed when the runtime reads its format (an ``.onnx`` on onnxruntime); otherwise
    the subnet is exported in the runtime's own format first. ``runtime`` (a table's runtime configuration)
    sets the threads, precision and provider, so that the figure compares with that table. Raises
    ``RuntimeUnavailable`` when the runtime cannot run there.
    """
    rt = _open(budget, runtime.name if runtime else budget.runtime, token)
    with tempfile.TemporaryDirectory(prefix="ofakit-measure-") as tmp:
        return rt.measure(_artifact_spec(ctx, cfg, artifact, rt, runtime, protocol, Path(tmp)))


def _artifact_spec(ctx: CheckpointContext, cfg: SubnetConfig, artifact: ExportResult | None, rt: Runtime,
                   runtime: RuntimeKey | None, protocol: Protocol | None, tmp: Path) -> MeasureSpec:
    """What :func:`measure` times: the artifact, or the subnet exported in ``rt``'s format into ``tmp``."""
    shape = (1, ctx.supernet.spec.in_channels, cfg.r, cfg.r)
    how = {"threads": runtime.threads, "precision": runtime.precision, "provider": runtime.provider} if runtime else {}
    if artifact is not None and artifact.target == rt.artifact_format:
        thing = artifact.path
    else:
        thing = rt.prepare(ctx.subnet(cfg), shape, tmp / "subnet")
    return MeasureSpec(thing, shape, protocol=protocol or Protocol(), **how)


def _referenced(spz: Specializer, budget: Budget, token: str | None, protocol: Protocol | None,
                specs: Callable[[Runtime, Path], list[MeasureSpec]]) -> Referenced | None:
    """Time ``specs(runtime, workdir)`` interleaved with the table's reference subnets, measuring again after
    pauses while the machine ratio is far from the predictor's drift factor; ``None`` when the table has no
    reference subnets for that runtime. The references are exported once per specializer and runtime."""
    pred = spz.latency[budget.metric_name]
    try:
        key, refs = table_references(spz.table, spz.spec, budget.device, pred.runtime)
    except ValueError:
        return None
    rt = _open(budget, key.name, token)
    settings = BuildSettings.for_runtime(key, protocol)
    slot = (budget.metric_name, tuple(r.subnet for r in refs), settings)
    if slot not in spz.reference_cache:
        workdir = spz.scratch() / f"references{len(spz.reference_cache)}"
        spz.reference_cache[slot] = reference_specs(rt, spz.spec, refs, settings, workdir)
    exported = spz.reference_cache[slot]
    with tempfile.TemporaryDirectory(prefix="ofakit-referenced-") as tmp:
        mine = specs(rt, Path(tmp))
        return settled(lambda: measure_referenced(rt, mine, refs, exported), expected=pred.drift)


def measure_with_references(spz: Specializer, cfg: SubnetConfig, artifact: ExportResult | None, budget: Budget,
                            token: str | None = None, protocol: Protocol | None = None
                            ) -> Measurement | tuple[Measurement, float]:
    """:func:`measure`, interleaved with the table's reference subnets: the measurement and the machine ratio
    at that moment (only the measurement when the table has no reference subnets)."""
    key = spz.latency[budget.metric_name].runtime
    ref = _referenced(spz, budget, token, protocol,
                      lambda rt, tmp: [_artifact_spec(spz.ctx, cfg, artifact, rt, key, protocol, tmp)])
    if ref is None:
        return measure(spz.ctx, cfg, artifact, budget, token, protocol, key)
    return ref.measurements[0], ref.ratio


Timer = Callable[[Sequence[SubnetConfig], Budget], "list[Measurement] | tuple[list[Measurement], float]"]
"""Times several subnets on one budget's device and runtime: ``timer(configs, budget)``, their measurements
or their measurements and the machine ratio at that moment."""
TIMING_ERRORS = (RuntimeUnavailable, AgentError, ExporterUnavailable, ValueError)
"""What timing on a device may raise when it cannot be done there (the caller falls back to predictions)."""


def time_candidates(spz: Specializer, cfgs: Sequence[SubnetConfig], budget: Budget, token: str | None = None,
                    protocol: Protocol | None = None) -> list[Measurement] | tuple[list[Measurement], float]:
    """Time subnets on ``budget``'s device and runtime, configured like its table (threads, precision,
    batch): interleaved on this machine, one after another through an agent; with the table's reference
    subnets among them, so the machine ratio comes back too (and a disturbed moment is measured again).
    Raises ``RuntimeUnavailable`` when that runtime cannot run there."""
    key = spz.latency[budget.metric_name].runtime
    settings = BuildSettings.for_runtime(key, protocol)
    ref = _referenced(spz, budget, token, protocol,
                      lambda rt, tmp: subnet_specs(rt, spz.spec, cfgs, settings, tmp / "candidates"))
    if ref is not None:
        return list(ref.measurements), ref.ratio
    rt = _open(budget, key.name, token)
    with tempfile.TemporaryDirectory(prefix="ofakit-candidates-") as tmp:
        return time_subnets(rt, spz.spec, cfgs, settings, Path(tmp))


def reading(got: Any) -> tuple[Any, float | None]:
    """A meter's or timer's result as ``(measurement(s), machine ratio or None)``."""
    return (got[0], float(got[1])) if isinstance(got, tuple) else (got, None)


def rerank(cands: Sequence[Candidate], budgets: Sequence[Budget], timer: Timer,
           expected: Mapping[str, float] | None = None) -> tuple[Candidate | None, list[dict[str, Any]]]:
    """Measure candidates on every budget's runtime and pick the most accurate one judged within every
    budget (of those predicted within :data:`ACCURACY_TIE` of it, the one that uses its budgets most);
    ``None`` when none is. Returns the pick and one record per candidate.

    With ``expected`` (each budget's predictor drift factor, by metric name) and a timer that reports the
    machine ratio of its moment, a candidate is judged by its measurement at the predictor's machine speed,
    ``measured / ratio * expected`` (``judged_ms``): the references timed beside it take the moment's speed
    out, and what is left is the candidate's own cost, which the table may get wrong. Otherwise by the raw
    measurement.
    """
    rows = [{"config": c.config.to_dict(), "predicted_accuracy": c.accuracy, "predicted_ms": {}, "measured_ms": {},
             "judged_ms": {}} for c in cands]
    for b in budgets:
        ms, ratio = reading(timer([c.config for c in cands], b))
        scale = expected[b.metric_name] / ratio if expected is not None and ratio is not None else 1.0
        for row, c, m in zip(rows, cands, ms):
            row["predicted_ms"][b.metric_name] = c.metrics[b.metric_name]
            row["measured_ms"][b.metric_name] = m.stats.median_ms
            row["judged_ms"][b.metric_name] = m.stats.median_ms * scale
            if ratio is not None:
                row.setdefault("machine_ratio", {})[b.metric_name] = ratio
    return _mark_pick(cands, rows, budgets), rows


def _mark_pick(cands: Sequence[Candidate], rows: list[dict[str, Any]], budgets: Sequence[Budget]) -> Candidate | None:
    """The most accurate candidate judged within every budget (of those predicted within
    :data:`ACCURACY_TIE` of it, the one whose least-used budget is used most); marks ``picked`` in ``rows``."""
    shares = [[row["judged_ms"][b.metric_name] / b.ms for b in budgets] for row in rows]
    ok = [(c, min(sh)) for c, sh in zip(cands, shares) if max(sh) <= 1.0]
    top = max((c.accuracy for c, _ in ok), default=0.0)
    tied = [(c, use) for c, use in ok if c.accuracy >= top - ACCURACY_TIE]
    pick = max(tied, key=lambda cu: (cu[1], cu[0].accuracy))[0] if tied else None
    for c, row in zip(cands, rows):
        row["picked"] = c is pick
    return pick


def measured_choice(spz: Specializer, budgets: Sequence[Budget], timer: Timer, max_macs: float | None = None,
                    max_params: float | None = None, settings: EvolutionSettings | None = None,
                    search_budgets: Sequence[Budget] | None = None, tried: frozenset[SubnetConfig] = frozenset(),
                    use: float = USE_BUDGET, normalise: bool = False) -> tuple[Candidate | None, list[dict[str, Any]]]:
    """The most accurate subnet of a measured shortlist within every budget (``None`` when none is) and one
    record per candidate timed (``round`` 1 or 2).

    The shortlist is searched around ``search_budgets`` (default: the budgets); subnets in ``tried`` are
    not candidates. When no candidate meets the budgets, or the best one uses less than ``use`` of one, the
    candidates' own measurements show how far off the predictions are around the budget: a second shortlist
    is searched at each budget divided by the median measured/predicted ratio, its new subnets are timed,
    and the best of both rounds is the pick.

    With ``normalise``, candidates are judged at the predictor's machine speed (:func:`rerank` with the
    drift factors), so that a slow or fast moment during their timing, seen in the reference subnets timed
    beside them, does not decide the pick; by default, by their raw measurements (in bench_picks' sixth run
    the raw judgement used more of the budgets: benchmarks/RESULTS.md).
    """
    search_budgets = list(search_budgets or budgets)
    cands = [c for c in spz.shortlist(search_budgets, max_macs, max_params, settings) if c.config not in tried]
    if not cands:
        return None, []
    expected = {b.metric_name: spz.latency[b.metric_name].drift for b in budgets} if normalise else None
    best, rows = rerank(cands, budgets, timer, expected)
    for row in rows:
        row["round"] = 1
    picked = next((r for r in rows if r["picked"]), None)
    if picked is not None and all(picked["judged_ms"][b.metric_name] >= use * b.ms for b in budgets):
        return best, rows
    scaled = []
    for b, sb in zip(budgets, search_budgets):
        ratio = float(np.median([r["judged_ms"][b.metric_name] / r["predicted_ms"][b.metric_name] for r in rows]))
        scaled.append(Budget(b.device, b.runtime, sb.ms / ratio))
    seen = tried | {c.config for c in cands}
    try:
        more = [c for c in spz.shortlist(scaled, max_macs, max_params, settings, SECOND_ROUND) if c.config not in seen]
    except BudgetError:
        more = []
    if not more:
        return best, rows
    best2, rows2 = rerank(more, budgets, timer, expected)
    for row in rows2:
        row["round"] = 2
    return _mark_pick([*cands, *more], rows + rows2, budgets), rows + rows2


@dataclass
class ShipReport:
    """What the closed loop did: every attempt (predicted vs measured) and the final artifact."""

    final: Candidate
    artifact: ExportResult
    sidecar: Path
    attempts: list[dict[str, Any]] = field(default_factory=list)
    met: bool | None = None
    accuracy_report: dict[str, Any] = field(default_factory=dict)

    @property
    def shipped(self) -> dict[str, Any]:
        """The record of the attempt whose subnet was shipped (not always the last one tried)."""
        return next(a for a in self.attempts if a["config"] == self.final.config.to_dict())


def ship(spz: Specializer, budgets: Sequence[Budget], target: str, out: str | Path, retries: int = 3,
         max_macs: float | None = None, max_params: float | None = None, token: str | None = None,
         settings: EvolutionSettings | None = None, precision: str = "fp32", protocol: Protocol | None = None,
         on_attempt: Callable[[dict[str, Any]], None] | None = None, meter: Meter | None = None,
         under: float = UNDER_BUDGET, measure_shortlist: bool = True, timer: Timer | None = None) -> ShipReport:
    """Search, export, measure; re-search after a missed or a wasted budget (at most ``retries`` times).

    The default meter times the artifact interleaved with the table's reference subnets
    (:func:`measure_with_references`): a moment when the machine runs far from its table's speed is measured
    again after pauses, and the machine ratio that remains is recorded with the attempt. A miss is confirmed
    by measuring again (the second measurement counts). It adds the measurement, divided by that ratio (in
    the table's own time frame), to the table's calibration samples and refits that device's correction; a
    ratio that outlasted the pauses rescales the predictor (:meth:`Specializer.recalibrate`). If the
    refitted predictor still
    under-predicts the missed subnet, the search budget is tightened by the ratio of its prediction to the
    measurement, so the next pick leaves that margin (dropped again when no subnet is predicted within it).

    A wasted budget is a pick predicted near its budget (at least ``under`` of it) that measures under
    ``under`` of it: the table over-predicts this machine now. Its measurement is stored and refitted the
    same way, and the search runs again at the full budget. The loop stops when a search returns a subnet it
    already measured. The shipped subnet is the most accurate (predicted) one that met every budget, else
    the last one tried.

    With ``measure_shortlist``, each search returns a shortlist (picks at several fractions of the budgets,
    :meth:`Specializer.shortlist`) timed interleaved on every budget's runtime; the most accurate one measured
    within the budgets is exported (the single pick at the budget is the subnet whose latency the table
    underestimates most). Where the runtime cannot run, the predicted pick is used.

    ``meter(config, artifact, budget)`` times the exported artifact; by default :func:`measure` on the
    budget's device. ``timer(configs, budget)`` times a shortlist; by default :func:`time_candidates`.
    Replayed, recorded measurements make the loop's decisions testable.
    """
    if retries < 0:
        raise ValueError(f"retries={retries!r} must be >= 0")
    if not 0 < under < 1:
        raise ValueError(f"under={under!r} must be within (0, 1): the measured share of a budget below which "
                         "a pick wastes it")
    if meter is None:
        def meter(cfg: SubnetConfig, artifact: ExportResult, budget: Budget) -> Measurement | tuple[Measurement, float]:
            return measure_with_references(spz, cfg, artifact, budget, token, protocol)
    if timer is None and measure_shortlist:
        def timer(cfgs: Sequence[SubnetConfig], budget: Budget) -> list[Measurement]:
            return time_candidates(spz, cfgs, budget, token, protocol)
    search_ms = {b.metric_name: b.ms for b in budgets}
    attempts: list[dict[str, Any]] = []
    tried: dict[SubnetConfig, tuple[Candidate, ExportResult]] = {}
    for attempt in range(retries + 1):
        try:
            cand, shortlist = _choose(spz, budgets, search_ms, max_macs, max_params, settings, set(tried),
                                      timer if measure_shortlist else None)
        except BudgetError as exc:
            if not attempts:
                raise
            attempts[-1]["stopped"] = f"after recalibration: {exc}"
            log.warning("closed loop stopped: %s", exc)
            break
        if cand.config in tried:
            attempts[-1]["stopped"] = "the search returned a subnet already measured"
            break
        exported, _ = export_subnet(spz.ctx, cand.config, target, out, precision)
        tried[cand.config] = (cand, exported)
        rec, measured, wasted = _attempt(cand, budgets, exported, meter, attempt + 1, search_ms, under)
        if shortlist is not None:
            rec["shortlist"] = shortlist
        attempts.append(rec)
        if on_attempt:
            on_attempt(rec)
        ratios = rec.get("machine_ratio", {})
        missed = [(b, m) for b, m in measured if m.stats.median_ms > b.ms]
        wasted = [] if missed else wasted
        if attempt == retries or not (missed or wasted):
            break
        for b, m in missed:
            log.info("subnet measured %.3f ms on %s, over its %.3f ms budget by %.1f%%; recalibrating",
                     m.stats.median_ms, b.metric_name, b.ms, 100 * (m.stats.median_ms / b.ms - 1))
            spz.recalibrate(b.device, b.runtime, cand.config.to_json(), m, ratios.get(b.metric_name))
            again = float(spz.latency[b.metric_name].predict([cand.config])[0])
            if again < m.stats.median_ms:
                search_ms[b.metric_name] *= min(1.0, again / m.stats.median_ms)
        for b, m in wasted:
            log.info("subnet measured %.3f ms on %s, only %.0f%% of its %.3f ms budget; recalibrating",
                     m.stats.median_ms, b.metric_name, 100 * m.stats.median_ms / b.ms, b.ms)
            spz.recalibrate(b.device, b.runtime, cand.config.to_json(), m, ratios.get(b.metric_name))
            search_ms[b.metric_name] = b.ms
    met = [a for a in attempts if a["met"] is True]
    final = max(met, key=lambda a: a["predicted_accuracy"]) if met else attempts[-1]
    cand, exported = tried[SubnetConfig.from_dict(final["config"])]
    if final is not attempts[-1]:  # a later attempt overwrote the file: export the chosen subnet again
        exported, _ = export_subnet(spz.ctx, cand.config, target, out, precision)
    verdict = final["met"]  # None: some budget could not be measured there
    info = {"predicted_accuracy": cand.accuracy, "predicted_latency_ms": final["predicted_ms"],
            "measured_latency_ms": final["measured_ms"] or None, "budgets_ms": final["budgets_ms"],
            "budget_met": verdict, "closed_loop": attempts, "shipped_attempt": final["attempt"],
            "accuracy_predictor": spz.accuracy_report,
            "latency_predictors": {k: p.describe() for k, p in spz.latency.items()}}
    side = write_sidecar(spz.ctx, cand.config, exported, precision, info)
    return ShipReport(cand, exported, side, attempts, verdict, spz.accuracy_report)


def _search(spz: Specializer, budgets: Sequence[Budget], search_ms: dict[str, float], max_macs: float | None,
            max_params: float | None, settings: EvolutionSettings | None, retry: bool) -> Candidate:
    """The pick at the (possibly tightened) search budgets; a margin that leaves no subnet is dropped."""
    tight = [Budget(b.device, b.runtime, search_ms[b.metric_name]) for b in budgets]
    try:
        return spz.search(spz.constraints(tight, max_macs, max_params), settings).best
    except BudgetError as exc:
        if not retry or all(search_ms[b.metric_name] == b.ms for b in budgets):
            raise
        log.info("no subnet leaves that margin (%s); searching at the budget itself", exc)
        search_ms.update({b.metric_name: b.ms for b in budgets})
        return spz.search(spz.constraints(budgets, max_macs, max_params), settings).best


def _choose(spz: Specializer, budgets: Sequence[Budget], search_ms: dict[str, float], max_macs: float | None,
            max_params: float | None, settings: EvolutionSettings | None, tried: set[SubnetConfig],
            timer: Timer | None) -> tuple[Candidate, list[dict[str, Any]] | None]:
    """The subnet to export: the search's pick or, with a ``timer``, the best of its measured shortlist
    (subnets already shipped and measured in an earlier attempt are not candidates again)."""
    pick = _search(spz, budgets, search_ms, max_macs, max_params, settings, bool(tried))
    if timer is None:
        return pick, None
    tight = [Budget(b.device, b.runtime, search_ms[b.metric_name]) for b in budgets]
    try:
        best, rows = measured_choice(spz, budgets, timer, max_macs, max_params, settings, tight, frozenset(tried))
    except TIMING_ERRORS as exc:
        log.warning("shortlist not measured (%s); exporting the predicted pick", exc)
        return pick, None
    return best or pick, rows or None


def _attempt(cand: Candidate, budgets: Sequence[Budget], exported: ExportResult, meter: Meter, number: int,
             search_ms: dict[str, float], under: float
             ) -> tuple[dict[str, Any], list[tuple[Budget, Measurement]], list[tuple[Budget, Measurement]]]:
    """Measure one exported pick on every budget's runtime: its record, the measurements taken, and those
    that wasted their budget."""
    rec: dict[str, Any] = {"attempt": number, "config": cand.config.to_dict(), "predicted_accuracy": cand.accuracy,
                           "budgets_ms": {b.metric_name: b.ms for b in budgets}, "search_budgets_ms": dict(search_ms),
                           "predicted_ms": {}, "measured_ms": {}, "unmeasured": {}}
    measured, wasted = [], []
    for b in budgets:
        name = b.metric_name
        rec["predicted_ms"][name] = cand.metrics[name]
        try:
            m, ratio = reading(meter(cand.config, exported, b))
            if m.stats.median_ms > b.ms:  # confirm a miss with a second measurement: one may be contended
                rec.setdefault("first_measurements", {})[name] = m.to_dict()
                m, ratio = reading(meter(cand.config, exported, b))
        except (RuntimeUnavailable, AgentError) as exc:  # cannot run there, or the agent is unreachable now
            rec["unmeasured"][name] = str(exc)
            continue
        rec["measured_ms"][name] = m.stats.median_ms
        rec.setdefault("measurements", {})[name] = m.to_dict()
        if ratio is not None:
            rec.setdefault("machine_ratio", {})[name] = ratio
        measured.append((b, m))
        if m.stats.median_ms > b.ms:
            rec.setdefault("over_budget_pct", {})[name] = 100 * (m.stats.median_ms / b.ms - 1)
        elif m.stats.median_ms < under * b.ms <= cand.metrics[name]:
            rec.setdefault("under_budget_pct", {})[name] = 100 * (1 - m.stats.median_ms / b.ms)
            wasted.append((b, m))
    rec["met"] = False if "over_budget_pct" in rec else (None if rec["unmeasured"] else True)
    return rec, measured, wasted
