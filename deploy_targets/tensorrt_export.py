"""TensorRT exporter: the ONNX graph of :func:`~deploy_targets.onnx_export.onnx_bytes` built into a serialized
``.engine`` (fp32, fp16 or int8), checked for parity on the GPU, then written.

The precision is set the way the installed TensorRT major wants it (``tensorrt.__version__``): TensorRT 10
takes the fp32 graph with the FP16/INT8 builder flags and an entropy calibrator; TensorRT 11, whose networks
are always strongly typed, takes an fp16 graph or a calibrated Q/DQ int8 graph
(:mod:`deploy_targets.onnx_precision`). Either way the engine passes the same parity gate.

An engine is specific to the GPU model and TensorRT version it was built with, so it is built on the
target (or through the profiling agent). Device memory, streams and timing events come from
``torch.cuda``, so no pycuda is needed. :class:`EngineRunner` (deserialise, bind, run, time with CUDA
events) is shared with the ``tensorrt`` runtime in ``profilers``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from deploy_targets.base import (FP16_REL_TOL, INT8_REL_TOL, PRECISIONS, Exporter, ExportResult, ExportSpec,  # noqa: F401
                                 ParityError, parity_tolerance, register_exporter)
from deploy_targets.onnx_export import INPUT_NAME, OUTPUT_NAME, onnx_bytes
from deploy_targets.onnx_precision import check_input_shape, input_dims, to_fp16, to_int8_qdq
from deploy_targets.tensorrt_env import tensorrt_major, tensorrt_unavailable
from elastic.fileio import atomic_path

log = logging.getLogger(__name__)

OPTIONS = ("workspace_mb", "max_batch", "device", "builder")


@functools.lru_cache(maxsize=None)
def _trt_logger() -> Any:
    """One process-wide TensorRT logger forwarding to :mod:`logging`."""
    import tensorrt as trt

    sev = trt.ILogger.Severity
    levels = {sev.INTERNAL_ERROR: logging.CRITICAL, sev.ERROR: logging.ERROR, sev.WARNING: logging.WARNING,
              sev.INFO: logging.INFO, sev.VERBOSE: logging.DEBUG}

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            level = levels.get(severity, logging.DEBUG)
            if log.isEnabledFor(level):
                log.log(level, "TensorRT: %s", msg)

    return _Logger()


def _calibrator(trt: Any, batches: list[np.ndarray]) -> Any:
    """An ``IInt8EntropyCalibrator2`` (TensorRT 10; 11 removed it) feeding ``batches`` through one CUDA buffer."""

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.pending = iter(batches)
            self.buffer = torch.empty(batches[0].shape, dtype=torch.float32, device="cuda")
            self.cache: bytes | None = None

        def get_batch_size(self) -> int:
            return int(batches[0].shape[0])

        def get_batch(self, names: list[str], p_str: Any = None) -> list[int] | None:  # noqa: ARG002
            batch = next(self.pending, None)
            if batch is None:
                return None
            self.buffer.copy_(torch.from_numpy(batch))
            torch.cuda.synchronize()
            return [int(self.buffer.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return self.cache

        def write_calibration_cache(self, cache: Any) -> None:
            self.cache = bytes(cache)

    return _Calibrator()


def engine_onnx(onnx_model: bytes, precision: str, calibration: Sequence[np.ndarray], major: int) -> bytes:
    """The ONNX graph that TensorRT ``major`` builds at ``precision``.

    TensorRT 10 and every fp32 build take the graph as it is (TensorRT 10 gets the precision from builder
    flags); TensorRT 11 builds strongly typed networks, so fp16 is an fp16 graph and int8 a Q/DQ graph
    calibrated on ``calibration``.
    """
    if major < 11 or precision == "fp32":
        return onnx_model
    return to_fp16(onnx_model) if precision == "fp16" else to_int8_qdq(onnx_model, calibration)


def _checked_dims(onnx_model: bytes, shape: tuple[int, ...] | None, max_batch: int | None,
                  batches: list[np.ndarray]) -> tuple[int, ...]:
    """The ONNX input dims, with ``shape``, ``max_batch`` and the calibration batches checked against them."""
    dims = input_dims(onnx_model)
    if -1 in dims[1:]:
        raise ValueError(f"ONNX input shape {dims} is not supported; allowed: only the batch dimension dynamic")
    if dims[0] == -1 and shape is None:
        raise ValueError("a dynamic-batch ONNX model needs input_shape (its batch is the profile optimum)")
    if shape is not None:
        check_input_shape("input_shape", shape, dims)
        if max_batch is not None and max_batch < shape[0]:
            raise ValueError(f"max_batch={max_batch!r} is not supported; allowed: >= the input batch {shape[0]}")
    if batches:
        check_input_shape("calibration batch shape", batches[0].shape, dims)
    return dims


def _weak_typing(trt: Any, builder: Any, config: Any, name: str, precision: str, batches: list[np.ndarray],
                 dynamic: bool) -> Any:
    """TensorRT 10: the FP16/INT8 builder flags and, for int8, the entropy calibrator (returned: TensorRT keeps
    only a raw pointer to it, so the caller holds it until the build ends)."""
    if precision == "fp32":
        return None
    config.set_flag(trt.BuilderFlag.FP16)  # int8 falls back to fp16 where a layer has no int8 kernel
    if precision != "int8":
        return None
    config.set_flag(trt.BuilderFlag.INT8)
    if dynamic:
        cal = batches[0].shape
        cal_profile = builder.create_optimization_profile()
        cal_profile.set_shape(name, cal, cal, cal)
        config.set_calibration_profile(cal_profile)
    calibrator = config.int8_calibrator = _calibrator(trt, batches)
    return calibrator


def build_engine(onnx_model: bytes, precision: str, calibration: Sequence[np.ndarray] = (), workspace_mb: int = 1024,
                 input_shape: Sequence[int] | None = None, max_batch: int | None = None) -> bytes:
    """Build a serialized TensorRT engine (TensorRT 10 or 11) from an ONNX model on the current CUDA device.

    The arguments, the input shape included, are checked against the ONNX graph before TensorRT is imported.

    Args:
        onnx_model: Serialized ONNX model with one input.
        precision: ``fp32`` (TF32 off), ``fp16``, or ``int8`` (needs ``calibration``; TensorRT 10 falls back to
            fp16 and TensorRT 11 to fp32 outside the quantized layers).
        calibration: Input batches of one shape for int8 calibration.
        workspace_mb: Builder workspace memory pool limit.
        input_shape: Expected input shape; for a dynamic-batch model its batch is the profile's optimum.
        max_batch: Largest batch of a dynamic-batch model's profile (default: ``input_shape[0]``).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not supported; allowed: {list(PRECISIONS)}")
    if isinstance(workspace_mb, bool) or not isinstance(workspace_mb, int) or workspace_mb < 1:
        raise ValueError(f"workspace_mb={workspace_mb!r} must be a positive integer")
    batches = [np.ascontiguousarray(b, dtype=np.float32) for b in calibration]
    if precision == "int8" and not batches:
        raise ValueError("precision='int8' needs calibration batches (ExportSpec.calibration); none were given")
    if len({b.shape for b in batches}) > 1:
        raise ValueError(f"calibration batches must share one shape; got {sorted({b.shape for b in batches})}")
    shape = None if input_shape is None else tuple(int(v) for v in input_shape)
    dims = _checked_dims(onnx_model, shape, max_batch, batches)
    import tensorrt as trt

    major = tensorrt_major(trt.__version__)
    logger = _trt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch only (10); always strongly typed (11)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(engine_onnx(onnx_model, precision, batches, major)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX model: {errors}")
    name = network.get_input(0).name
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # true fp32, comparable with the torch reference
    if dims[0] == -1:
        top = shape[0] if max_batch is None else max_batch
        profile = builder.create_optimization_profile()
        profile.set_shape(name, (1, *dims[1:]), (shape[0], *dims[1:]), (top, *dims[1:]))
        config.add_optimization_profile(profile)
    calibrator = _weak_typing(trt, builder, config, name, precision, batches, dims[0] == -1) if major == 10 else None
    serialized = builder.build_serialized_network(network, config)
    del calibrator
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build the {precision} engine (see the TensorRT log messages)")
    return bytes(serialized)


class EngineRunner:
    """A deserialized engine with torch CUDA tensors bound as its I/O buffers, for one input shape."""

    def __init__(self, engine: bytes, input_shape: Sequence[int], device: str | torch.device = "cuda:0") -> None:
        import tensorrt as trt

        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"device={str(device)!r} is not supported; allowed: 'cuda' or 'cuda:N'")
        dtypes = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT8": torch.int8,
                  "UINT8": torch.uint8, "INT32": torch.int32, "INT64": torch.int64, "BOOL": torch.bool}
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(_trt_logger())
            self.engine = self._runtime.deserialize_cuda_engine(engine)
            if self.engine is None:
                raise RuntimeError("TensorRT could not deserialize the engine (built by another TensorRT version "
                                   "or for another GPU?)")
            self.context = self.engine.create_execution_context()
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            if len(inputs) != 1:
                raise ValueError(f"the engine has inputs {inputs}; one input is supported")
            self.input_name, self.output_names = inputs[0], [n for n in names if n not in inputs]
            shape = tuple(int(v) for v in input_shape)
            if not self.context.set_input_shape(self.input_name, shape):
                raise ValueError(f"input_shape={shape} is not supported by the engine; allowed: "
                                 f"{tuple(self.engine.get_tensor_shape(self.input_name))} within its profile")
            self.buffers: dict[str, torch.Tensor] = {}
            for n in names:
                dims = shape if n == self.input_name else tuple(self.context.get_tensor_shape(n))
                self.buffers[n] = torch.empty(dims, dtype=dtypes[self.engine.get_tensor_dtype(n).name],
                                              device=self.device)
                self.context.set_tensor_address(n, self.buffers[n].data_ptr())
            self.stream = torch.cuda.Stream(self.device)
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)

    def feed(self, x: np.ndarray | torch.Tensor) -> None:
        """Copy ``x`` into the input buffer."""
        buf = self.buffers[self.input_name]
        x = torch.as_tensor(x)
        if tuple(x.shape) != tuple(buf.shape):
            raise ValueError(f"input shape {tuple(x.shape)} is not supported; allowed: {tuple(buf.shape)}")
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            buf.copy_(x)
        self.stream.synchronize()

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log messages)")

    def run(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """The first output for input ``x``, as float32 on the host."""
        self.feed(x)
        with torch.cuda.device(self.device):
            self._execute()
            self.stream.synchronize()
        return self.buffers[self.output_names[0]].float().cpu().numpy()

    def time_once(self) -> float:
        """Run once on the current input; the GPU time in seconds, measured with CUDA events."""
        with torch.cuda.device(self.device):
            self._start.record(self.stream)
            self._execute()
            self._end.record(self.stream)
            self._end.synchronize()
        return self._start.elapsed_time(self._end) / 1e3


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def profile_max_batch(spec: ExportSpec, parity_batch: int) -> int | None:
    """The largest batch of ``spec``'s engine profile (``None`` for a static batch): ``options["max_batch"]``,
    else room for twice the export batch and for the batch of the parity check's inputs."""
    if not spec.dynamic_batch:
        return None
    return spec.options.get("max_batch", max(2 * spec.input_shape[0], parity_batch))


@register_exporter
class TensorRTExporter(Exporter):
    """``.engine`` for the local NVIDIA GPU, with a parity check against PyTorch on that GPU before writing."""

    name = "tensorrt"
    suffix = ".engine"
    precisions = PRECISIONS
    option_keys = OPTIONS

    def unavailable(self) -> str | None:
        return tensorrt_unavailable()

    def unavailable_for(self, spec: ExportSpec) -> str | None:
        """A remote ``builder`` needs no TensorRT here: the engine is built on its device."""
        return None if spec.options.get("builder") is not None else self.unavailable()

    def bind(self, artifact: Path | bytes, x: np.ndarray | torch.Tensor,
             device: str | torch.device = "cuda:0") -> Callable[[], np.ndarray]:
        """A serialized engine (``.engine`` file or its bytes) on GPU ``device`` run on ``x`` (host in and
        out; the tensorrt runtime times :meth:`EngineRunner.time_once` instead, GPU time without copies)."""
        data = artifact if isinstance(artifact, bytes) else Path(artifact).read_bytes()
        runner = EngineRunner(data, tuple(x.shape), device)
        return lambda: runner.run(x)

    def _export(self, spec: ExportSpec) -> ExportResult:
        if spec.options.get("builder") is not None:
            return self._export_remote(spec, spec.options["builder"])
        import tensorrt as trt

        t0 = time.perf_counter()
        n = spec.input_shape[0]
        x = spec.example()
        max_batch = profile_max_batch(spec, x.shape[0])
        workspace = spec.options.get("workspace_mb", 1024)
        device = torch.device(spec.options.get("device", "cuda:0"))
        calibration = [t.detach().float().cpu().numpy() for t in spec.calibration]
        with torch.cuda.device(device):
            engine = build_engine(onnx_bytes(spec), spec.precision, calibration, workspace, spec.input_shape, max_batch)
        if spec.dynamic_batch and x.shape[0] == n and (max_batch or n) >= 2 * n:
            x = torch.cat([x, x])  # prove the batch dimension really varies
        got = self.bind(engine, x, device)()
        with _no_tf32(), torch.no_grad():
            ref = spec.frozen_module().to(device)(x.to(device)).float().cpu().numpy()
        gpu = torch.cuda.get_device_name(device)
        return write_checked_engine(
            spec, engine, got, ref, t0, {"max_batch": max_batch, "workspace_mb": workspace, "gpu": gpu},
            {"tensorrt": trt.__version__, "cuda": str(torch.version.cuda)},
            f"the engine runs only on {gpu}-class GPUs with TensorRT {trt.__version__}")


    @staticmethod
    def _export_remote(spec: ExportSpec, builder: Any) -> ExportResult:
        """Build on a remote device (``options["builder"]``: an object with ``build_engine(onnx, inputs,
        precision, calibration, max_batch)`` and a ``url``, e.g. a profiling agent's tensorrt runtime) and
        check the engine's outputs there against PyTorch here before writing it."""
        if not callable(getattr(builder, "build_engine", None)):
            raise ValueError(f"options['builder']={builder!r} must have build_engine() (e.g. "
                             "profilers.open_runtime('tensorrt', URL, token))")
        t0 = time.perf_counter()
        x = spec.example()
        with torch.no_grad():
            ref = spec.frozen_module()(x).numpy()
        cal = np.stack([c.numpy() for c in spec.calibration]) if spec.calibration else None
        max_batch = profile_max_batch(spec, x.shape[0])  # the profile must take the parity inputs' batch
        got = builder.build_engine(onnx_bytes(spec), x.numpy(), spec.precision, cal, max_batch)
        where = str(getattr(builder, "url", "a remote device"))
        note = f"built on the agent at {where}: runs only on {got['gpu']}-class GPUs with that TensorRT version"
        return write_checked_engine(spec, got["engine"], got["outputs"], ref, t0,
                                    {"max_batch": max_batch, "gpu": got["gpu"]}, got["versions"], note, built_on=where)


def write_checked_engine(spec: ExportSpec, engine: bytes, got: np.ndarray, ref: np.ndarray, t0: float,
                         settings: dict[str, Any], versions: dict[str, str], note: str,
                         built_on: str | None = None) -> ExportResult:
    """Check a built engine's output ``got`` against the PyTorch reference ``ref``, then write it atomically.

    Shared by the local build and the build on a profiling agent (``built_on`` names the agent). A failed
    parity check raises and leaves ``spec.out`` untouched.
    """
    diff, tol = float(np.abs(np.asarray(got) - np.asarray(ref)).max()), parity_tolerance(spec.precision, spec.atol, ref)
    if not diff <= tol:
        where = f", built on {built_on}" if built_on else ""
        raise ParityError(f"TensorRT parity check failed: max |tensorrt - torch| = {diff:.3g} > {tol:.3g} "
                           f"({spec.precision}{where}); {spec.out} was not written")
    with atomic_path(spec.out) as tmp:
        tmp.write_bytes(engine)
    settings = {"precision": spec.precision, "opset": spec.opset, "dynamic_batch": spec.dynamic_batch,
                "input_shape": list(spec.input_shape), "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
                "calibration_batches": len(spec.calibration), "parity_tolerance": tol, **settings}
    if built_on:
        settings["built_on"] = built_on
    return ExportResult(spec.out, "tensorrt", settings, {"torch": torch.__version__, **versions}, diff,
                        time.perf_counter() - t0, (note,))
