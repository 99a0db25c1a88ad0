"""The exporter contract: a typed :class:`ExportSpec` in, an :class:`ExportResult` out, one registry.

Every exporter turns a static ``nn.Module`` (an extracted subnet, or any small model) into a deployable
artifact. Exporters never modify the module they are given (they work on a copy in eval mode) and write
their artifact atomically: a crash leaves either the previous file or the complete new one.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from numbers import Integral
from os import PathLike
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from elastic import Registry

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
"""The numeric precisions of artifacts, tables and budgets (one list for the whole kit)."""
_META_KEY = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,99}")
MAX_OPSET = 30  # far above any onnx release's newest opset; a typo such as 170 is refused
MAX_INPUT_ELEMENTS = 2 ** 26  # 256 MiB of float32: far beyond any subnet input, well within this machine


#: Parity tolerances, one rule for every target: fp32 uses ``spec.atol``; fp16 and int8 allow
#: ``max(atol, REL_TOL · max |torch output|)``: fp16 keeps ~3 significant digits, int8 has 256 levels per
#: tensor, and the errors add up over layers.
FP16_REL_TOL = 1e-2
INT8_REL_TOL = 1e-1
#: int8 artifacts checked on at least this many real images must agree with PyTorch's top-1 on
#: ``INT8_MIN_AGREEMENT`` of them (a logit bound alone says little about a classifier's decisions).
INT8_AGREEMENT_IMAGES = 100
INT8_MIN_AGREEMENT = 0.99


def parity_tolerance(precision: str, atol: float, ref: np.ndarray) -> float:
    """The documented max-abs-diff tolerance of ``precision`` for reference output ``ref``."""
    rel = {"fp32": 0.0, "fp16": FP16_REL_TOL, "int8": INT8_REL_TOL}[precision]
    return max(atol, rel * float(np.abs(ref).max()))


def top1_agreement(got: np.ndarray, ref: np.ndarray) -> float:
    """The share of rows whose arg-max (top-1 class) is the same in ``got`` and ``ref``."""
    got, ref = np.asarray(got).reshape(len(ref), -1), np.asarray(ref).reshape(len(ref), -1)
    return float((got.argmax(1) == ref.argmax(1)).mean())


def min_agreement(spec: "ExportSpec") -> float:
    """The int8 top-1 agreement ``spec`` requires: ``options["min_top1_agreement"]`` (a fraction from 0.5 to 1, for
    ``precision='int8'`` only), else :data:`INT8_MIN_AGREEMENT`."""
    value = spec.options.get("min_top1_agreement", INT8_MIN_AGREEMENT)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.5 <= value <= 1:
        raise ValueError(f"min_top1_agreement={value!r} is not supported; allowed: a fraction from 0.5 to 1")
    if "min_top1_agreement" in spec.options and spec.precision != "int8":
        raise ValueError(f"min_top1_agreement={value} applies to precision='int8' only (got {spec.precision!r})")
    return float(value)


def check_parity(target: str, got: np.ndarray, ref: np.ndarray, spec: "ExportSpec",
                 need: float) -> tuple[float, float | None, float]:
    """One parity rule for targets that check many images: int8 on ``INT8_AGREEMENT_IMAGES`` or more must agree
    with PyTorch's top-1 on ``need`` of them; otherwise the max abs diff must be within
    :func:`parity_tolerance`. Raises :class:`ParityError` naming ``target``; returns (max abs diff, top-1 agreement
    or ``None``, tolerance)."""
    got = np.asarray(got).reshape(ref.shape)
    diff, tol = float(np.abs(got - ref).max()), parity_tolerance(spec.precision, spec.atol, ref)
    if spec.precision == "int8" and len(ref) >= INT8_AGREEMENT_IMAGES:
        agreement = top1_agreement(got, ref)
        if agreement < need:
            raise ParityError(f"{target} int8 parity check failed: top-1 agrees with torch on {agreement:.1%} of "
                              f"{len(ref)} images < {need:.1%} (options min_top1_agreement; `ofakit export "
                              f"--min-agreement`); {spec.out} was not written")
        return diff, agreement, tol
    if not diff <= tol:
        raise ParityError(f"{target} parity check failed: max |{target.lower()} - torch| = {diff:.3g} > {tol:.3g} "
                          f"({spec.precision}); {spec.out} was not written")
    return diff, None, tol


class ExporterUnavailable(RuntimeError):
    """The exporter cannot run on this machine; the message says what it needs."""


class ParityError(RuntimeError):
    """The exported artifact's output differs from PyTorch's beyond the tolerance; nothing was written."""


def whole_batches(x: torch.Tensor, step: int) -> list[torch.Tensor]:
    """``x`` cut into batches of ``step`` images for a model of static batch ``step``; the last one is filled
    by wrapping round to the first images (the caller keeps the first ``len(x)`` outputs)."""
    return [x[torch.arange(start, start + step) % len(x)] for start in range(0, len(x), step)]


def outputs_on_examples(spec: "ExportSpec", bind: Callable[[np.ndarray], Callable[[], np.ndarray]],
                        is_runtime_error: Callable[[Exception], bool], runtime: str,
                        what: str) -> tuple[np.ndarray, np.ndarray]:
    """An artifact's outputs on every example image of ``spec`` and PyTorch's, for a parity check.

    ``bind(buffer)`` loads the artifact once and returns a call that runs it on ``buffer``'s current content;
    the images go through in whole batches of a static model (all at once, doubled if they are a single
    batch, for a dynamic one: the batch dimension must really vary). An exception ``is_runtime_error`` accepts
    becomes :func:`does_not_run`'s ``ParityError``; others propagate."""
    x = spec.example()
    if spec.dynamic_batch and x.shape[0] == spec.input_shape[0]:
        x = torch.cat([x, x])
    with torch.no_grad():
        ref = spec.frozen_module()(x).numpy()
    step = len(x) if spec.dynamic_batch else spec.input_shape[0]
    try:
        buf = np.empty((step, *x.shape[1:]), dtype=np.float32)
        run, chunks = bind(buf), []
        for part in whole_batches(x, step):
            buf[...] = part.numpy()
            chunks.append(np.array(run()))
    except Exception as exc:
        if not is_runtime_error(exc):
            raise
        raise does_not_run(runtime, what, exc, spec.out) from None
    return np.concatenate(chunks)[:len(x)], ref


