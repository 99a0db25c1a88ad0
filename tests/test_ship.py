"""Specialise and ship: checkpoint context (accuracy data on the validation split), export with sidecar,
the closed loop against an artificially wrong latency table, and the CLI's ``--json`` outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import model_zoo
from elastic.batch import ConfigBatch, CostGrid
from elastic.evaluate import loader, top1
from model_zoo.checkpoint import save_checkpoint
from model_zoo.ofa_parity import randomize_
from ofakit.cli import app
from ofakit.context import CheckpointContext
from ofakit.ship import export_subnet, measure, ship, sidecar_path
from ofakit.specialize import Budget, Specializer, latency_name
from profilers import LatencyPredictor, LatencyTable
from profilers.builder import BuildSettings, build_table
from profilers.record import Protocol
from profilers.runtimes import get_runtime
from profilers.store import spec_id
from tests.fakedata import write_fmnist

QUICK = Protocol(warmup_s=0, warmup_runs=2, blocks=2, block_s=0.001, min_runs_per_block=2, max_runs_per_block=4)
LAT = latency_name("local", "onnxruntime")


@pytest.fixture(scope="module")
def shipyard(tmp_path_factory):
    """A tiny supernet checkpoint at 28 px whose training data is a toy Fashion-MNIST, plus its latency table."""
    root = tmp_path_factory.mktemp("ship")
    data = write_fmnist(root / "fmnist", n_train=160, n_test=48)
    net = randomize_(model_zoo.get_supernet("ofa_mbv3_tiny", num_classes=10, in_channels=1, resolutions=(28,)),
                     seed=2).eval()
    ckpt = save_checkpoint(net, root / "tiny", extra={
        "training": {"recipe": "test", "epochs": 0, "data": {"kind": "fashion-mnist", "path": str(data),
                                                              "val_size": 48, "seed": 0, "train_limit": None}},
        "preprocess": {"mean": [0.2], "std": [0.3], "resolutions": [28]}})
    table = root / "lut.sqlite"
    with LatencyTable(table) as t:
        build_table(t, "tiny28", net.spec, get_runtime("onnxruntime"),
                    settings=BuildSettings(protocol=QUICK, calibration_subnets=6))
    ctx = CheckpointContext(str(ckpt))  # the CLI's settings, so that both share the accuracy cache
    return ctx, table


def test_context_accuracy_in_onnxruntime_matches_torch(shipyard):
    ctx, _ = shipyard
    cfg = ctx.supernet.space.sample(np.random.default_rng(0))
    assert len(ctx.val) == 48 and len(ctx.test) == 48
    ref = top1(ctx.subnet(cfg), loader(ctx.val, 500), cfg.r)
    assert ctx.top1(cfg, "val") == pytest.approx(ref, abs=1 / 48 + 1e-9)  # at most one borderline image flips
    data = ctx.accuracy_data(20)
    assert ctx.accuracy_cache().is_file() and len(data.acc) == 20 and np.all((0 <= data.acc) & (data.acc <= 1))
    assert json.loads(ctx.accuracy_cache().read_text().splitlines()[0])["checkpoint_sha256"] == ctx.meta["sha256"]
    with pytest.raises(ValueError, match="split='train' is not supported"):
        ctx.top1(cfg, "train")


class MacsObjective:
    """A known accuracy objective for search tests: more multiply-accumulates is better."""

    def __init__(self, grid: CostGrid) -> None:
        self.grid = grid

    def predict_batch(self, batch: ConfigBatch) -> np.ndarray:
        return self.grid.macs(batch) / 1e9


def test_closed_loop_recovers_from_a_wrong_table(shipyard, tmp_path):
    """Quarter the stored correction: the first pick runs ~4x slower than predicted and misses; the loop must
    recalibrate with that measurement, choose again, and ship a subnet that meets the budget.

    The accuracy objective is "more MACs is better" (the 20-subnet predictor of this random checkpoint is
    noise) and the budget is 60% of the largest subnet's latency measured here and now, so the first pick is
    the largest subnet (the wrong table allows it) and a sure miss, whatever this machine's noise did to the
    quickly built table."""
    ctx, good = shipyard
    table = tmp_path / "wrong.sqlite"
    table.write_bytes(good.read_bytes())
    sid = spec_id(ctx.supernet.spec.to_dict())
    with LatencyTable(table) as t:
        rk = next(iter({e.runtime for e in t.entries("local")}))
        corr = t.correction("local", rk, sid)
        t.put_correction("local", rk, sid, {**corr, "coef": [0.25 * c for c in corr["coef"]]})
    big = ctx.supernet.space.largest()
    largest = measure(ctx, big, export_subnet(ctx, big, "onnx", tmp_path / "largest.onnx")[0],
                      Budget("local", "onnxruntime", 1.0))
    budget = Budget("local", "onnxruntime", 0.6 * largest.stats.median_ms)
    spz = Specializer(ctx, table, [("local", "onnxruntime")], accuracy_samples=20)
    spz.accuracy = MacsObjective(CostGrid.build(ctx.supernet.spec))
    out = tmp_path / "m.onnx"
    report = ship(spz, [budget], "onnx", out, retries=4)
    assert len(report.attempts) >= 2 and report.attempts[0]["met"] is False
    assert report.met is True and report.attempts[-1]["measured_ms"][LAT] <= budget.ms
    with LatencyTable(table) as t:  # the miss was stored as a calibration sample and the correction refitted
        samples = {c.subnet: c.measured_ms for c in t.calibration("local", rk, sid)}
        missed = report.attempts[0]
        assert samples[json.dumps(missed["config"], separators=(",", ":"))] == missed["measured_ms"][LAT]
        assert t.correction("local", rk, sid)["coef"][0] > 0.75 * corr["coef"][0]
    side = json.loads(sidecar_path(out).read_text())
    assert side["config"] == report.final.config.to_dict() and side["checkpoint"]["sha256"] == ctx.meta["sha256"]
    assert side["budget_met"] is True and side["measured_latency_ms"][LAT] == report.attempts[-1]["measured_ms"][LAT]
    assert side["export"]["max_abs_diff"] <= 1e-4 and side["versions"]["onnxruntime"]
    assert side["input"]["mean"] == [0.2] and len(side["closed_loop"]) == len(report.attempts)


def test_cli_search_export_json(shipyard, tmp_path):
    ctx, table = shipyard
    run = CliRunner().invoke
    base = ["--checkpoint", ctx.name, "--table", str(table), "--samples", "20"]
    res = run(app, ["search", *base, "--latency-ms", "1000", "--json", "--pareto", "--generations", "50",
                    "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    assert {"config", "predicted_latency_ms", "predicted_accuracy", "macs", "params", "front"} <= set(rec)
    assert rec["predicted_latency_ms"] <= 1000  # every subnet fits: the pick is the most accurate one found
    assert rec["predicted_accuracy"] >= max(f["predicted_accuracy"] for f in rec["front"]) - 1e-3
    assert (tmp_path / "s" / "front.png").stat().st_size > 1000
    res = run(app, ["export", "--checkpoint", ctx.name, "--subnet", str(tmp_path / "s" / "subnet.json"),
                    "--target", "onnx", "--out", str(tmp_path / "a.onnx"), "--json"])
    assert res.exit_code == 0, res.output
    exp = json.loads(res.stdout)
    assert Path(exp["artifact"]).is_file() and exp["max_abs_diff"] <= 1e-4
    assert json.loads(Path(exp["sidecar"]).read_text())["config"] == rec["config"]
    res = run(app, ["search", *base, "--latency-ms", "0.0001", "--json"])
    assert res.exit_code == 2 and "no subnet meets the budget" in res.stderr and "cheapest subnet" in res.stderr
    res = run(app, ["search", *base, "--latency-ms", "1", "--also", "local,onnxruntime", "--json"])
    assert res.exit_code == 2 and "must be DEVICE,RUNTIME,MS" in res.stderr
    res = run(app, ["export", "--checkpoint", ctx.name, "--subnet", str(tmp_path / "s" / "subnet.json"),
                    "--target", "tflite", "--out", str(tmp_path / "a.tflite")])
    assert res.exit_code == 2 and "--target 'tflite' is unknown" in res.stderr


def test_demo_ships_three_budgets(shipyard, tmp_path):
    """`ofakit demo` end to end on a tiny checkpoint: table, three budgets, closed loop, ONNX + CoreML, table."""
    ctx, _ = shipyard
    res = CliRunner().invoke(app, ["demo", "--checkpoint", ctx.name, "--samples", "20", "--workdir",
                                   str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    rows = out["rows"]
    assert len(rows) == 3 and [r["budget_ms"] for r in rows] == sorted(r["budget_ms"] for r in rows)
    lo, hi = out["latency_range_ms"]
    assert lo < rows[0]["budget_ms"] < rows[-1]["budget_ms"] < hi
    for r in rows:
        loop = json.loads(sidecar_path(r["onnx"]).read_text())["closed_loop"]
        assert r["budget_met"] is True and r["measured_latency_ms"] <= r["budget_ms"], (r, loop)
        assert 0 <= r["test_accuracy"] <= 1 and Path(r["onnx"]).is_file()
        assert r["coreml"].endswith(".mlpackage") or r["coreml"].startswith("unavailable")
    assert Path(out["pareto_png"]).stat().st_size > 1000


def test_cli_ship_json(shipyard, tmp_path):
    ctx, table = shipyard
    pred = LatencyPredictor.load(table, "local", "onnxruntime", ctx.supernet.spec)
    lo, hi = pred.predict([ctx.supernet.space.smallest(), ctx.supernet.space.largest()])
    res = CliRunner().invoke(app, ["ship", "--checkpoint", ctx.name, "--table", str(table), "--samples", "20",
                                   "--latency-ms", f"{lo + 0.6 * (hi - lo):.4f}", "--target", "onnx",
                                   "--out", str(tmp_path / "m.onnx"), "--json"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    assert rec["budget_met"] is True and Path(rec["artifact"]).is_file() and Path(rec["sidecar"]).is_file()
    assert rec["measured_latency_ms"][LAT] <= lo + 0.6 * (hi - lo) + 1e-4 and rec["attempts"] >= 1
