"""Machine drift: re-time a table's reference subnets now and rescale its predictions by what changed.

A shared machine's speed moves by 10-40% within minutes, and a device can get faster or slower after its
table was built (clocks, thermal state, other tenants, a runtime update). The layer entries and the fitted
correction describe the moment of the build. The build's calibration subnets were timed together in one
interleaved measurement; a few of them, spread from the fastest to the slowest, are the table's reference
subnets. :func:`check_drift` exports them again, times them interleaved (seconds; through an agent, one
after another) and returns the median
ratio of their latency now to their stored latency; :meth:`LatencyPredictor.rescaled` applies it. Every
check is recorded in the table (``ofakit profile show`` reports the latest).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from elastic import MobileNetV3Spec, SubnetConfig
from profilers.builder import BuildSettings, time_subnets
from profilers.predictor import resolve_runtime
from profilers.record import Protocol
from profilers.runtimes import Runtime
from profilers.store import CalibrationSample, LatencyTable, RuntimeKey, spec_id

log = logging.getLogger(__name__)
DEFAULT_REFERENCES = 4


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


def check_drift(table_path: str | Path, spec: MobileNetV3Spec, device: str, runtime: Runtime,
                runtime_key: str | RuntimeKey, references: int = DEFAULT_REFERENCES,
                protocol: Protocol | None = None, record: bool = True) -> DriftCheck:
    """Re-time the table's reference subnets of ``spec`` on ``runtime`` now; the ratio to their stored latency.

    Args:
        table_path: The latency table.
        spec: The architecture (its calibration samples must be in the table).
        device: Device name in the table (``local`` or an agent URL); ``runtime`` must run there.
        runtime: The runtime that times them (a local runtime or an agent's ``RemoteRuntime``).
        runtime_key: The table's runtime configuration (name or label) whose samples are compared.
        references: How many reference subnets to re-time.
        protocol: Timing protocol (the build's default).
        record: Store the check in the table.
    """
    sid = spec_id(spec.to_dict())
    with LatencyTable(table_path) as table:
        rk = resolve_runtime(table, runtime_key, device)
        refs = reference_samples(table.calibration(device, rk, sid), references)
    if not refs:
        raise ValueError(f"{table_path} has no calibration subnets for {device}/{rk.label()} to re-time; build "
                         "the table with calibration (`ofakit profile build --calibrate N`)")
    with tempfile.TemporaryDirectory(prefix="ofakit-drift-") as tmp:
        ms = time_subnets(runtime, spec, [SubnetConfig.from_json(r.subnet) for r in refs],
                          BuildSettings.for_runtime(rk, protocol), Path(tmp))
    now = [m.stats.median_ms for m in ms]
    check = DriftCheck(drift_ratio([r.measured_ms for r in refs], now),
                       tuple((r.subnet, r.measured_ms, n) for r, n in zip(refs, now)),
                       float(refs[0].measured_at), time.time())
    log.info("drift on %s/%s: latency now %.3fx the table's (%d reference subnets)", device, rk.label(),
             check.ratio, len(refs))
    if record:
        with LatencyTable(table_path) as table:
            detail = {k: v for k, v in check.to_dict().items() if k not in ("ratio", "measured_at")}
            table.add_drift(device, rk, sid, check.ratio, detail, check.measured_at)
    return check
