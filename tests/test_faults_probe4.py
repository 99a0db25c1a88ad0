"""Faults of the fourth issue-13 probe: ``ofakit demo`` options, the default drift check of ``search`` and
``ship`` against odd tables (no calibration subnets, empty, a folder, another recipe, read-only), ExecuTorch
exports with bad settings or paths, subnet files off the space, and the drift-settling and demo helpers
called with bad arguments.

Every case must end in one ``ValueError`` (or the CLI's one ``error:`` line, exit status 2) and leave nothing
written or changed. The ExecuTorch lowering itself (a dynamic batch bounded below ``max_batch``) is tested in
``tests/test_executorch.py``: one lowering costs more than this whole file.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

import model_zoo
from deploy_targets import executorch_export, get_exporter
from elastic import MobileNetV3Spec, SubnetConfig
from ofakit.cli import app
from ofakit.cli.demo import demo_budgets, demo_checks
from ofakit.ship import ship
from ofakit.specialize import Budget
from profilers import LatencyPredictor
from profilers.builder import BuildSettings, build_table
from profilers.drift import DriftCheck, Referenced, check_drift, lasting, settled
from profilers.record import Protocol
from profilers.runtimes import get_runtime
from profilers.store import LatencyTable, RuntimeKey, spec_id

QUICK = Protocol(warmup_s=0, warmup_runs=2, blocks=2, block_s=0.001, min_runs_per_block=2, max_runs_per_block=4)
SPEC = model_zoo.get_spec("ofa_mbv3_tiny", resolutions=(28,))  # the table's recipe: not any zoo checkpoint's
ZOO = "ofa_mbv3_tiny.fmnist"  # space ks 3/5/7, e 3/4/6, d 2/3/4, r 28/30/32
DEPTH1 = "ofa_mbv3_tiny_d1234_e2346_k357.fmnist_v2"  # the default checkpoint: depth 1 is in its space
ET = pytest.mark.skipif(get_exporter("executorch").unavailable() is not None,
                        reason=f"executorch: {get_exporter('executorch').unavailable()}")  # the exporter's own reason
OV = pytest.mark.skipif(get_exporter("openvino").unavailable() is not None,
                        reason=f"openvino: {get_exporter('openvino').unavailable()}")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """One tiny table (two calibration subnets) and the odd files made from it."""
    root = tmp_path_factory.mktemp("probe4")
    with LatencyTable(root / "lut.sqlite") as t:
        build_table(t, "tiny28", SPEC, get_runtime("onnxruntime"),
                    settings=BuildSettings(protocol=QUICK, calibration_subnets=2))
    shutil.copy(root / "lut.sqlite", root / "nocal.sqlite")
    db = sqlite3.connect(root / "nocal.sqlite")
    with db:
        db.execute("DELETE FROM calibrations")
    db.close()  # now, not when collected during a case (its checkpoint would change the file)
    (root / "empty.sqlite").write_bytes(b"")
    (root / "adir").mkdir()
    (root / "adir.pte").mkdir()
    (root / "a_file").write_text("x")
    (root / "wd_dir").mkdir()
    (root / "wd_dir" / "lut.sqlite").mkdir()
    (root / "wd_junk").mkdir()
    (root / "wd_junk" / "lut.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x13" * 200)
    (root / "wd_ro").mkdir()
    shutil.copy(root / "lut.sqlite", root / "wd_ro" / "lut.sqlite")
    cfg = {"ks": [3] * 16, "e": [3] * 16, "d": [2] * 4, "r": 28}  # the smallest subnet of ZOO
    subnets = {"sub": cfg, "sub_r": {**cfg, "r": 999}, "sub_ks": {**cfg, "ks": [9] * len(cfg["ks"])},
               "sub_d": {**cfg, "d": [-1] * len(cfg["d"])}, "sub_e": {**cfg, "e": cfg["e"][:-1]},
               "sub_rf": {**cfg, "r": 28.5}, "sub_x": {**cfg, "extra": 1},
               "sub_acc": {"config": cfg, "predicted_accuracy": 2},
               "sub_bool": {**cfg, "e": [2] * 16, "d": [True] * 4, "r": 16}}  # DEPTH1's smallest, depths true
    for name, data in subnets.items():
        (root / f"{name}.json").write_text(json.dumps(data))
    return root


@pytest.fixture
def read_only(work, monkeypatch):
    """The tables under ``wd_ro`` and ``ro.sqlite`` as an unprivileged user sees read-only files (root writes
    any file, whatever its mode)."""
    shutil.copy(work / "lut.sqlite", work / "ro.sqlite")
    ro = {(work / "ro.sqlite").resolve(), (work / "wd_ro" / "lut.sqlite").resolve()}
    real = os.access

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and Path(path).resolve() in ro:
            return False
        return real(path, mode, *args, **kwargs)
    monkeypatch.setattr(os, "access", access)
    return work / "ro.sqlite"


def _state(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` (SQLite's own -wal/-shm companions aside) with its size and mtime."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if not p.name.endswith(("-wal", "-shm"))}


SEARCH = ["search", "--checkpoint", ZOO, "--latency-ms", "5", "--population", "8", "--generations", "2",
          "--no-measure", "--out", "{w}/search_out"]
SHIP = ["ship", "--checkpoint", ZOO, "--latency-ms", "5", "--out", "{w}/shipped.onnx"]
EXPORT = ["export", "--checkpoint", ZOO, "--target", "executorch", "--subnet", "{w}/sub.json"]
DEMO = ["demo", "--workdir", "{w}/demo_new"]

CLI_CASES = [  # (id, argv with {w} for the work folder, expected message)
    # ofakit demo: refused before any measuring, and the new --workdir is not made
    ("demo: one sample", [*DEMO, "--samples", "1"], "--samples 1 must be an integer from 12 to 20000"),
    ("demo: negative samples", [*DEMO, "--samples", "-5"], "--samples -5 must be an integer from 12 to"),
    ("demo: absurd samples", [*DEMO, "--samples", "20001"], "--samples 20001 must be an integer from 12 to"),
    ("demo: negative retries", [*DEMO, "--retries", "-1"], "--retries -1 must be >= 0 and at most 100"),
    ("demo: workdir is a file", ["demo", "--workdir", "{w}/a_file"], "a_file is a file, not a directory"),
    ("demo: workdir under a file", ["demo", "--workdir", "{w}/a_file/x/y"], "a_file is a file, not a directory"),
    ("demo: unknown runtime", [*DEMO, "--runtime", "foo"], "--runtime 'foo' is unknown; allowed: ["),
    ("demo: empty runtime", [*DEMO, "--runtime", ""], "--runtime '' is unknown"),
    ("demo: unknown checkpoint", [*DEMO, "--checkpoint", "nosuch"], "checkpoint 'nosuch' not found"),
    ("demo: empty checkpoint", [*DEMO, "--checkpoint", ""], "checkpoint name is empty"),
    ("demo: no drift check, bad samples", [*DEMO, "--no-drift-check", "--no-executorch", "--samples", "0"],
     "--samples 0 must be"),
    ("demo: its table is a folder", ["demo", "--workdir", "{w}/wd_dir"], "wd_dir/lut.sqlite is a directory"),
    ("demo: its table is not SQLite", ["demo", "--workdir", "{w}/wd_junk"], "is not a latency table"),
    # search and ship (drift check on by default) against odd tables
    ("search: empty table file", [*SEARCH, "--table", "{w}/empty.sqlite"], "empty.sqlite is not a latency table"),
    ("ship: empty table file", [*SHIP, "--table", "{w}/empty.sqlite"], "empty.sqlite is not a latency table"),
    ("search: table is a folder", [*SEARCH, "--table", "{w}/adir"], "adir is a directory"),
    ("ship: table is a folder", [*SHIP, "--table", "{w}/adir"], "adir is a directory"),
    ("search: no table", [*SEARCH, "--table", "{w}/none.sqlite"], "none.sqlite does not exist"),
    ("search: table of another recipe", [*SEARCH, "--table", "{w}/lut.sqlite"], "the table lacks"),
    ("ship: table of another recipe", ["ship", "--table", "{w}/lut.sqlite", "--latency-ms", "5", "--out",
                                       "{w}/shipped.onnx", "--no-build-table"], "the table lacks"),
    ("ship: artifact under a file", [*SHIP[:-1], "{w}/a_file/o.onnx", "--table", "{w}/lut.sqlite"],
     "a_file is a file, not a directory"),
    ("ship: a folder path", [*SHIP[:-1], "{w}/new.onnx/", "--table", "{w}/lut.sqlite"],
     "out='{w}/new.onnx/' ends with a slash, so it names a directory; give the .onnx file"),
    # export --target executorch
    pytest.param("export: fp16", [*EXPORT, "--out", "{w}/o.pte", "--precision", "fp16"],
                 "executorch does not support precision='fp16'; allowed: ['fp32', 'int8']", marks=ET),
    pytest.param("export: unknown precision", [*EXPORT, "--out", "{w}/o.pte", "--precision", "int4"],
                 "executorch does not support precision='int4'", marks=ET),
    pytest.param("export: another suffix", [*EXPORT, "--out", "{w}/o.onnx"], "must end with .pte", marks=ET),
    pytest.param("export: onto a folder", [*EXPORT, "--out", "{w}/adir.pte"], "is a directory", marks=ET),
    pytest.param("export: a folder path", [*EXPORT, "--out", "{w}/new.pte/"],
                 "out='{w}/new.pte/' ends with a slash, so it names a directory; give the .pte file", marks=ET),
    ("export: under a file", [*EXPORT, "--out", "{w}/a_file/o.pte"], "a_file is a file, not a directory"),
    ("export: to an agent", [*EXPORT, "--out", "{w}/o.pte", "--device", "http://127.0.0.1:1"],
     "is for building TensorRT engines"),
    ("export: resolution off the space", [*EXPORT[:-1], "{w}/sub_r.json", "--out", "{w}/o.pte"],
     "SubnetConfig.r=999 is outside the space; allowed: [28, 30, 32]"),
    ("export: kernel off the space", [*EXPORT[:-1], "{w}/sub_ks.json", "--out", "{w}/o.pte"],
     "SubnetConfig.ks[0]=9 is outside the space; allowed: [3, 5, 7]"),
    ("export: negative depth", [*EXPORT[:-1], "{w}/sub_d.json", "--out", "{w}/o.pte"],
     "SubnetConfig.d[0]=-1 must be a positive integer"),
    ("export: lists of other lengths", [*EXPORT[:-1], "{w}/sub_e.json", "--out", "{w}/o.pte"], "they must match"),
    ("export: fractional resolution", [*EXPORT[:-1], "{w}/sub_rf.json", "--out", "{w}/o.pte"],
     "SubnetConfig.r=28.5 must be a positive integer"),
    ("export: unknown key", [*EXPORT[:-1], "{w}/sub_x.json", "--out", "{w}/o.pte"], "unknown SubnetConfig key(s)"),
    ("export: accuracy above 1", [*EXPORT[:-1], "{w}/sub_acc.json", "--out", "{w}/o.pte"],
     "predicted_accuracy=2; allowed: a top-1 from 0 to 1"),
    ("export: depths true, not 1", ["export", "--checkpoint", DEPTH1, "--target", "executorch", "--subnet",
                                    "{w}/sub_bool.json", "--out", "{w}/o.pte"],
     "SubnetConfig.d[0]=True must be a positive integer"),
]


@pytest.mark.parametrize("target, suffix", [pytest.param("executorch", ".pte", marks=ET),
                                            pytest.param("openvino", ".xml", marks=OV), ("onnx", ".onnx")])
def test_a_runtime_error_in_the_parity_check_is_one_line(work, monkeypatch, target, suffix):
    """ExecuTorch and OpenVINO report an artifact they cannot load or run as a RuntimeError, onnxruntime as
    its own exception types; raised in the export's parity check it surfaced as a traceback: it is a parity
    failure, one ``error:`` line, nothing written."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    def broken(*args, **kwargs):
        raise (Fail if target == "onnx" else RuntimeError)("method forward: execute failed with error 0x12\nsecond")
    if target == "onnx":
        monkeypatch.setattr(get_exporter("onnx").__class__, "bind", lambda self, *args, **kwargs: broken)
    elif target == "executorch":
        monkeypatch.setattr(executorch_export, "program_bytes", lambda spec: b"no program")  # (no lowering)
        monkeypatch.setattr(executorch_export, "Forward", broken)
    else:
        monkeypatch.setattr(get_exporter("openvino").__class__, "bind", lambda self, *args, **kwargs: broken)
    before = _state(work)
    res = CliRunner().invoke(app, ["export", "--checkpoint", ZOO, "--target", target, "--subnet", f"{work}/sub.json",
                                   "--out", f"{work}/o{suffix}"])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "parity check failed" in lines[0], res.stderr
    assert "execute failed with error 0x12" in lines[0] and _state(work) == before


