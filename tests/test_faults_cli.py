"""Fault table for the command line (issue 13): hand-edited checkpoints, bad paths, corrupt tables.

Every case must exit with status 2 and one ``error:`` line naming the problem: no traceback, no silent
success, nothing written where it should not be.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sqlite3

import pytest
import torch
from typer.testing import CliRunner

import model_zoo
from elastic import SubnetConfig
from model_zoo.checkpoint import checkpoint_paths
from ofakit.cli import app
from profilers import LatencyTable
from profilers.builder import BuildSettings

ZOO = "ofa_mbv3_tiny.fmnist"


def _edit(meta: dict, **changes) -> dict:
    out = {**meta, **changes}
    return {k: v for k, v in out.items() if v is not _DROP}


_DROP = object()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    weights, sidecar = checkpoint_paths(model_zoo.resolve_checkpoint(ZOO))
    meta = json.loads(sidecar.read_text())
    variants = {"no_json": "{not json", "no_spec": _edit(meta, spec=_DROP), "bad_spec": _edit(meta, spec=3),
                "bad_recipe": _edit(meta, recipe="resnet9"), "list": [1, 2],
                "bad_sha": _edit(meta, sha256="0" * 64)}
    for name, content in variants.items():
        shutil.copy(weights, root / f"{name}.safetensors")
        (root / f"{name}.json").write_text(content if isinstance(content, str) else json.dumps(content))
    net = model_zoo.load_checkpoint(ZOO)
    (root / "subnet.json").write_text(net.space.smallest().to_json())
    (root / "garbage.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x13" * 200)
    (root / "a_file").write_text("x")
    for suffix in (".safetensors", ".json", ".accuracy.jsonl"):  # a copy: searches write caches beside it
        shutil.copy(weights.with_name(f"{weights.stem}{suffix}"), root / f"good{suffix}")
    (root / "deep.json").write_text("[" * 100000 + "]" * 100000)
    (root / "bad.yaml").write_text("a: [1,\n")
    (root / "bin.toml").write_bytes(b"\xff\xfe\x00")
    return root


CASES = [  # (id, argv with {w} for the work folder, expected message)
    ("sidecar not JSON", ["export", "--checkpoint", "{w}/no_json", "--subnet", "{w}/subnet.json", "--out", "{w}/o.onnx"],
     "is not valid JSON"),
    ("sidecar without spec", ["export", "--checkpoint", "{w}/no_spec", "--subnet", "{w}/subnet.json", "--out",
                              "{w}/o.onnx"], "lacks ['spec']"),
    ("sidecar spec not a table", ["export", "--checkpoint", "{w}/bad_spec", "--subnet", "{w}/subnet.json", "--out",
                                  "{w}/o.onnx"], "has a bad 'spec' or 'recipe'"),
    ("sidecar unknown recipe", ["export", "--checkpoint", "{w}/bad_recipe", "--subnet", "{w}/subnet.json", "--out",
                                "{w}/o.onnx"], "has a bad 'spec' or 'recipe'"),
    ("sidecar a list", ["export", "--checkpoint", "{w}/list", "--subnet", "{w}/subnet.json", "--out", "{w}/o.onnx"],
     "is not an ofa-kit checkpoint sidecar"),
    ("weights do not match", ["export", "--checkpoint", "{w}/bad_sha", "--subnet", "{w}/subnet.json", "--out",
                              "{w}/o.onnx"], "sha256 mismatch"),
    ("export into a file's folder", ["export", "--checkpoint", ZOO, "--subnet", "{w}/subnet.json", "--out",
                                     "{w}/a_file/o.onnx"], "a_file"),
    ("export to another suffix", ["export", "--checkpoint", ZOO, "--subnet", "{w}/subnet.json", "--out", "{w}/o.txt"],
     "name must end with .onnx"),
    ("export onto a folder", ["export", "--checkpoint", ZOO, "--subnet", "{w}/subnet.json", "--out", "{w}"],
     "name must end with .onnx"),
    ("subnet file is a folder", ["export", "--checkpoint", ZOO, "--subnet", "{w}", "--out", "{w}/o.onnx"],
     "--subnet"),
    ("table is garbage", ["profile", "show", "--table", "{w}/garbage.sqlite"], "is not a latency table"),
    ("table is a folder", ["search", "--checkpoint", ZOO, "--table", "{w}", "--latency-ms", "1"], "is a directory"),
    ("train into a file", ["train", "--recipe", "fmnist_tiny", "--out", "{w}/a_file"], "a_file"),
    ("train: unknown recipe", ["train", "--recipe", "{w}/none.toml", "--out", "{w}/run"], "unknown training recipe"),
    ("subnet file nested too deeply", ["export", "--checkpoint", ZOO, "--subnet", "{w}/deep.json", "--out",
                                       "{w}/o.onnx"], "nested too deeply"),
    ("empty checkpoint name", ["export", "--checkpoint", "", "--subnet", "{w}/subnet.json", "--out", "{w}/o.onnx"],
     "checkpoint name is empty"),
    ("train: recipe not valid YAML", ["train", "--recipe", "{w}/bad.yaml", "--out", "{w}/run"], "is not valid YAML"),
    ("train: recipe not UTF-8", ["train", "--recipe", "{w}/bin.toml", "--out", "{w}/run"], "is not a text recipe"),
    # refused before the search's minutes of work, not after them (or never)
    ("search: MACs cap NaN", ["search", "--checkpoint", ZOO, "--table", "{w}/t.sqlite", "--latency-ms", "5",
                              "--max-macs", "nan"], "--max-macs nan must be a positive number"),
    ("search: negative MACs cap", ["search", "--checkpoint", ZOO, "--table", "{w}/t.sqlite", "--latency-ms", "5",
                                   "--max-macs", "-5"], "--max-macs -5.0 must be a positive number"),
    ("search: params cap infinite", ["search", "--checkpoint", ZOO, "--table", "{w}/t.sqlite", "--latency-ms", "5",
                                     "--max-params", "inf"], "--max-params inf must be a positive number"),
    ("search: --out is a file", ["search", "--checkpoint", ZOO, "--table", "{w}/t.sqlite", "--latency-ms", "5",
                                 "--out", "{w}/a_file"], "is a file, not a directory"),
    ("search: --out under a file", ["search", "--checkpoint", ZOO, "--table", "{w}/t.sqlite", "--latency-ms", "5",
                                    "--out", "{w}/a_file/x"], "is a file, not a directory"),
    ("search: negative samples", ["search", "--checkpoint", ZOO, "--table", "{w}/t.sqlite", "--latency-ms", "5",
                                  "--samples", "-3"], "--samples -3 must be an integer from 12 to"),
    ("search: absurd samples", ["search", "--checkpoint", ZOO, "--table", "{w}/t.sqlite", "--latency-ms", "5",
                                "--samples", "100000000"], "--samples 100000000 must be an integer from 12 to"),
    ("search: --also without a budget", ["search", "--checkpoint", ZOO, "--table", "{w}/t.sqlite", "--also",
                                         "local,onnxruntime,1"], "needs --latency-ms"),
    ("ship: unknown target", ["ship", "--checkpoint", ZOO, "--table", "{w}/t.sqlite", "--latency-ms", "5",
                              "--out", "{w}/o.onnx", "--target", "foo"], "--target 'foo' is unknown"),
    ("ship: artifact suffix of another target", ["ship", "--checkpoint", ZOO, "--table", "{w}/t.sqlite",
                                                 "--latency-ms", "5", "--out", "{w}/o.txt"], "must end with .onnx"),
    ("search: negative seed", ["search", "--checkpoint", ZOO, "--table", "{w}/t.sqlite", "--latency-ms", "5",
                               "--seed", "-1"], "--seed -1 must be an integer from 0 to"),
    ("ship: negative retries", ["ship", "--checkpoint", ZOO, "--table", "{w}/t.sqlite", "--latency-ms", "5",
                                "--out", "{w}/o.onnx", "--retries", "-1"], "--retries -1 must be >= 0"),
    ("profile build: empty name", ["profile", "build", "--recipe", "ofa_mbv3_tiny", "--table", "{w}/t2.sqlite",
                                   "--name", ""], "--name '' is not allowed"),
    ("profile build: name with a newline", ["profile", "build", "--recipe", "ofa_mbv3_tiny", "--table",
                                            "{w}/t2.sqlite", "--name", "a\nb"], "--name 'a\\nb' is not allowed"),
    ("profile build: threads beyond the cores", ["profile", "build", "--recipe", "ofa_mbv3_tiny", "--table",
                                                 "{w}/t2.sqlite", "--threads", "100000"], "--threads 100000: this machine has"),
    ("profile build: resolution out of range", ["profile", "build", "--recipe", "ofa_mbv3_tiny", "--table",
                                                "{w}/t2.sqlite", "--resolutions", "100000"],
     "--resolutions [100000] out of range; allowed: 8 to 1024"),
    ("profile build: resolution the checkpoint lacks", ["profile", "build", "--recipe", ZOO, "--table",
                                                        "{w}/t2.sqlite", "--resolutions", "64"],
     "--resolutions [64] are not resolutions of checkpoint"),
    ("ship: MACs cap NaN", ["ship", "--checkpoint", ZOO, "--table", "{w}/t.sqlite", "--latency-ms", "5",
                            "--out", "{w}/o.onnx", "--max-macs", "nan"], "--max-macs nan must be a positive number"),
]


@pytest.mark.parametrize("argv, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_error(work, argv, message):
    res = CliRunner().invoke(app, [a.format(w=work) for a in argv])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
    assert not (work / "o.onnx").exists() and not (work / "run").exists()


def _acc_cache(tmp_path, bad_line: str):
    """A copy of the zoo's accuracy cache with ``bad_line`` put in the middle."""
    lines = (model_zoo.resolve_checkpoint(ZOO).parent / f"{ZOO}.accuracy.jsonl").read_text().splitlines()
    mid = len(lines) // 2
    path = tmp_path / "acc.jsonl"
    path.write_text("\n".join(lines[:mid] + [bad_line] + lines[mid:]) + "\n")
    return path


