"""The remote profiling agent for real on loopback: a server thread, real HTTP, real onnxruntime measurements."""

from __future__ import annotations

import contextlib
import http.client
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ofakit.cli.agent import agent_app
from profilers.agent import server as agent_module
from profilers.agent.client import TOKEN_ENV, AgentError, AgentRequestError, RemoteRuntime, zip_dir
from profilers.agent.server import MEASURE_HEADER, AgentServer, RequestError, extract_zip, make_server
from profilers.record import Measurement, Protocol, local_device
from profilers.runtimes import MeasureSpec, RuntimeUnavailable, get_runtime, list_runtimes, open_runtime
from profilers.runtimes.base import is_macos
from tests.agentkit import SHAPE, TINY, TOKEN, needs_onnx, params, raw, tiny_model

ROOT = Path(__file__).resolve().parents[1]


@needs_onnx
def test_the_client_reports_the_agents_device_and_version_not_its_own(start_agent, monkeypatch):
    """On loopback both sides are this machine; make the agent's side differ to see whose answer arrives."""
    server = start_agent()
    server._device = {**server._device, "cpu": "the agent's CPU"}
    real = agent_module.runtime_status
    monkeypatch.setattr(agent_module, "runtime_status",
                        lambda: {k: {**v, "version": "9.9-agent"} for k, v in real().items()})
    rt = RemoteRuntime(server.url, "onnxruntime", token=TOKEN)
    assert rt.device().cpu == "the agent's CPU" != local_device().cpu
    assert rt.version() == "9.9-agent" != get_runtime("onnxruntime").version()


def test_measurement_through_remote_runtime(start_agent, onnx_file, tmp_path):
    server = start_agent()
    rt = open_runtime("onnxruntime", server.url, TOKEN)
    assert isinstance(rt, RemoteRuntime) and rt.unavailable() is None
    local = get_runtime("onnxruntime")
    assert (rt.name, rt.artifact_format, rt.default_provider) == ("onnxruntime", "onnx", "CPUExecutionProvider")
    assert rt.version() == local.version() == importlib.metadata.version("onnxruntime")
    assert rt.device() == local_device()
    m = rt.measure(MeasureSpec(onnx_file, SHAPE, protocol=TINY))
    assert Measurement.from_dict(json.loads(json.dumps(m.to_dict()))) == m
    assert (m.runtime, m.runtime_version, m.provider) == ("onnxruntime", local.version(), "CPUExecutionProvider")
    assert m.input_shape == SHAPE and m.protocol == TINY and m.device == local_device()
    assert 0 < m.stats.min_ms <= m.stats.median_ms <= m.stats.p90_ms and m.stats.runs >= 2 * TINY.blocks
    assert len(server.history) == 1
    prepared = rt.prepare(tiny_model(), SHAPE, tmp_path / "sub")  # exported here, measured there
    assert prepared.suffix == ".onnx" and rt.measure(MeasureSpec(prepared, SHAPE, protocol=TINY)).stats.runs >= 4
    with pytest.raises(ValueError, match="needs an exported file"):
        rt.measure(MeasureSpec(tiny_model(), SHAPE, protocol=TINY))
    status, info, _ = raw(server, "GET", "/v1/info")
    assert status == 200 and info["agent_version"] == 1 and info["runtimes"]["onnxruntime"]["available"]
    assert "torch" not in info["runtimes"]  # in-process modules cannot be sent