def _ids(cases):
    return [c.values[0] if hasattr(c, "values") else c[0] for c in cases]


def _params(cases):
    return [pytest.param(*c.values[1:], marks=c.marks) if hasattr(c, "values") else pytest.param(*c[1:])
            for c in cases]


@pytest.mark.parametrize("argv, message", _params(CLI_CASES), ids=_ids(CLI_CASES))
def test_bad_input_is_one_line_error(work, argv, message):
    before = _state(work)
    res = CliRunner().invoke(app, [a.format(w=work) for a in argv])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message.format(w=work) in lines[0], res.stderr
    assert _state(work) == before  # nothing written, made or changed (no workdir, artifact, table change)


def test_read_only_tables_fail_before_the_work(read_only, work):
    """ship and demo store measurements in their table: a read-only one is refused before the search or
    build, naming the way out; nothing is written."""
    before = _state(work)
    res = CliRunner().invoke(app, [a.format(w=work) for a in SHIP] + ["--table", str(read_only)])
    assert res.exit_code == 2 and "ro.sqlite is read-only" in res.stderr and "--retries 0" in res.stderr, res.output
    res = CliRunner().invoke(app, ["demo", "--workdir", str(work / "wd_ro")])
    assert res.exit_code == 2 and "wd_ro/lut.sqlite is read-only" in res.stderr, res.output
    assert len(res.stderr.strip().splitlines()) == 1 and _state(work) == before


