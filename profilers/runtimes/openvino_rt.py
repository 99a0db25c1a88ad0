"""OpenVINO: an ``.onnx`` file compiled for the CPU plugin (latency hint, fixed threads)."""

from __future__ import annotations

import importlib.metadata
import importlib.util

from profilers.runtimes.base import MeasureSpec, Runner, Runtime, register_runtime


@register_runtime
class OpenVinoRuntime(Runtime):
    """Times a synchronous ``InferRequest.infer`` on a model compiled with ``PERFORMANCE_HINT=LATENCY``."""

    name = "openvino"
    artifact_format = "onnx"
    default_provider = "CPU"
    precisions = ("fp32",)

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("openvino") is None:
            return "openvino is not installed (pip install 'ofa-kit[openvino]')"
        return None

    def version(self) -> str:
        return importlib.metadata.version("openvino")

    def _runner(self, spec: MeasureSpec) -> Runner:
        import openvino as ov

        core = ov.Core()
        provider = self.provider_of(spec)
        if provider not in core.available_devices:
            raise ValueError(f"OpenVINO device {provider!r} is not available here; allowed: {core.available_devices}")
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": spec.threads, "NUM_STREAMS": 1,
                  "INFERENCE_PRECISION_HINT": "f32"}
        compiled = core.compile_model(core.read_model(str(spec.artifact)), provider, config)
        request = compiled.create_infer_request()
        x = spec.example()

        def infer() -> None:
            request.infer({0: x})

        return infer
