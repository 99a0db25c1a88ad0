"""Faults of the third issue-13 probe: refused exports that must not lose a good pair, remote agents that reply
badly (or redirect), hand-edited tables, caches, recipes, checkpoints and training states.

Every case must end in one ``ValueError`` (or the CLI's one ``error:`` line) and leave good files as they were.
"""

from __future__ import annotations

import gzip
import http.server
import json
import math
import re
import sqlite3
import struct
import threading

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import model_zoo
from deploy_targets import ExportSpec, get_exporter
from elastic import SubnetConfig
from elastic.batch import ConfigBatch, genome_length
from elastic.bn import recalibrate_bn
from elastic.training.data import DataSource, load_splits
from elastic.training.schedule import Phase
from elastic.training.trainer import TrainConfig, Trainer
from model_zoo.training_recipes import recipe_from_dict
from ofakit.cli import app
from ofakit.search.accuracy import build_accuracy_data
from ofakit.artifact import export_subnet, sidecar_path, write_sidecar
from profilers import LatencyPredictor, LatencyTable
from profilers.agent.client import AgentError, RemoteRuntime
from profilers.layers import space_layers
from profilers.predictor import Correction, fit_correction
from profilers.record import DeviceInfo, local_device
from profilers.store import spec_id
from tests.fakedata import write_fmnist
from tests.shipyard import QUICK
from tests.test_faults_probe import TINY, _m, _table


def _pair(out):
    return {p: p.read_bytes() for p in (out, sidecar_path(out))}


@pytest.mark.parametrize("target, name, precision, match", [
    ("onnx", "o.onnx", "fp16", "does not support precision='fp16'"),
    ("coreml", "o.onnx", "fp32", "must end with .mlpackage"),
    ("tensorrt", "o.onnx", "fp32", "tensorrt export is unavailable"),
])
def test_a_refused_export_keeps_the_good_pair(shipyard, tmp_path, target, name, precision, match):
    ctx, _ = shipyard
    out = tmp_path / name
    export_subnet(ctx, ctx.supernet.space.smallest(), "onnx", out)
    before = _pair(out)
    with pytest.raises((ValueError, RuntimeError), match=match):
        export_subnet(ctx, ctx.supernet.space.largest(), target, out, precision)
    assert _pair(out) == before and not (tmp_path / f"{name}.json.old").exists()


def test_a_crash_after_the_artifact_leaves_no_stale_sidecar(shipyard, tmp_path, monkeypatch):
    """The new artifact is written, then the sidecar write fails: the artifact stands alone, never beside
    the old artifact's description."""
    ctx, _ = shipyard
    out = tmp_path / "o.onnx"
    export_subnet(ctx, ctx.supernet.space.smallest(), "onnx", out)
    old_art = out.read_bytes()

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("ofakit.artifact.write_sidecar", broken)
    with pytest.raises(OSError):
        export_subnet(ctx, ctx.supernet.space.largest(), "onnx", out)
    assert out.read_bytes() != old_art and not sidecar_path(out).exists()
    assert not (tmp_path / "o.onnx.json.old").exists()
    assert write_sidecar  # the real one is restored by monkeypatch afterwards


def test_a_stale_parked_sidecar_never_comes_back(shipyard, tmp_path):
    """An export killed earlier left its parked sidecar beside a new artifact; a later refused export must not
    restore that description (refused before any work, it touches nothing), and the next export removes it."""
    ctx, _ = shipyard
    out = tmp_path / "o.onnx"
    export_subnet(ctx, ctx.supernet.space.smallest(), "onnx", out)
    sidecar_path(out).rename(tmp_path / "o.onnx.json.old")
    with pytest.raises(ValueError, match="does not support precision='fp16'"):
        export_subnet(ctx, ctx.supernet.space.largest(), "onnx", out, "fp16")
    assert not sidecar_path(out).exists()
    export_subnet(ctx, ctx.supernet.space.largest(), "onnx", out)
    assert json.loads(sidecar_path(out).read_text())["config"] == ctx.supernet.space.largest().to_dict()
    assert not (tmp_path / "o.onnx.json.old").exists()


def test_a_sidecar_holds_no_nan(shipyard, tmp_path):
    ctx, _ = shipyard
    _, side = export_subnet(ctx, ctx.supernet.space.smallest(), "onnx", tmp_path / "o.onnx",
                            info={"accuracy_predictor": {"kendall_tau": math.nan, "list": [math.inf, 1.0]}})
    data = json.loads(side.read_text())
    assert data["accuracy_predictor"] == {"kendall_tau": None, "list": [None, 1.0]}