def does_not_run(runtime: str, what: str, exc: BaseException, out: Path) -> ParityError:
    """The parity failure of an artifact that ``runtime`` cannot load or run (``what``: e.g. "the program"),
    naming the first line of the runtime's error."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ParityError(f"{runtime} parity check failed: {what} does not run in {runtime}'s runtime ({first[:300]}); "
                       f"{out} was not written")


@dataclass(frozen=True)
class ExportSpec:
    """What to export and how.

    Attributes:
        module: The model (left untouched; a copy in eval mode is exported).
        input_shape: Example input shape ``(batch, channels, height, width)``.
        out: Artifact path (``.onnx``, ``.mlpackage``, ``.engine`` ...).
        precision: ``fp32``, ``fp16`` or ``int8`` (what the target supports).
        dynamic_batch: Whether the batch dimension may vary at run time.
        opset: ONNX opset (ONNX-based targets), at least 17.
        inputs: Real example inputs for the parity check (default: seeded random normal data).
        calibration: Batches for int8 calibration (TensorRT).
        atol: Maximum absolute difference allowed between the artifact and the PyTorch module.
        options: Target-specific settings (e.g. CoreML ``compute_units``).
        metadata: Strings recorded in the artifact where its format has room for them (ONNX
            ``metadata_props``, CoreML's model description, OpenVINO ``rt_info`` under ``ofakit``; a TensorRT
            engine has none). Keys: letters, digits, ``._-``; ``author``, ``short_description`` and
            ``version`` are CoreML's standard fields.
    """

    module: nn.Module
    input_shape: tuple[int, ...]
    out: Path
    precision: str = "fp32"
    dynamic_batch: bool = False
    opset: int = 17
    inputs: torch.Tensor | None = None
    calibration: tuple[torch.Tensor, ...] = ()
    atol: float = 1e-4
    options: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.module, nn.Module):
            raise ValueError(f"module={type(self.module).__name__} must be a torch.nn.Module")
        if any(t.is_meta for t in (*self.module.parameters(), *self.module.buffers())):
            raise ValueError(f"module={type(self.module).__name__} has tensors on the meta device (no values); "
                             "allowed: a module with real weights (load or materialise them first)")
        if not isinstance(self.out, (str, PathLike)) or not str(self.out).strip():
            raise ValueError(f"out={self.out!r} must be the artifact's path")
        object.__setattr__(self, "out", Path(self.out))
        shape = tuple(self.input_shape) if isinstance(self.input_shape, (tuple, list)) else ()
        if len(shape) != 4 or any(isinstance(v, bool) or not isinstance(v, Integral) or v < 1 for v in shape):
            raise ValueError(f"input_shape={self.input_shape!r} must be four positive integers (N, C, H, W)")
        shape = tuple(int(v) for v in shape)  # numpy integers become plain ones
        object.__setattr__(self, "input_shape", shape)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} is not supported; allowed: {list(PRECISIONS)}")
        if isinstance(self.opset, bool) or not isinstance(self.opset, int) or not 17 <= self.opset <= MAX_OPSET:
            raise ValueError(f"opset={self.opset!r} is not supported; allowed: 17 to {MAX_OPSET}")
        if isinstance(self.atol, bool) or not isinstance(self.atol, (int, float)) or not 0 <= self.atol < math.inf:
            raise ValueError(f"atol={self.atol!r} must be a finite number >= 0")
        if not isinstance(self.dynamic_batch, bool):
            raise ValueError(f"dynamic_batch={self.dynamic_batch!r} must be True or False")
        if math.prod(shape) > MAX_INPUT_ELEMENTS:
            raise ValueError(f"input_shape={shape} holds {math.prod(shape):,} values; allowed: at most "
                             f"{MAX_INPUT_ELEMENTS:,}")
        if not isinstance(self.calibration, (tuple, list)):
            raise ValueError(f"calibration={type(self.calibration).__name__} must be a tuple of input batches "
                             "(empty when not calibrating)")
        object.__setattr__(self, "calibration", tuple(self.calibration))
        for name, batch in [("inputs", self.inputs), *(("calibration", b) for b in self.calibration)]:
            if batch is None:
                continue
            if not isinstance(batch, torch.Tensor):
                raise ValueError(f"{name} is a {type(batch).__name__}; allowed: torch tensors of shape (N, C, H, W)")
            if batch.is_meta or batch.is_complex() or batch.dtype == torch.bool:
                raise ValueError(f"{name} is a {batch.dtype} tensor on {batch.device}; allowed: real-valued image "
                                 "data with values (not on the meta device)")
            if batch.dim() != 4 or tuple(batch.shape[1:]) != shape[1:] or batch.shape[0] < 1:
                raise ValueError(f"{name} of shape {tuple(batch.shape)} do not match input_shape={shape} (C, H, W; "
                                 "at least one image)")
            if not bool(torch.isfinite(batch).all()):
                raise ValueError(f"{name} hold NaN or infinite values; give finite example data")
        if not isinstance(self.options, dict) or not all(isinstance(k, str) for k in self.options):
            raise ValueError(f"options={self.options!r} must be a dict of target-specific settings (names as keys)")
        if not isinstance(self.metadata, dict):
            raise ValueError(f"metadata={self.metadata!r} must be a dict of strings")
        for key, value in self.metadata.items():
            if not (isinstance(key, str) and _META_KEY.fullmatch(key) and isinstance(value, str)):
                raise ValueError(f"metadata entry {key!r}: {value!r} is not supported; keys: a letter, then letters, "
                                 "digits, '.', '_' or '-' (at most 100); values: strings")

    def example(self) -> torch.Tensor:
        """The parity-check input: ``inputs`` or seeded random data of ``input_shape``."""
        if self.inputs is not None:
            return self.inputs.detach().float()
        gen = torch.Generator().manual_seed(0)
        return torch.randn(self.input_shape, generator=gen)

    def frozen_module(self) -> nn.Module:
        """A deep copy of the module in eval mode with its tensors in the default (contiguous) memory format, so
        the caller's module is never changed and every exporter sees one layout (ExecuTorch's XNNPACK lowering
        refuses a channels-last 3x3 conv weight under int8)."""
        return copy.deepcopy(self.module).eval().to(memory_format=torch.contiguous_format)


@dataclass(frozen=True)
class ExportResult:
    """A written artifact.

    Attributes:
        path: The artifact.
        target: Exporter name.
        settings: Export settings as recorded in sidecars (precision, opset, dynamic batch, ...).
        versions: Versions of the tools involved.
        max_abs_diff: Parity against PyTorch where it could be checked here (``None`` otherwise).
        seconds: Export wall time.
        notes: What could not be checked on this machine and why.
    """

    path: Path
    target: str
    settings: dict[str, Any]
    versions: dict[str, str]
    max_abs_diff: float | None
    seconds: float
    notes: tuple[str, ...] = ()


def check_input_fits(spec: ExportSpec) -> None:
    """Run the module once on a one-image slice of the example input: ``ValueError`` naming the shape when
    it does not fit the module (e.g. 3 channels for a 1-channel stem), instead of an exporter's traceback."""
    x = spec.example()[:1]
    try:
        with torch.no_grad():
            y = spec.frozen_module()(x)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"input_shape={spec.input_shape} does not fit the module: {first}") from None
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"the module returns {type(y).__name__}; allowed: one output tensor")


