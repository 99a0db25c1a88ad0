"""OpenVINO exporter: the ONNX graph converted to OpenVINO IR (``model.xml`` + ``model.bin``), checked on the
CPU plugin against PyTorch before the files are written.

Both IR files are saved in a temporary folder next to the target and renamed into place: an old ``.xml`` is
removed first, then the weights (``.bin``) and the new ``.xml`` are moved in, so a crash between the two
steps leaves no IR rather than an old ``.xml`` beside new weights (a pair that would load and compute
nonsense), and an ``.xml`` never appears before its weights. ``fp16`` stores compressed
weights (the CPU plugin still computes in fp32 unless told otherwise). ``int8`` converts the ONNX exporter's
Q/DQ model (uint8 activations, per-channel int8 weights, min/max-calibrated on ``spec.calibration``), which
OpenVINO runs with its int8 kernels, and is checked by top-1 agreement like the other int8 targets.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from deploy_targets.base import (Exporter, ExportResult, ExportSpec, check_parity, min_agreement,
                                 outputs_on_examples, register_exporter)
from deploy_targets.onnx_export import INPUT_NAME, OUTPUT_NAME, cpu_model_bytes

RT_INFO_KEY = "ofakit"  # ExportSpec.metadata lives in the IR's rt_info under this key


@register_exporter
class OpenVinoExporter(Exporter):
    """``.xml`` + ``.bin`` OpenVINO IR with a parity check on the CPU plugin."""

    name = "openvino"
    suffix = ".xml"
    precisions = ("fp32", "fp16", "int8")
    option_keys = ("min_top1_agreement",)
    requires = (("onnx", "onnx"), ("openvino", "openvino"))
    checks_many_images = True

    def bind(self, artifact: Path | bytes, x: np.ndarray, device: str = "CPU",
             config: dict[str, Any] | None = None) -> Callable[[], np.ndarray]:
        """An IR (``.xml``) or ONNX file compiled for ``device`` (fp32 inference unless ``config`` says
        otherwise) with one infer request run on ``x``."""
        import openvino as ov

        if isinstance(artifact, bytes):
            raise ValueError("OpenVINO runs a file (.xml or .onnx); got bytes")
        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(artifact)), device,
                                      config or {"INFERENCE_PRECISION_HINT": "f32"})
        request, feed = compiled.create_infer_request(), {0: x}
        return lambda: request.infer(feed)[0]


    def _export(self, spec: ExportSpec) -> ExportResult:
        import openvino as ov

        from deploy_targets.onnx_precision import QDQ_SCHEMES

        t0 = time.perf_counter()
        if spec.out.suffix != ".xml":
            raise ValueError(f"OpenVINO IR path {spec.out} is not supported; allowed: a path ending in .xml")
        need = min_agreement(spec)
        data = cpu_model_bytes(spec)
        spec.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{spec.out.name}.", suffix=".tmp", dir=spec.out.parent))
        try:
            onnx_path = tmp / "model.onnx"
            onnx_path.write_bytes(data)
            staged = tmp / spec.out.name
            model = ov.convert_model(str(onnx_path))
            for key, value in spec.metadata.items():
                model.set_rt_info(value, [RT_INFO_KEY, key])
            ov.save_model(model, str(staged), compress_to_fp16=spec.precision == "fp16")
            diff, agreement, tol = self._parity(staged, spec, need)
            spec.out.unlink(missing_ok=True)  # never an old .xml beside the new .bin, even after a crash
            for suffix in (".bin", ".xml"):
                os.replace(staged.with_suffix(suffix), spec.out.with_suffix(suffix))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        settings = {"precision": spec.precision, "opset": spec.opset, "dynamic_batch": spec.dynamic_batch,
                    "input_shape": list(spec.input_shape), "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
                    "weights": spec.out.with_suffix(".bin").name, "parity_device": "CPU"}
        if spec.precision == "int8":
            settings |= {"quantization": QDQ_SCHEMES["cpu"], "min_top1_agreement": need, "top1_agreement": agreement,
                         "calibration_images": sum(len(b) for b in spec.calibration), "parity_tolerance": tol}
        versions = {"torch": torch.__version__, "openvino": ov.__version__}
        return ExportResult(spec.out, self.name, settings, versions, diff, time.perf_counter() - t0)

    def _parity(self, path: Path, spec: ExportSpec, need: float) -> tuple[float, float | None, float]:
        """Run the IR on the CPU plugin on every example image against PyTorch; raises :class:`ParityError` when
        it disagrees. Returns (max abs diff, top-1 agreement or None, tolerance)."""
        got, ref = outputs_on_examples(spec, lambda buf: self.bind(path, buf),
                                       lambda exc: isinstance(exc, RuntimeError),  # OpenVINO's read/compile errors
                                       "OpenVINO", "the IR")
        return check_parity("OpenVINO", got, ref, spec, need)
