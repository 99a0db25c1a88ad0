"""Fault table of the second issue-13 probe: odd types, NaN/inf/huge numbers, empty names, corrupt table rows and
imports, hand-edited checkpoints, and a failed save that must not orphan a good checkpoint.

Every case must end in one ``ValueError`` naming the bad value (the CLI prints it as one ``error:`` line, exit 2).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sqlite3

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import model_zoo
from deploy_targets.base import ExportSpec
from elastic import SearchSpace, SubnetConfig
from elastic.training.data import DataSource
from model_zoo.checkpoint import checkpoint_paths
from model_zoo.training_recipes import recipe_from_dict
from ofakit.cli import app
from ofakit.search.evolution import EvolutionSettings
from ofakit.search.predictors import GBTPredictor, MLPPredictor
from ofakit.specialize import Budget
from profilers import BuildSettings, LatencyTable, Protocol
from profilers.record import Measurement, Stats, local_device
from profilers.store import RuntimeKey, spec_id

ZOO = "ofa_mbv3_tiny.fmnist"
SMALL = model_zoo.get_spec("ofa_mbv3_tiny").space.smallest()
TINY = model_zoo.get_spec("ofa_mbv3_tiny")
RECIPE = {"supernet": "ofa_mbv3_tiny", "strategy": "sandwich", "schedule": {"epochs": 1}}


def _m(ms: float = 1.0) -> Measurement:
    return Measurement(Stats(ms, ms, ms, ms, 0.0, ms, 10, 2), local_device(gpu=False), "onnxruntime", "1",
                       "CPUExecutionProvider", 1, "fp32", 1, (1, 1, 28, 28))


def _table(tmp_path, sql: str | None = None):
    path = tmp_path / "t.sqlite"
    with LatencyTable(path) as t:
        t.put_recipe("tiny", TINY.to_dict())
        t.put("local", "layer0", _m())
        t.put_correction("local", RuntimeKey.of(_m()), spec_id(TINY.to_dict()), {"features": ["one"], "coef": [1.0],
                                                                                 "samples": 1})
    if sql:
        with sqlite3.connect(path) as db:
            db.execute(sql)
    return path


def _import(tmp_path, edit):
    """Import an edited export of a good table into a copy of it; the copy must be left unchanged."""
    src = _table(tmp_path)
    with LatencyTable(src) as t:
        data = t.to_json()
    edit(data)
    (tmp_path / "in.json").write_text(json.dumps(data))
    before = src.read_bytes()
    try:
        with LatencyTable(src) as t:
            t.import_json(tmp_path / "in.json")
    finally:
        with LatencyTable(src) as t:
            assert len(t.entries()) == 1 and t.recipes() == ["tiny"]
    return before


def _export(tmp_path, **changes):
    mod = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    return ExportSpec(**{"module": mod, "input_shape": (1, 1, 28, 28), "out": tmp_path / "m.onnx", **changes})


def _cfg(**changes):
    return SubnetConfig(**{**SMALL.to_dict(), **changes})


API_CASES = [  # (id, call(tmp_path), expected ValueError message)
    ("config expand ratio infinite", lambda t: _cfg(e=[math.inf] * len(SMALL.e)), "must be a positive finite number"),
    ("space negative kernel", lambda t: SearchSpace([-3], [3], [2], [28], 1), "SearchSpace.ks holds -3"),
    ("space expand ratio NaN", lambda t: SearchSpace([3], [math.nan], [2], [28], 1), "SearchSpace.e holds nan"),
    ("space depth 0", lambda t: SearchSpace([3], [3], [0], [28], 1), "SearchSpace.d holds 0"),
    ("space mixed types", lambda t: SearchSpace([3, "5"], [3], [2], [28], 1), "SearchSpace.ks holds '5'"),
    ("space stages a float", lambda t: SearchSpace([3], [3], [2], [28], 2.5), "n_stages=2.5 must be a positive"),
    ("space not a list", lambda t: SearchSpace(3, [3], [2], [28], 1), "SearchSpace.ks=3 must be a list"),
    ("space dict lacks keys", lambda t: SearchSpace.from_dict({"ks": [3]}), "missing key(s) ['e', 'd', 'r'"),
    ("space sample without a generator", lambda t: TINY.space.sample(0), "rng=0 must be a numpy.random.Generator"),
    ("recipe resolutions empty", lambda t: model_zoo.get_spec("ofa_mbv3_tiny", resolutions=[]), "resolutions=[]"),
    ("recipe resolutions a string", lambda t: model_zoo.get_spec("ofa_mbv3_tiny", resolutions="28"),
     "resolutions='28' must be a non-empty list"),
    ("recipe resolution fractional", lambda t: model_zoo.get_spec("ofa_mbv3_tiny", resolutions=[28.5]),
     "allowed: 1 to 4096"),
    ("recipe a billion classes", lambda t: model_zoo.get_spec("ofa_mbv3_tiny", num_classes=10 ** 9),
     "num_classes=1000000000 must be an integer; allowed: 1 to 1,000,000"),
    ("recipe dropout a string", lambda t: model_zoo.get_spec("ofa_mbv3_tiny", dropout="x"), "dropout='x'"),
    ("checkpoint name None", lambda t: model_zoo.load_checkpoint(None), "checkpoint=None must be a zoo name"),
    ("publish name None", lambda t: model_zoo.publish_checkpoint(ZOO, None), "zoo name None must look like"),
    ("save checkpoint NaN metric", lambda t: model_zoo.save_checkpoint(model_zoo.get_supernet("ofa_mbv3_tiny"),
                                                                       t / "c", metrics={"top1": math.nan}),
     "are not plain JSON"),
    ("save checkpoint onto a folder", lambda t: model_zoo.save_checkpoint(
        model_zoo.get_supernet("ofa_mbv3_tiny"), (t / "d.json").mkdir() or t / "d"), "is a directory"),
    ("export shape None", lambda t: _export(t, input_shape=None), "input_shape=None must be four"),
    ("export shape with a bool", lambda t: _export(t, input_shape=(True, 1, 28, 28)), "input_shape=(True"),
    ("export out None", lambda t: _export(t, out=None), "out=None must be the artifact's path"),
    ("export opset typo", lambda t: _export(t, opset=170), "opset=170 is not supported; allowed: 17 to"),
    ("export inputs numpy", lambda t: _export(t, inputs=np.zeros((1, 1, 28, 28))), "inputs is a ndarray"),
    ("export calibration of another shape", lambda t: _export(t, calibration=(torch.zeros(1, 3, 5, 5),)),
     "calibration of shape (1, 3, 5, 5) do not match"),
    ("export module a string", lambda t: _export(t, module="net"), "module=str must be a torch.nn.Module"),
    ("table device info corrupt", lambda t: LatencyTable(_table(t, "UPDATE devices SET info = '[1]'")).devices(),
     "the description of device 'local' is corrupt"),
    ("table threads corrupt", lambda t: LatencyTable(_table(t, "UPDATE runtimes SET threads = 'many'")).runtimes(),
     "threads and batch must be positive integers"),
    ("table recipe spec corrupt", lambda t: LatencyTable(_table(t, "UPDATE recipes SET spec = '{x'")).recipe("tiny"),
     "the spec of recipe 'tiny' is not valid JSON"),
    ("table schema version text", lambda t: LatencyTable(_table(t, "UPDATE meta SET value = 'abc'")),
     "has table schema version abc"),
    ("table correction corrupt", lambda t: _load_pred(_table(t, "UPDATE corrections SET model = '{\"coef\": 1}'")),
     "stored correction"),
    ("table put NaN latency", lambda t: LatencyTable(t / "x.sqlite").put("local", "k", _m(math.nan)),
     "median_ms is nan, not a latency figure"),
    ("table put negative latency", lambda t: LatencyTable(t / "x.sqlite").put("local", "k", _m(-1.0)),
     "median_ms is -1.0"),
    ("table put device newline", lambda t: LatencyTable(t / "x.sqlite").put("lo\ncal", "k", _m()),
     "device name 'lo\\ncal' is not allowed"),
    ("table put empty key", lambda t: LatencyTable(t / "x.sqlite").put("local", "", _m()), "layer key ''"),
    ("table spec not a dict", lambda t: LatencyTable(t / "x.sqlite").put_recipe("r", 3), "spec of recipe 'r' is 3"),
    ("table spec NaN", lambda t: LatencyTable(t / "x.sqlite").put_recipe("r", {"x": math.nan}), "not plain JSON"),
    ("import NaN latency", lambda t: _import(t, lambda d: d["entries"][0].update(median_ms=math.nan)),
     "median_ms is nan"),
    ("import text latency", lambda t: _import(t, lambda d: d["entries"][0].update(median_ms="fast")),
     "median_ms is 'fast'"),
    ("import device newline", lambda t: _import(t, lambda d: d.update(devices={"a\nb": d["devices"]["local"]})),
     "imported device name 'a\\nb' is not allowed"),
    ("import spec not a spec", lambda t: _import(t, lambda d: d["recipes"].update(tiny=3)), "is malformed"),
    ("import spec without fields", lambda t: _import(t, lambda d: d["recipes"].update(other={"x": 1})),
     "is malformed"),
    ("import threads text", lambda t: _import(t, lambda d: d["entries"][0]["runtime"].update(threads="many")),
     "threads and batch must be positive integers"),
    ("import protocol not text", lambda t: _import(t, lambda d: d["entries"][0].update(protocol=5)),
     "has protocol=5"),
    ("space sample off-space resolution", lambda t: TINY.space.sample(np.random.default_rng(0), r=999),
     "r=999 is outside the space"),
    ("space largest off-space resolution", lambda t: TINY.space.largest(r=7), "r=7 is outside the space"),
    ("import a JSON list", lambda t: LatencyTable(t / "x.sqlite").import_json(_write(t, "l.json", "[1]")),
     "a JSON list, not an object"),
    ("import binary", lambda t: LatencyTable(t / "x.sqlite").import_json(_write(t, "b.json", b"\xff\xfe")),
     "cannot read latency table JSON"),
    ("import a missing table", lambda t: LatencyTable(t / "x.sqlite").import_json(t / "none.sqlite"),
     "none.sqlite does not exist"),
    ("import renamed to nothing", lambda t: LatencyTable(t / "y.sqlite").import_json(
        _table(t).with_suffix(".sqlite"), {"local": ""}), "--as device name '' is not allowed"),
    ("import a list object", lambda t: LatencyTable(t / "x.sqlite").import_json([1]), "allowed: a JSON export's"),
    ("table export onto a folder", lambda t: LatencyTable(_table(t)).export_json(t), "is a directory"),
    ("build settings threads True", lambda t: BuildSettings(threads=True), "threads=True must be a positive"),
    ("build settings precision", lambda t: BuildSettings(precision="fp64"), "precision='fp64' is not supported"),
    ("build settings provider empty", lambda t: BuildSettings(provider=""), "provider='' must be a non-empty"),
    ("build settings huge batch", lambda t: BuildSettings(batch=10 ** 9), "allowed: 1 to 4096"),
    ("build settings age text", lambda t: BuildSettings(max_age_s="30d"), "max_age_s='30d' must be"),
    ("build settings age infinite", lambda t: BuildSettings(max_age_s=math.inf), "max_age_s=inf must be"),
    ("build settings protocol text", lambda t: BuildSettings(protocol="quick"), "protocol='quick' must be"),
    ("protocol block of days", lambda t: Protocol(block_s=1e9), "block_s=1000000000.0 must be"),
    ("protocol a billion blocks", lambda t: Protocol(blocks=10 ** 9), "blocks=1000000000 must be"),
    ("budget of True ms", lambda t: Budget("local", "onnxruntime", True), "latency budget True ms"),
    ("budget without a device", lambda t: Budget("", "onnxruntime", 1.0), "budget device='' is not allowed"),
    ("budget parse None", lambda t: Budget.parse(None), "budget None must be a string"),
    ("evolution huge population", lambda t: EvolutionSettings(population=10 ** 9), "population=1000000000"),
    ("evolution fractional population", lambda t: EvolutionSettings(population=4.5), "population=4.5"),
    ("evolution probability text", lambda t: EvolutionSettings(mutate_prob="0.1"), "mutate_prob='0.1'"),
    ("evolution negative retries", lambda t: EvolutionSettings(retries=-1), "retries=-1"),
    ("gbt predict before fit", lambda t: GBTPredictor().predict(np.zeros((2, 3))), "is not fitted"),
    ("mlp fit on infinite labels", lambda t: MLPPredictor().fit(np.zeros((4, 3)), np.array([1, 2, math.inf, 0])),
     "NaN or infinite"),
    ("gbt fit on lengths that differ", lambda t: GBTPredictor().fit(np.zeros((4, 3)), np.zeros(2)), "y of shape (2,)"),
    ("training recipe None", lambda t: recipe_from_dict(None), "recipe 'custom' is 'None'"),
    ("training recipe empty source", lambda t: recipe_from_dict({**RECIPE, "data": {"source": ""}}),
     "[data] source=''"),
    ("training recipe no phases", lambda t: recipe_from_dict({"supernet": "ofa_mbv3_tiny", "phase": []}),
     "at least one phase"),
    ("training recipe phase names repeat", lambda t: recipe_from_dict({"supernet": "ofa_mbv3_tiny", "phase": [
        {"name": "a", "epochs": 1, "lr": 0.1}, {"name": "a", "epochs": 1, "lr": 0.1}]}), "must be distinct"),
    ("training recipe resolutions negative", lambda t: recipe_from_dict(
        {**RECIPE, "supernet_options": {"resolutions": [-1]}}), "resolutions=[-1]"),
    ("checkpoint's training data malformed", lambda t: _nodata(t).splits, "training data \"{'kind'"),
    ("data source empty", lambda t: DataSource.parse(""), "--data '' is empty"),
    ("data imagefolder without a folder", lambda t: DataSource.parse("imagefolder:"), "needs a directory"),
]


def _write(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
    return p


def _nodata(tmp_path):
    from ofakit.context import CheckpointContext
    weights, sidecar = checkpoint_paths(model_zoo.resolve_checkpoint(ZOO))
    shutil.copy(weights, tmp_path / "c.safetensors")
    meta = json.loads(sidecar.read_text())
    (tmp_path / "c.json").write_text(json.dumps({**meta, "training": {"data": {"kind": "fashion-mnist"}}}))
    return CheckpointContext(str(tmp_path / "c"))


def _load_pred(path):
    from profilers import LatencyPredictor
    return LatencyPredictor.load(path, "local", "onnxruntime", TINY)


@pytest.mark.parametrize("call, message", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_bad_api_input_is_a_one_line_value_error(tmp_path, call, message):
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        call(tmp_path)
    assert "\n" not in str(err.value).replace("\\n", "")


def test_a_sidecar_that_cannot_be_written_keeps_the_good_checkpoint(tmp_path):
    """Metrics that are not JSON used to replace the weights and then fail on the sidecar: sha256 mismatch."""
    good = model_zoo.save_checkpoint(model_zoo.load_checkpoint(ZOO), tmp_path / "net", metrics={"top1": 0.9})
    before = {p: p.read_bytes() for p in checkpoint_paths(good)}
    with pytest.raises(ValueError, match="are not plain JSON"):
        model_zoo.save_checkpoint(model_zoo.get_supernet("ofa_mbv3_tiny"), tmp_path / "net",
                                  metrics={"t": torch.ones(2)})
    assert {p: p.read_bytes() for p in checkpoint_paths(good)} == before
    assert model_zoo.load_checkpoint(tmp_path / "net").checkpoint_meta["metrics"] == {"top1": 0.9}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    (root / "subnet.json").write_text(SMALL.to_json())
    (root / "a_file").write_text("x")
    _table(root)
    return root


CLI_CASES = [  # (id, argv with {w} for the work folder, expected message)
    ("search: a billion generations", ["search", "--checkpoint", ZOO, "--table", "{w}/t.sqlite", "--latency-ms", "1",
                                       "--generations", "1000000000"], "generations=1000000000 must be an integer"),
    ("search: a billion individuals", ["search", "--checkpoint", ZOO, "--table", "{w}/t.sqlite", "--latency-ms", "1",
                                       "--population", "1000000000"], "population=1000000000 must be an integer"),
    ("ship: a billion retries", ["ship", "--checkpoint", ZOO, "--table", "{w}/t.sqlite", "--latency-ms", "1",
                                 "--out", "{w}/o.onnx", "--retries", "1000000000"], "--retries 1000000000 must be"),
    ("demo: workdir is a file", ["demo", "--workdir", "{w}/a_file"], "--workdir"),
    ("demo: no accuracy samples", ["demo", "--workdir", "{w}/demo", "--samples", "0"], "--samples 0 must be"),
    ("train: empty data source", ["train", "--recipe", "fmnist_tiny", "--data", "", "--out", "{w}/run"],
     "--data '' is empty"),
    ("train: imagefolder without a folder", ["train", "--recipe", "fmnist_tiny", "--data", "imagefolder:", "--out",
                                             "{w}/run"], "needs a directory"),
    ("profile import: a text file", ["profile", "import", "{w}/a_file", "--table", "{w}/t.sqlite"],
     "cannot read latency table JSON"),
    ("profile export: onto the table itself", ["profile", "export", "--table", "{w}/t.sqlite", "--out",
                                               "{w}/t.sqlite"], "is the table itself"),
    ("profile import: a device renamed twice", ["profile", "import", "{w}/t.sqlite", "--table", "{w}/t.sqlite",
                                                "--as", "local=a", "--as", "local=b"], "is already renamed"),
    ("agent: empty host", ["agent", "serve", "--host", "", "--token-file", "{w}/a_file"], "--host ''"),
    ("agent: a vanishing artifact limit", ["agent", "serve", "--max-mb", "1e-300", "--token-file", "{w}/a_file"],
     "--max-mb=1e-300"),
    ("profile refresh: empty recipe name", ["profile", "refresh", "--table", "{w}/t.sqlite", "--recipe", ""],
     "recipe '' has no table"),
    ("profile show: corrupt device row", ["profile", "show", "--table", "{w}/baddev.sqlite"], "is corrupt"),
]


@pytest.mark.parametrize("argv, message", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_bad_cli_input_is_one_line_error(work, argv, message):
    if not (work / "baddev.sqlite").exists():
        shutil.copy(work / "t.sqlite", work / "baddev.sqlite")
        with sqlite3.connect(work / "baddev.sqlite") as db:
            db.execute("UPDATE devices SET info = '[1, 2]'")
    res = CliRunner().invoke(app, [a.format(w=work) for a in argv])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert not (work / "o.onnx").exists() and not (work / "run").exists() and not (work / "demo").exists()
    with LatencyTable(work / "t.sqlite") as t:  # the table survives every case
        assert len(t.entries()) == 1


@pytest.mark.parametrize("argv", [["train", "--recipe", "fmnist_tiny", "--out", ""],
                                  ["search", "--latency-ms", "1", "--out", ""],
                                  ["demo", "--workdir", ""]], ids=["train", "search", "demo"])
def test_an_empty_path_is_a_usage_error_not_the_current_folder(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 2 and "is empty" in res.stderr and not list(tmp_path.iterdir())


def test_unavailable_runtime_creates_no_table(work):
    """A runtime that cannot run here is refused before the table file exists (nothing to clean up)."""
    res = CliRunner().invoke(app, ["profile", "build", "--recipe", "ofa_mbv3_tiny", "--runtime", "tensorrt",
                                   "--table", str(work / "new.sqlite")])
    assert res.exit_code == 2 and "error: runtime tensorrt is unavailable" in res.stderr, res.output
    assert not (work / "new.sqlite").exists()


def test_numpy_numbers_make_a_config():
    """Configs built from numpy arrays' elements (what a sampler or a sweep yields) are plain ints again."""
    cfg = SubnetConfig(ks=tuple(np.array(SMALL.ks, dtype=np.int64)), e=tuple(np.array(SMALL.e, dtype=np.float32)),
                       d=tuple(np.array(SMALL.d, dtype=np.int32)), r=np.int64(SMALL.r))
    assert cfg == SMALL and type(cfg.r) is int and all(type(k) is int for k in cfg.ks)
    assert SubnetConfig.from_json(cfg.to_json()) == SMALL


def test_demo_refuses_corrupt_weights_before_measuring(tmp_path):
    """A checkpoint whose weights fail their sha256 stops ``demo`` before the latency table's minutes of timing."""
    weights, sidecar = checkpoint_paths(model_zoo.resolve_checkpoint(ZOO))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "c.safetensors").write_bytes(bytes(data))
    shutil.copy(sidecar, tmp_path / "c.json")
    res = CliRunner().invoke(app, ["demo", "--checkpoint", str(tmp_path / "c"), "--workdir", str(tmp_path / "d")])
    assert res.exit_code == 2 and "error: sha256 mismatch" in res.stderr, res.output
    assert not (tmp_path / "d" / "lut.sqlite").exists()
