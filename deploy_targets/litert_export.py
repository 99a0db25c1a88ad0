"""LiteRT exporter: a ``.tflite`` flatbuffer (Google's LiteRT, formerly TensorFlow Lite), the format Android apps
and many boards run, converted by ``litert-torch`` and checked in ``ai-edge-litert``'s interpreter (XNNPACK
delegate on CPU) before the file is written.

``int8`` is PT2E static quantization with LiteRT's own quantizer (per-channel symmetric int8 weights,
per-tensor int8 activations), calibrated on ``spec.calibration``; its parity is top-1 agreement with the fp32
module on 100 or more example images (``options["min_top1_agreement"]``, default 99%), the logit bound
otherwise. The batch is static (a dynamic batch is refused). litert-torch and ai-edge-litert are imported
inside the functions that use them (``pip install 'ofa-kit[litert]'``).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from deploy_targets.base import (Exporter, ExportResult, ExportSpec, check_parity, does_not_run, min_agreement,
                                 register_exporter)
from elastic.fileio import atomic_path

#: Where LiteRT is installed: litert-torch pins older typing_extensions, pydantic and anyio than the kit's venv.
INSTALL_HINT = "install it in a venv of its own (`make venv-litert`: torch 2.14.1 + 'ofa-kit[onnx,litert]')"
QUANTIZATION = {"scheme": "pt2e-litert", "weights": "int8 symmetric per-channel",
                "activations": "int8 per-tensor (static, calibrated)"}


def _quantized(model: torch.nn.Module, x: torch.Tensor,
               calibration: tuple[torch.Tensor, ...]) -> tuple[torch.nn.Module, Any]:
    """``model`` with int8 quantize/dequantize pairs calibrated on ``calibration`` (PT2E, LiteRT's quantizer),
    batch by batch at the program's static batch; and the quantizer (the converter needs it)."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    with torch.no_grad():
        prepared = prepare_pt2e(torch.export.export(model, (x,)).module(), quantizer)
        images, n = torch.cat([b.float() for b in calibration]), len(x)
        for start in range(0, max(1, len(images) - n + 1), n):
            prepared(images[torch.arange(start, start + n) % len(images)])
    return move_exported_model_to_eval(convert_pt2e(prepared, fold_quantize=False)), quantizer


def flatbuffer(spec: ExportSpec) -> bytes:
    """The ``.tflite`` bytes of ``spec`` (fp32 or int8); not checked, not written."""
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig

    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # its own console display, not our logs
    model, x = spec.frozen_module(), torch.zeros(spec.input_shape)
    config = None
    if spec.precision == "int8":
        if not spec.calibration:
            raise ValueError("precision='int8' needs calibration batches (real images; e.g. 256 validation images)")
        model, quantizer = _quantized(model, x, spec.calibration)
        config = QuantConfig(pt2e_quantizer=quantizer)
    try:
        edge = litert_torch.convert(model, (x,), quant_config=config)
    except Exception as exc:  # noqa: BLE001 - the converter's passes raise many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"litert-torch cannot convert this {spec.precision} network ({first[:200]}); "
                         f"{spec.out} was not written") from None
    with tempfile.TemporaryDirectory(prefix="ofakit-litert-") as tmp:
        path = Path(tmp) / "model.tflite"
        edge.export(str(path))
        return path.read_bytes()


