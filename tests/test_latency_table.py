"""Latency tables: layer enumeration, the SQLite store (concurrent writers, share/merge), the builder
(resume after kill -9, refresh) and the calibrated vectorised predictor."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import model_zoo
from elastic import SubnetConfig
from elastic.batch import ConfigBatch, CostGrid
from profilers.builder import BuildSettings, build_table, calibration_configs
from profilers.layers import space_layers, subnet_layers
from profilers.predictor import Correction, LatencyPredictor, fit_correction
from profilers.record import DeviceInfo, Measurement, Protocol, Stats, local_device, time_interleaved
from profilers.runtimes import get_runtime
from profilers.store import LatencyTable, RuntimeKey, spec_id

QUICK = Protocol(warmup_s=0, warmup_runs=2, blocks=2, block_s=0.001, min_runs_per_block=2, max_runs_per_block=4)
SPEC = model_zoo.get_spec("ofa_mbv3_tiny", resolutions=(28,))
ROOT = Path(__file__).resolve().parents[1]


def fake_measurement(ms: float, version: str = "1.0", at: float | None = None) -> Measurement:
    """A record with given statistics (store tests need exact values, not timing)."""
    stats = Stats(ms, ms * 0.9, ms * 1.1, ms, 0.01, ms * 0.8, 10, 2)
    return Measurement(stats, local_device(gpu=False), "onnxruntime", version, "CPUExecutionProvider", 1, "fp32",
                       1, (1, 1, 28, 28), QUICK, 0.1, time.time() if at is None else at)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A real onnxruntime table of the tiny space at 28 px with 6 calibration subnets."""
    path = tmp_path_factory.mktemp("lut") / "lut.sqlite"
    with LatencyTable(path) as table:
        report = build_table(table, "tiny28", SPEC, get_runtime("onnxruntime"),
                             settings=BuildSettings(protocol=QUICK, calibration_subnets=6))
    return path, report



def test_interleaved_blocks_do_not_time_the_cold_first_run():
    """A candidate's first run after another candidate ran is slower (its caches were evicted); each block
    starts with an untimed run, so short interleaved blocks time the steady state."""
    last = [None]

    def runner(name: str):
        def run() -> float:  # reports its own time (as device-timed runners do): 1 ms warm, 7 ms cold
            cold = last[0] != name
            last[0] = name
            return 0.001 + (0.006 if cold else 0.0)
        return run

    p = Protocol(warmup_s=0, warmup_runs=1, blocks=4, block_s=0.0, min_runs_per_block=2, max_runs_per_block=2)
    warm = time_interleaved([runner("a"), runner("b")], p)
    assert all(st.runs == 8 and st.p90_ms == pytest.approx(1.0) for st in warm)
    cold = time_interleaved([runner("a"), runner("b")], replace(p, block_warmup_runs=0))
    assert all(st.runs == 8 and st.p90_ms == pytest.approx(7.0) and st.p10_ms == pytest.approx(1.0)
               for st in cold)  # the first timed run of each block was cold
    with pytest.raises(ValueError, match="block_warmup_runs=-1 must be an integer; allowed: 0 to"):
        Protocol(block_warmup_runs=-1)

# ------------------------------------------------------------------ layers
def test_layers_cover_every_subnet_and_match_extracted_shapes(tiny, rng):
    spec = tiny.spec
    keys = {L.key for L in space_layers(spec)}
    assert len(keys) == len(space_layers(spec))  # deduplicated
    by_key = {L.key: L for L in space_layers(spec)}
    for _ in range(5):
        cfg = spec.space.sample(rng)
        used = subnet_layers(spec, cfg)
        assert set(used) <= keys
        # chaining the standalone layers reproduces the extracted network's shapes at every boundary
        x = torch.randn(1, spec.in_channels, cfg.r, cfg.r)
        net = tiny.extract(cfg).eval()
        acts = [net.stem(x)]
        for block in net.blocks:
            acts.append(block(acts[-1]))
        for key, act in zip(used, [x, *acts]):
            assert by_key[key].input_shape == tuple(act.shape), key
        with torch.no_grad():
            y = x
            for key in used:
                y = by_key[key].build()(y)
        assert y.shape == net(x).shape


