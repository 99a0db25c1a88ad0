"""ExecuTorch: a ``.pte`` program (XNNPACK delegate) run by ExecuTorch's runtime on this CPU.

The same program and kernels run on arm64 phones; this runtime times them here or, through the agent, on any
board that runs Python. The XNNPACK thread pool is process-wide, so it is sized for the measurement and
restored after.
"""

from __future__ import annotations

from profilers.runtimes.base import FileRuntime, register_runtime


@register_runtime
class ExecuTorchRuntime(FileRuntime):
    """Times ``method.execute([x])`` of the program's ``forward`` method."""

    name = "executorch"
    engine = "ExecuTorch"
    artifact_format = "executorch"
    suffix = ".pte"
    default_provider = "XNNPACK"
    precisions = ("fp32", "int8")
    requires = (("executorch", "executorch"),)  # ExecuTorch reports load and execute errors as RuntimeErrors

    def _threads(self, n: int):
        from deploy_targets.executorch_export import threads

        return threads(n)
