"""Machine drift: re-time a table's reference subnets now and rescale its predictions by what changed.

A shared machine's speed moves by 10-40% within minutes, and a device can get faster or slower after its
table was built (clocks, thermal state, other tenants, a runtime update). The layer entries and the fitted
correction describe the moment of the build. The build's calibration subnets were timed together in one
interleaved measurement; a few of them, spread from the fastest to the slowest, are the table's reference
subnets. :func:`check_drift` exports them again, times them interleaved (seconds; through an agent, one
after another) and returns the median
ratio of their latency now to their stored latency; :meth:`LatencyPredictor.rescaled` applies it. Every
check is recorded in the table (``ofakit profile show`` reports the latest).

The same references also travel with other measurements: :func:`measure_referenced` times any artifacts
interleaved with them, so a figure comes with the machine's speed at that moment, and :func:`settled`
measures again after a pause while that speed is far from the expected one. A moment when the machine runs
2x slower for half a minute (seen here) then neither ships a subnet far under its budget nor bends the
table's calibration; a drift that persists through the pauses is taken as real.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from elastic.families import Spec
from profilers.builder import BuildSettings, subnet_specs
from profilers.predictor import resolve_runtime
from profilers.record import Measurement, Protocol
from profilers.runtimes import MeasureSpec, Runtime
from profilers.store import CalibrationSample, LatencyTable, RuntimeKey, read_only, spec_id
from profilers.table_rows import stored_config

log = logging.getLogger(__name__)
DEFAULT_REFERENCES = 4
SETTLE_TOLERANCE = 0.10
"""A machine ratio further than this from the expected one marks a disturbed moment."""
SETTLE_PAUSES_S = (2.0, 5.0, 10.0)
"""Pauses before measuring again while the moment is disturbed (at most ~17 s in all)."""
LASTING_TRIES = 3
"""Tries across pauses, all far from the expected machine ratio on the same side: a lasting drift."""


@dataclass(frozen=True)
class DriftCheck:
    """Reference subnets re-timed now against their stored latencies.

    Attributes:
        ratio: Median over the references of latency now / stored latency (> 1: the machine is slower now).
        references: ``(subnet JSON, stored ms, now ms)`` per reference subnet.
        stored_at: When the references were stored (Unix time).
        measured_at: When they were re-timed.
    """

    ratio: float
    references: tuple[tuple[str, float, float], ...]
    stored_at: float
    measured_at: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"ratio": self.ratio, "references": [list(r) for r in self.references], "stored_at": self.stored_at,
                "measured_at": self.measured_at}


def reference_samples(samples: Sequence[CalibrationSample], n: int = DEFAULT_REFERENCES) -> list[CalibrationSample]:
    """Up to ``n`` calibration samples timed together (the build's interleaved batch: the largest group
    sharing one ``measured_at``, the earliest on a tie), spread from the fastest to the slowest."""
    if n < 1:
        raise ValueError(f"references={n!r} must be a positive integer")
    if not samples:
        return []
    groups: dict[float, list[CalibrationSample]] = {}
    for smp in samples:
        groups.setdefault(smp.measured_at, []).append(smp)
    batch = sorted(max(groups.values(), key=lambda g: (len(g), -g[0].measured_at)), key=lambda c: c.measured_ms)
    picks = np.unique(np.round(np.linspace(0, len(batch) - 1, min(n, len(batch)))).astype(int))
    return [batch[i] for i in picks]


def drift_ratio(stored_ms: Sequence[float], now_ms: Sequence[float]) -> float:
    """Median of ``now / stored`` over reference subnets (robust to one disturbed measurement)."""
    stored, now = np.asarray(stored_ms, dtype=np.float64), np.asarray(now_ms, dtype=np.float64)
    if stored.size == 0 or stored.shape != now.shape:
        raise ValueError(f"need as many stored as re-timed latencies (got {stored.size} and {now.size}), at least one")
    if not (np.all(stored > 0) and np.all(now > 0)):
        raise ValueError("drift needs positive latencies in milliseconds")
    return float(np.median(now / stored))


def table_references(table_path: str | Path, spec: Spec, device: str, runtime_key: str | RuntimeKey,
                     references: int = DEFAULT_REFERENCES) -> tuple[RuntimeKey, list[CalibrationSample]]:
    """The table's runtime configuration named ``runtime_key`` and its reference subnets of ``spec`` on
    ``device``; ``ValueError`` when it has none."""
    with LatencyTable(table_path, readonly=True) as table:
        rk = resolve_runtime(table, runtime_key, device)
        refs = reference_samples(table.calibration(device, rk, spec_id(spec.to_dict())), references)
    if not refs:
        raise ValueError(f"{table_path} has no calibration subnets for {device}/{rk.label()} to re-time; build "
                         "the table with calibration (`ofakit profile build --calibrate N`)")
    return rk, refs


@dataclass(frozen=True)
class Referenced:
    """Measurements taken in one interleaved measurement with a table's reference subnets.

    Attributes:
        measurements: One per measured artifact, in order.
        check: The reference subnets at that moment; ``check.ratio`` is the machine ratio (above 1: the
            machine ran slower than when the table was calibrated).
        tries: Measurements taken to get this one (more than 1 after disturbed moments, see :func:`settled`).
        lasting: Whether the tries showed a lasting drift from the expected machine ratio (:func:`lasting`):
            ``ratio`` is then the machine's speed now, to adopt as the predictor's drift factor.
    """

    measurements: tuple[Measurement, ...]
    check: DriftCheck
    tries: int = 1
    lasting: bool = False

    @property
    def ratio(self) -> float:
        """The machine ratio at the moment of the measurement."""
        return self.check.ratio


def reference_specs(runtime: Runtime, spec: Spec, refs: Sequence[CalibrationSample],
                    settings: BuildSettings, workdir: str | Path) -> list[MeasureSpec]:
    """Export the reference subnets ``refs`` for ``runtime`` into ``workdir`` (reusable across measurements)."""
    cfgs = [stored_config(spec.space, r.subnet, "the latency table") for r in refs]
    return subnet_specs(runtime, spec, cfgs, settings, Path(workdir))


def measure_referenced(runtime: Runtime, specs: Sequence[MeasureSpec], refs: Sequence[CalibrationSample],
                       ref_specs: Sequence[MeasureSpec]) -> Referenced:
    """Time ``specs`` and the reference subnets ``refs`` (exported by :func:`reference_specs`) in one
    interleaved measurement; the references' latency now against their stored latency is the machine ratio."""
    if specs:  # interleaved artifacts share one protocol: the caller's
        ref_specs = [replace(r, protocol=specs[0].protocol) for r in ref_specs]
    ms = runtime.measure_many([*specs, *ref_specs])
    now = [m.stats.median_ms for m in ms[len(specs):]]
    check = DriftCheck(drift_ratio([r.measured_ms for r in refs], now),
                       tuple((r.subnet, r.measured_ms, n) for r, n in zip(refs, now)),
                       float(refs[0].measured_at), time.time())
    return Referenced(tuple(ms[:len(specs)]), check)


