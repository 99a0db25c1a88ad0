"""The runtime contract: a :class:`MeasureSpec` in, a :class:`~profilers.record.Measurement` out.

A runtime times an exported artifact (or a torch module) on fixed input with the shared protocol
(:func:`~profilers.record.time_interleaved`): warm-up, fixed threads, interleaved blocks, robust
statistics. Subclasses implement one method, :meth:`Runtime._runner`, which loads the artifact and returns
a callable running one inference; the callable may return the elapsed seconds itself when the device
has better clocks (CUDA events). The artifact and module given are never modified.
"""

from __future__ import annotations

import copy
import platform
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from deploy_targets import ExportSpec, get_exporter
from deploy_targets.base import PRECISIONS, missing_requirement
from elastic import Registry
from profilers.record import DeviceInfo, Measurement, Protocol, load_average, local_device, time_interleaved

Runner = Callable[[], Any]
CALIBRATION_IMAGES = 32  # random images an int8 artifact prepared for timing alone is calibrated on


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot run here; the message starts with ``unavailable:`` and says what it needs."""


@dataclass(frozen=True)
class MeasureSpec:
    """One thing to time.

    Attributes:
        artifact: Path of an exported artifact (``.onnx``, ``.mlpackage``, ``.engine``) or, for the torch
            runtime, an ``nn.Module``.
        input_shape: Input shape ``(batch, channels, height, width)``.
        threads: Intra-op threads (1 by default: the most stable figures on a shared machine).
        precision: ``fp32``, ``fp16`` or ``int8``.
        provider: Execution provider / device / compute units; ``None`` for the runtime's default.
        protocol: The timing protocol.
    """

    artifact: Path | nn.Module
    input_shape: tuple[int, ...]
    threads: int = 1
    precision: str = "fp32"
    provider: str | None = None
    protocol: Protocol = field(default_factory=Protocol)

    def __post_init__(self) -> None:
        if not isinstance(self.artifact, nn.Module):
            object.__setattr__(self, "artifact", Path(self.artifact))
        shape = tuple(self.input_shape)
        if not shape or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape):
            raise ValueError(f"input_shape={self.input_shape!r} must be positive integers, e.g. (1, 3, 224, 224)")
        object.__setattr__(self, "input_shape", shape)
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or not 1 <= self.threads <= 1024:
            raise ValueError(f"threads={self.threads!r} must be an integer from 1 to 1024")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} is not supported; allowed: {list(PRECISIONS)}")
        if not isinstance(self.protocol, Protocol):
            raise ValueError(f"protocol={self.protocol!r} must be a profilers.Protocol (e.g. Protocol(blocks=10))")
        if not (self.provider is None or (isinstance(self.provider, str) and self.provider.strip())):
            raise ValueError(f"provider={self.provider!r} must be a non-empty name or None (the runtime's default)")

    def example(self) -> np.ndarray:
        """Seeded random float32 input of ``input_shape`` (latency does not depend on the values)."""
        return np.random.default_rng(0).standard_normal(self.input_shape).astype(np.float32)


class Runtime(ABC):
    """Base of all runtimes.

    Class attributes:
        name: Registry name.
        artifact_format: What :meth:`prepare` produces: ``onnx``, ``coreml`` (``.mlpackage``) or ``module``.
        default_provider: Provider used when a spec names none.
        precisions: Precisions this runtime supports.
        requires: The Python modules it needs, as ``(module, pip extra)`` pairs (see :meth:`unavailable`).
    """

    name: ClassVar[str]
    artifact_format: ClassVar[str]
    default_provider: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    requires: ClassVar[tuple[tuple[str, str], ...]] = ()  # (module, pip extra): the first is the runtime library

    def unavailable(self) -> str | None:
        """Why this runtime cannot run here (``None`` when it can)."""
        return missing_requirement(self.requires)

    def version(self) -> str:
        """Version of the runtime library (the first of ``requires``)."""
        import importlib.metadata

        return importlib.metadata.version(self.requires[0][0]) if self.requires else "unknown"

    def device(self) -> DeviceInfo:
        """The device measurements run on."""
        return local_device()

    def prepare(self, module: nn.Module, input_shape: Sequence[int], out: Path, precision: str = "fp32",
                calibration: Sequence[torch.Tensor] = ()) -> Path | nn.Module:
        """The artifact this runtime measures, exported from ``module`` to ``out`` (suffix added) at
        ``precision``. An int8 artifact is calibrated on ``calibration`` batches, or else on
        :data:`CALIBRATION_IMAGES` seeded random images: its speed does not depend on the scales, so a layer
        of a latency table is quantized without the images that would reach it in a network."""
        if precision not in self.precisions:
            raise ValueError(f"runtime {self.name} does not support precision={precision!r}; "
                             f"allowed: {list(self.precisions)}")
        if self.artifact_format == "module":
            return copy.deepcopy(module).eval()
        if precision == "int8" and not calibration:
            gen = torch.Generator().manual_seed(0)
            calibration = tuple(torch.randn((CALIBRATION_IMAGES, *input_shape[1:]), generator=gen).split(8))
        exporter = get_exporter(self.artifact_format)
        path = Path(out).with_suffix(exporter.suffix)
        spec = ExportSpec(module, tuple(input_shape), path, precision=precision,
                          calibration=tuple(calibration) if precision == "int8" else ())
        return exporter.export(spec).path

    def provider_of(self, spec: MeasureSpec) -> str:
        """The provider ``spec`` runs on."""
        return spec.provider or self.default_provider

    def check(self, spec: MeasureSpec) -> None:
        """Raise when ``spec`` cannot be measured by this runtime here."""
        reason = self.unavailable()
        if reason is not None:
            raise RuntimeUnavailable(f"unavailable: {self.name}: {reason}")
        if spec.precision not in self.precisions:
            raise ValueError(f"runtime {self.name} does not support precision={spec.precision!r}; "
                             f"allowed: {list(self.precisions)}")
        if isinstance(spec.artifact, nn.Module) != (self.artifact_format == "module"):
            kind = "an nn.Module" if self.artifact_format == "module" else f"a {self.artifact_format} file"
            raise ValueError(f"runtime {self.name} measures {kind}, got {type(spec.artifact).__name__}")
        if isinstance(spec.artifact, Path) and not spec.artifact.exists():
            raise ValueError(f"artifact {spec.artifact} does not exist")

    @abstractmethod
    def _runner(self, spec: MeasureSpec) -> Runner:
        """Load ``spec.artifact`` and return a callable that runs one inference on fixed input."""

    def measure(self, spec: MeasureSpec) -> Measurement:
        """Time one artifact."""
        return self.measure_many([spec])[0]

    def measure_many(self, specs: Sequence[MeasureSpec]) -> list[Measurement]:
        """Time several artifacts with interleaved blocks (they must share one protocol)."""
        if not specs:
            return []
        protocols = {s.protocol for s in specs}
        if len(protocols) != 1:
            raise ValueError("measure_many needs one protocol for all specs")
        for s in specs:
            self.check(s)
        load = load_average()
        with self._threads(max(s.threads for s in specs)):
            runners = [self._runner(s) for s in specs]
            stats = time_interleaved(runners, specs[0].protocol)
        del runners
        now, device, version = time.time(), self.device(), self.version()
        return [Measurement(st, device, self.name, version, self.provider_of(s), s.threads, s.precision,
                            s.input_shape[0], s.input_shape, s.protocol, load, now) for st, s in zip(stats, specs)]

    def _threads(self, n: int):  # noqa: ARG002 - runtimes with process-wide thread settings override this
        """Context manager applying process-wide thread settings while measuring."""
        import contextlib

        return contextlib.nullcontext()


class FileRuntime(Runtime):
    """A runtime of one file format (``suffix``) on one provider, run through its exporter's ``bind``: ``check``
    insists on both, and a file the engine cannot load or an input it cannot take (``load_errors``) is a
    one-line ``ValueError`` naming the ``engine``."""

    engine: ClassVar[str]
    suffix: ClassVar[str]
    load_errors: ClassVar[tuple[type[BaseException], ...]] = (RuntimeError,)

    def bind_settings(self, spec: MeasureSpec) -> dict[str, Any]:  # noqa: ARG002 - engines with per-model settings
        """Keyword settings for the exporter's ``bind`` (none: the engine's settings are process-wide)."""
        return {}

    def check(self, spec: MeasureSpec) -> None:
        super().check(spec)
        provider = self.provider_of(spec)
        if provider != self.default_provider:
            raise ValueError(f"{self.name} provider {provider!r} is not supported; allowed: [{self.default_provider!r}]")
        if Path(spec.artifact).suffix != self.suffix:
            raise ValueError(f"{self.name} artifact {spec.artifact} is not supported; allowed: a {self.suffix} file")

    def _runner(self, spec: MeasureSpec) -> Runner:
        try:
            infer = get_exporter(self.artifact_format).bind(spec.artifact, spec.example(), **self.bind_settings(spec))
            infer()
        except self.load_errors as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{self.engine} cannot run {spec.artifact.name} on an input of shape "
                             f"{list(spec.input_shape)}: {first[:300]}") from None
        return infer


RUNTIMES: Registry[Callable[[], Runtime]] = Registry("runtime")


def register_runtime(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator registering a runtime under its ``name``."""
    RUNTIMES.register(cls.name, cls)
    return cls


def list_runtimes() -> list[str]:
    """Names of all registered runtimes."""
    return RUNTIMES.names()


def get_runtime(name: str) -> Runtime:
    """A new runtime called ``name``."""
    return RUNTIMES.get(name)()


def runtime_status() -> dict[str, dict[str, Any]]:
    """``{name: {"available": bool, "reason": str | None, "version": str | None}}`` for every runtime."""
    out = {}
    for name in list_runtimes():
        rt = get_runtime(name)
        reason, version = rt.unavailable(), None
        if reason is None:
            try:
                version = rt.version()
            except Exception as exc:  # noqa: BLE001 - a broken SDK install: say so, do not break the listing
                reason = f"its SDK does not load ({type(exc).__name__}: {str(exc)[:100]})"
        out[name] = {"available": reason is None, "reason": reason, "version": version, "format": rt.artifact_format}
    return out


def is_macos() -> bool:
    """Whether this process runs on macOS."""
    return platform.system() == "Darwin"