# ------------------------------------------------------------------- store
def test_store_roundtrip_merge_and_errors(tmp_path):
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    with LatencyTable(a) as ta:
        ta.put_recipe("tiny28", SPEC.to_dict())
        ta.put_many("local", [("k1", fake_measurement(1.0, at=100.0)), ("k2", fake_measurement(2.0, at=100.0))])
        with pytest.raises(ValueError, match="belongs to another architecture"):
            ta.put_recipe("tiny28", model_zoo.get_spec("ofa_mbv3_tiny").to_dict())
        ta.export_json(tmp_path / "a.json")
    with LatencyTable(b) as tb:
        tb.put_many("local", [("k1", fake_measurement(5.0, at=200.0)), ("k2", fake_measurement(6.0, at=50.0))])
        report = tb.import_json(tmp_path / "a.json")
        got = {e.key: e.median_ms for e in tb.entries("local")}
        assert report.changed == 1 and got == {"k1": 5.0, "k2": 2.0}  # the newer measurement of each key wins
        assert report.renamed == {}
        assert tb.recipes() == ["tiny28"]
        assert MobileNetV3SpecEq(tb.recipe("tiny28"))
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not a database at all" * 10)
    with pytest.raises(ValueError, match="not a latency table"):
        LatencyTable(bad)
    db = sqlite3.connect(a)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(ValueError, match="schema version 99"):
        LatencyTable(a)
    with pytest.raises(ValueError, match="not an ofa-kit latency table export"):
        LatencyTable(tmp_path / "c.sqlite").import_json({"format": "other"})


def test_import_never_overwrites_another_machine_called_local(tmp_path):
    """Another lab's table whose device is also `local` (issue 13): stored under a new name, or --as."""
    from typer.testing import CliRunner

    from ofakit.cli import app

    with LatencyTable(tmp_path / "lab.sqlite") as lab:
        lab.put_many("local", [("k1", fake_measurement(10.0, at=300.0))])
        lab.export_json(tmp_path / "lab.json")
    data = json.loads((tmp_path / "lab.json").read_text())
    data["devices"]["local"]["cpu"] = "another lab's CPU"  # a different machine: a different fingerprint
    (tmp_path / "lab.json").write_text(json.dumps(data))
    with LatencyTable(tmp_path / "mine.sqlite") as mine:
        mine.put_many("local", [("k1", fake_measurement(1.0, at=100.0))])
        report = mine.import_json(tmp_path / "lab.json")
        (new,) = report.renamed.values()
        assert new.startswith("local@") and report.changed == 1
        assert {e.key: e.median_ms for e in mine.entries("local")} == {"k1": 1.0}  # untouched
        assert {e.key: e.median_ms for e in mine.entries(new)} == {"k1": 10.0}
        with pytest.raises(ValueError, match="--as local=local: 'local' is another machine"):
            mine.import_json(tmp_path / "lab.json", {"local": "local"})
        with pytest.raises(ValueError, match=r"--as names device\(s\) \['pc'\]"):
            mine.import_json(tmp_path / "lab.json", {"pc": "x"})
    res = CliRunner().invoke(app, ["profile", "import", str(tmp_path / "lab.json"), "--table",
                                   str(tmp_path / "mine.sqlite"), "--as", "local=lab-pc"])
    assert res.exit_code == 0 and "device 'local' stored as 'lab-pc'" in res.output, res.output
    with LatencyTable(tmp_path / "mine.sqlite") as mine:
        assert {e.key: e.median_ms for e in mine.entries("lab-pc")} == {"k1": 10.0}
        assert {e.key: e.median_ms for e in mine.entries("local")} == {"k1": 1.0}
    # Another lab's architecture under a name this table gives to another one: kept, under NAME@SPECID.
    other = model_zoo.get_spec("ofa_mbv3_tiny", resolutions=(32,)).to_dict()
    with LatencyTable(tmp_path / "lab2.sqlite") as lab:
        lab.put_recipe("tiny", other)
        lab.put_many("local", [("k2", fake_measurement(3.0, at=300.0))])
        lab.export_json(tmp_path / "lab2.json")
    with LatencyTable(tmp_path / "mine.sqlite") as mine:
        mine.put_recipe("tiny", SPEC.to_dict())
    res = CliRunner().invoke(app, ["profile", "import", str(tmp_path / "lab2.json"), "--table",
                                   str(tmp_path / "mine.sqlite")])
    assert res.exit_code == 0 and "architecture 'tiny' stored as 'tiny@" in res.output, res.output
    with LatencyTable(tmp_path / "mine.sqlite") as mine:
        renamed = next(n for n in mine.recipes() if n.startswith("tiny@"))
        assert mine.recipe("tiny") == SPEC.to_dict() and mine.recipe(renamed) == other
        assert mine.recipe_name("tiny", other) == renamed and mine.recipe_name("x", SPEC.to_dict()) == "tiny"
        assert mine.import_json(tmp_path / "lab2.json").recipes_renamed == {"tiny": renamed}
        assert sorted(mine.recipes()) == ["tiny", renamed]  # a second import adds no third name
    del data["entries"][0]["key"]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with LatencyTable(tmp_path / "mine.sqlite") as mine, pytest.raises(ValueError, match="malformed latency table"):
        mine.import_json(tmp_path / "bad.json")


