"""Probes of the profiling agent's HTTP API, and the malformed files sent to it."""

from __future__ import annotations

import http.client
import io
import json
import logging
import socket
import struct
import threading
import zipfile
from types import SimpleNamespace
from typing import Any, Iterable

import numpy as np

from probes.harness import TOKEN, _unclear, custom


# ====================================================================================== probes: agent
def probes_agent(F: SimpleNamespace) -> None:
    A = "agent"
    from profilers.agent.build import BUILD_HEADER, pack_build
    from profilers.agent.server import make_server
    from profilers.agent.wire import MEASURE_HEADER
    server = make_server("127.0.0.1", 0, TOKEN)
    th = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    th.start()
    host, port = server.server_address[:2]
    good = F.rn_onnx.read_bytes()
    tiny = {"warmup_s": 0, "warmup_runs": 1, "blocks": 2, "block_s": 0.001, "min_runs_per_block": 1,
            "max_runs_per_block": 2}
    params = lambda **kw: json.dumps({"runtime": "onnxruntime", "format": "onnx", "input_shape": [1, 1, 28, 28],  # noqa: E731
                                      "protocol": tiny, **kw})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    log_lines: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            log_lines.append(self.format(record))
    grab = Grab()
    grab.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    agent_log = logging.getLogger("profilers.agent.server")
    agent_log.addHandler(grab)
    agent_log.setLevel(logging.INFO)
    agent_log.propagate = False

    def request(method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 60) -> tuple[int, bytes, dict]:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers={**auth, **(headers or {})})
            r = conn.getresponse()
            return r.status, r.read(), dict(r.getheaders())
        finally:
            conn.close()

    def raw(data: bytes, timeout: float = 20) -> bytes:
        s = socket.create_connection((host, port), timeout=timeout)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            out = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    break
                out += chunk
            return out
        finally:
            s.close()

    def judge(status: int, body: bytes, want: str, needle: Any = None) -> tuple[str, str]:
        """``want``: 'error' (a 4xx JSON error naming the problem) or 'ok' (200)."""
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        text = payload.get("error", "") if isinstance(payload, dict) else body[:200].decode("latin-1")
        if want == "ok":
            return ("ok", f"200: {str(payload)[:120]}") if status == 200 else ("silent", f"valid request refused: {status} {text[:200]}")
        if status == 200:
            return "silent", f"200 for a bad request: {str(payload)[:200]}"
        if status >= 500 and status != 503:
            return "traceback", f"{status}: {text[:300]}"
        if payload is None:
            return "traceback", f"{status} with a non-JSON body: {body[:120]!r}"
        if "\n" in text:
            return "traceback", f"{status} multi-line error: {text[:200]}"
        return "ok", f"{status}: {text[:300]}"

    def measure_probe(pid: str, desc: str, header: str | None, body: bytes = good, want: str = "error",
                      needle: Any = None, extra_headers: dict | None = None) -> None:
        def fn() -> tuple[str, str]:
            hdr = {"Content-Type": "application/octet-stream", **(extra_headers or {})}
            if header is not None:
                hdr[MEASURE_HEADER] = header
            status, data, _ = request("POST", "/v1/measure", body, hdr)
            outcome, detail = judge(status, data, want, needle)
            if outcome == "ok" and want == "error" and needle and _unclear(detail, needle):
                detail += " [unclear]"
            return outcome, detail
        custom(pid, A, desc, fn)

    measure_probe("AG-01", "measure the ResNet artifact (valid, tiny protocol)", params(), want="ok")
    measure_probe("AG-02", "protocol with an unknown key", params(protocol={**tiny, "bogus": 1}), needle="bogus")
    measure_probe("AG-03", "protocol warmup_runs -1", params(protocol={**tiny, "warmup_runs": -1}), needle="-1")
    measure_probe("AG-04", "protocol min_runs_per_block above max", params(protocol={
        **tiny, "min_runs_per_block": 10, "max_runs_per_block": 2}), needle="runs_per_block")
    measure_probe("AG-05", "protocol blocks true", params(protocol={**tiny, "blocks": True}), needle="True")
    measure_probe("AG-06", "protocol warmup_s -1", params(protocol={**tiny, "warmup_s": -1}), needle="-1")
    measure_probe("AG-07", "protocol null", params(protocol=None), needle="protocol")
    measure_probe("AG-08", "input_shape with a float", params(input_shape=[1, 1, 28, 28.0]), needle="28.0")
    measure_probe("AG-09", "input_shape empty", params(input_shape=[]), needle="input_shape")
    measure_probe("AG-10", "input_shape of 3 channels for the 1-channel ResNet", params(input_shape=[1, 3, 28, 28]),
                  needle="shape")
    measure_probe("AG-11", "input_shape 2x2 for the ResNet", params(input_shape=[1, 1, 2, 2]), want="error")
    measure_probe("AG-12", "threads 10**30", params(threads=10 ** 30), needle="threads")
    measure_probe("AG-13", "threads 1.0", params(threads=1.0), needle="threads")
    measure_probe("AG-14", "precision null", params(precision=None), needle="precision")
    measure_probe("AG-15", "precision int8 on onnxruntime", params(precision="int8"), needle="int8")
    measure_probe("AG-16", "provider ''", params(provider=""), needle="provider")
    measure_probe("AG-17", "provider FooExecutionProvider", params(provider="FooExecutionProvider"),
                  needle="FooExecutionProvider")
    measure_probe("AG-18", "runtime a list", params(runtime=["onnxruntime"]), needle="runtime")
    measure_probe("AG-19", "format null", params(format=None), needle="format")
    measure_probe("AG-20", "header JSON nested 100k deep", "[" * 20000 + "]" * 20000, needle="JSON")
    measure_probe("AG-21", "header a JSON string", json.dumps("onnxruntime"), needle="object")
    measure_probe("AG-22", "input_shape 9-D", params(input_shape=[1] * 9), needle="input_shape")
    measure_probe("AG-23", "ONNX with an op of an unknown domain", params(), body=_onnx_custom_op(), needle="op")
    measure_probe("AG-24", "ONNX whose input is int64", params(), body=_onnx_int_input(), needle=["int64", "type"])
    measure_probe("AG-25", "ONNX with two inputs", params(), body=_onnx_two_inputs(), needle="input")
    measure_probe("AG-26", "ONNX initializer stored as external data outside the upload", params(),
                  body=_onnx_external(), needle=["external", "data"])
    measure_probe("AG-27", "ONNX of a ResNet with a truncated tail", params(), body=good[: len(good) - 200],
                  needle="ONNX")
    measure_probe("AG-28", "ONNX identity model (valid)", params(input_shape=[1, 4]), body=_onnx_identity(),
                  want="ok")
    measure_probe("AG-29", "runtime executorch with a fake program", json.dumps(
        {"runtime": "executorch", "format": "pte", "input_shape": [1, 1, 28, 28], "protocol": tiny}),
                  body=b"\x00\x00\x00\x00ET12" + b"\x00" * 64, needle=["program", "pte", "executorch"])
    measure_probe("AG-30", "openvino runtime on the ResNet ONNX (valid)", json.dumps(
        {"runtime": "openvino", "format": "onnx", "input_shape": [1, 1, 28, 28], "protocol": tiny}), want="ok")

    def status_probe(pid: str, desc: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                     want: str = "error", statuses: tuple = ()) -> None:
        def fn() -> tuple[str, str]:
            status, data, _ = request(method, path, body, headers)
            if statuses and status in statuses:
                return "ok", f"{status}: {data[:160]!r}"
            return judge(status, data, want)
        custom(pid, A, desc, fn)

    status_probe("AH-01", "GET /v1/info?x=1 (valid)", "GET", "/v1/info?x=1", want="ok")
    status_probe("AH-02", "GET /v1/info/ (trailing slash)", "GET", "/v1/info/")
    status_probe("AH-03", "HEAD /v1/info", "HEAD", "/v1/info", statuses=(405,))
    status_probe("AH-04", "TRACE /v1/info", "TRACE", "/v1/info", statuses=(405,))
    status_probe("AH-05", "GET with 'Authorization: bearer' lower-case and extra spaces", "GET", "/v1/info",
                 headers={"Authorization": f"bearer    {TOKEN}"}, want="ok")
    status_probe("AH-06", "GET with a latin-1 token", "GET", "/v1/info", headers={"Authorization": "Bearer t\xe9"},
                 statuses=(401,))
    status_probe("AH-07", "GET /v1/info with a body", "GET", "/v1/info", body=b"x" * 10,
                 headers={"Content-Length": "10"}, want="ok")
    status_probe("AH-08", "POST /v1/measure Content-Length '+5'", "POST", "/v1/measure", body=b"12345",
                 headers={"Content-Length": "+5", MEASURE_HEADER: params()})
    status_probe("AH-09", "POST /v1/measure Content-Length 0", "POST", "/v1/measure", body=b"",
                 headers={"Content-Length": "0", MEASURE_HEADER: params()})
    status_probe("AH-10", "POST /v1/measure Content-Length of 30 digits", "POST", "/v1/measure", body=b"x",
                 headers={"Content-Length": "9" * 30, MEASURE_HEADER: params()}, statuses=(413,))
    status_probe("AH-11", "POST /v1/measure/ (unknown path)", "POST", "/v1/measure/", body=good,
                 headers={MEASURE_HEADER: params()})

    def raw_probe(pid: str, desc: str, data: bytes, want_status: Iterable[int]) -> None:
        def fn() -> tuple[str, str]:
            reply = raw(data)
            line = reply.split(b"\r\n", 1)[0].decode("latin-1")
            try:
                status = int(line.split()[1])
            except (IndexError, ValueError):
                code = reply.split(b"Error code: ", 1)[1][:3] if b"Error code: " in reply else b""
                if code.isdigit() and 400 <= int(code) < 500 or code == b"505":
                    return "ok", f"http.server's HTML error page {code.decode()} without a status line (HTTP/0.9 reply)"
                return ("ok", f"connection closed without a reply ({reply[:60]!r})") if not reply else \
                    ("traceback", f"unparseable reply {reply[:120]!r}")
            if status in want_status:
                return "ok", line
            if status >= 500:
                return "traceback", f"{line}: {reply[-200:]!r}"
            return ("ok" if 400 <= status < 500 else "silent"), line
        custom(pid, A, desc, fn)

    hdr = (f"Authorization: Bearer {TOKEN}\r\n{MEASURE_HEADER}: {params()}\r\n").encode()
    raw_probe("AR-01", "two different Content-Length headers", b"POST /v1/measure HTTP/1.1\r\nHost: x\r\n" + hdr +
              b"Content-Length: 5\r\nContent-Length: 50\r\n\r\n" + b"x" * 50, range(400, 500))
    raw_probe("AR-02", "chunked transfer without Content-Length", b"POST /v1/measure HTTP/1.1\r\nHost: x\r\n" + hdr +
              b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", range(400, 500))
    raw_probe("AR-03", "request line of garbage", b"\x00\x01\x02 garbage\r\n\r\n", range(400, 500))
    raw_probe("AR-04", "HTTP/2.0 request version", b"GET /v1/info HTTP/2.0\r\n" + hdr + b"\r\n", (400, 505))
    raw_probe("AR-05", "header line of 70,000 bytes", b"GET /v1/info HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
              range(400, 500))
    raw_probe("AR-06", "body shorter than Content-Length, then half-close",
              b"POST /v1/measure HTTP/1.1\r\nHost: x\r\n" + hdr + b"Content-Length: 1000\r\n\r\n" + good[:100],
              range(400, 500))
    raw_probe("AR-07", "header value with bytes that are not UTF-8", b"POST /v1/measure HTTP/1.1\r\nHost: x\r\n"
              + f"Authorization: Bearer {TOKEN}\r\n".encode() + MEASURE_HEADER.encode() + b": {\"runtime\": \"\xff\xfe\"}"
              + b"\r\nContent-Length: 4\r\n\r\nabcd", range(400, 500))
    raw_probe("AR-08", "101 headers", b"GET /v1/info HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101))
              + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode(), range(400, 500))

    def build_probe(pid: str, desc: str, body: bytes, header: dict | None, needle: Any = None) -> None:
        def fn() -> tuple[str, str]:
            hdr = {"Content-Type": "application/octet-stream"}
            if header is not None:
                hdr[BUILD_HEADER] = json.dumps(header)
            status, data, _ = request("POST", "/v1/build", body, hdr)
            if status == 409:
                return "ok", f"409 (tensorrt unavailable): {data[:160]!r}"
            return judge(status, data, "error", needle)
        custom(pid, A, desc, fn)

    x = np.zeros((1, 1, 28, 28), np.float32)
    bh = {"target": "tensorrt", "precision": "fp32"}
    build_probe("AB-01", "build: inputs.npy as a pickled object array", _zip({"model.onnx": good, "inputs.npy": _npy(
        np.array([object()], dtype=object), allow_pickle=True)}), bh, needle="pickle")
    build_probe("AB-02", "build: inputs.npy float64", _zip({"model.onnx": good, "inputs.npy": _npy(x.astype(np.float64))}),
                bh, needle="float32")
    build_probe("AB-03", "build: max_batch 0", pack_build(good, x), {**bh, "max_batch": 0}, needle="max_batch")
    build_probe("AB-04", "build: model.onnx garbage", pack_build(b"not onnx", x), bh, needle="ONNX")
    build_probe("AB-05", "build: an extra zip member", _zip({"model.onnx": good, "inputs.npy": _npy(x),
                                                             "evil.txt": b"x"}), bh, needle="evil.txt")
    build_probe("AB-06", "build: a '../model.onnx' member", _zip({"../model.onnx": good, "inputs.npy": _npy(x)}), bh,
                needle="model.onnx")
    build_probe("AB-07", "build: precision int4", pack_build(good, x), {**bh, "precision": "int4"}, needle="int4")
    build_probe("AB-08", "build: workspace_mb 1e9", pack_build(good, x), {**bh, "workspace_mb": 10 ** 9},
                needle="workspace_mb")
    build_probe("AB-09", "build: .npy header claiming 10**12 elements", _zip({"model.onnx": good,
                                                                             "inputs.npy": _npy_lying_header()}), bh,
                needle=["inputs.npy", "corrupt"])
    build_probe("AB-10", "build: calibration.npy of rank 3", _zip({"model.onnx": good, "inputs.npy": _npy(x),
                                                                   "calibration.npy": _npy(np.zeros((1, 2, 3),
                                                                                                    np.float32))}),
                bh, needle="calibration")
    build_probe("AB-11", "build: header with an unknown key", pack_build(good, x), {**bh, "fast": True},
                needle="fast")
    build_probe("AB-12", "build: inputs.npy of rank 4 but 0 images", pack_build(good, np.zeros((0, 1, 28, 28),
                                                                                             np.float32)), bh,
                needle=["inputs", "0"])
    # the agent must still serve, and have logged each refusal in one line
    custom("AG-31", A, "agent still serves after the probes (valid measure)", lambda: judge(
        *request("POST", "/v1/measure", good, {MEASURE_HEADER: params(),
                                               "Content-Type": "application/octet-stream"})[:2], "ok"))

    def logs() -> tuple[str, str]:
        multi = [ln for ln in log_lines if "\n" in ln]
        if multi:
            first = multi[0].splitlines()
            return "traceback", f"{len(multi)} multi-line log records, e.g. {first[0][:200]!r} (+{len(first) - 1} lines)"
        return "ok", f"{len(log_lines)} log records, each one line"
    custom("AG-32", A, "the agent logged every refused or failed request in one line", logs)
    agent_log.removeHandler(grab)
    server.shutdown()
    server.server_close()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _npy(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def _npy_lying_header() -> bytes:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1, 1000, 1000), }"
    header = header + " " * (64 - (10 + len(header) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\x00" * 64


def _onnx_model(nodes, inputs, outputs, inits=(), domains=()) -> bytes:
    from onnx import helper
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    opsets = [helper.make_opsetid("", 17), *[helper.make_opsetid(d, 1) for d in domains]]
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = 8
    return m.SerializeToString()


def _onnx_custom_op() -> bytes:
    from onnx import TensorProto, helper
    return _onnx_model([helper.make_node("FooOp", ["x"], ["y"], domain="com.bogus")],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 28, 28])], domains=["com.bogus"])


def _onnx_int_input() -> bytes:
    from onnx import TensorProto, helper
    return _onnx_model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
                       [helper.make_tensor_value_info("x", TensorProto.INT64, [1, 1, 28, 28])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 28, 28])])


def _onnx_two_inputs() -> bytes:
    from onnx import TensorProto, helper
    return _onnx_model([helper.make_node("Add", ["x", "z"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28]),
                        helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 1, 28, 28])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 28, 28])])


def _onnx_identity() -> bytes:
    from onnx import TensorProto, helper
    return _onnx_model([helper.make_node("Identity", ["x"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])


def _onnx_external() -> bytes:
    from onnx import TensorProto, helper
    w = TensorProto()
    w.name, w.data_type = "w", TensorProto.FLOAT
    w.dims.extend([1, 1, 28, 28])
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../../../../../../etc/hostname"), ("offset", "0"), ("length", "3136")):
        e = w.external_data.add()
        e.key, e.value = k, v
    return _onnx_model([helper.make_node("Add", ["x", "w"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 28, 28])], inits=[w])
