"""Rows of the latency table, as values, and the checks every row passes on its way in and out.

:class:`RuntimeKey` (which runtime configuration a latency belongs to), :class:`Entry` (one stored layer
latency), :class:`CalibrationSample` (one whole-subnet measurement) and :class:`MergeReport`; the checks
that keep a bad figure, name or runtime from being stored (or, when a file was edited by hand, name the
corrupt field in one line instead of failing later); and :func:`spec_id`, the stable id of an architecture.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from deploy_targets.base import PRECISIONS
from elastic import SubnetConfig
from elastic.families import Space
from profilers.record import Measurement, Stats

STATS = tuple(f.name for f in fields(Stats) if f.name != "blocks")
"""The statistics stored for every layer latency: those of :class:`profilers.record.Stats` (declared once,
there), but the number of timing blocks."""


def check_name(name: Any, what: str) -> str:
    """``name`` if it can name something in a table: a non-empty printable string without surrounding
    whitespace, at most 200 characters; ``ValueError`` otherwise."""
    if (not isinstance(name, str) or not name or name != name.strip() or len(name) > 200
            or not name.isprintable()):
        raise ValueError(f"{what} {name!r} is not allowed: use 1 to 200 printable characters, no newline, "
                         "no leading or trailing spaces")
    return name


_CORRUPT = "the table is corrupt; rebuild it (`ofakit profile build --force`) or import a good copy"


def _number(value: Any, what: str, path: Path, fix: str = _CORRUPT) -> float:
    """A stored figure, checked: a corrupt row (text where a number belongs) is a one-line error."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return value
    raise ValueError(f"{path}: {what} is {value!r}, not a latency figure (allowed: a finite number >= 0); {fix}")


FUTURE_S = 86400.0  # clock skew tolerated between machines: a measurement at most a day "in the future"


def _not_future(at: float, what: str, path: Path, fix: str) -> None:
    if at > time.time() + FUTURE_S:
        raise ValueError(f"{path}: {what} was measured at {at:.0f} (Unix time), in the future; {fix}")