def MobileNetV3SpecEq(spec_dict: dict) -> bool:  # noqa: N802 - reads as a predicate in the assertion
    return spec_id(spec_dict) == spec_id(SPEC.to_dict())


def _writer(path: str, worker: int, n: int) -> None:
    with LatencyTable(path, timeout=60) as t:
        for i in range(n):
            t.put("local", f"w{worker}:k{i}", fake_measurement(1.0 + i))


def test_concurrent_writers_lose_no_rows(tmp_path):
    path = str(tmp_path / "lut.sqlite")
    LatencyTable(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 60)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with LatencyTable(path) as t:
        assert len(t.entries("local")) == 180


# --------------------------------------------------------------- predictor
def test_predictor_sums_layer_entries_vectorised(built, rng):
    path, report = built
    assert report.layers == report.measured == 75 and report.calibration_measured == 6
    pred = LatencyPredictor.load(path, "local", "onnxruntime", "tiny28")
    with LatencyTable(path) as t:
        ms = {e.key: e.median_ms for e in t.entries("local")}
    cfgs = [SPEC.space.sample(rng) for _ in range(20)] + [SPEC.space.largest(), SPEC.space.smallest()]
    expected = [sum(ms[k] for k in subnet_layers(SPEC, c)) for c in cfgs]
    np.testing.assert_allclose(pred.predict_raw(cfgs), expected, rtol=1e-12)
    arrays = {k: np.array([getattr(c, k) for c in cfgs]) for k in ("ks", "e", "d", "r")}
    np.testing.assert_allclose(pred.predict(arrays), pred.predict(cfgs))
    assert pred.correction.samples == 6
    assert np.all(pred.predict(cfgs) >= pred.correction.floor * pred.predict_raw(cfgs)) and pred.correction.floor > 0
    # the largest subnet's layers sum to more than the smallest's (the fitted correction of six noisy quick
    # measurements may bend that; its quality is a benchmark's figure)
    assert pred.predict_raw([SPEC.space.largest()])[0] > pred.predict_raw([SPEC.space.smallest()])[0]


def test_predictor_errors(built):
    path, _ = built
    pred = LatencyPredictor.load(path, "local", "onnxruntime/CPUExecutionProvider/1t/fp32/b1", "tiny28")
    bad = SubnetConfig(SPEC.space.largest().ks, SPEC.space.largest().e, SPEC.space.largest().d, 32)
    with pytest.raises(ValueError, match=r"r=32 is outside the space; allowed: \[28\]"):
        pred.predict([bad])
    with pytest.raises(ValueError, match="device 'phone' is not in"):
        LatencyPredictor.load(path, "phone", "onnxruntime", "tiny28")
    with pytest.raises(ValueError, match="runtime 'openvino' has no entries"):
        LatencyPredictor.load(path, "local", "openvino", "tiny28")
    with pytest.raises(ValueError, match="recipe 'nope' has no table"):
        LatencyPredictor.load(path, "local", "onnxruntime", "nope")
    with pytest.raises(ValueError, match="lacks 29 layer"):  # 30 px: the early stages differ, later maps match 28 px
        LatencyPredictor.load(path, "local", "onnxruntime", model_zoo.get_spec("ofa_mbv3_tiny", resolutions=(30,)))
    with pytest.raises(ValueError, match="stat='mode' is not supported"):
        LatencyPredictor.load(path, "local", "onnxruntime", "tiny28", stat="mode")


