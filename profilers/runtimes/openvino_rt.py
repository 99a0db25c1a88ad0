"""OpenVINO: an ``.onnx`` file compiled for the CPU plugin (latency hint, fixed threads); int8 is the ONNX
exporter's Q/DQ model, which the CPU plugin runs with its int8 kernels."""

from __future__ import annotations

from deploy_targets import get_exporter
from profilers.runtimes.base import MeasureSpec, Runner, Runtime, register_runtime
from profilers.runtimes.onnxruntime_rt import check_onnx_precision


@register_runtime
class OpenVinoRuntime(Runtime):
    """Times a synchronous ``InferRequest.infer`` on a model compiled with ``PERFORMANCE_HINT=LATENCY``."""

    name = "openvino"
    artifact_format = "onnx"
    default_provider = "CPU"
    precisions = ("fp32", "int8")
    requires = (("openvino", "openvino"),)

    def check(self, spec: MeasureSpec) -> None:
        super().check(spec)
        check_onnx_precision(spec)

    def _runner(self, spec: MeasureSpec) -> Runner:
        import openvino as ov

        core = ov.Core()
        provider = self.provider_of(spec)
        if provider not in core.available_devices:
            raise ValueError(f"OpenVINO device {provider!r} is not available here; allowed: {core.available_devices}")
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": spec.threads, "NUM_STREAMS": 1,
                  "INFERENCE_PRECISION_HINT": "f32"}
        try:  # a file OpenVINO cannot read, or an input it cannot take, is bad input: a ValueError
            infer = get_exporter("openvino").bind(spec.artifact, spec.example(), provider, config)
            infer()
        except RuntimeError as exc:  # OpenVINO's errors (read, compile, shape) are RuntimeErrors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"OpenVINO cannot run {spec.artifact.name} on an input of shape "
                             f"{list(spec.input_shape)}: {first[:300]}") from None
        return infer