def settled(measure: Callable[[], Referenced], expected: float = 1.0, tolerance: float = SETTLE_TOLERANCE,
            pauses_s: Sequence[float] | None = None, sleep: Callable[[float], None] = time.sleep) -> Referenced:
    """Call ``measure`` until its machine ratio is within ``tolerance`` of ``expected`` (relative), pausing
    ``pauses_s`` between tries.

    A moment that passes (a try back near ``expected``) keeps the try closest to ``expected``. A drift that
    lasts is real: once :data:`LASTING_TRIES` tries across the pauses are all far from ``expected`` on the
    same side, no more pauses are spent and the try with the median ratio is returned (the machine's speed
    now, for the caller to adopt), not the one that happened to come closest.

    Args:
        measure: Takes one referenced measurement.
        expected: The machine ratio the caller expects (its predictor's drift factor; 1.0 when none).
        tolerance: Relative distance from ``expected`` that still counts as settled.
        pauses_s: Seconds to wait before each further try (default :data:`SETTLE_PAUSES_S`).
        sleep: How to wait (replaced in tests).
    """
    _check_frame(expected, tolerance)
    pauses = SETTLE_PAUSES_S if pauses_s is None else pauses_s
    if not callable(measure):
        raise ValueError(f"measure={measure!r} must be a callable that takes one referenced measurement")
    if isinstance(pauses, (str, bytes)) or not isinstance(pauses, Sequence) or not all(
            _real(p) and 0 <= p < math.inf for p in pauses):
        raise ValueError(f"pauses_s={pauses_s!r} must be a sequence of finite seconds >= 0")
    tries = [_checked_try(measure())]
    for pause in pauses:
        if abs(tries[-1].ratio / expected - 1) <= tolerance or lasting(tries, expected, tolerance):
            break
        log.info("machine ratio %.2fx (expected %.2fx): a disturbed moment; measuring again in %.0f s",
                 tries[-1].ratio, expected, pause)
        sleep(pause)
        tries.append(_checked_try(measure()))
    drifted = lasting(tries, expected, tolerance)
    if drifted:
        mid = float(np.median([t.ratio for t in tries]))
        best = min(tries, key=lambda t: abs(t.ratio - mid))
        log.info("machine ratio %.2fx (median of %d tries across pauses): a lasting drift from %.2fx", best.ratio,
                 len(tries), expected)
    else:
        best = min(tries, key=lambda t: abs(t.ratio / expected - 1))
    return Referenced(best.measurements, best.check, len(tries), drifted)


