"""Engine builds on a profiling agent (POST /v1/build): checked requests, a device without TensorRT, a remote
build checked and written by the host, and an artifact the SDK cannot run."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from profilers.agent import server as agent_module
from profilers.agent.server import MEASURE_HEADER
from profilers.runtimes import RuntimeUnavailable, get_runtime, open_runtime
from tests.agentkit import SHAPE, TOKEN, needs_onnx, params, raw


def test_build_requests_are_checked_and_unavailable_tensorrt_is_409(start_agent, onnx_file):
    """POST /v1/build: malformed requests are 400 with a one-line reason; without TensorRT on the device the
    agent answers 409 'unavailable: ...' and the client raises RuntimeUnavailable saying what is missing."""
    import numpy as np

    from deploy_targets.tensorrt_export import tensorrt_unavailable
    from profilers.agent.build import BUILD_HEADER, pack_build, unpack_build

    server = start_agent()
    x = np.zeros(SHAPE, dtype=np.float32)
    good = pack_build(onnx_file.read_bytes(), x)
    model, inputs, cal = unpack_build(good, 1 << 30)
    assert model == onnx_file.read_bytes() and inputs.shape == SHAPE and cal is None
    hdr = {BUILD_HEADER: json.dumps({"target": "tensorrt", "precision": "fp16"})}
    cases = [
        (good, {}, 400, "missing header X-Ofakit-Build"),
        (good, {BUILD_HEADER: json.dumps({"target": "tflite", "precision": "fp32"})}, 400, "target='tflite' cannot"),
        (good, {BUILD_HEADER: json.dumps({"target": "tensorrt"})}, 400, "missing key(s) ['precision']"),
        (b"not a zip", hdr, 400, "must be a zip of"),
        (pack_build(b"x", x)[:-30], hdr, 400, "must be a zip of"),  # truncated: no central directory
    ]
    for body, headers, status, text in cases:
        code, reply, _ = raw(server, "POST", "/v1/build", body, headers)
        assert code == status and text in reply["error"], reply
    code, reply, _ = raw(server, "POST", "/v1/build", good, hdr, token="wrong")
    assert code == 401
    reason = tensorrt_unavailable()
    if reason is None:
        pytest.skip("TensorRT and a GPU are present here: the GPU tests build engines for real")
    code, reply, _ = raw(server, "POST", "/v1/build", good, hdr)
    assert code == 409 and reply["error"].startswith("unavailable: tensorrt on this agent:")
    with pytest.raises(RuntimeUnavailable, match="unavailable: tensorrt on this agent"):
        open_runtime("tensorrt", server.url, TOKEN).build_engine(onnx_file.read_bytes(), x, "fp16")


@needs_onnx
def test_export_tensorrt_through_an_agent_says_what_the_device_lacks(start_agent, tmp_path):
    """`ofakit export --target tensorrt --device URL`: the engine is built on the agent; here the agent has no
    GPU, so the command fails with one line naming what is missing (and writes nothing)."""
    from deploy_targets.tensorrt_export import tensorrt_unavailable
    from ofakit.cli import app
    if tensorrt_unavailable() is None:
        pytest.skip("TensorRT and a GPU are present here")
    server = start_agent()
    (tmp_path / "token").write_text(TOKEN)
    cfg = model_zoo_smallest()
    (tmp_path / "s.json").write_text(json.dumps(cfg))
    r = CliRunner().invoke(app, ["export", "--checkpoint", "ofa_mbv3_tiny.fmnist", "--subnet", str(tmp_path / "s.json"),
                                 "--target", "tensorrt", "--out", str(tmp_path / "m.engine"), "--device", server.url,
                                 "--token-file", str(tmp_path / "token")])
    assert r.exit_code == 2 and "unavailable: tensorrt on this agent" in r.stderr and "\n" not in r.stderr.strip()
    assert not (tmp_path / "m.engine").exists()
    r = CliRunner().invoke(app, ["export", "--checkpoint", "ofa_mbv3_tiny.fmnist", "--subnet", str(tmp_path / "s.json"),
                                 "--target", "onnx", "--out", str(tmp_path / "m.onnx"), "--device", server.url])
    assert r.exit_code == 2 and "artifacts are portable" in r.stderr


@needs_onnx
def test_a_successful_remote_tensorrt_build_is_checked_and_written_by_the_host(start_agent, tmp_path, monkeypatch):
    """`ofakit export --target tensorrt --device URL` when the agent's GPU build succeeds (issue 18). No GPU
    here, so the agent's one GPU step, `build_here`, is replaced by a stand-in that runs the sent ONNX graph in
    onnxruntime and answers in the real reply format; everything else is real: the build zip over HTTP, the
    reply's decoding, the host's parity check against PyTorch, the atomic write and the sidecar. A reply whose
    outputs disagree with PyTorch is refused in one line and writes nothing."""
    import base64
    import hashlib

    import numpy as np
    import onnxruntime as ort

    from deploy_targets import tensorrt_export
    from ofakit.cli import app

    skew = {"by": 0.0}

    def build_on_a_gpu(params, onnx_model, inputs, calibration):
        sess = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
        out = sess.run(None, {sess.get_inputs()[0].name: inputs})[0] + skew["by"]
        npy = io.BytesIO()
        np.save(npy, out.astype(np.float32), allow_pickle=False)
        engine = b"plan:" + hashlib.sha256(onnx_model).digest() + params["precision"].encode()
        return {"engine_b64": base64.b64encode(engine).decode(), "outputs_b64": base64.b64encode(npy.getvalue()).decode(),
                "versions": {"tensorrt": "10.3.0", "cuda": "12.6"}, "gpu": "Orin (stand-in)", "seconds": 1.0}

    monkeypatch.setattr(agent_module, "build_here", build_on_a_gpu)
    monkeypatch.setattr(tensorrt_export, "tensorrt_unavailable", lambda: None)  # the agent's side has "a GPU"
    server = start_agent()
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "s.json").write_text(json.dumps(model_zoo_smallest()))
    base = ["export", "--checkpoint", "ofa_mbv3_tiny.fmnist", "--subnet", str(tmp_path / "s.json"), "--target",
            "tensorrt", "--device", server.url, "--token-file", str(tmp_path / "token"), "--json"]
    r = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "m.engine")])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    engine = (tmp_path / "m.engine").read_bytes()
    assert engine.startswith(b"plan:") and engine.endswith(b"fp32") and 0 <= rec["max_abs_diff"] <= 1e-4
    side = json.loads(Path(rec["sidecar"]).read_text())
    assert side["export"]["built_on"] == server.url and side["export"]["gpu"] == "Orin (stand-in)"
    assert side["versions"]["tensorrt"] == "10.3.0" and "runs only on Orin (stand-in)-class GPUs" in rec["notes"][0]
    skew["by"] = 0.5  # an engine that computes something else
    r = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "bad.engine")])
    assert r.exit_code == 2 and "TensorRT parity check failed" in r.stderr and f"built on {server.url}" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad.engine").exists()


@needs_onnx
def test_an_artifact_the_sdk_cannot_run_is_400_not_500(start_agent, onnx_file, monkeypatch):
    """A body that passes the agent's checks but that the runtime's SDK cannot load or run (a garbage TensorRT
    engine or graph raises RuntimeError there) is the request's fault: 400 in one line, never 500."""
    import numpy as np

    from deploy_targets import tensorrt_export
    from profilers.agent.build import BUILD_HEADER, pack_build

    def sdk_refuses(*args, **kwargs):
        raise RuntimeError("deserializeCudaEngine failed\n(a second line from the SDK)")

    monkeypatch.setattr(type(get_runtime("onnxruntime")), "measure", sdk_refuses)
    monkeypatch.setattr(agent_module, "build_here", sdk_refuses)
    monkeypatch.setattr(tensorrt_export, "tensorrt_unavailable", lambda: None)
    server = start_agent()
    code, reply, _ = raw(server, "POST", "/v1/measure", onnx_file.read_bytes(), {MEASURE_HEADER: json.dumps(params())})
    assert code == 400 and reply["error"] == "onnxruntime could not load or run the artifact: deserializeCudaEngine failed"
    body = pack_build(onnx_file.read_bytes(), np.zeros(SHAPE, dtype=np.float32))
    code, reply, _ = raw(server, "POST", "/v1/build", body,
                          {BUILD_HEADER: json.dumps({"target": "tensorrt", "precision": "fp32"})})
    assert code == 400 and "tensorrt could not build the sent graph: deserializeCudaEngine failed" == reply["error"]


def model_zoo_smallest() -> dict:
    import model_zoo
    return model_zoo.load_checkpoint("ofa_mbv3_tiny.fmnist").space.smallest().to_dict()