class _Redirect(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def do_GET(self):  # noqa: N802
        _Redirect.seen.append(self.headers.get("Authorization"))
        self.send_response(302)
        self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_an_agent_redirect_is_refused_and_the_token_stays_home():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _Redirect.seen.clear()
        rt = RemoteRuntime(f"http://127.0.0.1:{server.server_port}", "onnxruntime", token="secret", timeout=5)
        with pytest.raises(AgentError, match="redirect to .* refused"):
            rt.info()
        assert _Redirect.seen == ["Bearer secret"]  # asked once; the redirect target was never contacted
    finally:
        server.shutdown()


@pytest.mark.parametrize("coef, floor, match", [
    ([math.nan], 0.0, "coefficients"), ([-1.0], 0.0, "coefficients"), ([1.0], -0.5, "floor -0.5"),
    ([1.0], math.inf, "floor inf"),
])
def test_stored_correction_must_be_usable(coef, floor, match):
    with pytest.raises(ValueError, match=match):
        Correction.from_dict({"features": ["layer_sum_ms"], "coef": coef, "samples": 3, "floor": floor})
    with pytest.raises(ValueError, match="loo_mape='x'"):
        Correction.from_dict({"features": ["layer_sum_ms"], "coef": [1.0], "samples": 3, "loo_mape": "x"})


@pytest.mark.parametrize("change, match", [
    ({"measured_at": "yesterday"}, "measured_at is 'yesterday'"),
    ({"load_avg": math.nan}, "load_avg is nan"),
    ({"runtime_version": None}, "runtime_version=None"),
])
def test_a_bad_measurement_is_not_stored(tmp_path, change, match):
    """One bad field would make every later read of the table fail: refused before anything is stored."""
    path = _table(tmp_path)
    from dataclasses import replace
    with LatencyTable(path) as t, pytest.raises(ValueError, match=match):
        t.put_many("local", [("layer1", _m()), ("layer2", replace(_m(), **change))])
    with LatencyTable(path) as t:
        assert [e.key for e in t.entries()] == ["layer0"]


@pytest.mark.parametrize("sql, match", [
    ("UPDATE entries SET load_avg = 'high'", "load_avg is 'high'"),
    ("UPDATE corrections SET model = '{\"features\": [\"layer_sum_ms\"], \"coef\": [1], \"samples\": 1, "
     "\"loo_mape\": \"x\"}'", "loo_mape='x'"),
    ("UPDATE runtimes SET precision = 'fp64'", "precision must be one of"),
    ("UPDATE devices SET info = '{\"cpu\": \"x\", \"cores\": \"many\", \"os\": \"l\", \"machine\": \"m\"}'",
     "cores='many'"),
])
def test_profile_show_on_a_corrupt_row_is_one_line(tmp_path, sql, match):
    res = CliRunner().invoke(app, ["profile", "show", "--table", str(_table(tmp_path, sql))])
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and match in res.stderr, res.output
    assert len(res.stderr.strip().splitlines()) == 1


def test_drift_records_are_checked_both_ways(tmp_path):
    path = _table(tmp_path)
    from profilers.store import RuntimeKey
    rk = RuntimeKey.of(_m())
    with LatencyTable(path) as t:
        with pytest.raises(ValueError, match="ratio=-2"):
            t.add_drift("local", rk, "sid", -2, {}, 1.0)
        with pytest.raises(ValueError, match="plain JSON"):
            t.add_drift("local", rk, "sid", 1.1, {"refs": {1, 2}}, 1.0)
        t.add_drift("local", rk, "sid", 1.1, {"refs": 3}, 1.0)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE drift_checks SET ratio = 'fast'")
    with LatencyTable(path) as t, pytest.raises(ValueError, match="ratio is 'fast'"):
        t.drift("local", rk, "sid")


def test_device_info_types():
    with pytest.raises(ValueError, match="cores='many'"):
        DeviceInfo("cpu", "many", "os", "x86_64")
    with pytest.raises(ValueError, match="machine=\\[\\]"):
        DeviceInfo("cpu", 2, "os", [])
    with pytest.raises(ValueError, match="must be a JSON object"):
        DeviceInfo.from_dict([1, 2])
    assert DeviceInfo.from_dict(local_device().to_dict()) == local_device()


def test_import_of_an_unknown_precision_is_refused(tmp_path):
    src = _table(tmp_path)
    out = tmp_path / "e.json"
    with LatencyTable(src) as t:
        t.export_json(out)
    data = json.loads(out.read_text())
    data["entries"][0]["runtime"]["precision"] = "fp64"
    out.write_text(json.dumps(data))
    with LatencyTable(tmp_path / "new.sqlite") as t, pytest.raises(ValueError, match="precision must be one of"):
        t.import_json(out)


def test_a_table_path_too_long_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="cannot open latency table .*too long"):
        LatencyTable(tmp_path / ("x" * 300 + ".sqlite"))


