"""ExecuTorch: a ``.pte`` program (XNNPACK delegate) run by ExecuTorch's runtime on this CPU.

The same program and kernels run on arm64 phones; this runtime times them here or, through the agent, on any
board that runs Python. The XNNPACK thread pool is process-wide, so it is sized for the measurement and
restored after.
"""

from __future__ import annotations

from pathlib import Path

from deploy_targets import get_exporter
from profilers.runtimes.base import MeasureSpec, Runner, Runtime, register_runtime


@register_runtime
class ExecuTorchRuntime(Runtime):
    """Times ``method.execute([x])`` of the program's ``forward`` method."""

    name = "executorch"
    artifact_format = "executorch"
    default_provider = "XNNPACK"
    precisions = ("fp32", "int8")
    requires = (("executorch", "executorch"),)

    def check(self, spec: MeasureSpec) -> None:
        super().check(spec)
        provider = self.provider_of(spec)
        if provider != self.default_provider:
            raise ValueError(f"executorch provider {provider!r} is not supported; allowed: ['XNNPACK']")
        if Path(spec.artifact).suffix != ".pte":
            raise ValueError(f"executorch artifact {spec.artifact} is not supported; allowed: a .pte file")

    def _runner(self, spec: MeasureSpec) -> Runner:
        try:  # a file ExecuTorch cannot load, or an input it cannot take, is bad input: a ValueError
            infer = get_exporter("executorch").bind(spec.artifact, spec.example())
            infer()
        except RuntimeError as exc:  # ExecuTorch reports load and execute errors as RuntimeErrors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"ExecuTorch cannot run {spec.artifact.name} on an input of shape "
                             f"{list(spec.input_shape)}: {first[:300]}") from None
        return infer

    def _threads(self, n: int):
        from deploy_targets.executorch_export import threads

        return threads(n)
