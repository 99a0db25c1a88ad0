"""Measurement records: the device fingerprint, the timing protocol and the statistics of one measurement.

A :class:`Measurement` is what every runtime returns: robust latency statistics plus the environment they
were taken in (device, runtime and version, execution provider, threads, precision, batch, load average),
so a figure is never separated from what it means. All records are JSON round-trippable.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from elastic.strict import dataclass_kwargs


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_model() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - a broken CUDA set-up simply means "no GPU" here
        return None
    return None


@dataclass(frozen=True)
class DeviceInfo:
    """What a measurement ran on: CPU and GPU model, cores, OS; ``fingerprint`` hashes them."""

    cpu: str
    cores: int
    os: str
    machine: str
    gpu: str | None = None

    def __post_init__(self) -> None:
        for f in ("cpu", "os", "machine"):
            v = getattr(self, f)
            if not isinstance(v, str):
                raise ValueError(f"device info {f}={v!r} must be a string")
        if not (self.gpu is None or isinstance(self.gpu, str)):
            raise ValueError(f"device info gpu={self.gpu!r} must be a string or null")
        if isinstance(self.cores, bool) or not isinstance(self.cores, int) or not 1 <= self.cores <= 1 << 16:
            raise ValueError(f"device info cores={self.cores!r} must be an integer from 1 to {1 << 16}")

    @property
    def fingerprint(self) -> str:
        """A short stable hash of the hardware and OS description."""
        text = json.dumps([self.cpu, self.cores, self.os, self.machine, self.gpu])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (with the fingerprint)."""
        return {**asdict(self), "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DeviceInfo":
        """Inverse of :meth:`to_dict` (the stored fingerprint is recomputed)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"device info {str(data)[:80]!r} must be a JSON object")
        data = {k: v for k, v in data.items() if k != "fingerprint"}
        return cls(**dataclass_kwargs(cls, data, "device info"))


def local_device(gpu: bool = True) -> DeviceInfo:
    """The machine this process runs on."""
    uname = platform.uname()
    return DeviceInfo(cpu=_cpu_model(), cores=os.cpu_count() or 1, os=f"{uname.system} {uname.release}",
                      machine=uname.machine, gpu=_gpu_model() if gpu else None)


def load_average() -> float:
    """The 1-minute load average (0 where the OS does not report one)."""
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return 0.0


@dataclass(frozen=True)
class Protocol:
    """How a latency is measured on a noisy machine.

    Attributes:
        warmup_s: Minimum warm-up time; at least ``warmup_runs`` runs are made as well.
        warmup_runs: Minimum warm-up runs.
        blocks: Number of timed blocks; blocks of several candidates are interleaved (A, B, A, B, ...).
        block_s: Target duration of one block; the runs per block follow from the warm-up speed.
        min_runs_per_block: Lower bound of runs per block.
        max_runs_per_block: Upper bound of runs per block.
        block_warmup_runs: Untimed runs at the start of every block: the candidate timed before may have
            evicted this one's weights from the caches, and with short blocks that cold first run would
            otherwise weigh on the statistics of interleaved candidates only.
    """

    warmup_s: float = 0.05
    warmup_runs: int = 10
    blocks: int = 10
    block_s: float = 0.02
    min_runs_per_block: int = 3
    max_runs_per_block: int = 200
    block_warmup_runs: int = 1

    def __post_init__(self) -> None:
        for name in ("blocks", "min_runs_per_block", "max_runs_per_block", "warmup_runs", "block_warmup_runs"):
            v, low = getattr(self, name), 0 if name == "block_warmup_runs" else 1
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= 100_000:
                raise ValueError(f"Protocol.{name}={v!r} must be an integer; allowed: {low} to 100000")
        for name in ("warmup_s", "block_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 3600:
                raise ValueError(f"Protocol.{name}={v!r} must be a number of seconds; allowed: 0 to 3600")
        if self.max_runs_per_block < self.min_runs_per_block:
            raise ValueError(f"Protocol.max_runs_per_block={self.max_runs_per_block} is below "
                             f"min_runs_per_block={self.min_runs_per_block}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Protocol":
        """Inverse of :meth:`to_dict`; unknown keys raise."""
        return cls(**dataclass_kwargs(cls, data, "protocol"))

    @classmethod
    def stored_is_shorter(cls, stored_json: str, wanted: "Protocol") -> bool:
        """Whether a stored measurement's protocol (its JSON; ``""`` = not recorded) timed less than half as
        long as ``wanted`` does (blocks x block time), as ``--quick`` does: a full build re-measures it."""
        if not stored_json:
            return False
        try:
            p = cls.from_dict(json.loads(stored_json))
        except (ValueError, TypeError):
            return True
        return p.blocks * p.block_s < 0.5 * wanted.blocks * wanted.block_s


@dataclass(frozen=True)
class Stats:
    """Robust statistics of per-run latencies, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    runs: int
    blocks: int

    def scaled(self, factor: float) -> "Stats":
        """These statistics with every latency multiplied by ``factor`` (counts unchanged)."""
        return replace(self, **{f.name: getattr(self, f.name) * factor for f in fields(self) if f.name.endswith("_ms")})

    @classmethod
    def of(cls, times_s: Sequence[float], blocks: int) -> "Stats":
        """Statistics of run times given in seconds."""
        ms = np.asarray(times_s, dtype=np.float64) * 1e3
        if ms.size == 0:
            raise ValueError("no timed runs to summarise")
        p10, med, p90 = np.percentile(ms, [10, 50, 90])
        return cls(float(med), float(p10), float(p90), float(ms.mean()), float(ms.std()), float(ms.min()),
                   int(ms.size), blocks)


_TIME_LIMIT: contextvars.ContextVar[float | None] = contextvars.ContextVar("ofakit_time_limit", default=None)


class MeasurementTooLong(ValueError):
    """A timing protocol that would run past the time limit in force (see :func:`time_limit`)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Within this block (and this thread), every :func:`time_interleaved` call must finish within ``seconds``:
    it stops a warm-up that runs past the limit, and refuses blocks whose runs, projected from the warm-up
    speed, would (``MeasurementTooLong``). The agent sets it, since one request holds its single
    measurement lock; the run counts a protocol forces (``warmup_runs``, ``min_runs_per_block``) would
    otherwise make a slow model's measurement last hours."""
    token = _TIME_LIMIT.set(float(seconds))
    try:
        yield
    finally:
        _TIME_LIMIT.reset(token)


def time_interleaved(runners: Sequence[Callable[[], Any]], protocol: Protocol) -> list[Stats]:
    """Time several candidates with the same protocol, their blocks interleaved.

    Each runner performs one inference; a runner that returns a ``float`` reports its own elapsed seconds
    (e.g. from CUDA events), otherwise ``time.perf_counter`` brackets the call. Every candidate is warmed up first; the runs per block are chosen
    per candidate from its warm-up speed so that one block lasts about ``protocol.block_s``. Blocks then
    alternate between candidates, so slow drifts of the machine affect all of them alike; each block starts
    with ``protocol.block_warmup_runs`` untimed runs.
    """
    if not runners:
        return []
    limit, begun = _TIME_LIMIT.get(), time.perf_counter()
    per_block, cost = [], 0.0
    for run in runners:
        n, start = 0, time.perf_counter()
        while n < protocol.warmup_runs or time.perf_counter() - start < protocol.warmup_s:
            run()
            n += 1
            if limit is not None and time.perf_counter() - begun > limit:
                raise MeasurementTooLong(f"the warm-up alone ran past the time limit of {limit:g} s ({n} runs of "
                                         f"candidate {len(per_block) + 1}); ask for fewer warmup_runs")
        each = (time.perf_counter() - start) / n
        k = int(protocol.block_s / each) if each > 0 else protocol.max_runs_per_block
        per_block.append(min(protocol.max_runs_per_block, max(protocol.min_runs_per_block, k)))
        cost += protocol.blocks * (per_block[-1] + protocol.block_warmup_runs) * each
    if limit is not None and time.perf_counter() - begun + cost > limit:
        raise MeasurementTooLong(f"the protocol would take ~{time.perf_counter() - begun + cost:.0f} s here (its "
                                 f"runs per block at the warm-up's speed), over the time limit of {limit:g} s; "
                                 "ask for fewer blocks or runs per block")
    times: list[list[float]] = [[] for _ in runners]
    clock = time.perf_counter
    for _ in range(protocol.blocks):
        for i, run in enumerate(runners):
            out = times[i]
            for _ in range(protocol.block_warmup_runs):
                run()
            for _ in range(per_block[i]):
                t0 = clock()
                r = run()
                dt = clock() - t0
                out.append(r if type(r) is float else dt)  # a runner may report device-timed seconds
    return [Stats.of(t, protocol.blocks) for t in times]


@dataclass(frozen=True)
class Measurement:
    """One latency measurement and everything needed to interpret it.

    Attributes:
        stats: Per-run latency statistics (milliseconds).
        device: The device it ran on.
        runtime: Runtime name (``onnxruntime``, ``torch``, ...).
        runtime_version: Version of that runtime.
        provider: Execution provider / device / compute units (e.g. ``CPUExecutionProvider``).
        threads: Intra-op threads.
        precision: ``fp32``, ``fp16`` or ``int8``.
        batch: Batch size (first input dimension).
        input_shape: Full input shape.
        protocol: The timing protocol used.
        load_avg: 1-minute load average when the measurement started.
        measured_at: Unix time at the end of the measurement.
    """

    stats: Stats
    device: DeviceInfo
    runtime: str
    runtime_version: str
    provider: str
    threads: int
    precision: str
    batch: int
    input_shape: tuple[int, ...]
    protocol: Protocol = field(default_factory=Protocol)
    load_avg: float = 0.0
    measured_at: float = 0.0

    @property
    def contended(self) -> bool:
        """Whether the machine was busy (load average above its core count minus one)."""
        return self.load_avg > max(1.0, self.device.cores - 1.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (inverse of :meth:`from_dict`)."""
        out = asdict(self)
        out["device"] = self.device.to_dict()
        out["input_shape"] = list(self.input_shape)
        out["contended"] = self.contended
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Measurement":
        """Parse :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        data = {k: v for k, v in data.items() if k != "contended"}
        kw = dataclass_kwargs(cls, data, "measurement")
        kw["stats"] = Stats(**dataclass_kwargs(Stats, kw["stats"], "stats"))
        kw["device"] = DeviceInfo.from_dict(kw["device"])
        kw["protocol"] = Protocol.from_dict(kw.get("protocol", {}))
        kw["input_shape"] = tuple(int(v) for v in kw["input_shape"])
        return cls(**kw)