def _to_model(x: np.ndarray, detail: dict) -> np.ndarray:
    """``x`` in the dtype of the model input ``detail``: quantized with its scale and zero point when int8."""
    if detail["dtype"] == np.float32:
        return np.ascontiguousarray(x)
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def io_quantization(data: bytes) -> dict[str, Any]:
    """The model's input and output types, with scale and zero point when quantized (what an app feeding the
    ``.tflite`` must do to its float images)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data)
    out = {}
    for name, detail in (("input", interpreter.get_input_details()[0]), ("output", interpreter.get_output_details()[0])):
        scale, zero = detail["quantization"]
        out[name] = {"dtype": np.dtype(detail["dtype"]).name, **({"scale": float(scale), "zero_point": int(zero)}
                                                                   if detail["dtype"] != np.float32 else {})}
    return out


@register_exporter
class LiteRTExporter(Exporter):
    """``.tflite`` converted by litert-torch, checked in the LiteRT interpreter before writing."""

    name = "litert"
    suffix = ".tflite"
    precisions = ("fp32", "int8")
    option_keys = ("min_top1_agreement",)
    requires = (("litert_torch", "litert"), ("ai_edge_litert", "litert"))
    checks_many_images = True

    def unavailable(self) -> str | None:
        """Why LiteRT cannot run here, with where to install it."""
        reason = super().unavailable()
        return None if reason is None else f"{reason}; {INSTALL_HINT}"

    def bind(self, artifact: Path | bytes, x: np.ndarray, threads: int = 1) -> Callable[[], np.ndarray]:
        """The LiteRT interpreter (XNNPACK delegate, ``threads`` threads) on ``x``, whose shape must be the
        model's input shape. An int8 model's converter makes its input and output int8 too: ``x`` is quantized
        once with the input's scale and zero point (:func:`io_quantization`), and each output dequantized, as
        an app feeding it does."""
        from ai_edge_litert.interpreter import Interpreter

        data = artifact if isinstance(artifact, bytes) else Path(artifact).read_bytes()
        interpreter = Interpreter(model_content=data, num_threads=threads)
        interpreter.allocate_tensors()
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        if tuple(np.shape(x)) != tuple(inp["shape"]):
            raise ValueError(f"input of shape {list(np.shape(x))} does not fit the LiteRT model's input "
                             f"{[int(v) for v in inp['shape']]}")
        fed = _to_model(np.asarray(x, dtype=np.float32), inp)
        (o_scale, o_zero), o_float = out["quantization"], out["dtype"] == np.float32
        set_tensor, invoke, get_tensor = interpreter.set_tensor, interpreter.invoke, interpreter.get_tensor

        def run() -> np.ndarray:
            set_tensor(inp["index"], fed)
            invoke()
            y = get_tensor(out["index"])
            return y if o_float else (y.astype(np.float32) - o_zero) * o_scale

        return run

    def _export(self, spec: ExportSpec) -> ExportResult:
        import ai_edge_litert
        import litert_torch

        if spec.dynamic_batch:
            raise ValueError("litert exports a static batch; allowed: dynamic_batch=False (export one model per "
                             "batch size)")
        t0 = time.perf_counter()
        need = min_agreement(spec)
        data = flatbuffer(spec)
        diff, agreement, tol = self._parity(data, spec, need)
        with atomic_path(spec.out) as tmp:
            tmp.write_bytes(data)
        settings = {"precision": spec.precision, "dynamic_batch": False, "input_shape": list(spec.input_shape),
                    "delegate": "XNNPACK (the interpreter's default on CPU)", "parity_tolerance": tol,
                    "top1_agreement": agreement}
        if spec.precision == "int8":
            settings |= {"quantization": QUANTIZATION, "calibration_images": sum(len(b) for b in spec.calibration),
                         "min_top1_agreement": need, "io": io_quantization(data)}
        versions = {"torch": torch.__version__, "litert_torch": litert_torch.__version__,
                    "ai_edge_litert": getattr(ai_edge_litert, "__version__", _version("ai-edge-litert"))}
        return ExportResult(spec.out, self.name, settings, versions, diff, time.perf_counter() - t0)

    def _parity(self, data: bytes, spec: ExportSpec, need: float) -> tuple[float, float | None, float]:
        """Run the model in the LiteRT interpreter on every example image (whole static batches) against
        PyTorch; raises :class:`ParityError` when it disagrees."""
        x, step = spec.example(), spec.input_shape[0]
        with torch.no_grad():
            ref = spec.frozen_module()(x).numpy()
        chunks = []
        try:
            for start in range(0, len(x), step):
                part = x[torch.arange(start, start + step) % len(x)]  # whole batches (wrapping round a short x)
                chunks.append(self.bind(data, part.numpy())())
        except (RuntimeError, ValueError) as exc:  # the interpreter reports load and invoke errors so
            raise does_not_run("LiteRT", "the model", exc, spec.out) from None
        return check_parity("LiteRT", np.concatenate(chunks)[:len(x)], ref, spec, need)


def _version(dist: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(dist)