def _export(tmp_path, **changes):
    from deploy_targets.base import ExportSpec
    mod = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    return ExportSpec(**{"module": mod, "input_shape": (1, 1, 28, 28), "out": tmp_path / "m.onnx", **changes})


API_CASES = [  # (id, call(tmp_path), expected ValueError message): Python APIs the CLI turns into one-line errors
    ("subnet JSON nested too deeply", lambda t: SubnetConfig.from_json("[" * 100000 + "]" * 100000),
     "nested too deeply"),
    ("checkpoint name too long", lambda t: model_zoo.load_checkpoint("x" * 5000), "cannot be looked up"),
    ("checkpoint sidecar not UTF-8", lambda t: _bad_sidecar(t, b"\xff\xfe\x00"), "is not valid JSON"),
    ("accuracy cache: broken line in the middle", lambda t: _load_acc(_acc_cache(t, "{broken")), "is not valid JSON"),
    ("accuracy cache: record not an object", lambda t: _load_acc(_acc_cache(t, "[1, 2, 3]")), "not an accuracy record"),
    ("accuracy cache: record without config", lambda t: _load_acc(_acc_cache(t, '{"val_top1": 0.5}')),
     "not an accuracy record"),
    ("accuracy cache: top-1 NaN", lambda t: _load_acc(_acc_cache(t, '{"config": "{}", "val_top1": NaN}')),
     "not an accuracy record"),
    ("accuracy cache: top-1 infinite", lambda t: _load_acc(_acc_cache(t, '{"config": "{}", "val_top1": Infinity}')),
     "not an accuracy record"),
    ("accuracy cache: top-1 a string", lambda t: _load_acc(_acc_cache(t, '{"config": "{}", "val_top1": "91%"}')),
     "not an accuracy record"),
    ("export atol NaN", lambda t: _export(t, atol=math.nan), "atol=nan"),
    ("export atol negative", lambda t: _export(t, atol=-1.0), "atol=-1.0"),
    ("export atol infinite", lambda t: _export(t, atol=math.inf), "atol=inf"),
    ("export dynamic_batch not a bool", lambda t: _export(t, dynamic_batch="no"), "dynamic_batch='no'"),
    ("export inputs of another shape", lambda t: _export(t, inputs=torch.zeros(1, 3, 5, 5)), "do not match"),
    ("table timeout negative", lambda t: LatencyTable(t / "x.sqlite", timeout=-1), "timeout=-1 must be"),
    ("table timeout NaN", lambda t: LatencyTable(t / "x.sqlite", timeout=math.nan), "timeout=nan must be"),
    ("table: text in a latency column", lambda t: _corrupt_entry(t, "median_ms", "fast"),
     "has median_ms is 'fast', not a latency figure"),
    ("table: text in a calibration column", lambda t: _corrupt_calibration(t, "a lot"),
     "has measured_ms is 'a lot', not a latency figure"),
    ("table: empty recipe name", lambda t: LatencyTable(t / "x.sqlite").put_recipe("", {}), "recipe name '' is not"),
    ("build settings: absurd threads", lambda t: BuildSettings(threads=100000), "threads=100000 is more than"),
    ("build settings: negative seed", lambda t: BuildSettings(seed=-1), "seed=-1 must be an integer; allowed: 0 to"),
    ("build settings: absurd calibration", lambda t: BuildSettings(calibration_subnets=10**9), "is too many"),
]


