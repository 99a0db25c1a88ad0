"""LiteRT: a ``.tflite`` model run by ``ai-edge-litert``'s interpreter (XNNPACK delegate) on this CPU.

The same interpreter and kernels run on Android phones and arm64 boards; this runtime times them here or,
through the agent, on any board that runs Python. Threads are the interpreter's own (per model).
"""

from __future__ import annotations

from typing import Any

from deploy_targets.litert_export import INSTALL_HINT
from profilers.runtimes.base import FileRuntime, MeasureSpec, register_runtime


@register_runtime
class LiteRTRuntime(FileRuntime):
    """Times ``set_tensor`` + ``invoke`` + ``get_tensor`` of the interpreter on fixed input."""

    name = "litert"
    engine = "LiteRT"
    artifact_format = "litert"
    suffix = ".tflite"
    default_provider = "XNNPACK"
    precisions = ("fp32", "int8")
    requires = (("ai_edge_litert", "litert"), ("litert_torch", "litert"))
    load_errors = (RuntimeError, ValueError)  # the interpreter's load and invoke errors, and a shape that misfits

    def unavailable(self) -> str | None:
        """Why LiteRT cannot run here, with where to install it."""
        reason = super().unavailable()
        return None if reason is None else f"{reason}; {INSTALL_HINT}"

    def version(self) -> str:
        """The interpreter's version (``ai-edge-litert``)."""
        import importlib.metadata

        return importlib.metadata.version("ai-edge-litert")

    def bind_settings(self, spec: MeasureSpec) -> dict[str, Any]:
        """The interpreter's threads are per model."""
        return {"threads": spec.threads}
