"""Building and refreshing latency lookup tables: measure a space's layers and a few whole subnets.

:func:`build_table` enumerates the distinct layers of a supernet's space (:func:`~profilers.layers.space_layers`),
exports each as a tiny standalone model for the runtime, times them in interleaved groups (in a seeded
shuffled order) and commits each group to the SQLite store, so a killed build resumes where it stopped. It
then times a few whole subnets (largest, smallest and seeded random ones spread over MACs, extracted from
the supernet) and fits the predictor's correction (:func:`~profilers.predictor.fit_correction`). Refreshing
is the same call: only layers and calibration subnets that are missing, older than ``max_age_s`` or measured
with another runtime version or on other hardware are measured again (and when any calibration subnet is,
every one the table holds for the recipe is timed with it, so that the correction is fitted on one moment).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from deploy_targets.base import PRECISIONS
from elastic.batch import ConfigBatch, CostGrid
from elastic.families import Config, Spec, build_supernet, spec_from_dict
from profilers.layers import LAYOUT_VERSION, Layer, space_layers
from profilers.predictor import Correction, LatencyPredictor, fit_correction
from profilers.record import Measurement, Protocol
from profilers.runtimes import MeasureSpec, Runtime
from profilers.store import LatencyTable, RuntimeKey, spec_id
from profilers.table_rows import stored_config

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (phase, done, total)


MAX_THREADS = 256
MAX_BATCH = 4096  # images per timed run
MAX_GROUP = 256  # layers timed together
MAX_CALIBRATION_SUBNETS = 1000


@dataclass(frozen=True)
class BuildSettings:
    """How a table is measured.

    Attributes:
        threads: Intra-op threads of the runtime.
        precision: ``fp32``, ``fp16`` or ``int8``.
        provider: Execution provider / device / compute units (``None``: the runtime's default).
        batch: Batch size of every measurement.
        protocol: Timing protocol.
        calibration_subnets: Whole subnets measured to calibrate the predictor (largest and smallest first).
        seed: Seed of the random calibration subnets.
        group: Layers timed together with interleaved blocks (and committed together).
        max_age_s: Re-measure entries older than this (``None``: never because of age).
        force: Re-measure everything.
    """

    threads: int = 1
    precision: str = "fp32"
    provider: str | None = None
    batch: int = 1
    protocol: Protocol = field(default_factory=Protocol)
    calibration_subnets: int = 12
    seed: int = 0
    group: int = 4
    max_age_s: float | None = None
    force: bool = False

    @classmethod
    def for_runtime(cls, runtime: RuntimeKey, protocol: Protocol | None = None) -> "BuildSettings":
        """Settings that measure like the table's runtime configuration ``runtime``."""
        return cls(threads=runtime.threads, precision=runtime.precision, provider=runtime.provider,
                   batch=runtime.batch, protocol=protocol or Protocol())

    def __post_init__(self) -> None:
        for name, top in (("threads", None), ("batch", MAX_BATCH), ("group", MAX_GROUP)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1 or (top is not None and v > top):
                raise ValueError(f"{name}={v!r} must be a positive integer" + (f"; allowed: 1 to {top}" if top else ""))
        if (isinstance(self.calibration_subnets, bool) or not isinstance(self.calibration_subnets, int)
                or self.calibration_subnets < 0):
            raise ValueError(f"calibration_subnets={self.calibration_subnets!r} must be an integer >= 0")
        age = self.max_age_s
        if age is not None and (isinstance(age, bool) or not isinstance(age, (int, float)) or not 0 < age < math.inf):
            raise ValueError(f"max_age_s={self.max_age_s!r} must be a positive finite number of seconds (or None)")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} is not supported; allowed: {list(PRECISIONS)}")
        if self.provider is not None and (not isinstance(self.provider, str) or not self.provider.strip()):
            raise ValueError(f"provider={self.provider!r} must be a non-empty name or None (the runtime's default)")
        if not isinstance(self.force, bool):
            raise ValueError(f"force={self.force!r} must be True or False")
        if not isinstance(self.protocol, Protocol):
            raise ValueError(f"protocol={self.protocol!r} must be a profilers.Protocol")
        if self.threads > MAX_THREADS:
            raise ValueError(f"threads={self.threads} is more than any device here runs; allowed: 1 to {MAX_THREADS}")
        if self.calibration_subnets > MAX_CALIBRATION_SUBNETS:
            raise ValueError(f"calibration_subnets={self.calibration_subnets} is too many; allowed: 0 to "
                             f"{MAX_CALIBRATION_SUBNETS}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2 ** 32:
            raise ValueError(f"seed={self.seed!r} must be an integer; allowed: 0 to {2 ** 32 - 1}")


@dataclass(frozen=True)
class BuildReport:
    """What a build or refresh did."""

    recipe: str
    device: str
    runtime: str
    layers: int
    measured: int
    calibration_measured: int
    calibration_used: int
    correction: dict
    seconds: float
    contended: int


def calibration_configs(spec: Spec, n: int, seed: int) -> list[Config]:
    """``n`` subnets spread over the space: largest and smallest at the top resolution, then seeded random
    ones at evenly spaced quantiles of log-MACs (from a pool of ``50 n`` random draws), so the fitted
    correction sees small, middle and large subnets alike; uniform draws would mostly be middle-sized and
    leave the small end, where fixed per-call costs dominate, to extrapolation."""
    sp = spec.space
    out = [sp.largest(), sp.smallest()][:n]
    if n <= len(out):
        return out
    rng = np.random.default_rng(seed)
    seen = {c.to_json() for c in out}
    pool: dict[str, Config] = {}
    for _ in range(min(50 * n, 20_000)):
        cfg = sp.sample(rng)
        if cfg.to_json() not in seen:
            pool.setdefault(cfg.to_json(), cfg)
    cands = list(pool.values())
    macs = np.log(CostGrid.build(spec).macs(ConfigBatch.from_configs(sp, cands))) if cands else np.zeros(0)
    order = [cands[i] for i in np.argsort(macs, kind="stable")]
    want = n - len(out)
    for q in np.linspace(0, len(order) - 1, min(want, len(order))):
        cfg = order[int(round(q))]
        if cfg.to_json() not in seen:
            seen.add(cfg.to_json())
            out.append(cfg)
    for cfg in order:  # rounding collisions (a tiny space): fill up in MACs order
        if len(out) >= n:
            break
        if cfg.to_json() not in seen:
            seen.add(cfg.to_json())
            out.append(cfg)
    return out


def measurement_order(layers: Sequence[Layer], seed: int) -> list[Layer]:
    """``layers`` in the order a build times them: a seeded shuffle. A slow moment of the machine (seconds to
    a minute here) then touches a few layers of every resolution and slot instead of all layers of one
    resolution, whose sums would all come out too slow (seen: the smallest subnet's layer sum at 16 px above
    its sum at 24 px when the layers were timed resolution by resolution)."""
    return [layers[i] for i in np.random.default_rng(seed).permutation(len(layers))]


def _specs(runtime: Runtime, items: list[tuple[torch.nn.Module, tuple[int, ...]]], workdir: Path,
           s: BuildSettings) -> list[MeasureSpec]:
    out = []
    for i, (module, shape) in enumerate(items):
        shape = (s.batch, *shape[1:])
        artifact = runtime.prepare(module, shape, workdir / f"m{i}", s.precision)
        out.append(MeasureSpec(artifact, shape, s.threads, s.precision, s.provider, s.protocol))
    return out


def _stale(m_version: str, fingerprint: str, measured_at: float, protocol: str, s: BuildSettings, now: float,
           version: str, device_fp: str) -> bool:
    """Whether a stored figure must be measured again: forced, another runtime version, other hardware (an
    unrecorded fingerprint counts as other), too old, or taken with a shorter protocol (``--quick``)."""
    return (s.force or m_version != version or fingerprint != device_fp
            or (s.max_age_s is not None and now - measured_at > s.max_age_s)
            or Protocol.stored_is_shorter(protocol, s.protocol))


def build_table(table: LatencyTable, recipe: str, spec: Spec, runtime: Runtime, device: str = "local",
                settings: BuildSettings | None = None, progress: Progress | None = None) -> BuildReport:
    """Measure what ``table`` lacks (or holds stale) for ``recipe`` on ``device`` and refit the correction.

    Args:
        table: An open :class:`LatencyTable`.
        recipe: Name to record the spec under in the table.
        spec: The supernet architecture whose space is tabled.
        runtime: The runtime to measure with (local, or a remote agent's).
        device: Device name in the table (``"local"`` for this machine).
        settings: Measurement settings.
        progress: Called as ``progress(phase, done, total)`` after each group.
    """
    s = settings or BuildSettings()
    t0 = time.time()
    reason = runtime.unavailable()
    if reason is not None:
        raise ValueError(f"runtime {runtime.name} is unavailable on device {device!r}: {reason}")
    sid = table.put_recipe(recipe, spec.to_dict())
    version, dev_fp = runtime.version(), runtime.device().fingerprint
    provider = s.provider or runtime.default_provider
    rk = RuntimeKey(runtime.name, provider, s.threads, s.precision, s.batch)
    now = time.time()
    have = {e.key: e for e in table.entries(device, rk)}
    layers = space_layers(spec)
    todo = [L for L in layers if L.key not in have or _stale(have[L.key].runtime_version, have[L.key].fingerprint,
                                                             have[L.key].measured_at, have[L.key].protocol, s, now,
                                                             version, dev_fp)]
    todo = measurement_order(todo, s.seed)
    log.info("%s on %s/%s: %d of %d layers to measure (layout v%d)", recipe, device, rk.label(), len(todo),
             len(layers), LAYOUT_VERSION)
    contended = 0
    with tempfile.TemporaryDirectory(prefix="ofakit-lut-") as tmp:
        for start in range(0, len(todo), s.group):
            group = todo[start:start + s.group]
            specs = _specs(runtime, [(L.build(), L.input_shape) for L in group], Path(tmp), s)
            ms = runtime.measure_many(specs)
            contended += sum(m.contended for m in ms)
            table.put_many(device, [(L.key, m) for L, m in zip(group, ms)])
            if progress:
                progress("layers", start + len(group), len(todo))
        cal_measured = _calibrate(table, sid, spec, runtime, device, rk, s, Path(tmp), progress)
    corr = refit(table, recipe, device, rk)
    return BuildReport(recipe, device, rk.label(), len(layers), len(todo), cal_measured, corr["samples"], corr,
                       time.time() - t0, contended)


def _calibrate(table: LatencyTable, sid: str, spec: Spec, runtime: Runtime, device: str,
               rk: RuntimeKey, s: BuildSettings, tmp: Path, progress: Progress | None) -> int:
    """Measure the calibration subnets when any is missing, or any the table holds for the recipe here is
    stale, together with every other calibration subnet held; returns how many were measured. With
    ``s.calibration_subnets == 0`` (``profile refresh``) no subnet is missing: the held ones are refreshed."""
    cfgs = calibration_configs(spec, s.calibration_subnets, s.seed)
    have = {c.subnet: c for c in table.calibration(device, rk, sid)}
    version, dev_fp, now = runtime.version(), runtime.device().fingerprint, time.time()
    todo = [c for c in cfgs if c.to_json() not in have]
    if not todo and not any(_stale(c.runtime_version, c.fingerprint, c.measured_at, c.protocol, s, now, version,
                                   dev_fp) for c in have.values()):
        return 0
    # Every calibration subnet of the recipe here, in one interleaved measurement: a slow drift of the machine
    # (other tenants, clocks) then scales them alike instead of bending the fitted correction. Samples kept
    # from another moment (an earlier build's set, closed-loop misses) are timed again with them: mixed
    # moments fitted together made a correction with a leave-one-out error of 25% (benchmarks/RESULTS.md).
    queued = {c.to_json() for c in todo}
    todo += [stored_config(spec.space, j, table.path) for j in have if j not in queued]
    for cfg, m in zip(todo, time_subnets(runtime, spec, todo, s, tmp, progress)):
        table.add_calibration(device, sid, cfg.to_json(), m)
    if progress:
        progress("calibration", len(todo), len(todo))
    return len(todo)


def subnet_specs(runtime: Runtime, spec: Spec, cfgs: Sequence[Config], settings: BuildSettings,
                 workdir: Path, progress: Progress | None = None) -> list[MeasureSpec]:
    """Export whole subnets of ``spec`` for ``runtime``: one measurement spec each, not yet timed.

    The subnets come from a freshly initialised supernet (seeded): weights do not change latency; shapes and
    ops do.
    """
    torch.manual_seed(settings.seed)
    supernet = build_supernet(spec).eval()
    shape = (settings.batch, spec.in_channels)
    specs = []
    for i, cfg in enumerate(cfgs):
        specs += _specs(runtime, [(supernet.extract(cfg), (*shape, cfg.r, cfg.r))], Path(workdir) / f"c{i}", settings)
        if progress:
            progress("calibration export", i + 1, len(cfgs))
    return specs


def time_subnets(runtime: Runtime, spec: Spec, cfgs: Sequence[Config], settings: BuildSettings,
                 workdir: Path, progress: Progress | None = None) -> list[Measurement]:
    """Export whole subnets of ``spec`` for ``runtime`` (:func:`subnet_specs`) and time them in one
    interleaved measurement."""
    return runtime.measure_many(subnet_specs(runtime, spec, cfgs, settings, workdir, progress))


def refit(table: LatencyTable, recipe: str, device: str, runtime: RuntimeKey) -> dict:
    """Fit and store the correction of ``recipe`` on ``device``/``runtime`` from its calibration samples."""
    spec = spec_from_dict(table.recipe(recipe))
    sid = spec_id(spec.to_dict())
    samples = table.calibration(device, runtime, sid)
    layer_ms = {e.key: e.median_ms for e in table.entries(device, runtime)}
    raw = LatencyPredictor(spec, layer_ms, Correction(), device, runtime)
    cfgs = [stored_config(spec.space, c.subnet, table.path) for c in samples]
    feats = raw.features(cfgs) if cfgs else {}
    corr = fit_correction(feats, np.array([c.measured_ms for c in samples])).to_dict()
    table.put_correction(device, runtime, sid, corr)
    return corr


def prepare_subnet(runtime: Runtime, module: torch.nn.Module, input_shape: tuple[int, ...], workdir: Path,
                   settings: BuildSettings | None = None) -> MeasureSpec:
    """Export ``module`` for ``runtime``: the measurement spec of one whole network with the build settings."""
    (spec_,) = _specs(runtime, [(module, input_shape)], Path(workdir), settings or BuildSettings())
    return spec_

