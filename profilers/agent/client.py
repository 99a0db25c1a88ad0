"""A runtime on a remote profiling agent (:mod:`profilers.agent`), used exactly like a local runtime.

``RemoteRuntime("http://jetson:8470", "onnxruntime")`` exports on this machine (:meth:`RemoteRuntime.prepare`),
sends the file to the agent and returns the agent's :class:`~profilers.record.Measurement`, recorded with the
remote device, runtime version and provider. It is reached through :func:`profilers.runtimes.open_runtime` and
is not in the runtime registry. Only stdlib HTTP (``urllib``) is used; proxies are bypassed.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch import nn

from deploy_targets.base import PRECISIONS
from profilers.agent.build import BUILD_HEADER, decode_reply, pack_build
from profilers.agent.wire import MEASURE_HEADER, SUFFIXES, WIRE_FORMATS
from profilers.record import DeviceInfo, Measurement
from profilers.runtimes.base import MeasureSpec, Runner, Runtime, RuntimeUnavailable

TOKEN_ENV = "OFAKIT_AGENT_TOKEN"
SUFFIX_FORMATS = {suffix: fmt for fmt, suffix in SUFFIXES.items()}  # ".onnx" -> "onnx", ...


class AgentError(RuntimeError):
    """The agent refused a request or could not be reached; ``status`` is the HTTP status (``None``: no reply)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class AgentRequestError(AgentError, ValueError):
    """The agent rejected a request as malformed (HTTP 400), as a local runtime raises ``ValueError``."""


def agent_url(url: str) -> str:
    """``scheme://host:port`` of an agent URL; anything but ``http(s)://HOST:PORT[/]`` raises ``ValueError``."""
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    try:
        port = parts.port if parts else None
    except ValueError:
        port = None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port or "@" in parts.netloc
            or parts.path not in ("", "/") or parts.query or parts.fragment):
        raise ValueError(f"agent URL {url!r} is not valid; allowed: http(s)://HOST:PORT, e.g. http://192.168.1.20:8470")
    return f"{parts.scheme}://{parts.netloc}"