def test_bad_token_is_401(start_agent, onnx_file, monkeypatch):
    server = start_agent()
    rt = RemoteRuntime(server.url, "onnxruntime", token="wrong")
    with pytest.raises(AgentError, match="agent rejected the token") as err:
        rt.measure(MeasureSpec(onnx_file, SHAPE, protocol=TINY))
    assert err.value.status == 401 and "rejected the token" in rt.unavailable()
    assert raw(server, "GET", "/v1/info", token=None)[0] == 401
    status, payload, resp = raw(server, "POST", "/v1/measure", onnx_file.read_bytes(),
                                 {MEASURE_HEADER: json.dumps(params())}, token="wrong")
    assert status == 401 and "token" in payload["error"] and resp.getheader("Connection") == "close"
    status, _, _ = raw(server, "POST", "/v1/measure", headers={"Expect": "100-continue"}, token="x", length=10)
    assert status == 401  # refused before the body is sent
    assert len(server.history) == 0
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert RemoteRuntime(server.url, "onnxruntime").unavailable() is None
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(ValueError, match=TOKEN_ENV):
        RemoteRuntime(server.url, "onnxruntime")
    with pytest.raises(ValueError, match="non-empty"):
        make_server("127.0.0.1", 0, "  ")
    with pytest.raises(ValueError, match="http\\(s\\)://HOST:PORT"):
        RemoteRuntime("ftp://127.0.0.1:8470", "onnxruntime", token=TOKEN)


def test_oversize_body_is_413(start_agent, onnx_file):
    server = start_agent(max_bytes=64)
    size = onnx_file.stat().st_size
    rt = RemoteRuntime(server.url, "onnxruntime", token=TOKEN)
    with pytest.raises(AgentError, match=f"artifact of {size} bytes exceeds the agent's limit of 64 bytes") as err:
        rt.measure(MeasureSpec(onnx_file, SHAPE, protocol=TINY))  # checked before uploading
    assert err.value.status == 413
    with pytest.raises(AgentError, match=f"artifact of {size} bytes exceeds the agent's limit of 64 bytes") as err:
        rt.send(onnx_file.read_bytes(), params())  # uploaded: the agent refuses from Content-Length
    assert err.value.status == 413
    status, payload, resp = raw(server, "POST", "/v1/measure", headers={MEASURE_HEADER: json.dumps(params())},
                                 length=10**9)
    assert status == 413 and payload["max_bytes"] == 64 and resp.getheader("Connection") == "close"
    status, _, _ = raw(server, "POST", "/v1/measure", headers={"Expect": "100-continue"}, length=10**9)
    assert status == 413
    assert len(server.history) == 0 and raw(server, "GET", "/v1/info")[0] == 200