def test_drift_check_of_a_read_only_table_still_rescales(read_only, caplog):
    """The reference subnets re-timed against a read-only table give a ratio (search rescales by it); the check
    is not stored and says so, instead of being thrown away after the measuring."""
    data = read_only.read_bytes()
    check = check_drift(read_only, SPEC, "local", get_runtime("onnxruntime"), "onnxruntime", protocol=QUICK,
                        settle=False)
    assert check.ratio > 0 and len(check.references) == 2
    assert "not recorded" in caplog.text and read_only.read_bytes() == data
    with LatencyTable(read_only, readonly=True) as t:
        assert t.drift("local", RuntimeKey("onnxruntime", "CPUExecutionProvider"), spec_id(SPEC.to_dict())) == []


def test_ship_refuses_a_read_only_table_before_the_work(read_only, work):
    """The library's closed loop found its table read-only only when storing a miss, after a search, an
    export and two measurements; it refuses it first, as ``ofakit ship`` does."""
    spz = SimpleNamespace(table=read_only)  # nothing to search or export with: any work would fail otherwise
    before = _state(work)
    with pytest.raises(ValueError) as err:
        ship(spz, [Budget("local", "onnxruntime", 5.0)], "onnx", work / "shipped.onnx")
    assert "ro.sqlite is read-only" in str(err.value) and "pass retries=0" in str(err.value)
    assert "\n" not in str(err.value) and _state(work) == before


