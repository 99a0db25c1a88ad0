"""The agent's wire format: request parameters, accepted artifact formats, and safe unpacking of artifacts
(ONNX checked with ``onnx.checker``; ``.mlpackage`` zips without absolute or ``..`` members; ``.pte`` programs and
``.tflite`` models by their flatbuffer identifier, then verified by their runtime's loader; never pickle).
Shared by the agent (:mod:`profilers.agent.server`) and its client (:mod:`profilers.agent.client`).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from profilers.record import Protocol
from profilers.runtimes.base import MeasureSpec

MEASURE_HEADER = "X-Ofakit-Measure"
# a runtime's artifact_format -> the body format it is sent as
WIRE_FORMATS = {"onnx": "onnx", "coreml": "mlpackage", "mlpackage": "mlpackage", "tensorrt": "engine",
                "engine": "engine", "executorch": "pte", "pte": "pte", "litert": "tflite", "tflite": "tflite"}
EXTRA_FORMATS = {"tensorrt": ("engine",)}  # runtimes that also time prebuilt files
SUFFIXES = {"onnx": ".onnx", "mlpackage": ".mlpackage", "engine": ".engine", "pte": ".pte", "tflite": ".tflite"}
PTE_IDENTIFIER = b"ET"  # an ExecuTorch program is a flatbuffer whose file identifier (bytes 4-7) is "ET" + version
TFLITE_IDENTIFIER = b"TFL3"  # a LiteRT (TensorFlow Lite) model's flatbuffer file identifier
REQUIRED, OPTIONAL = ("runtime", "format", "input_shape"), ("threads", "precision", "provider", "protocol")
MAX_INPUT_ELEMENTS = 2**24  # 64 MiB of float32 input at most (allocating 2**27 elements took 11 s)
MAX_RANK, MAX_DIM, MAX_THREADS = 8, 65_536, 1024
# Upper bounds of a requested timing protocol, and of its nominal duration (warm-up + blocks x block time):
# one request holds the agent's single measurement lock, so none may hold it for long.
PROTOCOL_LIMITS = {"warmup_s": 30.0, "warmup_runs": 10_000, "blocks": 1000, "block_s": 5.0,
                   "min_runs_per_block": 1000, "max_runs_per_block": 100_000, "block_warmup_runs": 100}
PROTOCOL_MAX_S = 300.0
MAX_ZIP_MEMBERS = 10_000


class RequestError(Exception):
    """A refused request: HTTP ``status``, a one-line message and optional extra reply fields."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.extra = status, extra


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:500]


def json_header(raw: str | None, header: str, what: str, required: tuple[str, ...],
                optional: tuple[str, ...]) -> dict[str, Any]:
    """A request header holding a JSON object with ``required`` and ``optional`` keys; ``ValueError`` naming
    the header otherwise (missing, not JSON, not an object, a key missing or unknown)."""
    if raw is None:
        raise ValueError(f"missing header {header} (JSON {what} parameters)")
    try:
        params = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"header {header} is not valid JSON: {exc}") from None
    if not isinstance(params, dict):
        raise ValueError(f"header {header} must be a JSON object, got {type(params).__name__}")
    unknown, missing = sorted(set(params) - {*required, *optional}), [k for k in required if k not in params]
    if unknown or missing:
        bad = f"unknown key(s) {unknown}" if unknown else f"missing key(s) {missing}"
        raise ValueError(f"{bad} in {header}; required: {list(required)}, optional: {list(optional)}")
    return params