def test_accuracy_cache_with_a_torn_header_and_records_is_kept(tmp_path):
    """A damaged first line followed by measured records is a hand edit to fix, not a cache to throw away."""
    space = model_zoo.get_spec("ofa_mbv3_tiny").space
    path = tmp_path / "acc.jsonl"
    build_accuracy_data(space, lambda c: 0.5, path, 3, {"k": 1})
    text = path.read_text()
    path.write_text("{torn" + text[text.index("\n"):])
    before = path.read_bytes()
    with pytest.raises(ValueError, match="line 1 is not valid JSON but later lines follow"):
        build_accuracy_data(space, lambda c: 0.5, path, 3, {"k": 1})
    assert path.read_bytes() == before
    path.write_text(json.dumps([1]) + "\n")
    with pytest.raises(ValueError, match="line 1 is not an accuracy-dataset header"):
        build_accuracy_data(space, lambda c: 0.5, path, 3, {"k": 1})


def test_export_of_a_search_record_with_nan_is_refused(tmp_path):
    rec = {"config": model_zoo.get_spec("ofa_mbv3_tiny").space.smallest().to_dict(), "predicted_accuracy": math.nan}
    path = tmp_path / "pick.json"
    path.write_text(json.dumps(rec))  # Python writes NaN, which JSON does not have
    res = CliRunner().invoke(app, ["export", "--subnet", str(path), "--checkpoint", "ofa_mbv3_tiny.fmnist",
                                   "--out", str(tmp_path / "o.onnx")])
    assert res.exit_code == 2 and "holds NaN, which is not a number" in res.stderr, res.output
    path.write_text(json.dumps({**rec, "predicted_accuracy": 1.5}))
    res = CliRunner().invoke(app, ["export", "--subnet", str(path), "--checkpoint", "ofa_mbv3_tiny.fmnist",
                                   "--out", str(tmp_path / "o.onnx")])
    assert res.exit_code == 2 and "predicted_accuracy=1.5" in res.stderr, res.output
    assert not (tmp_path / "o.onnx").exists()