def _measurement(ms: float = 1.0):
    from profilers.record import Measurement, Stats, local_device
    return Measurement(Stats(ms, ms, ms, ms, 0.0, ms, 10, 2), local_device(gpu=False), "onnxruntime", "1",
                       "CPUExecutionProvider", 1, "fp32", 1, (1, 1, 28, 28))


def _corrupt_entry(tmp_path, column: str, value):
    path = tmp_path / "x.sqlite"
    with LatencyTable(path) as t:
        t.put("local", "layer0", _measurement())
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE entries SET {column} = ?", (value,))
    with LatencyTable(path) as t:
        return t.entries("local")


def _corrupt_calibration(tmp_path, value):
    from profilers.store import RuntimeKey
    path = tmp_path / "x.sqlite"
    m = _measurement()
    with LatencyTable(path) as t:
        t.add_calibration("local", "sid", '{"ks":[3],"e":[3],"d":[1],"r":28}', m)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE calibrations SET measured_ms = ?", (value,))
    with LatencyTable(path) as t:
        return t.calibration("local", RuntimeKey.of(m), "sid")


def _load_acc(path):
    from ofakit.search.accuracy import load_accuracy_data
    return load_accuracy_data(path, model_zoo.load_checkpoint(ZOO).space)


def _bad_sidecar(tmp_path, content: bytes):
    weights, sidecar = checkpoint_paths(model_zoo.resolve_checkpoint(ZOO))
    shutil.copy(weights, tmp_path / "c.safetensors")
    (tmp_path / "c.json").write_bytes(content)
    return model_zoo.load_checkpoint(tmp_path / "c")