def parse_params(raw: str | None, formats: dict[str, tuple[str, ...]]) -> tuple[str, str, MeasureSpec]:
    """``(runtime, format, spec without artifact)`` from the ``X-Ofakit-Measure`` header; raises ``RequestError``."""
    try:
        params = json_header(raw, MEASURE_HEADER, "measurement", REQUIRED, OPTIONAL)
    except ValueError as exc:
        raise RequestError(400, str(exc)) from None
    name, fmt = params["runtime"], params["format"]
    if not isinstance(name, str) or name not in formats:
        raise RequestError(400, f"unknown runtime {name!r}; available: {sorted(formats)}")
    if fmt not in formats[name]:
        raise RequestError(400, f"format={fmt!r} does not match runtime {name}; allowed: {list(formats[name])}")
    provider = params.get("provider")
    if provider is not None and not isinstance(provider, str):
        raise RequestError(400, f"provider={provider!r} must be a string or null")
    shape, threads = params["input_shape"], params.get("threads", 1)
    if (not isinstance(shape, list) or not 1 <= len(shape) <= MAX_RANK
            or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= MAX_DIM for d in shape)):
        raise RequestError(400, f"input_shape={shape!r} must be a list of 1 to {MAX_RANK} integers from 1 to {MAX_DIM}")
    if math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise RequestError(400, f"input_shape={shape} is too large; at most {MAX_INPUT_ELEMENTS} elements")
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise RequestError(400, f"threads={threads!r} must be an integer from 1 to {MAX_THREADS}")
    proto = params.get("protocol", {})
    if not isinstance(proto, dict):
        raise RequestError(400, f"protocol={proto!r} must be a JSON object (Protocol fields)")
    try:
        protocol = Protocol.from_dict(proto)
        spec = MeasureSpec(Path("pending"), tuple(shape), threads, params.get("precision", "fp32"), provider,
                           protocol)
    except (TypeError, ValueError) as exc:
        raise RequestError(400, f"bad measurement parameters: {_one_line(exc)}") from None
    for key, top in PROTOCOL_LIMITS.items():
        if getattr(protocol, key) > top:
            raise RequestError(400, f"protocol {key}={getattr(protocol, key)!r} exceeds the agent's limit of {top}")
    if protocol.warmup_s + protocol.blocks * protocol.block_s > PROTOCOL_MAX_S:
        raise RequestError(400, f"protocol of ~{protocol.warmup_s + protocol.blocks * protocol.block_s:.0f} s "
                                f"(warmup_s + blocks x block_s) exceeds the agent's limit of {PROTOCOL_MAX_S:.0f} s")
    return name, fmt, spec


def extract_zip(data: bytes, dest: Path, max_total: int) -> None:
    """Unpack zip ``data`` into ``dest``: no absolute or ``..`` members, at most ``max_total`` bytes unpacked."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise RequestError(400, f"an mlpackage must be sent as a zip of its directory: {exc}") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise RequestError(400, f"zip has {len(infos)} members; at most {MAX_ZIP_MEMBERS} allowed")
        for info in infos:
            parts = PurePosixPath(info.filename).parts
            if info.filename.startswith(("/", "\\")) or "\\" in info.filename or ".." in parts or not parts \
                    or ":" in parts[0]:
                raise RequestError(400, f"unsafe zip member {info.filename!r}: absolute paths and '..' are not allowed")
        total = sum(i.file_size for i in infos)
        if total > max_total:
            raise RequestError(413, f"mlpackage unpacks to {total} bytes; the agent's limit is {max_total} bytes")
        try:
            for info in infos:
                target = dest / info.filename
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:  # reads stop at the declared file_size
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise RequestError(400, f"corrupt mlpackage zip: {_one_line(exc)}") from None
    if not (dest / "Manifest.json").is_file():
        raise RequestError(400, "no Manifest.json at the top of the zip: zip the contents of the .mlpackage directory")


def check_onnx(data: bytes, what: str) -> None:
    """``onnx.checker`` on serialised ONNX ``data``; a ``RequestError`` (400, or 409 without onnx) otherwise."""
    try:
        import onnx
    except ImportError:
        raise RequestError(409, "unavailable: the agent needs the onnx package to check ONNX artifacts "
                                "(pip install onnx)") from None
    try:
        onnx.checker.check_model(onnx.load_from_string(data))
    except Exception as exc:  # noqa: BLE001 - protobuf decode and checker errors alike mean "not ONNX"
        raise RequestError(400, f"{what} is not a valid ONNX model: {_one_line(exc)}") from None


def write_artifact(data: bytes, fmt: str, folder: Path, max_unpacked: int) -> Path:
    """Check ``data`` as a ``fmt`` artifact and write it into ``folder``; never unpickles anything."""
    if not data:
        raise RequestError(400, "empty body: send the artifact bytes")
    path = folder / f"model{SUFFIXES[fmt]}"
    if fmt == "onnx":
        check_onnx(data, "body")
    if fmt == "pte" and data[4:6] != PTE_IDENTIFIER:
        raise RequestError(400, f"body is not an ExecuTorch program: its file identifier is {data[4:8]!r}, "
                                f"allowed: {PTE_IDENTIFIER.decode()}.. (a .pte file from to_executorch())")
    if fmt == "tflite" and data[4:8] != TFLITE_IDENTIFIER:
        raise RequestError(400, f"body is not a LiteRT model: its file identifier is {data[4:8]!r}, "
                                f"allowed: {TFLITE_IDENTIFIER.decode()} (a .tflite file)")
    if fmt == "mlpackage":
        extract_zip(data, path, max_unpacked)
    else:
        path.write_bytes(data)
    return path