def test_fit_correction_recovers_a_known_relation():
    rng = np.random.default_rng(0)
    s, w = rng.uniform(1, 5, 20), rng.uniform(0.5, 3, 20)
    y = 1.3 * s + 0.4 * w + 0.2
    c = fit_correction({"layer_sum_ms": s, "weights_m": w, "one": np.ones(20)}, y)
    assert c.features == ("layer_sum_ms", "weights_m", "one") and c.samples == 20
    np.testing.assert_allclose(c.coef, (1.3, 0.4, 0.2), rtol=1e-6)
    assert c.loo_mape < 1e-6
    # per-layer call overhead: every block measured alone paid it once, the whole subnet pays it less
    blocks = rng.integers(5, 17, 20).astype(float)
    yb = 0.8 * s - 0.03 * blocks + 0.1
    feats = {"layer_sum_ms": s, "weights_m": w, "blocks": blocks, "one": np.ones(20)}
    cb = fit_correction(feats, yb)
    assert cb.features == ("layer_sum_ms", "blocks", "one")
    np.testing.assert_allclose(cb.coef, (0.8, -0.03, 0.1), rtol=1e-6)
    assert Correction.from_dict(cb.to_dict()) == cb
    seven = fit_correction({k: v[:7] for k, v in feats.items()}, yb[:7])  # 4 features need 8 samples
    assert len(seven.features) <= 3
    two = fit_correction({"layer_sum_ms": s[:2], "weights_m": w[:2], "one": np.ones(2)}, 2 * s[:2])
    assert two.features == ("layer_sum_ms",) and two.coef[0] == pytest.approx(2.0)
    assert fit_correction({}, np.array([])) == Correction()
    # a strongly negative offset fits the samples but would predict a negative latency for a subnet whose
    # layer sum lies below them: the floor (half the lowest measured/layer-sum ratio) bounds it
    s3 = np.array([2.0, 3.0, 4.0, 5.0])
    neg = fit_correction({"layer_sum_ms": s3, "one": np.ones(4)}, 2.0 * s3 - 3.0)
    assert neg.features == ("layer_sum_ms", "one") and neg.floor == pytest.approx(0.5 * 1.0 / 2.0)
    np.testing.assert_allclose(neg.apply({"layer_sum_ms": np.array([1.0, 4.0]), "one": np.ones(2)}), [0.25, 5.0])
    assert Correction.from_dict(neg.to_dict()) == neg
    old = {k: v for k, v in neg.to_dict().items() if k != "floor"}  # stored before floors existed
    assert Correction.from_dict(old).floor == 0.0
    with pytest.raises(ValueError, match="positive"):
        fit_correction({"layer_sum_ms": s[:3]}, np.array([1.0, -1.0, 2.0]))


# ----------------------------------------------------------------- builder
def _edit_sql(path: Path, *statements: str) -> None:
    db = sqlite3.connect(path)
    for stmt in statements:
        db.execute(stmt)
    db.commit()
    db.close()


