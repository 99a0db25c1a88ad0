"""ONNX exporter: TorchScript-based ``torch.onnx.export`` (opset >= 17), ``onnx.checker`` and a parity
check in onnxruntime before the file is written.

``int8`` is a Q/DQ graph for onnxruntime's CPU kernels (uint8 activations, int8 per-channel weights on
Conv/Gemm/MatMul; :data:`~deploy_targets.onnx_precision.QDQ_SCHEMES`), calibrated on ``spec.calibration``;
its parity is top-1 agreement with the fp32 module on 100 or more example images (``options
["min_top1_agreement"]``, default 99%), the logit bound otherwise.

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

from deploy_targets.base import (Exporter, ExportResult, ExportSpec, ParityError, check_parity, min_agreement,
                                 outputs_on_examples, register_exporter)
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


def cpu_model_bytes(spec: ExportSpec) -> bytes:
    """The serialized ONNX model of ``spec`` for CPU runtimes at its precision: fp32, or int8 as a Q/DQ graph
    (uint8 activations, per-channel int8 weights) calibrated on ``spec.calibration`` (not checked, not written)."""
    from deploy_targets.onnx_precision import to_int8_qdq

    data = onnx_bytes(spec)
    if spec.precision == "int8":
        if not spec.calibration:
            raise ValueError("precision='int8' needs calibration batches (real images; e.g. 256 validation images)")
        data = to_int8_qdq(data, [b.numpy() for b in spec.calibration], scheme="cpu")
    return data


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
    precisions = ("fp32", "int8")
    option_keys = ("min_top1_agreement",)
    requires = (("onnx", "onnx"), ("onnxruntime", "onnx"))
    checks_many_images = True

    def bind(self, artifact: Path | bytes, x: np.ndarray, threads: int = 1,
             providers: list[Any] | None = None) -> Callable[[], np.ndarray]:
        """An onnxruntime session on ``threads`` threads (``providers``: CPU by default) run on ``x`` (read at
        each run: an array refilled in place feeds new images to the same session)."""
        session = ort_session(artifact if isinstance(artifact, bytes) else str(artifact), threads, providers)
        run, feed = session.run, {session.get_inputs()[0].name: x}
        return lambda: run(None, feed)[0]

    def _export(self, spec: ExportSpec) -> ExportResult:
        import onnx
        import onnxruntime as ort

        from deploy_targets.onnx_precision import QDQ_SCHEMES

        t0 = time.perf_counter()
        need = min_agreement(spec)
        data = cpu_model_bytes(spec)
        model = onnx.load_from_string(data)
        if spec.metadata:
            onnx.helper.set_model_props(model, spec.metadata)
            data = model.SerializeToString()
        onnx.checker.check_model(model)
        diff, agreement, tol = self._parity(data, spec, need)
        with atomic_path(spec.out) as tmp:
            tmp.write_bytes(data)
        settings = {"opset": spec.opset, "dynamic_batch": spec.dynamic_batch, "precision": spec.precision,
                    "input_shape": list(spec.input_shape), "input_name": INPUT_NAME, "output_name": OUTPUT_NAME}
        if spec.precision == "int8":
            settings |= {"quantization": QDQ_SCHEMES["cpu"], "calibration_images": sum(len(b) for b in spec.calibration),
                         "min_top1_agreement": need, "top1_agreement": agreement, "parity_tolerance": tol}
        versions = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__}
        return ExportResult(spec.out, self.name, settings, versions, diff, time.perf_counter() - t0)

    def _parity(self, data: bytes, spec: ExportSpec, need: float) -> tuple[float, float | None, float]:
        """Run the model in onnxruntime on every example image (whole batches of a static model) against PyTorch;
        raises :class:`ParityError` when it disagrees. Returns (max abs diff, top-1 agreement or None, tolerance)."""
        got, ref = outputs_on_examples(  # onnxruntime's errors (Fail, InvalidArgument, ...) derive from Exception only
            spec, lambda buf: self.bind(data, buf), lambda exc: type(exc).__module__.startswith("onnxruntime"),
            "onnxruntime", "the model")
        if spec.precision == "fp32":  # the documented fp32 rule: spec.atol
            diff = float(np.abs(got.reshape(ref.shape) - ref).max())
            if not diff <= spec.atol:
                raise ParityError(f"ONNX parity check failed: max |onnxruntime - torch| = {diff:.3g} > "
                                  f"atol={spec.atol:g}; {spec.out} was not written")
            return diff, None, spec.atol
        return check_parity("ONNX", got, ref, spec, need)
