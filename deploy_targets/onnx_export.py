"""ONNX exporter: TorchScript-based ``torch.onnx.export`` (opset >= 17), ``onnx.checker`` and a parity
check in onnxruntime before the file is written.

The TorchScript exporter (``dynamo=False``) is used because it takes tens of milliseconds for a subnet or
a single layer where the dynamo exporter takes seconds, which matters when a latency table exports
hundreds of layers; both produce the same graph for these plain Conv/BN/activation networks.
"""

from __future__ import annotations

import io
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from deploy_targets.base import Exporter, ExportResult, ExportSpec, ParityError, does_not_run, register_exporter
from elastic.fileio import atomic_path

INPUT_NAME, OUTPUT_NAME = "input", "output"


def onnx_bytes(spec: ExportSpec) -> bytes:
    """The serialized ONNX model of ``spec`` (not checked, not written)."""
    model = spec.frozen_module()
    x = torch.zeros(spec.input_shape)
    dynamic = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if spec.dynamic_batch else None
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=spec.opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes=dynamic, do_constant_folding=True)
    return buf.getvalue()


def ort_session(model: bytes | str, threads: int = 1, providers: list[str] | None = None):
    """An onnxruntime session with the settings used for stable timing (fixed threads, no spinning)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(model, so, providers=providers or ["CPUExecutionProvider"])


@register_exporter
class OnnxExporter(Exporter):
    """``.onnx`` with a parity check in onnxruntime (max abs diff ≤ ``spec.atol``) before writing."""

    name = "onnx"
    suffix = ".onnx"
    precisions = ("fp32",)
    requires = (("onnx", "onnx"), ("onnxruntime", "onnx"))

    def bind(self, artifact: Path | bytes, x: np.ndarray, threads: int = 1,
             providers: list[Any] | None = None) -> Callable[[], np.ndarray]:
        """An onnxruntime session on ``threads`` threads (``providers``: CPU by default) run on ``x``."""
        session = ort_session(artifact if isinstance(artifact, bytes) else str(artifact), threads, providers)
        run, feed = session.run, {session.get_inputs()[0].name: x}
        return lambda: run(None, feed)[0]

    def _export(self, spec: ExportSpec) -> ExportResult:
        import onnx
        import onnxruntime as ort

        t0 = time.perf_counter()
        data = onnx_bytes(spec)
        model = onnx.load_from_string(data)
        if spec.metadata:
            onnx.helper.set_model_props(model, spec.metadata)
            data = model.SerializeToString()
        onnx.checker.check_model(model)
        x = spec.example()
        if spec.dynamic_batch and x.shape[0] == spec.input_shape[0]:
            x = torch.cat([x, x])  # prove the batch dimension really varies
        with torch.no_grad():
            ref = spec.frozen_module()(x).numpy()
        try:
            got = self.bind(data, x.numpy())()
        except Exception as exc:  # onnxruntime's errors (Fail, InvalidArgument, ...) derive from Exception only
            if not type(exc).__module__.startswith("onnxruntime"):
                raise
            raise does_not_run("onnxruntime", "the model", exc, spec.out) from None
        diff = float(np.abs(got - ref).max())
        if not diff <= spec.atol:
            raise ParityError(f"ONNX parity check failed: max |onnxruntime - torch| = {diff:.3g} > atol={spec.atol:g}; "
                               f"{spec.out} was not written")
        with atomic_path(spec.out) as tmp:
            tmp.write_bytes(data)
        settings = {"opset": spec.opset, "dynamic_batch": spec.dynamic_batch, "precision": spec.precision,
                    "input_shape": list(spec.input_shape), "input_name": INPUT_NAME, "output_name": OUTPUT_NAME}
        versions = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__}
        return ExportResult(spec.out, self.name, settings, versions, diff, time.perf_counter() - t0)