def test_profile_refresh_on_a_new_runtime_version_age_and_hardware(tmp_path, caplog):
    """`ofakit profile refresh` end to end (issue 18): layers and calibration subnets are re-measured when taken
    with another runtime version, when older than --max-age, and when the table moved to other hardware; fresh
    ones are not; refresh adds no calibration subnet of its own; afterwards the table predicts this machine
    (held-out subnets timed now, against the 10x figures of the other hardware)."""
    from typer.testing import CliRunner

    from elastic.families import spec_from_dict
    from ofakit.cli import app
    from profilers.builder import time_subnets

    path = tmp_path / "lut.sqlite"

    def cli(*args: str) -> dict:
        res = CliRunner().invoke(app, ["profile", *args, "--table", str(path), "--quick", "--json"])
        assert res.exit_code == 0, res.output
        rep = json.loads(res.stdout)
        (rep,) = rep if isinstance(rep, list) else [rep]
        return rep

    first = cli("build", "--recipe", "ofa_mbv3_tiny", "--resolutions", "28", "--calibrate", "3")
    n_layers = first["layers"]
    assert first["measured"] == n_layers > 50 and first["calibration_measured"] == 3
    assert (cli("refresh")["measured"], cli("refresh")["calibration_measured"]) == (0, 0)
    _edit_sql(path, "UPDATE entries SET runtime_version = '0.1' WHERE key LIKE 'stem:%' OR key LIKE 'head:%'")
    r = cli("refresh")
    assert (r["measured"], r["calibration_measured"]) == (2, 0)  # runtime upgraded: stem and head only
    _edit_sql(path, "UPDATE calibrations SET runtime_version = '0.1' WHERE rowid = (SELECT MIN(rowid) FROM "
                    "calibrations)")
    r = cli("refresh")
    assert (r["measured"], r["calibration_measured"]) == (0, 3)  # one stale subnet: the set is re-timed together
    _edit_sql(path, "UPDATE entries SET measured_at = measured_at - 86400 * 40 WHERE key LIKE '%:k7:%'",
              "UPDATE calibrations SET measured_at = measured_at - 86400 * 40")
    assert cli("refresh")["measured"] == 0  # age alone is no reason without --max-age
    r = cli("refresh", "--max-age", "30d")
    assert (r["measured"], r["calibration_measured"]) == (24, 3)  # kernel-7 blocks: 8 shapes x 3 expand ratios
    # The table moved to other hardware, 10x slower: every figure there is stale here.
    _edit_sql(path, "UPDATE entries SET fingerprint = 'elsewhere', median_ms = median_ms * 10",
              "UPDATE calibrations SET fingerprint = 'elsewhere', measured_ms = measured_ms * 10")
    r = cli("refresh")
    assert (r["measured"], r["calibration_measured"]) == (n_layers, 3)
    rt = get_runtime("onnxruntime")
    with LatencyTable(path, readonly=True) as t:
        (name,) = t.recipes()
        spec = spec_from_dict(t.recipe(name))
        cal = t.calibration("local", t.runtimes()[0], spec_id(spec.to_dict()))
        assert all(e.fingerprint == rt.device().fingerprint for e in t.entries("local"))
        assert all(c.fingerprint == rt.device().fingerprint for c in cal) and len(cal) == 3
    rng = np.random.default_rng(7)
    held = [spec.space.sample(rng) for _ in range(5)]
    cal_cfgs = [spec.space.config_type.from_json(c.subnet) for c in cal]
    protocol = Protocol(warmup_s=0, warmup_runs=3, blocks=6, block_s=0.01)
    ms = np.array([m.stats.median_ms for m in time_subnets(rt, spec, held + cal_cfgs, BuildSettings(
        protocol=protocol), tmp_path)])  # held-out and calibration subnets in one interleaved measurement
    caplog.clear()
    pred = LatencyPredictor.load(path, "local", "onnxruntime", spec).predict(held + cal_cfgs)
    assert f"{n_layers} of {n_layers} layers" in caplog.text and "short --quick protocol" in caplog.text  # said
    drift = np.median(pred[5:] / ms[5:])  # the machine's speed now against the refresh moment
    ratio = pred[:5] / ms[:5] / drift
    # this machine's figures (the 10x ones would read ~10): the median within 30%, each subnet within 2x (a
    # --quick table fitted on 3 subnets, timed while other tests load the machine)
    assert 0.7 < np.median(ratio) < 1.4 and np.all((ratio > 0.5) & (ratio < 2.0)), ratio
    # `profile show` as a person reads it: coverage marked --quick, calibration and its error, versions, device.
    res = CliRunner().invoke(app, ["profile", "show", "--table", str(path)])
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if name in line)
    assert f"{n_layers}/{n_layers} ({n_layers} --quick)" in row and "3 subnets, LOO" in row, row
    assert rt.version() in row and "0.1" not in row and "0.0 d" in row, row
    assert f"fingerprint {rt.device().fingerprint}" in res.output and "drift:" in res.output
    # A --quick table is re-measured by a build with a longer protocol, and a quick build keeps longer figures.
    longer = replace(QUICK, blocks=6, block_s=0.002)  # 3x the CLI --quick protocol (2 blocks of 2 ms)
    with LatencyTable(path) as t:
        r = build_table(t, name, spec, rt, settings=BuildSettings(protocol=longer, calibration_subnets=0))
        assert r.measured == n_layers and r.calibration_measured == 3
        r = build_table(t, name, spec, rt, settings=BuildSettings(protocol=QUICK, calibration_subnets=0))
        assert r.measured == 0 and r.calibration_measured == 0