def test_malformed_requests_are_400(start_agent, onnx_file):
    server = start_agent()
    good = onnx_file.read_bytes()
    cases = [  # (header, body, length, expected message)
        ("{not json", good, None, "not valid JSON"),
        (None, good, None, f"missing header {MEASURE_HEADER}"),
        (json.dumps([1, 2]), good, None, "must be a JSON object"),
        (json.dumps(params(bogus=1)), good, None, "unknown key(s) ['bogus']"),
        (json.dumps({"runtime": "onnxruntime"}), good, None, "missing key(s) ['format', 'input_shape']"),
        (json.dumps(params(input_shape=[1, 0, 8])), good, None, "input_shape=[1, 0, 8] must be a list of 1 to 8"),
        (json.dumps(params(input_shape=7)), good, None, "input_shape=7 must be a list"),
        (json.dumps(params(input_shape=[1, 1, 8192, 8192])), good, None, "is too large; at most 16777216"),
        (json.dumps(params(input_shape=[1, True, 8])), good, None, "must be a list of 1 to 8 integers"),
        (json.dumps(params(threads=0)), good, None, "threads=0 must be an integer from 1 to 1024"),
        (json.dumps(params(threads="2")), good, None, "threads='2' must be an integer"),
        (json.dumps(params(protocol={"warmup_s": math.inf})), good, None, "Protocol.warmup_s=inf must be a number of seconds"),
        (json.dumps(params(protocol={"block_s": math.nan})), good, None, "Protocol.block_s=nan must be a number of seconds; allowed: 0 to 3600"),
        (json.dumps(params(protocol={"blocks": 5000})), good, None, "blocks=5000 exceeds the agent's limit"),
        (json.dumps(params(protocol={"blocks": 1000, "block_s": 1.0})), good, None, "exceeds the agent's limit of 300 s"),
        (json.dumps(params(protocol="fast")), good, None, "protocol='fast' must be a JSON object"),
        (json.dumps(params(protocol={"blocks": 0})), good, None, "Protocol.blocks=0"),
        (json.dumps(params(format="mlpackage")), good, None, "format='mlpackage' does not match runtime onnxruntime"),
        (json.dumps(params(precision="fp64")), good, None, "precision='fp64'"),
        (json.dumps(params()), b"\x80\x04garbage, surely not onnx" * 8, None, "not a valid ONNX model"),
        (json.dumps(params()), b"", None, "empty body"),
        (json.dumps(params()), None, -1, "missing Content-Length"),
    ]
    for header, body, length, message in cases:
        headers = {"Content-Type": "application/octet-stream", **({MEASURE_HEADER: header} if header else {})}
        status, payload, _ = raw(server, "POST", "/v1/measure", body, headers, length=length)
        assert status == 400 and message in payload["error"], (message, payload)
        assert "\n" not in payload["error"]
    rt = RemoteRuntime(server.url, "onnxruntime", token=TOKEN)
    with pytest.raises(AgentRequestError, match="not a valid ONNX model") as err:
        rt.send(b"garbage", params())
    assert isinstance(err.value, ValueError) and err.value.status == 400
    status, payload, _ = raw(server, "GET", "/v2/nothing")
    assert status == 404 and "/v1/measure" in payload["error"]
    assert len(server.history) == 0
    assert rt.measure(MeasureSpec(onnx_file, SHAPE, protocol=TINY)).runtime == "onnxruntime"  # still serving


def test_forced_runs_cannot_hold_the_agent_past_its_time_limit(start_agent, onnx_file, monkeypatch):
    """A protocol whose nominal time is short (blocks x block_s) but whose forced runs are many (warm-up runs,
    a minimum of runs per block) is refused once its cost, projected from the model's own warm-up speed,
    passes the agent's limit (300 s; 0.5 s here): 400 in one line, the lock released, the agent serving."""
    from profilers.record import MeasurementTooLong, time_interleaved, time_limit

    monkeypatch.setattr(agent_module, "PROTOCOL_MAX_S", 0.5)
    server = start_agent()
    forced = {"warmup_s": 0, "warmup_runs": 2, "blocks": 1000, "block_s": 0.0001, "min_runs_per_block": 1000,
              "max_runs_per_block": 1000}
    status, payload, _ = raw(server, "POST", "/v1/measure", onnx_file.read_bytes(),
                              {MEASURE_HEADER: json.dumps(params(protocol=forced))})
    assert status == 400 and "the protocol would take ~" in payload["error"], payload
    assert "over the time limit of 0.5 s" in payload["error"] and "\n" not in payload["error"]
    status, payload, _ = raw(server, "POST", "/v1/measure", onnx_file.read_bytes(), {MEASURE_HEADER: json.dumps(
        params(protocol={"warmup_s": 0, "warmup_runs": 10_000, "blocks": 1, "block_s": 0.0001}))})
    assert status == 200 or "warm-up alone ran past" in payload["error"], payload  # 10,000 fast runs may fit
    assert RemoteRuntime(server.url, "onnxruntime", token=TOKEN).measure(
        MeasureSpec(onnx_file, SHAPE, protocol=TINY)).stats.median_ms > 0  # still serving
    slow = Protocol(warmup_s=0, warmup_runs=1000, blocks=2, block_s=0.001)
    with time_limit(0.05), pytest.raises(MeasurementTooLong, match="warm-up alone ran past the time limit"):
        time_interleaved([lambda: time.sleep(0.001)], slow)
    assert time_interleaved([lambda: None], TINY)[0].runs > 0  # no limit outside the block


