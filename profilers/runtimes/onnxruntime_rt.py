"""onnxruntime: an ``.onnx`` file on the CPU execution provider (CUDA / TensorRT providers when present); int8 is
the ONNX exporter's Q/DQ model on the CPU provider."""

from __future__ import annotations

from deploy_targets import get_exporter
from profilers.runtimes.base import MeasureSpec, Runner, Runtime, register_runtime

QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


def _is_quantized(path) -> bool | None:  # noqa: ANN001 - a Path
    """Whether the ONNX file holds int8 quantization ops (``None`` when it cannot be read: the runner says why)."""
    try:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - no onnx package, or not an ONNX file: the runner reports it
        return None
    return any(n.op_type in QUANTIZED_OPS for n in graph.node)


def check_onnx_precision(spec: MeasureSpec) -> None:
    """A ``ValueError`` when an fp32 or int8 measurement of an ONNX file would be filed under the wrong
    precision: a float model timed as int8, or a Q/DQ model timed as fp32."""
    if spec.precision not in ("fp32", "int8"):
        return
    quantized = _is_quantized(spec.artifact)
    if quantized is not None and quantized != (spec.precision == "int8"):
        raise ValueError(f"precision={spec.precision!r}, but {spec.artifact.name} is "
                         f"{'an int8 (Q/DQ)' if quantized else 'a float'} model: its figure would be "
                         f"filed under the wrong precision; export it with --precision "
                         f"{'int8' if quantized else spec.precision} or measure it as "
                         f"{'int8' if quantized else 'fp32'}")


@register_runtime
class OnnxRuntime(Runtime):
    """Times ``session.run`` with fixed intra-op threads, one inter-op thread and spinning disabled."""

    name = "onnxruntime"
    artifact_format = "onnx"
    default_provider = "CPUExecutionProvider"
    precisions = ("fp32", "fp16", "int8")
    requires = (("onnxruntime", "onnx"),)

    def check(self, spec: MeasureSpec) -> None:
        super().check(spec)
        import onnxruntime as ort

        provider = self.provider_of(spec)
        if provider not in ort.get_available_providers():
            raise ValueError(f"execution provider {provider!r} is not available here; "
                             f"allowed: {ort.get_available_providers()}")
        if spec.precision == "fp16" and provider != "TensorrtExecutionProvider":
            raise ValueError(f"precision='fp16' needs provider TensorrtExecutionProvider (got {provider!r}); "
                             "export an fp16 model or use the tensorrt runtime")
        if spec.precision == "int8" and provider != self.default_provider:
            raise ValueError(f"precision='int8' (a Q/DQ model for onnxruntime's CPU kernels) needs provider "
                             f"{self.default_provider} (got {provider!r}); use the tensorrt runtime for a GPU")
        check_onnx_precision(spec)

    def _runner(self, spec: MeasureSpec) -> Runner:
        provider = self.provider_of(spec)
        providers: list = [provider]
        if provider == "TensorrtExecutionProvider":
            providers = [(provider, {"trt_fp16_enable": spec.precision == "fp16"}), "CUDAExecutionProvider"]
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        errors = tuple(getattr(ort_errors, n) for n in ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf",
                                                         "NoSuchFile", "NotImplemented", "RuntimeException")
                       if hasattr(ort_errors, n))
        try:  # a file onnxruntime cannot load, or an input it cannot take, is bad input: a ValueError
            infer = get_exporter("onnx").bind(spec.artifact, spec.example(), spec.threads, providers)
            infer()
        except errors as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"onnxruntime cannot run {spec.artifact.name} on an input of shape "
                             f"{list(spec.input_shape)}: {first[:300]}") from None
        return infer
