"""What the agent tests share: a tiny model and its ONNX file, agents started on loopback ports, the request
parameters and a hand-made request (the fixtures are registered in ``conftest.py``)."""

from __future__ import annotations

import http.client
import importlib.util
import json
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from deploy_targets import ExportSpec, get_exporter
from profilers.agent.server import AgentServer, make_server
from profilers.record import Protocol

# Only the tests that export or measure with onnxruntime need the [onnx] extra; the agent's safety, CLI and
# connection tests run without it.
needs_onnx = pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime")),
                                reason="onnx and onnxruntime (the [onnx] extra) are not installed")
TOKEN = "test-token-0123456789"
SHAPE = (1, 1, 8, 8)
TINY = Protocol(warmup_s=0, warmup_runs=2, blocks=2, block_s=0.002, min_runs_per_block=2, max_runs_per_block=5)


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())


def onnx_file(tmp_path_factory) -> Path:
    pytest.importorskip("onnx", reason="onnx (the [onnx] extra) is not installed")
    pytest.importorskip("onnxruntime", reason="onnxruntime (the [onnx] extra) is not installed")
    path = tmp_path_factory.mktemp("agent") / "tiny.onnx"
    return get_exporter("onnx").export(ExportSpec(tiny_model(), SHAPE, path)).path


def start_agent():
    """Start agents on ephemeral loopback ports in background threads; shut each down cleanly afterwards."""
    started: list[tuple[AgentServer, threading.Thread]] = []

    def start(**kw) -> AgentServer:
        server = make_server("127.0.0.1", 0, TOKEN, **kw)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(5)
        assert not thread.is_alive()


def params(**kw) -> dict:
    return {"runtime": "onnxruntime", "format": "onnx", "input_shape": list(SHAPE), "protocol": TINY.to_dict(), **kw}


def raw(server: AgentServer, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
         token: str | None = TOKEN, length: int | None = None) -> tuple[int, dict, http.client.HTTPResponse]:
    """One request by hand; ``length`` sends that Content-Length without the body (``-1``: no header at all)."""
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    conn.putrequest(method, path)
    hdrs = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    if length is None and body is not None:
        length = len(body)
    if length is not None and length >= 0:
        hdrs["Content-Length"] = str(length)
    for k, v in hdrs.items():
        conn.putheader(k, v)
    conn.endheaders(body if body is not None and length == len(body) else None)
    resp = conn.getresponse()
    payload = json.loads(resp.read())
    conn.close()
    return resp.status, payload, resp
