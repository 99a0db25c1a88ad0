"""CoreML: an ``.mlpackage`` run with ``MLModel.predict`` on macOS, on the chosen compute units.

coremltools converts on Linux but predicts only on macOS, so this runtime is unavailable elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from deploy_targets import get_exporter
from profilers.runtimes.base import MeasureSpec, Runner, Runtime, is_macos, register_runtime

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")


@register_runtime
class CoreMLRuntime(Runtime):
    """Times ``MLModel(path, compute_units=provider).predict({input: x})``; the provider is the compute units."""

    name = "coreml"
    artifact_format = "coreml"
    default_provider = "ALL"
    precisions = ("fp32", "fp16")
    requires = (("coremltools", "coreml"),)

    def unavailable(self) -> str | None:
        if not is_macos():
            return "needs macOS (coremltools can convert on Linux but only predicts on macOS)"
        return super().unavailable()

    def check(self, spec: MeasureSpec) -> None:
        super().check(spec)
        provider = self.provider_of(spec)
        if provider not in COMPUTE_UNITS:
            raise ValueError(f"coreml provider (compute units) {provider!r} is not supported; "
                             f"allowed: {list(COMPUTE_UNITS)}")
        if Path(spec.artifact).suffix != ".mlpackage":
            raise ValueError(f"coreml artifact {spec.artifact} is not supported; allowed: a .mlpackage directory")
        import coremltools as ct

        from deploy_targets.coreml_export import PRECISION_KEY

        meta = ct.models.MLModel(str(spec.artifact), skip_model_load=True).user_defined_metadata
        built = meta.get(PRECISION_KEY)
        if built is not None and built != spec.precision:
            raise ValueError(f"precision={spec.precision!r} does not match the package, exported at {built!r}; "
                             "export it again at that precision")

    def _runner(self, spec: MeasureSpec) -> Runner:
        return get_exporter("coreml").bind(spec.artifact, spec.example(), self.provider_of(spec))