def _count(value: Any, what: str, path: Path, fix: str) -> int:
    """A stored count (threads, batch, runs), checked: an integer from 1 to :data:`MAX_COUNT`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        raise ValueError(f"{path}: {what}={value!r}; allowed: an integer from 1 to {MAX_COUNT} ({fix})")
    return value


def _check_measurement(m: Measurement, what: str, path: Path) -> None:
    """A measurement's statistics and what it records besides them (when, under what load, with what
    runtime), checked before it is stored: one bad field would otherwise make every later read fail."""
    for f in STATS:
        _number(getattr(m.stats, f), f"{what} has {f}", path, "nothing stored")
    _number(m.measured_at, f"{what} has measured_at", path, "nothing stored")
    _not_future(m.measured_at, what, path, "nothing stored")
    _number(m.load_avg, f"{what} has load_avg", path, "nothing stored")
    for f in ("runtime_version", "provider", "runtime"):
        v = getattr(m, f)
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"{path}: {what} has {f}={v!r}; allowed: a non-empty string (nothing stored)")
    if not isinstance(m.device.fingerprint, str):
        raise ValueError(f"{path}: {what} has device fingerprint {m.device.fingerprint!r}; allowed: a string "
                         "(nothing stored)")
    if m.precision not in PRECISIONS:
        raise ValueError(f"{path}: {what} has precision={m.precision!r}; allowed: {list(PRECISIONS)} (nothing stored)")
    for f, v in (("threads", m.threads), ("batch", m.batch), ("runs", m.stats.runs)):
        _count(v, f"{what} has {f}", path, "nothing stored")


def stored_config(space: Space, text: str, table: Any) -> Any:
    """A stored calibration subnet as a config of ``space``; one that is not (a hand edit, another family's
    row) is a ``ValueError`` naming the row and the table."""
    try:
        return space.config_type.from_json(text)  # parsed as before; membership is the caller's business
    except ValueError as exc:
        raise ValueError(f"{table}: calibration subnet {text[:80]} is not a subnet of this architecture ({exc}); "
                         "delete that row, or rebuild the table with `ofakit profile build --force`") from None


def check_subnet(text: str, space: Space | None, what: str, path: Path, fix: str) -> None:
    """A calibration subnet: a subnet config's JSON, inside its architecture's space when that is known."""
    try:
        cfg = (space.config_type if space is not None else SubnetConfig).from_json(text)
        if space is not None:
            space.validate(cfg)
    except (TypeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: {what} {str(text)[:60]!r} is not a subnet of its architecture: {first[:200]} "
                         f"({fix})") from None


def _json(text: Any, what: str, path: Path) -> Any:
    """A stored JSON column, parsed: a corrupt one is a one-line error naming it."""
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{path}: {what} is not valid JSON ({exc}): the table is corrupt; rebuild it or import a "
                         "good copy") from None


MAX_COUNT = 1 << 31  # the largest thread count or batch a table row may hold (SQLite INTEGER, sane)


def _runtime_key(row: Sequence[Any], path: Path) -> "RuntimeKey":
    """A stored runtime configuration (name, provider, threads, precision, batch), checked."""
    name, provider, threads, precision, batch = row
    if not all(isinstance(v, str) for v in (name, provider, precision)) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_COUNT for v in (threads, batch)):
        raise ValueError(f"{path}: runtime {tuple(row)!r} is corrupt (threads and batch must be positive integers); "
                         "rebuild the table or import a good copy")
    if precision not in PRECISIONS or not name or not provider:
        raise ValueError(f"{path}: runtime {tuple(row)!r} is corrupt (precision must be one of {list(PRECISIONS)}, "
                         "name and provider non-empty); rebuild the table or import a good copy")
    return RuntimeKey(name, provider, threads, precision, batch)


def _imported_runtime(data: Mapping[str, Any], path: Path) -> "RuntimeKey":
    """The runtime configuration of an imported row, checked like a stored one."""
    return _runtime_key([data[k] for k in ("name", "provider", "threads", "precision", "batch")], path)


def spec_id(spec: Mapping[str, Any]) -> str:
    """A short stable id of an architecture spec dict (``MobileNetV3Spec.to_dict()``)."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RuntimeKey:
    """A runtime configuration whose latencies are comparable: name, provider, threads, precision, batch."""

    name: str
    provider: str
    threads: int = 1
    precision: str = "fp32"
    batch: int = 1

    @classmethod
    def of(cls, m: Measurement) -> "RuntimeKey":
        """The configuration a measurement was taken with."""
        return cls(m.runtime, m.provider, m.threads, m.precision, m.batch)

    def label(self) -> str:
        """Short human label, e.g. ``onnxruntime/CPUExecutionProvider/1t/fp32/b1``."""
        return f"{self.name}/{self.provider}/{self.threads}t/{self.precision}/b{self.batch}"


@dataclass(frozen=True)
class Entry:
    """One stored layer latency."""

    device: str
    runtime: RuntimeKey
    key: str
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    runs: int
    measured_at: float
    runtime_version: str
    fingerprint: str
    protocol: str
    load_avg: float


@dataclass(frozen=True)
class MergeReport:
    """What :meth:`LatencyTable.import_json` did: entries added or replaced, devices stored under a new name,
    and architectures whose name here belongs to another architecture, stored under a new name."""

    changed: int
    renamed: dict[str, str]
    recipes_renamed: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CalibrationSample:
    """A whole-subnet measurement used to calibrate a predictor."""

    subnet: str  # the subnet config's JSON (any family)
    measured_ms: float
    measured_at: float
    runtime_version: str
    fingerprint: str = ""  # of the device it was measured on ("" in tables written before it was recorded)
    protocol: str = ""  # the timing protocol's JSON ("" likewise)