@pytest.mark.parametrize("call, message", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_bad_api_input_is_a_value_error(tmp_path, call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call(tmp_path)
    assert not (tmp_path / "m.onnx").exists()


def test_accuracy_cache_with_a_broken_middle_line_is_not_truncated(tmp_path):
    """Resuming a cache must not cut off the records after a hand-damaged line (lost data)."""
    from ofakit.search.accuracy import build_accuracy_data
    path = _acc_cache(tmp_path, "{broken")
    before = path.read_bytes()
    header = json.loads(before.splitlines()[0])
    with pytest.raises(ValueError, match="line"):
        build_accuracy_data(model_zoo.load_checkpoint(ZOO).space, lambda cfg: 0.5, path, 10,
                            {k: v for k, v in header.items() if k not in ("format", "version", "seed")})
    assert path.read_bytes() == before


@pytest.mark.parametrize("argv", [
    ["export", "--checkpoint", ZOO, "--subnet", "{w}/subnet.json", "--out", "{w}/locked/o.onnx"],
    ["profile", "export", "--table", "{w}/good.sqlite", "--out", "{w}/locked/t.json"],
    ["search", "--checkpoint", "{w}/good", "--table", "{w}/good.sqlite", "--latency-ms", "100", "--samples", "20",
     "--generations", "5", "--no-measure", "--no-drift-check", "--out", "{w}/locked/s"],
], ids=["export", "profile export", "search"])
def test_an_unwritable_output_folder_is_one_line_error(work, argv, monkeypatch):
    """A folder the user may not write to (tests run as root, so the denial is injected where files are made):
    one `error:` line naming the path and the reason, exit 2, and nothing left behind."""
    import errno
    import os as _os
    import tempfile as _tempfile

    if not (work / "good.sqlite").exists():
        from profilers.builder import build_table
        from profilers.record import Protocol
        from profilers.runtimes import get_runtime

        quick = Protocol(warmup_s=0, warmup_runs=2, blocks=2, block_s=0.001, min_runs_per_block=2, max_runs_per_block=4)
        with LatencyTable(work / "good.sqlite") as t:
            build_table(t, "ofa_mbv3_tiny", model_zoo.load_checkpoint(ZOO).spec, get_runtime("onnxruntime"),
                        settings=BuildSettings(protocol=quick, calibration_subnets=2))
    locked = work / "locked"
    locked.mkdir(exist_ok=True)
    real_mkstemp, real_mkdir, real_open = _tempfile.mkstemp, _os.mkdir, _os.open

    def denied(path) -> bool:
        return str(locked) in str(path)

    def mkstemp(*a, **kw):
        if denied(kw.get("dir", a[2] if len(a) > 2 else "")):
            raise PermissionError(errno.EACCES, "Permission denied", str(kw.get("dir")))
        return real_mkstemp(*a, **kw)

    def mkdir(path, *a, **kw):
        if denied(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_mkdir(path, *a, **kw)

    def open_(path, flags, *a, **kw):
        if denied(path) and flags & (_os.O_WRONLY | _os.O_RDWR | _os.O_CREAT):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(_tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(_os, "mkdir", mkdir)
    monkeypatch.setattr(_os, "open", open_)
    res = CliRunner().invoke(app, [a.format(w=work) for a in argv])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "locked" in lines[0] and ("Permission denied" in lines[0] or "not writable" in lines[0]), lines[0]
    assert not list(locked.iterdir())