def _idx(root, split, labels, n_images):
    imgs = np.zeros((n_images, 28, 28), np.uint8)
    (root / f"{split}-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(struct.pack(">IIII", 0x803, n_images, 28, 28) + imgs.tobytes()))
    (root / f"{split}-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(struct.pack(">II", 0x801, len(labels)) + np.asarray(labels, np.uint8).tobytes()))


@pytest.mark.parametrize("labels, n_images, match", [
    ([0, 1, 200, 3] * 16, 64, "labels range 0-200; allowed: 0 to 9"),
    ([0, 1] * 5, 64, "hold 64 images but 10 labels"),
])
def test_fashion_mnist_files_that_do_not_belong_together(tmp_path, labels, n_images, match):
    root = write_fmnist(tmp_path / "fm", 64, 16)
    _idx(root, "train", labels, n_images)
    with pytest.raises(ValueError, match=match):
        load_splits(DataSource("fashion-mnist", root), val_size=8)


@pytest.mark.parametrize("kw, match", [({"val_size": 2.5}, "val_size=2.5"), ({"seed": "0"}, "seed='0'"),
                                       ({"train_limit": 0}, "train_limit=0"), ({"test_limit": -3}, "test_limit=-3")])
def test_split_arguments_are_checked(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        load_splits(DataSource("fashion-mnist", write_fmnist(tmp_path / "fm", 64, 16)), **kw)


@pytest.mark.parametrize("data, match", [
    ({"supernet": "ofa_mbv3_tiny", "supernet_options": {"in_channels": 3}}, r"\['in_channels'\] are not allowed"),
    ({"supernet": "ofa_mbv3_tiny", "train": {1: 2}}, "key 1 is not a name"),
    ({"supernet": "ofa_mbv3_tiny", 1: 2}, "key 1 is not a name"),
])
def test_recipe_keys(data, match):
    with pytest.raises(ValueError, match=match):
        recipe_from_dict(data)


def test_a_deeply_nested_recipe_file_is_one_line(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 3000 + "]" * 3000 + "\n")
    from model_zoo.training_recipes import load_training_recipe
    with pytest.raises(ValueError, match="nested too deeply|not valid TOML"):
        load_training_recipe(path)


def _trained(tmp_path):
    splits = load_splits(DataSource("fashion-mnist", write_fmnist(tmp_path / "fm", 64, 16)), val_size=16,
                         train_limit=32)
    config = TrainConfig(batch_size=16, calib_images=16, epoch_calib_images=16, eval_images=16, log_every=0)

    def trainer():
        net = model_zoo.get_supernet("ofa_mbv3_tiny", resolutions=(28,))
        return Trainer(net, splits, [Phase("teacher", 2, 0.05)], config, tmp_path / "run", progress=False)
    t = trainer()
    t.run()
    return trainer


@pytest.mark.parametrize("edit, match", [
    (lambda run: _set(run / "state.json", phase_index=99), "phase_index 99 is not one of"),
    (lambda run: (run / "metrics.jsonl").write_text("garbage\n"), "metrics.jsonl is not this run's"),
    (lambda run: (run / "state.json").write_bytes(b"\xff\xfe{"), "is not valid JSON"),
])
def test_resuming_a_damaged_run_is_one_line(tmp_path, edit, match):
    trainer = _trained(tmp_path)
    edit(tmp_path / "run")
    with pytest.raises(ValueError, match=match) as err:
        trainer().run(resume=True)
    assert "\n" not in str(err.value)


def _set(path, **changes):
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def test_an_agent_rejects_other_methods_with_json():
    import urllib.request

    from profilers.agent.server import make_server
    server = make_server("127.0.0.1", 0, "tok")
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{server.server_address[1]}/v1/measure", data=b"x",
                                     method="PUT")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 405 and "method PUT is not allowed" in json.loads(err.value.read())["error"]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("runtime,says,shape", [("onnxruntime", "onnxruntime", (1, 3, 28, 28)),
                                                 ("openvino", "OpenVINO", (1, 3, 28, 28)),
                                                 ("openvino", "OpenVINO", (1, 28))])
def test_runtimes_refuse_an_input_the_model_cannot_take(shipyard, tmp_path, runtime, says, shape):
    from profilers import MeasureSpec, get_runtime, runtime_status
    why = runtime_status()[runtime].get("reason")
    if why:
        pytest.skip(f"{runtime} unavailable: {why}")
    ctx, _ = shipyard
    res, _ = export_subnet(ctx, ctx.supernet.space.smallest(), "onnx", tmp_path / "o.onnx")
    spec = MeasureSpec(res.path, shape, protocol=QUICK)
    want = re.escape(f"{says} cannot run o.onnx on an input of shape {list(shape)}")
    with pytest.raises(ValueError, match=want):
        get_runtime(runtime).measure(spec)


def test_export_spec_refuses_meta_tensors(tmp_path):
    with pytest.raises(ValueError, match="tensors on the meta device"):
        ExportSpec(torch.nn.Conv2d(1, 2, 3, device="meta"), (1, 1, 8, 8), tmp_path / "m.onnx")
    for bad in (torch.empty(1, 1, 8, 8, device="meta"), torch.zeros(1, 1, 8, 8, dtype=torch.complex64),
                torch.zeros(1, 1, 8, 8, dtype=torch.bool)):
        with pytest.raises(ValueError, match=r"inputs is a torch\.\w+ tensor on \w+; allowed: real-valued"):
            ExportSpec(torch.nn.Conv2d(1, 2, 3), (1, 1, 8, 8), tmp_path / "m.onnx", inputs=bad)


def test_configs_stay_plain_after_numpy(tmp_path):
    cfg = SubnetConfig(ks=(np.int64(3),) * 16, e=(np.float64(3.0),) * 16, d=(np.int8(2),) * 4, r=np.int32(28))
    assert json.loads(cfg.to_json())["r"] == 28 and torch.tensor(cfg.d).dtype == torch.int64


@pytest.mark.parametrize("extra, match", [(["--precision", "fp16"], "fp16"),
                                          (["--provider", "CUDAExecutionProvider"], "CUDAExecutionProvider")])
def test_a_refused_build_leaves_no_table_file(tmp_path, extra, match):
    table = tmp_path / "new.sqlite"
    res = CliRunner().invoke(app, ["profile", "build", "--recipe", "ofa_mbv3_tiny", "--resolutions", "28", "--quick",
                                   "--calibrate", "0", "--table", str(table), *extra])
    assert res.exit_code == 2 and match in res.stderr, res.output
    assert list(tmp_path.iterdir()) == []


def _import_edit(tmp_path, edit):
    src, out = _table(tmp_path), tmp_path / "e.json"
    with LatencyTable(src) as t:
        t.add_calibration("local", spec_id(TINY.to_dict()), TINY.space.smallest().to_json(), _m())
        t.export_json(out)
    data = json.loads(out.read_text())
    edit(data)
    out.write_text(json.dumps(data))
    with LatencyTable(tmp_path / "new.sqlite") as t:
        t.import_json(out)


def _api_cases():
    from dataclasses import replace

    from profilers import MeasureSpec
    from profilers.agent.server import make_server
    from profilers.store import RuntimeKey
    return [
        ("measure spec protocol text", lambda t: MeasureSpec(t / "a.onnx", (1, 1, 8, 8), protocol="quick"),
         "protocol='quick' must be a profilers.Protocol"),
        ("measure spec threads True", lambda t: MeasureSpec(t / "a.onnx", (1, 1, 8, 8), threads=True), "threads=True"),
        ("measure spec empty provider", lambda t: MeasureSpec(t / "a.onnx", (1, 1, 8, 8), provider=""),
         "provider=''"),
        ("agent port 70000", lambda t: make_server("127.0.0.1", 70000, "tok"), "port=70000"),
        ("data source path number", lambda t: DataSource("imagefolder", 5), "dataset path 5"),
        ("put threads 1e20", lambda t: LatencyTable(_table(t)).put("local", "k", replace(_m(), threads=10 ** 20)),
         "threads=100000000000000000000"),
        ("put provider None", lambda t: LatencyTable(_table(t)).put("local", "k", replace(_m(), provider=None)),
         "provider=None"),
        ("calibration subnet not JSON", lambda t: LatencyTable(_table(t)).add_calibration("local", "s", "nope", _m()),
         "calibration subnet (SubnetConfig.to_json()) 'nope' is not a subnet"),
        ("calibration subnet outside the space", lambda t: LatencyTable(_table(t)).add_calibration(
            "local", spec_id(TINY.to_dict()), TINY.space.smallest().to_json().replace('"r":', '"r":9'), _m()),
         "is not a subnet of its architecture"),
        ("correction NaN", lambda t: LatencyTable(_table(t)).put_correction(
            "local", RuntimeKey.of(_m()), "s", {"features": ["layer_sum_ms"], "coef": [math.nan], "samples": 3}),
         "has coefficients [nan]"),
        ("correction without samples", lambda t: LatencyTable(_table(t)).put_correction(
            "local", RuntimeKey.of(_m()), "s", {"features": ["layer_sum_ms"], "coef": [1.0]}), "is malformed"),
        ("import runs 1e30", lambda t: _import_edit(t, lambda d: d["entries"][0].update(runs=10 ** 30)),
         "runs=1000000000000000000000000000000"),
        ("import measured in the year 10^292", lambda t: _import_edit(
            t, lambda d: d["entries"][0].update(measured_at=1e300)), "in the future"),
        ("import calibration subnet a dict", lambda t: _import_edit(
            t, lambda d: d["calibrations"][0].update(subnet={"ks": [3]})), "has subnet={'ks': [3]}"),
        ("import calibration subnet outside the space", lambda t: _import_edit(
            t, lambda d: d["calibrations"][0].update(subnet=SPACE.largest().to_json().replace('"r":', '"r":9'))),
         "imported calibration subnet"),
        ("batch of 2.5 random subnets", lambda t: ConfigBatch.random(SPACE, 2.5, np.random.default_rng(0)),
         "n=2.5 must be"),
        ("genome too short", lambda t: ConfigBatch.from_genome(SPACE, np.zeros((2, 3), np.int8)),
         "genome of shape (2, 3) does not fit"),
        ("gene 99", lambda t: ConfigBatch.from_genome(SPACE, np.full((1, genome_length(SPACE)), 99, np.int8)),
         "gene outside its choices"),
        ("batch of a string", lambda t: ConfigBatch.from_configs(SPACE, [SPACE.smallest(), "cfg"]),
         "is a str, not a SubnetConfig"),
        ("export spec calibration None", lambda t: ExportSpec(torch.nn.Identity(), (1, 1, 8, 8), t / "a.onnx",
                                                              calibration=None), "calibration=NoneType"),
        ("export spec option keys", lambda t: ExportSpec(torch.nn.Identity(), (1, 1, 8, 8), t / "a.onnx",
                                                         options={1: 2, "a": 3}), "names as keys"),
        ("correction without layer sums", lambda t: fit_correction({"one": np.ones(3)}, np.ones(3)),
         "lack 'layer_sum_ms'"),
        ("correction on zero layer sums", lambda t: fit_correction({"layer_sum_ms": np.zeros(3)}, np.ones(3)),
         "layer sums > 0"),
        ("recalibrate on NaN images", lambda t: recalibrate_bn(_tiny_net(), SPACE.smallest(),
                                                               [torch.full((2, 1, 28, 28), math.nan)]), "NaN or infinite"),
        ("recalibrate on one tensor", lambda t: recalibrate_bn(_tiny_net(), SPACE.smallest(), torch.zeros(2, 1, 28, 28)),
         "got a batch of shape (1, 28, 28)"),
        ("recalibrate on RGB images", lambda t: recalibrate_bn(_tiny_net(), SPACE.smallest(), [torch.zeros(2, 3, 28, 28)]),
         "allowed: (N, 1, H, W)"),
        ("export a module with two outputs", lambda t: get_exporter("onnx").export(
            ExportSpec(_TwoOutputs(), (1, 1, 8, 8), t / "a.onnx")), "the module returns tuple; allowed: one output"),
        ("drift of 1e400", lambda t: LatencyPredictor(TINY, {L.key: 1.0 for L in space_layers(TINY)},
                                                      Correction()).rescaled(10 ** 400),
         "must be a positive factor"),
    ]


SPACE = model_zoo.get_spec("ofa_mbv3_tiny").space


def _tiny_net():
    return model_zoo.get_supernet("ofa_mbv3_tiny")


class _TwoOutputs(torch.nn.Module):
    def forward(self, x):
        return x, x


def test_numpy_numbers_are_accepted_where_integers_are():
    spec = model_zoo.get_spec("ofa_mbv3_tiny", resolutions=[np.int64(28)])
    assert spec.r == (28,) and type(spec.r[0]) is int
    es = ExportSpec(torch.nn.Identity(), tuple(np.array([1, 1, 16, 16])), "a.onnx")
    assert es.input_shape == (1, 1, 16, 16) and all(type(v) is int for v in es.input_shape)


def test_demo_names_the_empty_checkpoint(tmp_path):
    res = CliRunner().invoke(app, ["demo", "--checkpoint", "", "--workdir", str(tmp_path / "d")])
    assert res.exit_code == 2 and "error: checkpoint name is empty" in res.stderr, res.output


@pytest.mark.parametrize("case", _api_cases(), ids=lambda c: c[0])
def test_bad_api_input_is_one_value_error(tmp_path, case):
    _, call, match = case
    with pytest.raises(ValueError, match=re.escape(match)) as err:
        call(tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("budget", [[], ["--latency-ms", "1"]], ids=["range", "budget"])
def test_search_with_a_table_name_too_long_is_one_line(tmp_path, budget):
    res = CliRunner().invoke(app, ["search", "--checkpoint", "ofa_mbv3_tiny.fmnist", "--table",
                                   str(tmp_path / ("n" * 300 + ".sqlite")), *budget])
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and "too long" in res.stderr, res.output


def test_supernet_forward_names_a_bad_input():
    net = _tiny_net()
    cfg = SPACE.smallest()
    with pytest.raises(ValueError, match="input dtype torch.float64 differs"):
        net(torch.zeros(1, 1, 28, 28, dtype=torch.float64), cfg)
    with pytest.raises(ValueError, match=r"input shape \(1, 1, 0, 0\) must be"):
        net(torch.zeros(1, 1, 0, 0), cfg)


def test_agent_host_that_is_no_address_is_bad_input(tmp_path):
    token = tmp_path / "tok"
    token.write_text("secret-token")
    token.chmod(0o600)
    res = CliRunner().invoke(app, ["agent", "serve", "--host", "999.0.0.1", "--port", "0", "--token-file", str(token)])
    assert res.exit_code == 2 and "error: --host '999.0.0.1' is not an address" in res.stderr, res.output
