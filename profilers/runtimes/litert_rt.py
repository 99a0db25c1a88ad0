"""LiteRT: a ``.tflite`` model run by ``ai-edge-litert``'s interpreter (XNNPACK delegate) on this CPU.

The same interpreter and kernels run on Android phones and arm64 boards; this runtime times them here or,
through the agent, on any board that runs Python. Threads are the interpreter's own (per model).
"""

from __future__ import annotations

from pathlib import Path

from deploy_targets import get_exporter
from deploy_targets.litert_export import INSTALL_HINT
from profilers.runtimes.base import MeasureSpec, Runner, Runtime, register_runtime


@register_runtime
class LiteRTRuntime(Runtime):
    """Times ``set_tensor`` + ``invoke`` + ``get_tensor`` of the interpreter on fixed input."""

    name = "litert"
    artifact_format = "litert"
    default_provider = "XNNPACK"
    precisions = ("fp32", "int8")
    requires = (("ai_edge_litert", "litert"), ("litert_torch", "litert"))

    def unavailable(self) -> str | None:
        """Why LiteRT cannot run here, with where to install it."""
        reason = super().unavailable()
        return None if reason is None else f"{reason}; {INSTALL_HINT}"

    def version(self) -> str:
        """The interpreter's version (``ai-edge-litert``)."""
        import importlib.metadata

        return importlib.metadata.version("ai-edge-litert")

    def check(self, spec: MeasureSpec) -> None:
        super().check(spec)
        provider = self.provider_of(spec)
        if provider != self.default_provider:
            raise ValueError(f"litert provider {provider!r} is not supported; allowed: ['XNNPACK']")
        if Path(spec.artifact).suffix != ".tflite":
            raise ValueError(f"litert artifact {spec.artifact} is not supported; allowed: a .tflite file")

    def _runner(self, spec: MeasureSpec) -> Runner:
        try:  # a file the interpreter cannot load, or an input it cannot take, is bad input: a ValueError
            infer = get_exporter("litert").bind(spec.artifact, spec.example(), spec.threads)
            infer()
        except (RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"LiteRT cannot run {spec.artifact.name} on an input of shape "
                             f"{list(spec.input_shape)}: {first[:300]}") from None
        return infer