def test_show_check_drift_of_a_read_only_table_shows_the_check_just_made(read_only):
    """``profile show --check-drift`` re-timed the references of a read-only table, could not store the
    check, and showed the older stored one: it shows the new one, marked as not recorded."""
    rk, sid = RuntimeKey("onnxruntime", "CPUExecutionProvider"), spec_id(SPEC.to_dict())
    with LatencyTable(read_only, readonly=False) as t:  # (root may write it) an old check, far off
        t.add_drift("local", rk, sid, 9.0, {}, 1.0)
    res = CliRunner().invoke(app, ["profile", "show", "--table", str(read_only), "--check-drift", "--json"])
    assert res.exit_code == 0, res.output
    drift = json.loads(res.stdout)["tables"][0]["drift"]
    assert drift["recorded"] is False and drift["ratio"] != 9.0 and drift["measured_at"] > 1.0
    res = CliRunner().invoke(app, ["profile", "show", "--table", str(read_only), "--check-drift"])
    assert res.exit_code == 0 and "x (now, not recorded)" in res.stdout and "9.00x" not in res.stdout, res.stdout
    with LatencyTable(read_only) as t:
        assert [d["ratio"] for d in t.drift("local", rk, sid)] == [9.0]


def test_no_calibration_warning_names_the_recipes_calibrated(work, tmp_path, caplog):
    """A recipe without calibration in a table that calibrates another one was warned "no calibration for
    local on onnxruntime/.../median_ms": the warning names the recipe, the recipes that are calibrated there
    and the build that calibrates it."""
    small = MobileNetV3Spec.from_dict({**SPEC.to_dict(), "ks": [3, 5]})  # its layers are all in the table
    path = tmp_path / "two.sqlite"
    shutil.copy(work / "lut.sqlite", path)
    with LatencyTable(path) as t:
        t.put_recipe("tiny28_k35", small.to_dict())
    for recipe in ("tiny28_k35", small):
        caplog.clear()
        LatencyPredictor.load(path, "local", "onnxruntime", recipe)
        assert ("no calibration for 'tiny28_k35' on local/onnxruntime/CPUExecutionProvider/1t/fp32/b1" in caplog.text
                and "only other recipes are calibrated there: ['tiny28']" in caplog.text
                and "`ofakit profile build --recipe" in caplog.text), caplog.text
    caplog.clear()
    LatencyPredictor.load(path, "local", "onnxruntime", "tiny28")
    assert "no calibration" not in caplog.text
    db = sqlite3.connect(path)
    with db:
        db.execute("DELETE FROM corrections")
    db.close()
    LatencyPredictor.load(path, "local", "onnxruntime", "tiny28")
    assert "no calibration for 'tiny28'" in caplog.text and "nothing is calibrated there" in caplog.text