def lasting(tries: Sequence[Referenced], expected: float = 1.0, tolerance: float = SETTLE_TOLERANCE,
            n: int = LASTING_TRIES) -> bool:
    """Whether at least ``n`` tries were taken and every one's machine ratio is more than ``tolerance`` from
    ``expected``, all on the same side: the machine has drifted, not a moment."""
    _check_frame(expected, tolerance)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a positive integer (tries that make a lasting drift)")
    if isinstance(tries, (str, bytes)) or not isinstance(tries, Sequence):
        raise ValueError(f"tries={tries!r} must be a sequence of referenced measurements")
    off = [_checked_try(t).ratio / expected - 1 for t in tries]
    return len(off) >= n and (all(o > tolerance for o in off) or all(o < -tolerance for o in off))


def _real(v: Any) -> bool:
    """Whether ``v`` is a real number (not a bool)."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _check_frame(expected: float, tolerance: float) -> None:
    """``ValueError`` unless ``expected`` is a positive finite machine ratio and ``tolerance`` a finite one >= 0."""
    if not (_real(expected) and 0 < expected < math.inf and _real(tolerance) and 0 <= tolerance < math.inf):
        raise ValueError(f"expected={expected!r} must be a positive finite machine ratio and tolerance={tolerance!r} "
                         "a finite fraction >= 0")


def _checked_try(t: Any) -> Referenced:
    """``t`` if it is a referenced measurement with a positive finite machine ratio; ``ValueError`` otherwise."""
    if not isinstance(t, Referenced):
        raise ValueError(f"a try must be a Referenced measurement, got {type(t).__name__}")
    if not (_real(t.ratio) and 0 < t.ratio < math.inf):
        raise ValueError(f"a try's machine ratio is {t.ratio!r}; allowed: a positive finite number")
    return t


def check_drift(table_path: str | Path, spec: Spec, device: str, runtime: Runtime,
                runtime_key: str | RuntimeKey, references: int = DEFAULT_REFERENCES,
                protocol: Protocol | None = None, record: bool = True, settle: bool = True) -> DriftCheck:
    """Re-time the table's reference subnets of ``spec`` on ``runtime`` now; the ratio to their stored latency.

    Args:
        table_path: The latency table.
        spec: The architecture (its calibration samples must be in the table).
        device: Device name in the table (``local`` or an agent URL); ``runtime`` must run there.
        runtime: The runtime that times them (a local runtime or an agent's ``RemoteRuntime``).
        runtime_key: The table's runtime configuration (name or label) whose samples are compared.
        references: How many reference subnets to re-time.
        protocol: Timing protocol (the build's default).
        record: Store the check in the table (a read-only table keeps the check unrecorded, with a warning).
        settle: Re-time after pauses while the ratio is more than 10% off 1 (:func:`settled`): one slow
            moment is not a drift.
    """
    rk, refs = table_references(table_path, spec, device, runtime_key, references)
    settings = BuildSettings.for_runtime(rk, protocol)
    with tempfile.TemporaryDirectory(prefix="ofakit-drift-") as tmp:
        exported = reference_specs(runtime, spec, refs, settings, tmp)

        def once() -> Referenced:
            return measure_referenced(runtime, [], refs, exported)

        check = (settled(once) if settle else once()).check
    log.info("drift on %s/%s: latency now %.3fx the table's (%d reference subnets)", device, rk.label(),
             check.ratio, len(refs))
    if record and read_only(table_path):  # a shared read-only table: the check still rescales, unrecorded
        log.warning("drift check on %s/%s not recorded: %s is read-only", device, rk.label(), table_path)
    elif record:
        with LatencyTable(table_path) as table:
            detail = {k: v for k, v in check.to_dict().items() if k not in ("ratio", "measured_at")}
            table.add_drift(device, rk, spec_id(spec.to_dict()), check.ratio, detail, check.measured_at)
    return check
