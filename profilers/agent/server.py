"""Remote profiling agent: a small HTTP service that times exported artifacts on the device it runs on.

Run it on the target device (a Jetson, a Mac, a Linux/Android board with Python) with ``ofakit agent serve``;
the host then measures there through :class:`profilers.agent.client.RemoteRuntime` exactly as with a local
runtime. Only exported files travel (ONNX, a zipped ``.mlpackage``, a TensorRT engine, an ExecuTorch ``.pte``, a
LiteRT ``.tflite``);
nothing is unpickled.

HTTP API (every request needs ``Authorization: Bearer <token>``; every reply is JSON, errors ``{"error": "..."}``):

``GET /v1/info``
    ``{"device": DeviceInfo.to_dict(), "runtimes": {name: runtime_status() entry + "formats" (accepted body
    formats), "default_provider", "precisions"}, "agent_version": 1, "max_bytes": N}``.
``POST /v1/measure``
    Body (``Content-Type: application/octet-stream``, ``Content-Length`` required): the ``.onnx`` bytes, a zip of
    the *contents* of the ``.mlpackage`` directory (``Manifest.json`` at the top), or the raw engine, ``.pte`` or
    ``.tflite`` bytes.
    Header ``X-Ofakit-Measure``: JSON ``{"runtime", "format", "input_shape"`` (required) ``, "threads",
    "precision", "provider", "protocol"}`` (optional; ``protocol`` is ``Protocol.to_dict()``).
    Reply: ``Measurement.to_dict()``.

``POST /v1/build``
    Build a TensorRT engine for this device's GPU from an ONNX model (see :mod:`profilers.agent.build`).

Status codes: 200 ok; 400 malformed request or rejected by the runtime; 401 missing or bad token; 404 unknown
path; 409 runtime unavailable on this device; 413 artifact over the size limit (refused from ``Content-Length``
before the body is read, then the connection is closed); 503 busy (every connection slot taken, or the
measurement queue did not move within the deadline); 500 the measurement failed.

Measurements are serialised by one lock: a second client waits its turn in the queue, up to
``LOCK_WAIT_S``. Every field of a request is bounded (input size, threads, timing protocol: see
:mod:`profilers.agent.wire`), at most ``max_connections`` connections are served at once (each holds a
thread), and a client silent for ``_Handler.timeout`` seconds is dropped.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from profilers.agent.build import BUILD_HEADER, BuildRequestError, build_here, parse_build_params, unpack_build
from profilers.agent.wire import (EXTRA_FORMATS, MEASURE_HEADER, PROTOCOL_MAX_S, SUFFIXES, WIRE_FORMATS,  # noqa: F401 (re-exported)
                                  RequestError, _one_line, check_onnx, extract_zip, parse_params, write_artifact)
from profilers.record import local_device, time_limit
from profilers.runtimes import MeasureSpec, RuntimeUnavailable, get_runtime, list_runtimes, runtime_status

log = logging.getLogger(__name__)

AGENT_VERSION = 1
DEFAULT_HOST, DEFAULT_PORT, DEFAULT_MAX_BYTES = "127.0.0.1", 8470, 64 * 2**20
DEFAULT_MAX_CONNECTIONS = 16
LOCK_WAIT_S = 600.0  # a request waits at most this long for the measurement lock
READ_DEADLINE_S = 60.0  # a request's headers must arrive within this, its body within this + size / rate
MIN_BODY_RATE = 64 * 1024  # bytes per second: a 64 MB artifact may take ~17 min on a slow link
class _Handler(BaseHTTPRequestHandler):
    """One HTTP request of the agent (see the module docstring for the API)."""

    server: "AgentServer"
    protocol_version = "HTTP/1.1"
    server_version = f"ofakit-agent/{AGENT_VERSION}"
    timeout = 30  # seconds a silent client may hold a connection
    _watchdog: threading.Timer | None = None

    def handle_one_request(self) -> None:
        """Each request must arrive in time (:data:`READ_DEADLINE_S` for the headers, plus the body's
        allowance): a client that sends a byte every few seconds never holds a connection slot for long."""
        self._arm(READ_DEADLINE_S)
        try:
            super().handle_one_request()
        finally:
            self._disarm()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._watchdog = threading.Timer(seconds, self._expire, (seconds,))
        self._watchdog.daemon = True
        self._watchdog.start()

    def _disarm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _expire(self, seconds: float) -> None:
        log.warning("connection from %s dropped: its request did not arrive within %g s", self.client_address[0],
                    seconds)
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.info("%s %s", self.address_string(), format % args)

    def handle_expect_100(self) -> bool:
        """Refuse a bad token or an oversize body before the client sends it."""
        try:
            self._auth()
            if self.command == "POST":
                self._length()
        except RequestError as exc:
            self._reply(exc.status, {"error": str(exc), **exc.extra}, close=True, linger=False)
            return False  # the client has not sent the body; the connection is closed
        return super().handle_expect_100()

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch(self._info)

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch(self._build if self.path.split("?", 1)[0] == "/v1/build" else self._measure)

    def _not_allowed(self) -> None:
        """Any other method: 405 with the agent's JSON error, not http.server's HTML page."""
        self._dispatch(self._refuse_method)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed  # noqa: N815

    def do_HEAD(self) -> None:  # noqa: N802 - a HEAD reply has no body: 405 and its headers only
        self._disarm()
        self.send_response(405)
        self.send_header("Allow", "GET, POST")
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _refuse_method(self) -> dict[str, Any]:
        raise RequestError(405, f"method {self.command} is not allowed; allowed: GET /v1/info, POST /v1/measure, "
                                "POST /v1/build")

    def _dispatch(self, fn: Callable[[], dict[str, Any]]) -> None:
        # whether a request body is still unread (then the reply closes the connection)
        self._unread = self.command == "POST" or self.headers.get("Content-Length", "0").strip() not in ("", "0")
        if not self._unread:
            self._disarm()  # the request has arrived: its work and reply have no read deadline
        try:
            status, payload = 200, fn()
        except RequestError as exc:
            status, payload = exc.status, {"error": str(exc), **exc.extra}
        except Exception as exc:  # noqa: BLE001 - a failed measurement must not kill the agent
            log.error("%s %s failed: %s: %s", self.command, self.path, type(exc).__name__, _one_line(exc))
            log.debug("%s %s failed", self.command, self.path, exc_info=True)  # the traceback, when asked for
            status, payload = 500, {"error": f"{self.command} {self.path} failed: {type(exc).__name__}: {_one_line(exc)}"}
        self._reply(status, payload, close=self._unread)

    def _auth(self) -> None:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.server.token.encode()):
            raise RequestError(401, "missing or bad token: send 'Authorization: Bearer <token>'")

    def _route(self, path: str) -> None:
        if self.path.split("?", 1)[0] != path:
            raise RequestError(404, f"unknown path {self.command} {self.path!r}; available: GET /v1/info, "
                                    "POST /v1/measure, POST /v1/build")

    def _length(self) -> int:
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise RequestError(400, "missing Content-Length: send the artifact as a plain (not chunked) body")
        if not (raw.strip().isascii() and raw.strip().isdigit()):
            raise RequestError(400, f"bad Content-Length {raw!r}: expected a byte count")
        n, limit = int(raw), self.server.max_bytes
        if n > limit:
            raise RequestError(413, f"artifact of {n} bytes exceeds the agent's limit of {limit} bytes", max_bytes=limit)
        return n

    def _info(self) -> dict[str, Any]:
        self._auth()
        self._route("/v1/info")
        return self.server.info()

    def _body(self, path: str) -> bytes:
        self._auth()
        self._route(path)
        n = self._length()
        self._arm(READ_DEADLINE_S + n / MIN_BODY_RATE)
        data = self.rfile.read(n)
        self._disarm()  # the body has arrived: measuring and replying take as long as they take
        self._unread = len(data) != n
        if self._unread:
            raise RequestError(400, f"body ended after {len(data)} of {n} bytes")
        return data

    def _measure(self) -> dict[str, Any]:
        data = self._body("/v1/measure")
        name, fmt, spec = parse_params(self.headers.get(MEASURE_HEADER), self.server.formats)
        return self.server.measure(data, name, fmt, spec)

    def _build(self) -> dict[str, Any]:
        data = self._body("/v1/build")
        try:
            params = parse_build_params(self.headers.get(BUILD_HEADER))
            model, inputs, calibration = unpack_build(data, 4 * self.server.max_bytes)
        except BuildRequestError as exc:
            raise RequestError(400, _one_line(exc)) from None
        check_onnx(model, "model.onnx")  # before TensorRT's parser sees it
        from deploy_targets.tensorrt_export import tensorrt_unavailable

        reason = tensorrt_unavailable()
        if reason is not None:
            raise RequestError(409, f"unavailable: tensorrt on this agent: {reason}")
        with self.server.measurement_slot():
            try:
                return build_here(params, model, inputs, calibration)
            except ValueError as exc:
                raise RequestError(400, _one_line(exc)) from None
            except RuntimeError as exc:  # TensorRT could not parse or build the graph that was sent
                raise RequestError(400, f"tensorrt could not build the sent graph: {_one_line(exc)}") from None

    def _reply(self, status: int, payload: dict[str, Any], close: bool, linger: bool = True) -> None:
        """Send JSON; ``close`` (a body left unread) closes the connection afterwards."""
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        if close and linger:
            self._linger()

    def _linger(self, seconds: float = 2.0) -> None:
        """Half-close, then discard (never store) what the client still sends for a moment, so that it
        reads our error reply instead of a connection reset."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            left, end = 2 * self.server.max_bytes + (16 << 20), time.monotonic() + seconds
            while left > 0 and time.monotonic() < end and (chunk := self.connection.recv(min(left, 1 << 16))):
                left -= len(chunk)
        except OSError:
            pass