def test_connections_are_capped_and_aborts_logged_in_one_line(start_agent, onnx_file, caplog):
    """Idle half-sent requests cannot take every thread (issue 13): beyond max_connections a client gets 503
    at once; a client that hangs up mid-request is one log line, not a traceback."""
    server = start_agent(max_connections=2)
    idle = [socket.create_connection(server.server_address[:2], timeout=10) for _ in range(2)]
    for s in idle:
        s.sendall(b"POST /v1/measure HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    time.sleep(0.3)
    third = socket.create_connection(server.server_address[:2], timeout=10)
    third.sendall(b"GET /v1/info HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = third.recv(4096)
    third.close()
    assert reply.startswith(b"HTTP/1.1 503") and b"every connection slot is taken" in reply
    caplog.clear()
    for s in idle:  # both hang up mid-request: their slots free up
        s.close()
    cut = socket.create_connection(server.server_address[:2], timeout=10)  # hangs up in the middle of its body
    head = (f"POST /v1/measure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100000\r\n"
            f"{MEASURE_HEADER}: {json.dumps(params())}\r\n\r\n")
    cut.sendall(head.encode() + b"x" * 10)
    cut.close()
    deadline = time.time() + 10
    while time.time() < deadline and _try_info(server) != 200:
        time.sleep(0.1)
    assert _try_info(server) == 200
    assert "Traceback" not in caplog.text


def test_a_slow_drip_client_is_dropped_at_its_deadline(start_agent, onnx_file, monkeypatch, caplog):
    """A client that keeps a connection alive by sending a byte now and then (never silent for the 30 s idle
    timeout) is dropped when its request has not arrived by the deadline (60 s for the headers, plus 1 s per
    64 KiB of body; 0.5 s here), in one log line; an honest request on the next connection is served."""
    monkeypatch.setattr(agent_module, "READ_DEADLINE_S", 0.5)
    server = start_agent(max_connections=1)
    drip = socket.create_connection(server.server_address[:2], timeout=10)
    t0 = time.monotonic()
    with contextlib.suppress(OSError):
        for ch in b"POST /v1/measure HTTP/1.1\r\nHost: x\r\n":
            drip.sendall(bytes([ch]))
            time.sleep(0.05)
            if time.monotonic() - t0 > 5:
                break
    assert drip.recv(4096) == b"" and time.monotonic() - t0 < 4  # closed by the agent at ~0.5 s
    drip.close()
    deadline, served = time.time() + 10, False
    while time.time() < deadline and not served:  # the one slot is free again (one try at a time: with a
        served = _try_info(server) == 200         # single slot, a second try races the first one's close)
        time.sleep(0.1)
    assert served
    assert "did not arrive within 0 s" not in caplog.text and "did not arrive within" in caplog.text
    assert "Traceback" not in caplog.text


def _try_info(server: AgentServer) -> int:
    try:
        return raw(server, "GET", "/v1/info")[0]
    except (OSError, http.client.HTTPException, json.JSONDecodeError):
        return -1


def test_unknown_and_unavailable_runtimes(start_agent, onnx_file, tmp_path):
    server = start_agent()
    rt = RemoteRuntime(server.url, "onnxruntime", token=TOKEN)
    with pytest.raises(AgentRequestError, match=r"unknown runtime 'nope'; available: \[.*'onnxruntime'") as err:
        rt.send(onnx_file.read_bytes(), params(runtime="nope"))
    assert err.value.status == 400
    reason = RemoteRuntime(server.url, "nope", token=TOKEN).unavailable()
    assert "not served by the agent" in reason and "onnxruntime" in reason
    if "coreml" not in list_runtimes() or is_macos():
        return
    pkg = tmp_path / "m.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    (pkg / "Manifest.json").write_text("{}")
    (pkg / "Data" / "model.bin").write_bytes(b"\0" * 100)
    coreml = RemoteRuntime(server.url, "coreml", token=TOKEN)
    assert "needs macOS" in coreml.unavailable()
    with pytest.raises(RuntimeUnavailable, match="^unavailable: .*needs macOS"):
        coreml.send(zip_dir(pkg), params(runtime="coreml", format="mlpackage"))  # agent replies 409


@pytest.mark.parametrize("name, fmt, kind, engine", [("executorch", "pte", "an ExecuTorch program", "ExecuTorch"),
                                                      ("litert", "tflite", "a LiteRT model", "LiteRT")])
def test_phone_formats_through_the_agent(start_agent, tmp_path, name, fmt, kind, engine):
    """A .pte or .tflite travels like any artifact: measured there, a body without the format's flatbuffer
    identifier refused before the runtime sees it, and a corrupt file with the right identifier refused by the
    runtime's loader."""
    rt_local = get_runtime(name)
    if rt_local.unavailable() is not None:
        pytest.skip(f"{name}: unavailable: {rt_local.unavailable()}")
    server = start_agent()
    rt = open_runtime(name, server.url, TOKEN)
    artifact = rt.prepare(tiny_model(), SHAPE, tmp_path / "sub")  # exported here, measured there
    assert artifact.suffix == f".{fmt}" and rt.default_provider == "XNNPACK"
    m = rt.measure(MeasureSpec(artifact, SHAPE, protocol=TINY))
    assert (m.runtime, m.provider, m.input_shape) == (name, "XNNPACK", SHAPE) and m.stats.runs >= 4
    req = params(runtime=name, format=fmt)
    with pytest.raises(AgentRequestError, match=rf"body is not {kind}: its file identifier is"):
        rt.send(b"\x80\x04 surely not a program" * 4, req)
    data = artifact.read_bytes()
    with pytest.raises(AgentRequestError, match=rf"{engine} cannot run model.{fmt}") as err:
        rt.send(data[:8] + b"\xff" * 64, req)
    assert err.value.status == 400 and len(server.history) == 2  # the identifier check ran before the queue


def test_two_clients_are_queued_not_overlapped(start_agent, onnx_file):
    """Two clients at once: the agent's measurements never overlap. Whether the second request arrives while
    the first is still measuring depends on thread scheduling, so rounds repeat (up to 5) until one did; the
    no-overlap property is checked in every round."""
    server = start_agent()
    slow = Protocol(warmup_s=0.1, warmup_runs=2, blocks=6, block_s=0.05, min_runs_per_block=2, max_runs_per_block=10**4)
    queued = False
    for _ in range(5):
        barrier, results, errors = threading.Barrier(2), [], []

        def client() -> None:
            try:
                rt = RemoteRuntime(server.url, "onnxruntime", token=TOKEN)
                rt.info()
                barrier.wait()
                results.append(rt.measure(MeasureSpec(onnx_file, SHAPE, protocol=slow)))
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        server.history.clear()
        threads = [threading.Thread(target=client) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors and len(results) == 2 and all(m.stats.runs >= 12 for m in results), errors
        first, second = sorted(server.history, key=lambda h: h["start"])
        assert first["end"] <= second["start"]  # measurements never overlap
        if second["received"] < first["end"]:  # the second request arrived while the first was measuring
            queued = True
            break
    assert queued, "in 5 rounds the second request never arrived while the first was measuring"


def test_extract_zip_is_safe(tmp_path):
    pkg = tmp_path / "a.mlpackage"
    (pkg / "Data" / "w").mkdir(parents=True)
    (pkg / "Manifest.json").write_text('{"x": 1}')
    (pkg / "Data" / "w" / "weights.bin").write_bytes(os.urandom(1000))
    extract_zip(zip_dir(pkg), tmp_path / "out.mlpackage", 10_000)
    assert (tmp_path / "out.mlpackage" / "Data" / "w" / "weights.bin").read_bytes() == \
        (pkg / "Data" / "w" / "weights.bin").read_bytes()
    for member, status, message in (("../evil", 400, "unsafe zip member"), ("/abs/evil", 400, "unsafe zip member"),
                                    ("Data/../../evil", 400, "unsafe zip member"), ("big", 413, "unpacks to")):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("Manifest.json", "{}")
            zf.writestr(member, b"\0" * 20_000)
        with pytest.raises(RequestError, match=message) as err:
            extract_zip(buf.getvalue(), tmp_path / f"x{status}", 10_000)
        assert err.value.status == status
    assert not (tmp_path / "evil").exists()
    with pytest.raises(RequestError, match="zip of its directory"):
        extract_zip(b"not a zip", tmp_path / "y", 10_000)


def test_stopped_agent_is_reported_unreachable():
    server = make_server("127.0.0.1", 0, TOKEN)
    url = server.url
    server.server_close()
    reason = RemoteRuntime(url, "onnxruntime", token=TOKEN).unavailable()
    assert reason.startswith(f"agent at {url} unreachable:")


def test_cli_token_file_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(agent_app, ["serve", "--port", "0", "--token-file", str(tmp_path / "missing")])
    assert result.exit_code == 2 and result.stderr.startswith("error: --token-file") and "cannot read it" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    (tmp_path / "empty").write_text("\n")
    result = runner.invoke(agent_app, ["serve", "--port", "0", "--token-file", str(tmp_path / "empty")])
    assert result.exit_code == 2 and result.stderr.startswith("error: --token-file") and "is empty" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_cli_serve_until_ctrl_c(tmp_path, signum):
    """Ctrl-C or SIGTERM stops the agent, even when it was started with SIGINT ignored (as a non-interactive
    shell starts `cmd &`)."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    code = ("import faulthandler, signal, sys; faulthandler.register(signal.SIGUSR1, all_threads=True); "
            "from ofakit.cli.agent import agent_app; agent_app(sys.argv[1:], prog_name='ofakit agent')")
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--port", "0", "--token-file", str(token_file)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        line = proc.stdout.readline()
        assert line.startswith("ofakit agent listening on http://127.0.0.1:"), (line, proc.stderr.read())
        url = line.split()[4]
        assert RemoteRuntime(url, "onnxruntime", token=TOKEN).unavailable() is None
        proc.send_signal(signum)
        try:
            out, _ = proc.communicate(timeout=90)  # stops in ~2 s; generous for a loaded 2-core machine
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # where is it stuck? every thread's stack goes to stderr
            time.sleep(2)
            proc.kill()
            pytest.fail(f"the agent did not stop within 90 s of signal {signum}; its threads:\n"
                        f"{proc.communicate()[1][-6000:]}")
    finally:
        proc.kill()
    assert proc.returncode == 0 and "agent stopped" in out


@needs_onnx
def test_table_built_through_the_agent_like_a_local_runtime(start_agent, tmp_path):
    """`ofakit profile build --device http://HOST:PORT`: the whole build (layers, calibration) goes through
    the agent, the table names the device by its URL, and the predictor loads it like a local table."""
    from typer.testing import CliRunner

    import model_zoo
    from ofakit.cli import app
    from profilers import LatencyPredictor, LatencyTable

    server = start_agent()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    table = tmp_path / "lut.sqlite"
    r = CliRunner().invoke(app, ["profile", "build", "--recipe", "ofa_mbv3_tiny", "--resolutions", "28", "--device",
                                 server.url, "--token-file", str(token_file), "--table", str(table), "--quick",
                                 "--calibrate", "3", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["device"] == server.url and report["measured"] == 75 and report["calibration_measured"] == 3
    with LatencyTable(table) as t:
        assert list(t.devices()) == [server.url]
        assert t.devices()[server.url] == local_device()  # the agent's own hardware description
    spec = model_zoo.get_spec("ofa_mbv3_tiny", resolutions=(28,))
    pred = LatencyPredictor.load(table, server.url, "onnxruntime", "ofa_mbv3_tiny@r28")
    assert pred.correction.samples == 3 and pred.predict(spec.space.largest())[0] > 0
    bad = tmp_path / "bad"
    bad.write_text("wrong-token")
    r = CliRunner().invoke(app, ["profile", "build", "--recipe", "ofa_mbv3_tiny", "--device", server.url,
                                 "--token-file", str(bad), "--table", str(table), "--quick"])
    assert r.exit_code == 2 and "token" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output



@needs_onnx
def test_search_and_ship_through_the_agent(start_agent, shipyard, tmp_path):
    """`ofakit search --device URL` and `ofakit ship --device URL`: the budget is on the agent's device, so the
    search's shortlist and the shipped artifact are timed there (on loopback, this machine's onnxruntime).
    The shipyard's table is this machine's, imported as the agent's (`profile import --as local=URL`) with
    its calibration. Ship skips its own shortlist (`--no-measure`, which would add a minute) and drift check:
    the search did both already."""
    from ofakit.cli import app
    from ofakit.specialize import latency_name
    from profilers import LatencyPredictor

    ctx, local_table = shipyard
    server = start_agent()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    table = tmp_path / "lut.sqlite"
    run = CliRunner().invoke
    r = run(app, ["profile", "import", str(local_table), "--table", str(table), "--as", f"local={server.url}"])
    assert r.exit_code == 0 and f"stored as '{server.url}'" in r.stdout, r.output
    pred = LatencyPredictor.load(table, server.url, "onnxruntime", ctx.supernet.spec)
    assert pred.correction == LatencyPredictor.load(local_table, "local", "onnxruntime", ctx.supernet.spec).correction
    assert pred.correction.samples > 0  # the calibration came along, fitted (it was lost: raw layer sums)
    budget = 20 * float(pred.predict([ctx.supernet.space.largest()])[0])  # met whatever this machine's speed
    lat = latency_name(server.url, "onnxruntime")
    base = ["--checkpoint", ctx.name, "--table", str(table), "--samples", "20", "--device", server.url,
            "--token-file", str(token_file), "--latency-ms", f"{budget:.4f}", "--json"]
    r = run(app, ["search", *base, "--population", "20", "--generations", "20", "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["latency_predictor"]["device"] == server.url and lat in rec["metrics"]
    rows = rec["shortlist"]  # timed on the agent: the pick is measured there, within the budget
    assert rows and all(row["measured_ms"][lat] > 0 for row in rows) and [w["picked"] for w in rows].count(True) == 1
    assert 0 < rec["measured_latency_ms"][lat] <= budget
    timed = len(server.history)
    assert timed >= len(rows)
    r = run(app, ["ship", *base, "--no-measure", "--no-drift-check", "--target", "onnx",
                  "--out", str(tmp_path / "m.onnx")])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["budget_met"] is True and rec["attempts"] == 1 and 0 < rec["measured_latency_ms"][lat] <= budget
    assert Path(rec["artifact"]).is_file() and len(server.history) > timed  # the shipped model was timed there
    side = json.loads(Path(rec["sidecar"]).read_text())
    m = side["closed_loop"][0]["measurements"][lat]
    assert m["runtime"] == "onnxruntime" and side["closed_loop"][0]["met"] is True


def test_an_agent_that_dies_mid_request_is_not_blamed_on_the_token():
    """The agent process dies while it reads a request (issue 13: the message blamed a bad token)."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def die() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)  # the headers and the start of the body, then the process is gone
        conn.close()
        srv.close()

    thread = threading.Thread(target=die, daemon=True)
    thread.start()
    rt = RemoteRuntime(f"http://127.0.0.1:{port}", "onnxruntime", token=TOKEN, timeout=30)
    with pytest.raises(AgentError, match="no longer answers .*stopped or crashed") as err:
        rt.send(b"\0" * (4 << 20), params())
    assert "token" not in str(err.value)
    thread.join(5)
