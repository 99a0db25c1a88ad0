"""Engine builds on the profiling agent: TensorRT engines are specific to the GPU they are built on, so the
host sends the ONNX model to the agent running on the target and gets the serialized engine back.

``POST /v1/build`` (same token, size limit and one-at-a-time lock as ``/v1/measure``):
    Body: a zip holding ``model.onnx``, ``inputs.npy`` (example input, float32) and, for int8,
    ``calibration.npy`` (``[batches, N, C, H, W]`` float32). ``.npy`` members are read with
    ``allow_pickle=False``. Header ``X-Ofakit-Build``: JSON ``{"target": "tensorrt", "precision"}`` (required)
    ``, "max_batch", "workspace_mb"}`` (optional).
    Reply: ``{"engine_b64", "outputs_b64" (the engine's output on inputs.npy, .npy bytes), "versions", "gpu",
    "seconds"}``. The host checks parity against PyTorch itself.
"""

from __future__ import annotations

import base64
import io
import math
import time
import zipfile
from typing import Any

import numpy as np

from deploy_targets.base import PRECISIONS
from profilers.agent.wire import json_header

BUILD_HEADER = "X-Ofakit-Build"
BUILD_TARGETS = ("tensorrt",)
BUILD_REQUIRED, BUILD_OPTIONAL = ("target", "precision"), ("max_batch", "workspace_mb")
MEMBERS = ("model.onnx", "inputs.npy", "calibration.npy")


class BuildRequestError(ValueError):
    """A malformed build request (HTTP 400)."""


def parse_build_params(raw: str | None) -> dict[str, Any]:
    """The ``X-Ofakit-Build`` parameters, checked; raises :class:`BuildRequestError`."""
    try:
        params = json_header(raw, BUILD_HEADER, "build", BUILD_REQUIRED, BUILD_OPTIONAL)
    except ValueError as exc:
        raise BuildRequestError(str(exc)) from None
    if params["target"] not in BUILD_TARGETS:
        raise BuildRequestError(f"target={params['target']!r} cannot be built on the agent; allowed: {list(BUILD_TARGETS)}")
    if params["precision"] not in PRECISIONS:
        raise BuildRequestError(f"precision={params['precision']!r}; allowed: {list(PRECISIONS)}")
    for key, top in (("max_batch", 4096), ("workspace_mb", 1 << 20)):
        v = params.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top):
            raise BuildRequestError(f"{key}={v!r} must be an integer from 1 to {top}")
    return params


def pack_build(onnx_model: bytes, inputs: np.ndarray, calibration: np.ndarray | None = None) -> bytes:
    """The request body: a zip of the ONNX model, the example input and the optional calibration batches."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model.onnx", onnx_model)
        for name, arr in (("inputs.npy", inputs), ("calibration.npy", calibration)):
            if arr is not None:
                npy = io.BytesIO()
                np.save(npy, np.ascontiguousarray(arr, dtype=np.float32), allow_pickle=False)
                zf.writestr(name, npy.getvalue())
    return buf.getvalue()


def _load_npy(raw: bytes, name: str) -> np.ndarray:
    """An ``.npy`` member, after checking that its header's shape fits the bytes it came with (a header that
    claims 10^12 elements would otherwise make ``np.load`` try to allocate terabytes)."""
    f = io.BytesIO(raw)
    version = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(f)
    need = math.prod(shape) * dtype.itemsize
    if need > len(raw) - f.tell():
        raise BuildRequestError(f"{name} claims shape {shape} ({need} bytes) but holds {len(raw) - f.tell()} bytes")
    return np.load(io.BytesIO(raw), allow_pickle=False)


def unpack_build(data: bytes, max_total: int) -> tuple[bytes, np.ndarray, np.ndarray | None]:
    """``(onnx bytes, inputs, calibration or None)`` from a request body; never unpickles."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise BuildRequestError(f"a build request body must be a zip of {list(MEMBERS)}: {exc}") from None
    with zf:
        names = set(zf.namelist())
        if not {"model.onnx", "inputs.npy"} <= names or names - set(MEMBERS):
            raise BuildRequestError(f"build zip holds {sorted(names)}; required: model.onnx, inputs.npy; "
                                    "optional: calibration.npy")
        if sum(i.file_size for i in zf.infolist()) > max_total:
            raise BuildRequestError(f"build zip unpacks to more than {max_total} bytes")
        try:
            arrays = {n: _load_npy(zf.read(n), n) for n in names if n.endswith(".npy")}
            model = zf.read("model.onnx")
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise BuildRequestError(f"corrupt build request: {exc}") from None
    for name, arr in arrays.items():
        if arr.dtype != np.float32 or arr.ndim != (4 if name == "inputs.npy" else 5):
            raise BuildRequestError(f"{name} must be float32 of rank {4 if name == 'inputs.npy' else 5}, "
                                    f"got {arr.dtype} of rank {arr.ndim}")
    return model, arrays["inputs.npy"], arrays.get("calibration.npy")


def build_here(params: dict[str, Any], onnx_model: bytes, inputs: np.ndarray,
               calibration: np.ndarray | None) -> dict[str, Any]:
    """Build the engine on this machine's GPU and run it once on ``inputs`` (the agent's side)."""
    import torch

    from deploy_targets.tensorrt_export import EngineRunner, build_engine

    t0 = time.perf_counter()
    cal = list(calibration) if calibration is not None else []
    engine = build_engine(onnx_model, params["precision"], cal, params.get("workspace_mb") or 1024,
                          inputs.shape, params.get("max_batch"))
    out = EngineRunner(engine, inputs.shape).run(inputs)
    npy = io.BytesIO()
    np.save(npy, np.asarray(out, dtype=np.float32), allow_pickle=False)
    import tensorrt as trt

    return {"engine_b64": base64.b64encode(engine).decode(), "outputs_b64": base64.b64encode(npy.getvalue()).decode(),
            "versions": {"tensorrt": trt.__version__, "cuda": str(torch.version.cuda)},
            "gpu": torch.cuda.get_device_name(0), "seconds": time.perf_counter() - t0}


def decode_reply(reply: dict[str, Any]) -> tuple[bytes, np.ndarray]:
    """``(engine bytes, outputs)`` from a ``/v1/build`` reply (the host's side)."""
    engine = base64.b64decode(reply["engine_b64"])
    outputs = np.load(io.BytesIO(base64.b64decode(reply["outputs_b64"])), allow_pickle=False)
    return engine, outputs
