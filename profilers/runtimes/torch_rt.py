"""PyTorch eager: an ``nn.Module`` on the CPU or a CUDA GPU (never the caller's module: a copy)."""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch

from profilers.runtimes.base import MeasureSpec, Runner, Runtime, register_runtime


@register_runtime
class TorchRuntime(Runtime):
    """Times ``module(x)`` under ``torch.inference_mode`` (CUDA: synchronised after every run)."""

    name = "torch"
    artifact_format = "module"
    default_provider = "cpu"
    precisions = ("fp32", "fp16")

    def version(self) -> str:
        return torch.__version__

    def check(self, spec: MeasureSpec) -> None:
        super().check(spec)
        provider = self.provider_of(spec)
        if provider not in ("cpu", "cuda"):
            raise ValueError(f"torch provider {provider!r} is not supported; allowed: ['cpu', 'cuda']")
        if provider == "cuda" and not torch.cuda.is_available():
            raise ValueError("torch provider 'cuda' needs an NVIDIA GPU with a CUDA build of torch; none here")
        if spec.precision == "fp16" and provider != "cuda":
            raise ValueError("torch precision='fp16' is supported on provider 'cuda' only")

    @contextlib.contextmanager
    def _threads(self, n: int) -> Iterator[None]:
        old = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(old)

    def _runner(self, spec: MeasureSpec) -> Runner:
        device = torch.device(self.provider_of(spec))
        dtype = torch.float16 if spec.precision == "fp16" else torch.float32
        model = copy.deepcopy(spec.artifact).eval().to(device=device, dtype=dtype)
        x = torch.from_numpy(spec.example()).to(device=device, dtype=dtype)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

        def infer() -> None:
            with torch.inference_mode():
                model(x)
            sync()

        return infer
