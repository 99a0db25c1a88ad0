"""ExecuTorch exporter: a ``.pte`` program with the XNNPACK delegate, the format Android and iOS apps run.

``torch.export`` captures the subnet, ``to_edge_transform_and_lower`` hands every supported op to XNNPACK
(the same kernels run on x86 here and on arm64 phones), and the program is checked in ExecuTorch's own
runtime before the file is written. ``int8`` is PT2E static quantization with the XNNPACK quantizer
(symmetric, per-channel weights, per-tensor activations), calibrated on ``spec.calibration``; its parity is
top-1 agreement with the fp32 module on the example images: at least ``options["min_top1_agreement"]`` (default
:data:`~deploy_targets.base.INT8_MIN_AGREEMENT`, 99%) when there are 100 or more, the logit bound otherwise.
ExecuTorch and torchao are imported inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from deploy_targets.base import (Exporter, ExportResult, ExportSpec, check_parity, does_not_run, min_agreement,
                                 register_exporter)
from elastic.fileio import atomic_path

OPTIONS = ("max_batch", "min_top1_agreement")
DEFAULT_MAX_BATCH = 32  # the largest batch of a dynamic-batch program unless options["max_batch"] says otherwise
QUANTIZATION = {"scheme": "pt2e-xnnpack", "weights": "int8 symmetric per-channel",
                "activations": "int8 per-tensor (static, calibrated)"}


def _max_batch(spec: ExportSpec) -> int | None:
    """The upper bound of a dynamic batch (``None``: the batch is static)."""
    value = spec.options.get("max_batch", DEFAULT_MAX_BATCH)
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 4096:
        raise ValueError(f"max_batch={value!r} is not supported; allowed: an integer from 2 to 4096")
    if not spec.dynamic_batch:
        if "max_batch" in spec.options:
            raise ValueError(f"max_batch={value} needs dynamic_batch=True (the program's batch is "
                             f"{spec.input_shape[0]})")
        return None
    if value < spec.input_shape[0]:
        raise ValueError(f"max_batch={value} is below the example batch {spec.input_shape[0]}")
    return value


def _capture(model: torch.nn.Module, x: torch.Tensor, max_batch: int | None) -> Any:
    """``torch.export`` of ``model`` on ``x``, the batch dimension dynamic up to ``max_batch`` when given."""
    from torch.export import Dim, export

    dynamic = ({0: Dim("batch", min=1, max=max_batch)},) if max_batch else None
    with torch.no_grad():
        return export(model, (x,), dynamic_shapes=dynamic)


def _quantized(model: torch.nn.Module, x: torch.Tensor, calibration: tuple[torch.Tensor, ...]) -> torch.nn.Module:
    """``model`` with int8 quantize/dequantize pairs calibrated on ``calibration`` (PT2E, XNNPACK quantizer)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    largest = max(len(b) for b in calibration)
    graph = _capture(model, x[:1].expand(2, *x.shape[1:]).contiguous(), max(2, largest)).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for batch in calibration:
            prepared(batch.float())
    return convert_pt2e(prepared)


def _batch_bound(data: bytes, spec: ExportSpec, max_batch: int) -> tuple[int, tuple[str, ...]]:
    """The largest batch the lowered program ``data`` accepts (its input's memory-planned bound), at most
    ``max_batch``, and a note when the XNNPACK lowering kept it below the default one (seen: 15 for a bound of
    32); ``ValueError`` when it is below an explicit ``options["max_batch"]``."""
    bound = int(Forward(data).method.metadata.input_tensor_meta(0).sizes()[0])
    if bound >= max_batch:
        return max_batch, ()
    if "max_batch" in spec.options or bound < 2:
        raise ValueError(f"max_batch={max_batch}: ExecuTorch's XNNPACK lowering bounds this program's batch at "
                         f"{bound}; allowed here: max_batch from 2 to {bound}")
    note = f"dynamic batch up to {bound}, not {max_batch}: ExecuTorch's XNNPACK lowering bounds the batch there"
    return bound, (note,)