def missing_requirement(requires: Sequence[tuple[str, str]]) -> str | None:
    """Why a target or runtime that needs the Python modules ``requires`` (``(module, pip extra)`` pairs)
    cannot run here: the first one that is not installed, with what to install; ``None`` when all are."""
    import importlib.util

    for module, extra in requires:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'ofa-kit[{extra}]')"
    return None


class Exporter(ABC):
    """Base of all exporters. Subclasses implement :meth:`_export`; :meth:`export` is the entry point.

    ``requires`` declares the Python modules a target needs (``(module, pip extra)`` pairs); a target with
    further conditions (an OS, a GPU) extends :meth:`unavailable`.
    """

    name: ClassVar[str]
    suffix: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    option_keys: ClassVar[tuple[str, ...]] = ()  # the ``ExportSpec.options`` this target reads
    artifact_is_dir: ClassVar[bool] = False  # the artifact is a directory (a CoreML .mlpackage)
    requires: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: the parity check takes any number of example images, whatever the artifact's batch (an int8 top-1
    #: agreement check needs at least ``INT8_AGREEMENT_IMAGES``)
    checks_many_images: ClassVar[bool] = False

    def unavailable(self) -> str | None:
        """Why this exporter cannot run here (``None`` when it can)."""
        return missing_requirement(self.requires)

    def unavailable_for(self, spec: ExportSpec) -> str | None:
        """Why ``spec`` cannot be exported here (``None``: it can); :meth:`unavailable` unless a target builds
        elsewhere for some specs (a TensorRT engine built on a remote device's GPU)."""
        return self.unavailable()

    def export(self, spec: ExportSpec) -> ExportResult:
        """Export ``spec.module`` to ``spec.out``; raises :class:`ExporterUnavailable` when it cannot run."""
        reason = self.unavailable_for(spec)
        if reason is not None:
            raise ExporterUnavailable(f"{self.name} export is unavailable: {reason}")
        self.check_out(spec.precision, spec.out)
        unknown = sorted(set(spec.options) - set(self.option_keys))
        if unknown:
            raise ValueError(f"unknown {self.name} option(s) {unknown}; allowed: {list(self.option_keys)}")
        check_input_fits(spec)
        t0 = time.perf_counter()
        result = self._export(spec)
        log.debug("%s export of %s took %.2fs", self.name, spec.out, time.perf_counter() - t0)
        return result

    def check_out(self, precision: str, out: str | Path) -> None:
        """``ValueError`` for a precision this target lacks or an artifact path it cannot write (another suffix,
        a directory, or a path as given that ends with a slash): cheap, so callers can check before preparing
        the module."""
        if precision not in self.precisions:
            raise ValueError(f"{self.name} does not support precision={precision!r}; allowed: {list(self.precisions)}")
        if Path(out).suffix != self.suffix:
            raise ValueError(f"out={str(out)!r}: a {self.name} artifact's name must end with {self.suffix}")
        if self.artifact_is_dir:
            return
        if Path(out).is_dir():
            raise ValueError(f"out={str(out)!r} is a directory; give the {self.suffix} file to write")
        if str(out).endswith(("/", os.sep)):  # (a Path drops the slash: callers pass the text they were given)
            raise ValueError(f"out={str(out)!r} ends with a slash, so it names a directory; give the {self.suffix} "
                             "file to write")

    @abstractmethod
    def _export(self, spec: ExportSpec) -> ExportResult:
        """Write the artifact for ``spec`` atomically and return what was written."""

    @abstractmethod
    def bind(self, artifact: Path | bytes, x: np.ndarray, **settings: Any) -> Callable[[], np.ndarray]:
        """The one way to run this target's artifacts: load ``artifact`` (a path, or the bytes of a file
        format that has them) for input ``x`` and return a call that runs it once and returns its first output.

        Shared by the export's parity check, the runtimes that time the artifacts (the returned call is
        what they time) and the conformance suite. ``settings`` are the engine's (threads, device ...).
        """


EXPORTERS: Registry[Callable[[], Exporter]] = Registry("exporter")


def register_exporter(cls: type[Exporter]) -> type[Exporter]:
    """Class decorator registering an exporter under its ``name``."""
    EXPORTERS.register(cls.name, cls)
    return cls


def list_exporters() -> list[str]:
    """Names of all registered exporters."""
    return EXPORTERS.names()


def get_exporter(name: str) -> Exporter:
    """A new exporter called ``name``."""
    return EXPORTERS.get(name)()