def _beside(table: Path) -> list[str]:
    return sorted(p.name for p in table.parent.iterdir() if p.name.startswith(table.name))


def test_a_read_makes_no_file_beside_the_table(read_only, tmp_path):
    """A table opened read-only (``mode=ro``) got empty -wal/-shm files beside it, which such a connection
    cannot remove: a read makes none, on a table writable here or not; rows that a writer's write-ahead log
    holds are still read."""
    writable = tmp_path / "w.sqlite"
    shutil.copy(read_only, writable)
    for path in (writable, read_only):
        with LatencyTable(path, readonly=True) as t:
            assert t.recipes() == ["tiny28"] and t.readonly
        assert _beside(path) == [path.name], path
    with LatencyTable(read_only) as t:  # read-only by default
        assert t.readonly and t.recipes() == ["tiny28"]
    assert _beside(read_only) == [read_only.name]
    writer = sqlite3.connect(read_only)  # (root may write it) rows in its log, not yet in the file
    try:
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        with writer:
            writer.execute("INSERT INTO recipes VALUES ('logged', 'x', '{}', 0)")
        with LatencyTable(read_only) as t:
            assert t.recipes() == ["logged", "tiny28"]
    finally:
        writer.close()


def test_drift_check_without_calibration_subnets_is_a_warning(work, monkeypatch, capsys):
    """search's drift check on a table without calibration subnets warns and goes on with the raw predictions
    (nothing to re-time), as for a runtime that cannot run here."""
    from ofakit.specialize import Budget

    search = sys.modules["ofakit.cli.search"]  # (``ofakit.cli.search`` is also the command's function)

    class Specializer:  # the checkpoint's accuracy predictor is not needed to reach the drift check
        def __init__(self, *args, **kwargs):
            self.drift_checks = {}

        def check_drift(self, device, runtime, token=None):
            return check_drift(work / "nocal.sqlite", SPEC, device, get_runtime(runtime), runtime)
    monkeypatch.setattr(search, "Specializer", Specializer)
    spz = search.specializer(ZOO, work / "nocal.sqlite", [Budget("local", "onnxruntime", 5.0)], 300, 0, True)
    assert spz.drift_checks == {}
    err = " ".join(capsys.readouterr().err.split())
    assert "warning: drift not checked on local/onnxruntime" in err and "no calibration subnets" in err


