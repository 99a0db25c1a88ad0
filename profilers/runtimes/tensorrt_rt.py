"""TensorRT: an ``.onnx`` file (engine built here at the spec's precision) or a prebuilt ``.engine`` file,
timed on an NVIDIA GPU with CUDA events around ``execute_async_v3``."""

from __future__ import annotations

import re
from pathlib import Path

from profilers.runtimes.base import MeasureSpec, Runner, Runtime, register_runtime

SUFFIXES = (".onnx", ".engine")


@register_runtime
class TensorRTRuntime(Runtime):
    """Times one engine execution per run on a CUDA stream; the runner reports the CUDA-event time."""

    name = "tensorrt"
    artifact_format = "onnx"
    default_provider = "cuda:0"
    precisions = ("fp32", "fp16", "int8")

    def unavailable(self) -> str | None:
        from deploy_targets.tensorrt_export import tensorrt_unavailable

        return tensorrt_unavailable()

    def version(self) -> str:
        import tensorrt as trt

        return str(trt.__version__)

    def check(self, spec: MeasureSpec) -> None:
        super().check(spec)
        import torch

        provider = self.provider_of(spec)
        match = re.fullmatch(r"cuda(?::(\d+))?", provider)
        count = torch.cuda.device_count()
        if match is None or int(match.group(1) or 0) >= count:
            raise ValueError(f"tensorrt provider {provider!r} is not available here; allowed: "
                             f"{[f'cuda:{i}' for i in range(count)]}")
        suffix = Path(spec.artifact).suffix
        if suffix not in SUFFIXES:
            raise ValueError(f"tensorrt artifact {spec.artifact} is not supported; allowed suffixes: {list(SUFFIXES)}")
        if spec.precision == "int8" and suffix == ".onnx":
            raise ValueError("precision='int8' from an .onnx file needs calibration data, which a measurement does "
                             "not carry: export an int8 .engine with the tensorrt exporter (ExportSpec.calibration) "
                             "and measure that")

    def _runner(self, spec: MeasureSpec) -> Runner:
        import torch

        from deploy_targets.tensorrt_export import EngineRunner, build_engine

        device = torch.device(self.provider_of(spec))
        path = Path(spec.artifact)
        data = path.read_bytes()
        if path.suffix == ".onnx":
            # The precision of a prebuilt .engine is fixed at build time; spec.precision only labels it.
            with torch.cuda.device(device):
                data = build_engine(data, spec.precision, input_shape=spec.input_shape)
        runner = EngineRunner(data, spec.input_shape, device)
        runner.feed(spec.example())
        return runner.time_once