def zip_dir(path: Path) -> bytes:
    """The contents of directory ``path`` (e.g. an ``.mlpackage``) as zip bytes, members relative to ``path``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
            zf.write(f, f.relative_to(path).as_posix())
    return buf.getvalue()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: a reply that points elsewhere must not carry the bearer token to another server."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl} refused (the agent's URL must "
                                     "answer itself; the token is not sent elsewhere)", headers, fp)


class RemoteRuntime(Runtime):
    """Runtime ``name`` on the agent at ``url``; its format, version and device are the agent's.

    Args:
        url: Agent URL ``http(s)://HOST:PORT``.
        name: Runtime name on the agent (``onnxruntime``, ...).
        token: The agent's token (default: the ``OFAKIT_AGENT_TOKEN`` environment variable).
        timeout: Seconds to wait for one measurement (queueing behind other clients included).
    """

    def __init__(self, url: str, name: str, token: str | None = None, timeout: float = 600):
        self.url = agent_url(url)
        if not isinstance(name, str) or not name:
            raise ValueError(f"runtime name {name!r} must be a non-empty string")
        token = os.environ.get(TOKEN_ENV, "") if token is None else token
        if not isinstance(token, str) or not token.strip():
            raise ValueError(f"no token for the agent at {self.url}: pass token=... or set {TOKEN_ENV}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout={timeout!r} must be a positive number of seconds")
        self._name, self._token, self.timeout = name, token.strip(), float(timeout)
        self._info: dict[str, Any] | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())

    @property
    def name(self) -> str:  # type: ignore[override]
        """The runtime's name on the agent."""
        return self._name

    @property
    def artifact_format(self) -> str:  # type: ignore[override]
        """The remote runtime's artifact format (``onnx``, ``coreml``, ...), from the agent."""
        return self._entry()["format"]

    @property
    def default_provider(self) -> str:  # type: ignore[override]
        """The remote runtime's default provider."""
        return self._entry().get("default_provider") or "default"

    @property
    def precisions(self) -> tuple[str, ...]:  # type: ignore[override]
        """Precisions the remote runtime supports."""
        return tuple(self._entry().get("precisions", PRECISIONS))

    def info(self, refresh: bool = False) -> dict[str, Any]:
        """The agent's ``GET /v1/info`` reply (cached after the first success)."""
        if self._info is None or refresh:
            info = self._request("GET", "/v1/info", timeout=min(self.timeout, 15.0))
            runtimes = info.get("runtimes") if isinstance(info, dict) else None
            if not (isinstance(runtimes, dict) and isinstance(info.get("device"), dict) and all(
                    isinstance(e, dict) and isinstance(e.get("available"), bool) for e in runtimes.values())):
                raise AgentError(f"agent at {self.url} sent an /v1/info reply that is not an ofa-kit agent's "
                                 f"(runtimes with 'available' flags and a device): {str(info)[:80]!r}")
            self._info = info
        return self._info

    def _entry(self) -> dict[str, Any]:
        runtimes = self.info()["runtimes"]
        if self.name not in runtimes:
            raise ValueError(f"runtime {self.name!r} is not served by the agent at {self.url}; "
                             f"available: {sorted(runtimes)}")
        return runtimes[self.name]

    def unavailable(self) -> str | None:
        try:
            entry = self._entry()
        except (AgentError, ValueError) as exc:
            return str(exc)
        return None if entry["available"] else f"{entry.get('reason', 'no reason given')} (on the agent at {self.url})"

    def version(self) -> str:
        return self._entry().get("version") or "unknown"

    def device(self) -> DeviceInfo:
        """The agent's device (not this machine)."""
        try:
            return DeviceInfo.from_dict(self.info()["device"])
        except ValueError as exc:
            raise AgentError(f"agent at {self.url} describes its device badly: {exc}") from None

    def _runner(self, spec: MeasureSpec) -> Runner:
        raise RuntimeError(f"{self.name} runs on the agent at {self.url}; use measure() or measure_many()")

    def measure_many(self, specs: Sequence[MeasureSpec]) -> list[Measurement]:
        """Time each artifact on the agent, one request per spec (blocks are not interleaved across specs)."""
        if not specs:
            return []
        if len({s.protocol for s in specs}) != 1:
            raise ValueError("measure_many needs one protocol for all specs")
        self.info()  # an unreachable agent or a rejected token raises AgentError here, not RuntimeUnavailable
        for s in specs:
            if isinstance(s.artifact, nn.Module):
                raise ValueError(f"the agent at {self.url} needs an exported file, got an nn.Module; "
                                 "export it first with prepare()")
            self.check(s)
        accepted, limit = self._entry().get("formats", []), int(self.info()["max_bytes"])
        formats = [SUFFIX_FORMATS.get(s.artifact.suffix, WIRE_FORMATS.get(self.artifact_format)) for s in specs]
        for s, fmt in zip(specs, formats):
            if fmt not in accepted or (fmt == "mlpackage") != s.artifact.is_dir():
                raise ValueError(f"runtime {self.name} on the agent cannot measure {s.artifact}; "
                                 f"allowed: {[SUFFIXES[f] for f in accepted]} files (.mlpackage: a directory)")
        out = []
        for s, fmt in zip(specs, formats):
            data = zip_dir(s.artifact) if fmt == "mlpackage" else s.artifact.read_bytes()
            if len(data) > limit:
                raise AgentError(f"artifact of {len(data)} bytes exceeds the agent's limit of {limit} bytes", 413)
            params = {"runtime": self.name, "format": fmt, "input_shape": list(s.input_shape), "threads": s.threads,
                      "precision": s.precision, "provider": s.provider, "protocol": s.protocol.to_dict()}
            out.append(self.send(data, params))
        return out

    def build_engine(self, onnx_model: bytes, inputs: np.ndarray, precision: str = "fp32",
                     calibration: np.ndarray | None = None, max_batch: int | None = None) -> dict[str, Any]:
        """Have the agent build a TensorRT engine for its GPU; ``{"engine", "outputs", "versions", "gpu", "seconds"}``.

        ``outputs`` is the engine's output on ``inputs`` (for the caller's parity check).
        """
        body = pack_build(onnx_model, inputs, calibration)
        try:
            limit = int(self.info()["max_bytes"])
        except (KeyError, TypeError, ValueError):
            raise AgentError(f"agent at {self.url} states no size limit (max_bytes) in /v1/info") from None
        if len(body) > limit:
            raise AgentError(f"build request of {len(body)} bytes exceeds the agent's limit of {limit} bytes", 413)
        params = {"target": "tensorrt", "precision": precision, **({"max_batch": max_batch} if max_batch else {})}
        reply = self._request("POST", "/v1/build", body, {"Content-Type": "application/zip",
                                                          BUILD_HEADER: json.dumps(params)})
        try:
            engine, outputs = decode_reply(reply)
        except Exception as exc:  # noqa: BLE001 - KeyError, binascii.Error, EOFError, numpy's ValueError ...
            raise AgentError(f"agent at {self.url} sent a build reply that does not decode "
                             f"({type(exc).__name__}: {str(exc)[:80]})") from None
        if not isinstance(engine, bytes) or not engine:
            raise AgentError(f"agent at {self.url} sent an empty engine")
        return {"engine": engine, "outputs": outputs, "versions": reply.get("versions", {}),
                "gpu": reply.get("gpu"), "seconds": reply.get("seconds")}

    def send(self, data: bytes, params: dict[str, Any]) -> Measurement:
        """POST artifact bytes with the ``X-Ofakit-Measure`` parameters as they are; the agent's record."""
        headers = {"Content-Type": "application/octet-stream", MEASURE_HEADER: json.dumps(params)}
        reply = self._request("POST", "/v1/measure", data, headers)
        try:
            return Measurement.from_dict(reply)
        except (ValueError, TypeError, AttributeError) as exc:
            raise AgentError(f"agent at {self.url} sent a measurement that does not parse: {exc}") from None

    def _request(self, method: str, path: str, data: bytes | None = None, headers: dict[str, str] | None = None,
                 timeout: float | None = None) -> dict[str, Any]:
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self._token}", **(headers or {})})
        try:
            with self._opener.open(req, timeout=timeout or self.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            raise self._error(exc) from None
        except (OSError, http.client.HTTPException) as exc:  # URLError, refused, reset, timeout, bad status line
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected)) and data:
                raise AgentError(f"agent at {self.url} closed the connection during {method} {path}: "
                                 f"{self._why_closed()} ({type(reason).__name__})") from None
            raise AgentError(f"agent at {self.url} unreachable: {reason}") from None
        try:
            return json.loads(body)
        except ValueError:
            raise AgentError(f"agent at {self.url} sent a reply that is not JSON: {body[:80]!r}") from None

    def _why_closed(self) -> str:
        """Why the agent dropped a request, told by asking it again (a dead agent is not a bad token)."""
        try:
            self._request("GET", "/v1/info", timeout=10)
        except AgentError as exc:
            if exc.status == 401:
                return "it rejects the token"
            return "it no longer answers (it stopped or crashed while handling the request; see its log)"
        except Exception:  # noqa: BLE001 - any other reply still means it is alive
            pass
        return ("it is up and accepts the token, so it refused the body (over its size limit?) or failed "
                "while handling it; see its log")

    def _error(self, exc: urllib.error.HTTPError) -> Exception:
        """The exception for an HTTP error reply, carrying the agent's one-line message."""
        try:
            message = str(json.loads(exc.read())["error"])
        except Exception:  # noqa: BLE001 - not our agent's JSON: fall back to the status line
            message = f"HTTP {exc.code} {exc.reason}"
        if exc.code == 401:
            return AgentError(f"agent rejected the token (agent at {self.url}; check {TOKEN_ENV} or token=)", 401)
        if exc.code in (409, 503):
            return RuntimeUnavailable(message if message.startswith("unavailable:") else f"unavailable: {message}")
        if exc.code == 400:
            return AgentRequestError(message, 400)
        return AgentError(message if exc.code == 413 else f"agent at {self.url}: {message}", exc.code)