def _ref(ratio):
    return Referenced((), DriftCheck(ratio, (), 0.0, 0.0))


def _settled(ratio=2.0, **kwargs):
    measure = kwargs.pop("measure", lambda: _ref(ratio))
    return settled(measure, **{"pauses_s": (1,), "sleep": lambda s: None, **kwargs})


def _point(ms, acc):
    return SimpleNamespace(metrics={"lat": ms}, accuracy=acc)


FRONT = [_point(1.0, 0.80), _point(2.0, 0.85), _point(3.0, 0.90)]


def _row(**changes):
    return {"budget_ms": 1.0, "measured_latency_ms": 0.9, "predicted_latency_ms": 1.0, "machine_ratio": 1.0,
            **changes}


API_CASES = [  # (id, call, expected ValueError message)
    ("settled: expected NaN", lambda: _settled(expected=math.nan), "expected=nan must be a positive finite"),
    ("settled: expected 0", lambda: _settled(expected=0), "expected=0 must be a positive finite"),
    ("settled: expected negative", lambda: _settled(expected=-1), "expected=-1 must be"),
    ("settled: expected infinite", lambda: _settled(expected=math.inf), "expected=inf must be"),
    ("settled: expected a string", lambda: _settled(expected="1"), "expected='1' must be"),
    ("settled: expected a bool", lambda: _settled(expected=True), "expected=True must be"),
    ("settled: tolerance NaN", lambda: _settled(tolerance=math.nan), "tolerance=nan a finite fraction >= 0"),
    ("settled: tolerance negative", lambda: _settled(tolerance=-0.1), "tolerance=-0.1 a finite fraction"),
    ("settled: tolerance infinite", lambda: _settled(tolerance=math.inf), "tolerance=inf a finite fraction"),
    ("settled: negative pause", lambda: _settled(pauses_s=(-1,)), "pauses_s=(-1,) must be a sequence of finite"),
    ("settled: NaN pause", lambda: _settled(pauses_s=(math.nan,)), "pauses_s=(nan,) must be"),
    ("settled: pauses a number", lambda: _settled(pauses_s=5), "pauses_s=5 must be a sequence"),
    ("settled: pauses a string", lambda: _settled(pauses_s="25"), "pauses_s='25' must be a sequence"),
    ("settled: measure not callable", lambda: _settled(measure=None), "measure=None must be a callable"),
    ("settled: measure returns nothing", lambda: _settled(measure=lambda: None), "got NoneType"),
    ("settled: ratio NaN", lambda: _settled(ratio=math.nan), "machine ratio is nan; allowed: a positive finite"),
    ("settled: ratio 0", lambda: _settled(ratio=0.0), "machine ratio is 0.0"),
    ("lasting: n 0", lambda: lasting([], n=0), "n=0 must be a positive integer"),
    ("lasting: n negative", lambda: lasting([_ref(2.0)], n=-1), "n=-1 must be a positive integer"),
    ("lasting: n fractional", lambda: lasting([_ref(2.0)] * 2, n=1.5), "n=1.5 must be"),
    ("lasting: expected 0", lambda: lasting([_ref(2.0)] * 3, expected=0), "expected=0 must be"),
    ("lasting: expected NaN", lambda: lasting([_ref(2.0)] * 3, expected=math.nan), "expected=nan must be"),
    ("lasting: expected negative", lambda: lasting([_ref(2.0)] * 3, expected=-1), "expected=-1 must be"),
    ("lasting: tolerance NaN", lambda: lasting([_ref(2.0)] * 3, tolerance=math.nan), "tolerance=nan"),
    ("lasting: tolerance negative", lambda: lasting([_ref(1.0)] * 3, tolerance=-1), "tolerance=-1"),
    ("lasting: ratios NaN", lambda: lasting([_ref(math.nan)] * 3), "machine ratio is nan"),
    ("lasting: tries a number", lambda: lasting(3), "tries=3 must be a sequence"),
    ("lasting: tries numbers", lambda: lasting([2.0, 2.0, 2.0]), "got float"),
    ("budgets: lo NaN", lambda: demo_budgets(FRONT, "lat", math.nan, 3), "lo=nan must be a finite number >= 0"),
    ("budgets: lo negative", lambda: demo_budgets(FRONT, "lat", -1, 3), "lo=-1 must be"),
    ("budgets: lo a string", lambda: demo_budgets(FRONT, "lat", "1", 3), "lo='1' must be"),
    ("budgets: hi 0", lambda: demo_budgets(FRONT, "lat", 0, 0), "hi=0 must be a positive finite number"),
    ("budgets: hi infinite", lambda: demo_budgets(FRONT, "lat", 1, math.inf), "hi=inf must be"),
    ("budgets: hi below lo", lambda: demo_budgets(FRONT, "lat", 3, 1), "lo=3.0 ms is above hi=1.0 ms"),
    ("budgets: slack 0", lambda: demo_budgets(FRONT, "lat", 1, 3, slack=0), "slack=0 must be a finite number >= 1"),
    ("budgets: slack NaN", lambda: demo_budgets(FRONT, "lat", 1, 3, slack=math.nan), "slack=nan must be"),
    ("budgets: slack negative", lambda: demo_budgets(FRONT, "lat", 1, 3, slack=-1), "slack=-1 must be"),
    ("budgets: no levels", lambda: demo_budgets(FRONT, "lat", 1, 3, levels=()), "levels=() must be a non-empty"),
    ("budgets: level NaN", lambda: demo_budgets(FRONT, "lat", 1, 3, levels=(math.nan, 0.5)), "fractions from 0 to 1"),
    ("budgets: level above 1", lambda: demo_budgets(FRONT, "lat", 1, 3, levels=(0.5, 1.5)), "fractions from 0 to 1"),
    ("budgets: level negative", lambda: demo_budgets(FRONT, "lat", 1, 3, levels=(-0.5, 0.5)), "fractions from 0"),
    ("budgets: unknown metric", lambda: demo_budgets(FRONT, "nope", 1, 3), "without latency 'nope'"),
    ("budgets: front accuracy NaN", lambda: demo_budgets([_point(1.0, math.nan), *FRONT[1:]], "lat", 1, 3),
     "front accuracies [nan, 0.85, 0.9] must be finite"),
    ("budgets: front latency NaN", lambda: demo_budgets([_point(math.nan, 0.8), *FRONT[1:]], "lat", 1, 3),
     "front latency 'lat'=nan must be"),
    ("budgets: front not a list", lambda: demo_budgets(5, "lat", 1, 3), "front must be a list"),
    ("checks: rows not a list", lambda: demo_checks(None, []), "rows must be a list of demo rows"),
    ("checks: row without budget", lambda: demo_checks([{"measured_latency_ms": 1.0}], [1]), "budget_ms=None"),
    ("checks: budget 0", lambda: demo_checks([_row(budget_ms=0.0)], [1]), "budget_ms=0.0 must be a positive"),
    ("checks: budget NaN", lambda: demo_checks([_row(budget_ms=math.nan)], [1]), "budget_ms=nan must be"),
    ("checks: prediction 0", lambda: demo_checks([_row(predicted_latency_ms=0.0)], [1]), "predicted_latency_ms=0.0"),
    ("checks: no prediction", lambda: demo_checks([_row(predicted_latency_ms=None)], [1]), "predicted_latency_ms=None"),
    ("checks: measured NaN", lambda: demo_checks([_row(measured_latency_ms=math.nan)], [1]), "measured_latency_ms=nan"),
    ("checks: measured negative", lambda: demo_checks([_row(measured_latency_ms=-1.0)], [1]),
     "measured_latency_ms=-1.0 must be a positive"),
    ("checks: machine ratio a string", lambda: demo_checks([_row(machine_ratio="x")], [1]), "machine_ratio='x'"),
    ("checks: machine ratio NaN", lambda: demo_checks([_row(machine_ratio=math.nan)], [1]), "machine_ratio=nan"),
    ("checks: results for other rows", lambda: demo_checks([_row()], [1, 2]),
     "one per-image result per shipped row (1), got 2"),
    ("checks: per-image results of other lengths", lambda: demo_checks(
        [_row(), _row(budget_ms=2.0)], [np.ones(100, bool), np.ones(50, bool)]), "got 100 and 50"),
    ("exporter: a folder path", lambda: get_exporter("onnx").check_out("fp32", "new.onnx/"),
     "out='new.onnx/' ends with a slash, so it names a directory; give the .onnx file to write"),
    ("subnet: depths true", lambda: SubnetConfig.from_dict({"ks": [3] * 4, "e": [3] * 4, "d": [True], "r": 28}),
     "SubnetConfig.d[0]=True must be a positive integer"),
    ("subnet: resolution false", lambda: SubnetConfig.from_dict({"ks": [3], "e": [3], "d": [1], "r": False}),
     "SubnetConfig.r=False must be a positive integer"),
]


