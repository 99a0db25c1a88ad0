"""Ship a subnet: export it with a sidecar JSON (:mod:`ofakit.artifact`), measure the artifact on the
budget's runtime (:mod:`ofakit.shortlist`), and close the loop (a missed budget recalibrates the latency
predictor with that measurement and searches again; a wasted one searches again, bounded).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from deploy_targets import ExportResult
from elastic.families import Config
from ofakit.artifact import export_subnet, write_sidecar
from ofakit.search.evolution import BudgetError, Candidate, EvolutionSettings
from ofakit.shortlist import TIMING_ERRORS, Timer, measure_with_references, measured_choice, reading, time_candidates
from ofakit.specialize import Budget, Specializer
from profilers import Measurement, Protocol
from profilers.agent.client import AgentError
from profilers.runtimes import RuntimeUnavailable
from profilers.store import read_only

log = logging.getLogger(__name__)
Meter = Callable[[Config, ExportResult, Budget], "Measurement | tuple[Measurement, float]"]
"""Times an exported subnet for one budget: ``meter(config, artifact, budget)``, a measurement or a
measurement and the machine ratio at that moment (see :func:`profilers.drift.measure_referenced`)."""
UNDER_BUDGET = 0.8  # a pick predicted at >= 80% of its budget that measures under 80% of it wastes the budget


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
         under: float = UNDER_BUDGET, measure_shortlist: bool = True, timer: Timer | None = None,
         min_agreement: float | None = None) -> ShipReport:
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
    Replayed, recorded measurements make the loop's decisions testable. With ``retries``, the table must be
    writable (misses are stored there): a read-only one is a ``ValueError`` before any work. The artifact is
    exported at ``precision``; ``min_agreement`` is the int8 top-1 agreement bar it must pass (the
    exporter's default when ``None``).
    """
    if retries < 0:
        raise ValueError(f"retries={retries!r} must be >= 0")
    if not 0 < under < 1:
        raise ValueError(f"under={under!r} must be within (0, 1): the measured share of a budget below which "
                         "a pick wastes it")
    refuse_read_only(spz.table, retries)
    bar = min_agreement if precision == "int8" else None  # an auto search may settle on fp32
    if meter is None:
        def meter(cfg: Config, artifact: ExportResult, budget: Budget) -> Measurement | tuple[Measurement, float]:
            return measure_with_references(spz, cfg, artifact, budget, token, protocol)
    if timer is None and measure_shortlist:
        def timer(cfgs: Sequence[Config], budget: Budget) -> list[Measurement]:
            return time_candidates(spz, cfgs, budget, token, protocol)
    search_ms = {b.metric_name: b.ms for b in budgets}
    attempts: list[dict[str, Any]] = []
    tried: dict[Config, tuple[Candidate, ExportResult]] = {}
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
        exported, _ = export_subnet(spz.ctx, cand.config, target, out, precision, min_agreement=bar)
        tried[cand.config] = (cand, exported)
        rec, measured, wasted = _attempt(cand, budgets, exported, meter, attempt + 1, search_ms, under)
        if shortlist is not None:
            rec["shortlist"] = shortlist
        _expect(rec, shortlist)
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
    cand, exported = tried[spz.space.config_type.from_dict(final["config"])]
    if final is not attempts[-1]:  # a later attempt overwrote the file: export the chosen subnet again
        exported, _ = export_subnet(spz.ctx, cand.config, target, out, precision, min_agreement=bar)
    verdict = final["met"]  # None: some budget could not be measured there
    info = {"predicted_accuracy": cand.accuracy, "predicted_latency_ms": final["predicted_ms"],
            "expected_latency_ms": final["expected_ms"], "expected_from": final["expected_from"],
            "measured_latency_ms": final["measured_ms"] or None, "budgets_ms": final["budgets_ms"],
            "budget_met": verdict, "closed_loop": attempts, "shipped_attempt": final["attempt"],
            "accuracy_predictor": spz.accuracy_report,
            "latency_predictors": {k: p.describe() for k, p in spz.latency.items()}}
    side = write_sidecar(spz.ctx, cand.config, exported, precision, info)
    return ShipReport(cand, exported, side, attempts, verdict, spz.accuracy_report)


def refuse_read_only(table: str | Path, retries: int, names: tuple[str, str] = ("table", "retries=0")) -> None:
    """``ValueError`` when a closed loop with ``retries`` would store a miss in a read-only ``table``: refused
    before any work, not after a search and an export. ``names``: how the table and "no retries" are called
    to the caller (e.g. ``("--table", "--retries 0")`` on the command line)."""
    if retries and read_only(table):
        raise ValueError(f"{names[0]} {table} is read-only, but the closed loop stores a missed pick's measurement "
                         f"in it to recalibrate; copy the table somewhere writable or pass {names[1]}")


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
            max_params: float | None, settings: EvolutionSettings | None, tried: set[Config],
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


def _expect(rec: dict[str, Any], shortlist: list[dict[str, Any]] | None) -> None:
    """The latency the kit expects of the exported pick, per budget: its own measurement in the shortlist when
    it was timed there (the table alone under-predicts the subnets a search selects: benchmarks/RESULTS.md),
    else the table's prediction; ``expected_from`` says which, and ``expected_machine_ratio`` the machine's
    speed during that measurement (the reference subnets timed beside it), where known."""
    row = next((r for r in shortlist or () if r["picked"] and r["config"] == rec["config"]), None)
    rec["expected_ms"] = dict(rec["predicted_ms"] if row is None else row["measured_ms"])  # timed on every budget
    rec["expected_from"] = "table prediction" if row is None else "shortlist measurement"
    rec["expected_machine_ratio"] = {} if row is None else dict(row.get("machine_ratio", {}))


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