class AgentServer(ThreadingHTTPServer):
    """The profiling agent on ``host:port`` (port 0: any free port); ``serve_forever()`` runs it.

    Args:
        host: Address to bind (loopback by default).
        port: TCP port.
        token: Shared secret every request must present; an empty token is refused.
        max_bytes: Largest artifact accepted.
        runtimes: Runtime names served (default: every registered runtime that measures a file).
    """

    daemon_threads = True

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str = "",
                 max_bytes: int = DEFAULT_MAX_BYTES, runtimes: Sequence[str] | None = None,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS):
        if not isinstance(token, str) or not token.strip():
            raise ValueError("token must be a non-empty string; the agent refuses to run without one")
        for name, v in (("max_bytes", max_bytes), ("max_connections", max_connections)):
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1 << 40:
                raise ValueError(f"{name}={v!r} must be an integer from 1 to {1 << 40}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port={port!r} must be an integer from 0 to 65535 (0: any free port)")
        self.token, self.max_bytes = token.strip(), max_bytes
        self._slots = threading.BoundedSemaphore(max_connections)
        self.formats = _served(runtimes)
        self.lock = threading.Lock()
        self.history: deque[dict[str, float]] = deque(maxlen=1000)  # monotonic received/start/end per measurement
        self._device = local_device().to_dict()
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a thread if a slot is free; otherwise answer 503 and close it."""
        if not self._slots.acquire(blocking=False):
            log.warning("connection from %s refused: all %s slots busy", client_address[0],
                        self._slots._initial_value)  # noqa: SLF001 - the semaphore's own bound
            try:
                body = b'{"error": "busy: every connection slot is taken; retry later"}'
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """The connection's thread; frees its slot when done."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    @contextlib.contextmanager
    def measurement_slot(self) -> Iterator[None]:
        """Hold the one measurement lock, waiting at most ``LOCK_WAIT_S`` (503 after that)."""
        if self.lock.locked():
            log.info("request queued behind the measurement running")
        if not self.lock.acquire(timeout=LOCK_WAIT_S):
            raise RequestError(503, f"busy: the measurement queue did not move for {LOCK_WAIT_S:.0f} s; retry later")
        try:
            yield
        finally:
            self.lock.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log (never print) a connection that broke the handler, in one line (a client that hangs up
        mid-request is routine, not a traceback)."""
        exc = sys.exc_info()[1]
        log.warning("connection from %s aborted: %s: %s", client_address[0], type(exc).__name__,
                    _one_line(exc) if exc else "")

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the bound socket."""
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"

    def info(self) -> dict[str, Any]:
        """The ``GET /v1/info`` reply."""
        status = runtime_status()
        runtimes = {}
        for name in self.formats:
            rt = get_runtime(name)
            runtimes[name] = {**status[name], "formats": list(self.formats[name]),
                              "default_provider": rt.default_provider, "precisions": list(rt.precisions)}
        return {"device": self._device, "runtimes": runtimes, "agent_version": AGENT_VERSION,
                "max_bytes": self.max_bytes}

    def measure(self, data: bytes, name: str, fmt: str, spec: MeasureSpec) -> dict[str, Any]:
        """Write and check the artifact, then time it while holding the one measurement lock."""
        received = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="ofakit-agent-") as tmp:
            spec = replace(spec, artifact=write_artifact(data, fmt, Path(tmp), 4 * self.max_bytes))
            runtime = get_runtime(name)
            with self.measurement_slot():
                start = time.monotonic()
                try:
                    with time_limit(PROTOCOL_MAX_S):  # the projected cost, not only the nominal one, is bounded
                        m = runtime.measure(spec)
                except RuntimeUnavailable as exc:
                    raise RequestError(409, _one_line(exc)) from None
                except ValueError as exc:
                    raise RequestError(400, _one_line(exc)) from None
                except RuntimeError as exc:  # the SDK could not load or run what was sent (a garbage .engine ...)
                    raise RequestError(400, f"{name} could not load or run the artifact: {_one_line(exc)}") from None
                finally:
                    self.history.append({"received": received, "start": start, "end": time.monotonic()})
        log.info("%s %s: median %.3f ms over %d runs", name, list(spec.input_shape), m.stats.median_ms, m.stats.runs)
        return m.to_dict()


def _served(names: Sequence[str] | None) -> dict[str, tuple[str, ...]]:
    """``{runtime: accepted body formats}`` for the runtimes the agent serves."""
    out = {}
    for name in list_runtimes() if names is None else names:
        fmt = WIRE_FORMATS.get(get_runtime(name).artifact_format)  # unknown names raise, listing the known ones
        if fmt is not None:
            out[name] = (fmt, *EXTRA_FORMATS.get(name, ()))
        elif names is not None:
            raise ValueError(f"runtime {name!r} measures in-process modules, not files; an agent can serve: "
                             f"{sorted(n for n in list_runtimes() if WIRE_FORMATS.get(get_runtime(n).artifact_format))}")
    return out


def make_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str = "", max_bytes: int = DEFAULT_MAX_BYTES,
                runtimes: Sequence[str] | None = None, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> AgentServer:
    """A bound :class:`AgentServer`; call ``serve_forever()`` on it (``shutdown()`` from another thread stops it)."""
    return AgentServer(host, port, token, max_bytes, runtimes, max_connections)
