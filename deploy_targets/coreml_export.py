"""CoreML exporter: a traced module converted by ``coremltools`` to an ML Program ``.mlpackage`` (iOS 16+).

Conversion and spec inspection work on Linux; ``MLModel.predict`` needs macOS, so the numerical parity
check against PyTorch runs only there (the result's ``notes`` say so elsewhere). An ``.mlpackage`` is a
directory: it is saved next to the target and renamed into place, so a failed export never leaves a
partial package and never removes the previous one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from deploy_targets.base import (FP16_REL_TOL, Exporter, ExportResult, ExportSpec, ParityError,  # noqa: F401
                                 parity_tolerance, register_exporter)

log = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "input", "output"
OPTIONS = ("compute_units", "max_batch")
STANDARD_METADATA = ("author", "short_description", "version")
PRECISION_KEY = "com.ofakit.precision"
LINUX_NOTE = ("numerical parity with PyTorch was not checked: CoreML predicts only on macOS "
              "(the package spec was validated: input/output names, shapes, dtypes)")


def compute_unit(name: str) -> Any:
    """The ``coremltools.ComputeUnit`` called ``name`` (``ALL``, ``CPU_ONLY``, ``CPU_AND_GPU``, ``CPU_AND_NE``)."""
    import coremltools as ct

    allowed = list(ct.ComputeUnit.__members__)
    if name not in allowed:
        raise ValueError(f"compute_units={name!r} is not supported; allowed: {allowed}")
    return ct.ComputeUnit[name]


def _input_type(spec: ExportSpec) -> Any:
    import coremltools as ct

    shape: Any = spec.input_shape
    if spec.dynamic_batch:
        n = spec.input_shape[0]
        top = spec.options.get("max_batch", max(2 * n, 8))
        if not isinstance(top, int) or top < n:
            raise ValueError(f"max_batch={top!r} must be an integer >= the example batch {n}")
        shape = ct.Shape((ct.RangeDim(lower_bound=1, upper_bound=top, default=n), *spec.input_shape[1:]))
    return ct.TensorType(name=INPUT_NAME, shape=shape, dtype=np.float32)


def check_package(path: Path, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> Any:
    """Load the spec of the package at ``path`` (works on Linux) and check its I/O; returns its description."""
    import coremltools as ct
    from coremltools.proto import FeatureTypes_pb2

    desc = ct.models.MLModel(str(path), skip_model_load=True).get_spec().description
    ins, outs = list(desc.input), list(desc.output)
    if [i.name for i in ins] != [INPUT_NAME] or [o.name for o in outs] != [OUTPUT_NAME]:
        raise RuntimeError(f"CoreML package {path} has inputs {[i.name for i in ins]} and outputs "
                           f"{[o.name for o in outs]}; expected [{INPUT_NAME!r}] and [{OUTPUT_NAME!r}]")
    float32 = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    if ins[0].type.multiArrayType.dataType != float32 or outs[0].type.multiArrayType.dataType != float32:
        raise RuntimeError(f"CoreML package {path} does not have float32 input and output arrays")
    got_in = tuple(ins[0].type.multiArrayType.shape)
    got_out = tuple(outs[0].type.multiArrayType.shape)
    if got_in != tuple(input_shape) or (got_out and got_out != tuple(output_shape)):
        raise RuntimeError(f"CoreML package {path} has input shape {got_in} and output shape {got_out}; "
                           f"expected {tuple(input_shape)} and {tuple(output_shape)}")
    return desc


def replace_dir(src: Path, dst: Path) -> None:
    """Move directory ``src`` onto ``dst``; a previous ``dst`` is renamed aside first and restored on failure."""
    for root, _, files in os.walk(src):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                os.fsync(fh.fileno())
    old = None
    if dst.exists() or dst.is_symlink():
        old = src.parent / f"{src.name}.old"
        os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        if old is not None:
            os.replace(old, dst)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


@register_exporter
class CoreMLExporter(Exporter):
    """``.mlpackage`` (ML Program, iOS 16+) with fp32 or fp16 compute precision and float32 I/O."""

    name = "coreml"
    suffix = ".mlpackage"
    precisions = ("fp32", "fp16")
    option_keys = OPTIONS
    artifact_is_dir = True
    requires = (("coremltools", "coreml"),)

    def bind(self, artifact: Path | bytes, x: np.ndarray, compute_units: str = "ALL") -> Callable[[], np.ndarray]:
        """An ``.mlpackage`` loaded on ``compute_units`` and predicted on ``x`` (macOS only: coremltools
        cannot predict elsewhere)."""
        import coremltools as ct

        if isinstance(artifact, bytes):
            raise ValueError("CoreML runs an .mlpackage directory; got bytes")
        model = ct.models.MLModel(str(artifact), compute_units=compute_unit(compute_units))
        desc = model.get_spec().description
        predict, feed, out = model.predict, {desc.input[0].name: x}, desc.output[0].name
        return lambda: np.asarray(predict(feed)[out])

    def _export(self, spec: ExportSpec) -> ExportResult:
        import coremltools as ct

        t0 = time.perf_counter()
        units_name = spec.options.get("compute_units", "ALL")
        units = compute_unit(units_name)
        meta = dict(spec.metadata)
        on_mac = platform.system() == "Darwin"
        model, x = spec.frozen_module(), spec.example()
        shape = tuple(x.shape)
        if shape[1:] != spec.input_shape[1:] or (not spec.dynamic_batch and shape != spec.input_shape):
            raise ValueError(f"inputs shape {shape} is not supported; allowed: {spec.input_shape}"
                             + (" with any batch" if spec.dynamic_batch else ""))
        trace_x = x if shape == spec.input_shape else x[:1].expand(spec.input_shape)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.trace deprecation, coremltools' untested-torch notice
            ref = model(x)
            if not isinstance(ref, torch.Tensor):
                raise ValueError(f"the module returns {type(ref).__name__}; allowed: one output tensor")
            ref = ref.numpy()
            precision = ct.precision.FLOAT16 if spec.precision == "fp16" else ct.precision.FLOAT32
            with contextlib.redirect_stderr(io.StringIO()):  # coremltools' per-pass progress bars
                mlmodel = ct.convert(torch.jit.trace(model, trace_x), convert_to="mlprogram",
                                     minimum_deployment_target=ct.target.iOS16, compute_precision=precision,
                                     inputs=[_input_type(spec)], compute_units=units, skip_model_load=not on_mac,
                                     outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)])
        for key in STANDARD_METADATA:
            if key in meta:
                setattr(mlmodel, key, meta.pop(key))
        for key, value in {**meta, PRECISION_KEY: spec.precision}.items():
            mlmodel.user_defined_metadata[key] = value

        spec.out.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{spec.out.name}.", suffix=".tmp", dir=spec.out.parent))
        try:
            staged = tmp_dir / spec.out.name
            mlmodel.save(str(staged))
            check_package(staged, spec.input_shape, tuple(ref.shape))
            diff, notes = None, (LINUX_NOTE,)
            if on_mac:
                diff, notes = self._parity(staged, units_name, x.numpy(), ref, spec), ()
            replace_dir(staged, spec.out)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        settings = {"precision": spec.precision, "compute_units": units_name, "dynamic_batch": spec.dynamic_batch,
                    "input_shape": list(spec.input_shape), "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
                    "minimum_deployment_target": "iOS16", "format": "mlprogram"}
        versions = {"torch": torch.__version__, "coremltools": ct.__version__}
        return ExportResult(spec.out, self.name, settings, versions, diff, time.perf_counter() - t0, notes)

    def _parity(self, path: Path, units: str, x: np.ndarray, ref: np.ndarray, spec: ExportSpec) -> float:
        """Max |CoreML - torch| on macOS; raises when it exceeds the precision's tolerance."""
        got = self.bind(path, x, units)()
        diff = float(np.abs(np.asarray(got, dtype=np.float32).reshape(ref.shape) - ref).max())
        tol = parity_tolerance(spec.precision, spec.atol, ref)  # fp16 parity is checked on macOS only
        if not diff <= tol:
            raise ParityError(f"CoreML parity check failed: max |coreml - torch| = {diff:.3g} > {tol:.3g} "
                               f"({spec.precision}); {spec.out} was not written")
        log.debug("CoreML parity %s: %.3g (tolerance %.3g)", spec.precision, diff, tol)
        return diff