@pytest.mark.parametrize("call, message", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_bad_api_input_is_a_value_error(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_good_helper_input_still_works():
    """The checks above refuse nothing the demo and the settling loop pass them."""
    assert _settled(ratio=1.05).tries == 1 and not lasting([]) and lasting([_ref(2.0)] * 3)
    assert demo_budgets(FRONT, "lat", 0.0, 3.0, levels=(0.0, 0.5, 1.0)) == [1.1, 2.2, 3.0]
    assert demo_budgets([], "lat", 1.0, 3.0) == [1.4, 2.0, 2.7]  # no front: fractions of the latency range
    assert SubnetConfig.from_dict({"ks": [3], "e": [3], "d": [1], "r": 28.0}).r == 28
    get_exporter("coreml").check_out("fp32", "m.mlpackage/")  # a package is a directory


def test_one_pick_has_no_accuracy_trend_to_pass():
    """Two budgets that no subnet fitted any more leave one pick: nothing to compare, so the accuracy claim is
    not a pass (it was ``all([])``, true)."""
    gone = {"budget_ms": 2.0, "budget_met": False, "measured_latency_ms": None, "error": "no subnet"}
    checks = demo_checks([_row(), gone, {**gone, "budget_ms": 3.0}], [np.ones(100, bool)])
    assert [c["ok"] for c in checks] == [False, True, None]
    assert checks[2]["detail"] == "fewer than two picks to compare"