def program_bytes(spec: ExportSpec) -> bytes:
    """The ``.pte`` program of ``spec`` (fp32 or int8), lowered to XNNPACK; not checked, not written."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    model, max_batch = spec.frozen_module(), _max_batch(spec)
    n, rest = spec.input_shape[0], spec.input_shape[1:]
    x = torch.zeros((max(2, n) if max_batch else n, *rest))  # a batch of 1 would be specialized to a constant
    if spec.precision == "int8":
        if not spec.calibration:
            raise ValueError("precision='int8' needs calibration batches (real images; e.g. 256 validation images)")
        model = _quantized(model, x, spec.calibration)
    program = _capture(model, x, max_batch)
    try:
        return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer
    except Exception as exc:  # noqa: BLE001 - ExecuTorch's passes raise bare Exceptions naming the pass
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"ExecuTorch cannot lower this {spec.precision} network to XNNPACK ({first[:200]}); "
                         f"{spec.out} was not written") from None


@register_exporter
class ExecuTorchExporter(Exporter):
    """``.pte`` with the XNNPACK delegate, checked in the ExecuTorch runtime before writing."""

    name = "executorch"
    suffix = ".pte"
    precisions = ("fp32", "int8")
    option_keys = OPTIONS
    requires = (("executorch", "executorch"), ("torchao", "executorch"))
    checks_many_images = True

    def bind(self, artifact: Path | bytes, x: np.ndarray | torch.Tensor) -> Callable[[], np.ndarray]:
        """The program's ``forward`` method loaded by ExecuTorch's runtime, run on ``x``. Its XNNPACK thread
        pool is process-wide (see :func:`threads`)."""
        forward = Forward(artifact)
        x = torch.as_tensor(np.array(x, dtype=np.float32))  # a fresh, contiguous copy at offset 0
        return lambda: forward(x).numpy()

    def _export(self, spec: ExportSpec) -> ExportResult:
        import executorch

        t0 = time.perf_counter()
        max_batch, need = _max_batch(spec), min_agreement(spec)  # bad options fail before minutes of lowering
        data = program_bytes(spec)
        notes: tuple[str, ...] = ()
        if max_batch:
            max_batch, notes = _batch_bound(data, spec, max_batch)
        diff, agreement, tol = self._parity(data, spec, max_batch, need)
        with atomic_path(spec.out) as tmp:
            tmp.write_bytes(data)
        settings = {"precision": spec.precision, "dynamic_batch": spec.dynamic_batch, "max_batch": max_batch,
                    "input_shape": list(spec.input_shape), "delegate": "XnnpackPartitioner",
                    "parity_tolerance": tol, "top1_agreement": agreement}
        if spec.precision == "int8":
            settings |= {"quantization": QUANTIZATION, "calibration_images": sum(len(b) for b in spec.calibration),
                         "min_top1_agreement": need}
        versions = {"torch": torch.__version__, "executorch": getattr(executorch, "__version__", _version())}
        return ExportResult(spec.out, self.name, settings, versions, diff, time.perf_counter() - t0, notes)

    def _parity(self, data: bytes, spec: ExportSpec, max_batch: int | None,
                need: float) -> tuple[float, float | None, float]:
        """Run the program on every example image (in chunks the program accepts) against PyTorch; raises
        :class:`ParityError` when it disagrees. Returns (max abs diff, top-1 agreement or None, tolerance)."""
        x = spec.example()
        step = max_batch or spec.input_shape[0]
        if max_batch and len(x) == spec.input_shape[0]:
            x = torch.cat([x, x])[:step]  # prove the batch dimension really varies
        with torch.no_grad():
            ref = spec.frozen_module()(x).numpy()
        try:
            forward, chunks = Forward(data), []
            for start in range(0, len(x), step):
                part = x[start:start + step]
                if len(part) < step and not max_batch:  # a static program takes whole batches only
                    part = x[torch.arange(start, start + step) % len(x)]  # (wrapping round a short x)
                chunks.append(forward(part.clone()).numpy())
        except RuntimeError as exc:  # ExecuTorch reports load and execute errors as RuntimeErrors
            raise does_not_run("ExecuTorch", "the program", exc, spec.out) from None
        return check_parity("ExecuTorch", np.concatenate(chunks)[:len(x)], ref, spec, need)


class Forward:
    """The ``forward`` method of a ``.pte`` program (a path or its bytes) loaded by ExecuTorch's runtime.

    Holds the bytes and the program as long as the method: a method outliving its program reads freed memory
    (execute errors, or a crash)."""

    def __init__(self, artifact: Path | bytes) -> None:
        from executorch.runtime import Runtime

        self.data = artifact if isinstance(artifact, bytes) else Path(artifact).read_bytes()
        self.program = Runtime.get().load_program(self.data)
        self.method = self.program.load_method("forward")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Run once on ``x`` (a float32 tensor of the program's input shape); the first output."""
        return self.method.execute([x])[0]


def _version() -> str:
    import importlib.metadata

    return importlib.metadata.version("executorch")


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """ExecuTorch's process-wide XNNPACK thread pool sized to ``n`` threads inside the block, restored after."""
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool

    before = _threadpool_get_thread_count()
    _unsafe_reset_threadpool(int(n))
    try:
        yield
    finally:
        _unsafe_reset_threadpool(before)