def test_build_resumes_after_kill(tmp_path):
    path = tmp_path / "lut.sqlite"
    code = ("import model_zoo; from profilers.builder import *; from profilers.store import LatencyTable; "
            "from profilers.runtimes import get_runtime; from profilers.record import Protocol; "
            "s = model_zoo.get_spec('ofa_mbv3_tiny', resolutions=(28,)); "
            "p = Protocol(warmup_s=0.05, warmup_runs=5, blocks=10, block_s=0.02); "
            f"build_table(LatencyTable({str(path)!r}), 'tiny28', s, get_runtime('onnxruntime'), "
            "settings=BuildSettings(protocol=p, group=2, calibration_subnets=0))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.5)
        if path.exists():
            with LatencyTable(path) as t:
                if len(t.entries()) >= 6:
                    break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with LatencyTable(path) as t:
        done = len(t.entries())
        assert 6 <= done < 75, "the build should have been killed part-way"
        r = build_table(t, "tiny28", SPEC, get_runtime("onnxruntime"),
                        settings=BuildSettings(protocol=QUICK, calibration_subnets=0))
        assert r.measured == 75 - done and len(t.entries()) == 75



def test_calibration_subnets_are_timed_interleaved(tmp_path):
    """All calibration subnets go into one interleaved measurement, so a drift of the machine scales them
    alike (timed one after another, a slow minute bends the fitted correction)."""
    rt = get_runtime("onnxruntime")
    calls = []
    measure_many = rt.measure_many
    rt.measure_many = lambda specs: calls.append(len(specs)) or measure_many(specs)
    with LatencyTable(tmp_path / "lut.sqlite") as t:
        r = build_table(t, "tiny28", SPEC, rt, settings=BuildSettings(protocol=QUICK, calibration_subnets=5, group=80))
        assert calls == [75, 5] and r.calibration_measured == 5 and r.calibration_used == 5
        rk = RuntimeKey("onnxruntime", "CPUExecutionProvider", 1, "fp32", 1)
        assert len(t.calibration("local", rk, spec_id(SPEC.to_dict()))) == 5
        # another calibration set (here: another seed; in the field, a kit upgrade) is timed together with
        # the samples already held, so the correction is never fitted on two moments of the machine
        r = build_table(t, "tiny28", SPEC, rt, settings=BuildSettings(protocol=QUICK, calibration_subnets=5, seed=1))
        held = t.calibration("local", rk, spec_id(SPEC.to_dict()))
        assert calls[2:] == [len(held)] and r.calibration_measured == r.calibration_used == len(held) > 5
        assert len({c.measured_at for c in held}) == 1

def test_calibration_configs_are_seeded_and_spread():
    a = calibration_configs(SPEC, 6, seed=3)
    assert a == calibration_configs(SPEC, 6, seed=3) and len({c.to_json() for c in a}) == 6
    assert a[0] == SPEC.space.largest() and a[1] == SPEC.space.smallest()
    # the random ones sit at evenly spaced quantiles of MACs: they cover the small end, where uniform draws
    # (mostly middle-sized) are rare
    sp, grid = SPEC.space, CostGrid.build(SPEC)
    cal = grid.macs(ConfigBatch.from_configs(sp, calibration_configs(SPEC, 12, seed=0)[2:]))
    uniform = np.sort(grid.macs(ConfigBatch.random(sp, 10, np.random.default_rng(0))))
    pool = grid.macs(ConfigBatch.random(sp, 600, np.random.default_rng(1)))
    assert list(cal) == sorted(cal) and cal[0] < np.quantile(pool, 0.02) and cal[-1] > np.quantile(pool, 0.98)
    assert np.ptp(np.log(cal)) > np.ptp(np.log(uniform))


def test_layers_are_timed_in_a_shuffled_order():
    """A slow moment during a build must not fall on all the layers of one resolution: the build order mixes
    resolutions from its start (seeded, so a resumed build times in the same order)."""
    from profilers.builder import measurement_order
    from profilers.layers import space_layers

    def keys(*res):
        return [L.key for L in space_layers(model_zoo.get_spec("ofa_mbv3_tiny", resolutions=res))]

    only16 = set(keys(16)) - set(keys(28))
    layers = space_layers(model_zoo.get_spec("ofa_mbv3_tiny", resolutions=(16, 28)))
    order = measurement_order(layers, 0)
    assert sorted(L.key for L in order) == sorted(L.key for L in layers) and order == measurement_order(layers, 0)
    quarter = len(order) // 4
    assert all(L.key in only16 for L in layers[:quarter])  # enumerated resolution by resolution
    share16 = sum(L.key in only16 for L in order[:quarter]) / quarter
    assert 0.2 < share16 < 0.8, share16
    with pytest.raises(ValueError, match="calibration_subnets"):
        BuildSettings(calibration_subnets=-1)


# --------------------------------------------------------------------- CLI
def test_profile_cli(built, tmp_path):
    from typer.testing import CliRunner

    from ofakit.cli import app

    path, _ = built
    run = CliRunner().invoke
    r = run(app, ["profile", "show", "--table", str(path), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    row = info["tables"][0]
    assert row["measured"] == row["layers"] == 75 and row["calibration_samples"] == 6
    assert info["devices"]["local"]["fingerprint"] == DeviceInfo.from_dict(info["devices"]["local"]).fingerprint
    out = tmp_path / "shared.json"
    assert run(app, ["profile", "export", "--table", str(path), "--out", str(out)]).exit_code == 0
    merged = tmp_path / "merged.sqlite"
    r = run(app, ["profile", "import", str(out), "--table", str(merged)])
    assert r.exit_code == 0 and "75 entries" in r.output
    rk, sid = RuntimeKey("onnxruntime", "CPUExecutionProvider"), spec_id(SPEC.to_dict())
    with LatencyTable(merged) as t, LatencyTable(path, readonly=True) as src:
        assert len(t.entries("local", rk)) == 75
        # the calibration came along and is fitted as at the source (it was lost: raw layer sums; issue 18)
        assert t.correction("local", rk, sid) == src.correction("local", rk, sid) and t.correction(
            "local", rk, sid).samples == 6
    r = run(app, ["profile", "build", "--recipe", "ofa_mbv3_tiny", "--resolutions", "28", "--table",
                  str(merged), "--quick", "--calibrate", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["measured"] == 0  # everything imported, nothing to measure
    for args, msg in ((["build", "--recipe", "nope"], "neither a supernet recipe"),
                      (["build", "--recipe", "ofa_mbv3_tiny", "--runtime", "tflite"], "--runtime 'tflite' is unknown"),
                      (["build", "--recipe", "ofa_mbv3_tiny", "--resolutions", "a,b"], "comma-separated"),
                      (["refresh", "--table", str(tmp_path / "none.sqlite")], "does not exist"),
                      (["refresh", "--table", str(path), "--max-age", "3x"], "is not an age"),
                      (["show", "--table", str(tmp_path / "none.sqlite")], "does not exist")):
        r = run(app, ["profile", *args])
        assert r.exit_code == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.output)


def test_read_only_tables_are_read_and_never_written(built, tmp_path):
    """A table that may not be written is opened for reading (issue 13); reads never create or change a file."""
    from typer.testing import CliRunner

    from ofakit.cli import app

    path, _ = built
    with LatencyTable(path) as t:
        n = len(t.entries())
    with LatencyTable(path, readonly=True) as t:
        assert len(t.entries()) == n and t.readonly
        with pytest.raises(ValueError, match="is open read-only .* must write"):
            t.put_many("local", [("k", fake_measurement(1.0))])
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    res = CliRunner().invoke(app, ["profile", "show", "--table", str(empty)])
    assert res.exit_code == 2 and "is not a latency table" in res.output and empty.stat().st_size == 0, res.output
    res = CliRunner().invoke(app, ["profile", "show", "--table", str(tmp_path)])
    assert res.exit_code == 2 and "is a directory; give the .sqlite file" in res.output
    with pytest.raises(ValueError, match="does not exist"):
        LatencyTable(tmp_path / "missing.sqlite", readonly=True)
    assert not (tmp_path / "missing.sqlite").exists()
    if os.geteuid() != 0:
        return
    # As another user, a table in a folder it cannot write (root's permissions do not show this case).
    shared = Path(tempfile.mkdtemp(prefix="ofakit-ro-"))
    try:
        os.chmod(shared, 0o755)
        (shared / "lut.sqlite").write_bytes(path.read_bytes())
        os.chmod(shared / "lut.sqlite", 0o444)
        code = ("from profilers.store import LatencyTable; t = LatencyTable(%r); print(t.readonly, len(t.entries()))"
                % str(shared / "lut.sqlite"))
        try:
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                                 preexec_fn=lambda: os.setuid(65534), timeout=120)
        except PermissionError:
            pytest.skip("this Python is not executable by another user here (explicit read-only mode was tested)")
        assert out.returncode == 0 and out.stdout.split() == ["True", str(n)], out.stderr[-2000:]
    finally:
        shutil.rmtree(shared)


def test_a_checkpoint_gets_a_table_name_of_its_own(tmp_path):
    """`profile build --recipe CHECKPOINT` into a table where its recipe's name holds another architecture
    (the 3-channel default) just works (issue 13); `--name` chooses one."""
    from ofakit.cli.profile import table_name

    three, one = model_zoo.get_spec("ofa_mbv3_tiny", in_channels=3), model_zoo.get_spec("ofa_mbv3_tiny", in_channels=1)
    with LatencyTable(tmp_path / "t.sqlite") as t:
        t.put_recipe("ofa_mbv3_tiny", three.to_dict())
        assert table_name(t, "ofa_mbv3_tiny", three) == "ofa_mbv3_tiny"
        name = table_name(t, "ofa_mbv3_tiny", one)
        assert name == f"ofa_mbv3_tiny@{spec_id(one.to_dict())[:8]}"
        t.put_recipe(name, one.to_dict())
        assert table_name(t, "another", one) == name  # the architecture keeps the name it has
        assert table_name(t, "mine", one, explicit=True) == "mine"
        with pytest.raises(ValueError, match="--name 'ofa_mbv3_tiny' is taken .* by another architecture"):
            table_name(t, "ofa_mbv3_tiny", one, explicit=True)


def test_the_statistics_are_declared_once():
    """The table's statistics are :class:`Stats`'s; ``Entry`` and the SQL schema hold them in that order."""
    import dataclasses
    import sqlite3

    from profilers.record import Stats
    from profilers.store import STATS, Entry, _SCHEMA
    assert STATS == tuple(f.name for f in dataclasses.fields(Stats))[:-1] == ("median_ms", "p10_ms", "p90_ms",
                                                                             "mean_ms", "std_ms", "min_ms", "runs")
    assert tuple(f.name for f in dataclasses.fields(Entry))[3:3 + len(STATS)] == STATS
    db = sqlite3.connect(":memory:")
    db.executescript(_SCHEMA)
    assert [r[1] for r in db.execute("PRAGMA table_info(entries)")][3:3 + len(STATS)] == list(STATS)
