"""Precision as a search dimension: int8 tables, what int8 costs in top-1, and `--precision auto` choosing
(architecture, precision) jointly, on the shipyard's tiny checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ofakit.cli import app
from ofakit.search.precision import PrecisionDrop, measure_drop, spread_configs
from ofakit.specialize import Budget, Specializer, at_precision, precision_plans, table_precisions
from profilers import LatencyPredictor, LatencyTable
from profilers.builder import BuildSettings, build_table
from profilers.runtimes import get_runtime
from tests.shipyard import QUICK, MacsObjective, build_shipyard

pytestmark = pytest.mark.skipif(get_runtime("onnxruntime").unavailable() is not None,
                                reason=f"onnxruntime: unavailable: {get_runtime('onnxruntime').unavailable()}")
INT8 = "onnxruntime/CPUExecutionProvider/1t/int8/b1"


@pytest.fixture(scope="module")
def int8_table(tmp_path_factory):
    """A shipyard whose validation split (240 images) is large enough for int8's top-1 agreement check (120
    calibration and 120 checked images), with an fp32 and an int8 table of one runtime (really quantized
    layers, timed)."""
    ctx, path = build_shipyard(tmp_path_factory.mktemp("int8"), calibration=4, n_train=400, val_size=240)
    with LatencyTable(path) as t:
        build_table(t, "tiny28", ctx.supernet.spec, get_runtime("onnxruntime"),
                    settings=BuildSettings(protocol=QUICK, precision="int8", calibration_subnets=4))
    return ctx, path


def test_budgets_resolve_to_the_table_at_a_precision(int8_table, shipyard):
    ctx, path = int8_table  # the shipyard's table holds fp32 only
    b = Budget("local", "onnxruntime", 1.0)
    assert table_precisions(path, b) == ["fp32", "int8"] and table_precisions(shipyard[1], b) == ["fp32"]
    assert at_precision(path, b, "int8").runtime == INT8
    assert [p for p, _ in precision_plans(path, [b], "auto")] == ["fp32", "int8"]
    assert [p for p, _ in precision_plans(path, [b], "auto", exportable=("fp32",))] == ["fp32"]
    assert precision_plans(shipyard[1], [b], None) == [("fp32", [b])]  # one table: the budget as given
    assert precision_plans(path, [b], None) == [("fp32", [at_precision(path, b, "fp32")])]  # fp32 by default
    with pytest.raises(ValueError, match=r"has no configuration of runtime 'onnxruntime' at precision 'int8' on "
                                         r"device 'local'; measured there: \['onnxruntime/CPUExecutionProvider/1t/fp32/b1'\]"):
        precision_plans(shipyard[1], [b], "int8")
    with pytest.raises(ValueError, match=r"--precision 'int4' is not supported; allowed: \['fp32', 'fp16', 'int8', 'auto'\]"):
        precision_plans(path, [b], "int4")
    with pytest.raises(ValueError, match="--precision auto: .* holds no precision"):
        precision_plans(shipyard[1], [b], "auto", exportable=("int8",))


def test_auto_picks_the_precision_whose_subnet_is_most_accurate_within_the_budget(int8_table):
    """A known accuracy (MACs) and a known int8 cost: where both precisions fit the largest subnet, fp32 wins
    (int8 pays its cost); at a budget between the two precisions' fastest subnets only one fits, and it is
    chosen, the other reported as fitting nothing."""
    ctx, path = int8_table
    plans = precision_plans(path, [Budget("local", "onnxruntime", 1.0)], "auto")
    targets = [(b.device, b.runtime) for _, bs in plans for b in bs]
    spz = Specializer(ctx, path, targets, accuracy=MacsObjective(ctx.cost_grid))
    drop = PrecisionDrop("onnx", "int8", (0.9, 0.8), (0.88, 0.78), 100)
    assert drop.mean == pytest.approx(0.02)
    space = ctx.supernet.space
    fast = {p: float(LatencyPredictor.load(path, "local", bs[0].runtime, ctx.supernet.spec).predict(
        [space.smallest()])[0]) for p, bs in plans}
    slow = {p: float(LatencyPredictor.load(path, "local", bs[0].runtime, ctx.supernet.spec).predict(
        [space.largest()])[0]) for p, bs in plans}

    def plans_at(ms: float):
        return [(p, [Budget("local", bs[0].runtime, ms)]) for p, bs in plans]

    chosen, budgets, result, offers = spz.choose_precision(plans_at(2 * max(slow.values())), {"int8": drop})
    assert chosen == "fp32" and result.best.config == space.largest() and set(offers) == {"fp32", "int8"}
    assert offers["int8"]["predicted_accuracy"] == pytest.approx(offers["fp32"]["predicted_accuracy"] - 0.02)
    assert spz.accuracy is spz.base_accuracy and "precision" not in spz.accuracy_report
    lo, hi = sorted(fast, key=fast.get)
    chosen, budgets, result, offers = spz.choose_precision(plans_at((fast[lo] + fast[hi]) / 2), {"int8": drop})
    assert chosen == lo and "error" in offers[hi] and budgets[0].runtime == dict(plans)[lo][0].runtime
    if lo == "int8":  # the specializer is left at the chosen precision, its report saying so
        assert spz.accuracy_report["precision"]["mean_drop"] == pytest.approx(0.02)


def test_cli_search_and_ship_with_precision(int8_table, tmp_path):
    """`search --precision auto` reports what each precision offered and picks the best; `ship --precision
    int8` exports a quantized artifact, measures it on the int8 table's runtime configuration and records the
    precision, its quantization and what int8 costs (measured on validation images) in the sidecar."""
    ctx, path = int8_table
    largest = max(float(LatencyPredictor.load(path, "local", rt, ctx.supernet.spec).predict(
        [ctx.supernet.space.largest()])[0]) for rt in ("onnxruntime/CPUExecutionProvider/1t/fp32/b1", INT8))
    budget = f"{20 * largest:.4f}"
    base = ["--checkpoint", ctx.name, "--table", str(path), "--samples", "20", "--latency-ms", budget, "--json",
            "--no-drift-check"]
    res = CliRunner().invoke(app, ["search", *base, "--precision", "auto", "--no-measure", "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    offers = rec["precision_choice"]
    assert set(offers) == {"fp32", "int8"} and rec["precision"] == max(offers, key=lambda p: offers[p]["predicted_accuracy"])
    assert rec["predicted_accuracy"] == pytest.approx(offers[rec["precision"]]["predicted_accuracy"])
    res = CliRunner().invoke(app, ["ship", *base, "--precision", "int8", "--min-agreement", "0.5", "--retries", "0", "--no-measure",
                                   "--out", str(tmp_path / "q.onnx")])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    assert rec["precision"] == "int8" and rec["budget_met"] is True
    side = json.loads(Path(rec["sidecar"]).read_text())
    assert side["export"]["precision"] == "int8" and side["export"]["quantization"]["weights"].startswith("int8")
    m = side["closed_loop"][0]["measurements"][f"latency_ms[local/{INT8}]"]
    assert m["precision"] == "int8" and m["runtime"] == "onnxruntime"
    cost = side["accuracy_predictor"]["precision"]
    assert cost["target"] == "onnx" and cost["subnets"] >= 2 and len(cost["quantized_top1"]) == cost["subnets"]
    res = CliRunner().invoke(app, ["ship", *base, "--precision", "fp32", "--min-agreement", "0.5",
                                   "--out", str(tmp_path / "f.onnx")])
    assert res.exit_code == 2 and "--min-agreement 0.5 applies to int8 artifacts" in res.stderr, res.output


def test_precision_records_resume_and_belong_to_their_checkpoint(tmp_path):
    """Records are appended as measured: a second call measures nothing new, one for another header (another
    checkpoint) starts again; the subnets measured are spread over the accuracy dataset's range."""
    from elastic import SubnetConfig

    cfgs = [SubnetConfig(ks=(3,) * 16, e=(3,) * 16, d=(2,) * 4, r=r) for r in (16, 20, 24, 28, 32, 36, 40)]
    chosen = spread_configs(cfgs, np.array([0.9, 0.5, 0.7, 0.6, 0.8, 0.65, 0.75]), 4)
    assert chosen[:2] == cfgs[:2] and len(chosen) == 4 and chosen[2] == cfgs[3] and chosen[3] == cfgs[4]
    calls: list = []

    def evaluate(cfg):
        calls.append(cfg)
        return 0.9, 0.9 - cfg.r / 1000

    path = tmp_path / "p.jsonl"
    d = measure_drop(chosen, evaluate, path, {"checkpoint_sha256": "a"}, "onnx", "int8")
    assert len(calls) == 4 and d.mean == pytest.approx(np.mean([c.r for c in chosen]) / 1000)
    again = measure_drop(chosen, evaluate, path, {"checkpoint_sha256": "a"}, "onnx", "int8")
    assert len(calls) == 4 and again == d
    path.write_text(path.read_text() + '{"torn')  # a killed run's last line
    assert measure_drop(chosen, evaluate, path, {"checkpoint_sha256": "a"}, "onnx", "int8") == d and len(calls) == 4
    measure_drop(chosen[:1], evaluate, path, {"checkpoint_sha256": "b"}, "onnx", "int8")
    assert len(calls) == 5 and len(path.read_text().splitlines()) == 2


def test_a_cost_that_cannot_be_measured_here(int8_table, tmp_path, monkeypatch):
    """A precision whose cost cannot be measured on this machine (a TensorRT table without a GPU, injected here
    by making the measurement refuse): a fixed --precision still searches, with a warning and fp32's predicted
    accuracy; auto cannot compare precisions and stops in one line."""
    ctx, path = int8_table

    def refuse(self, budget, precision, samples, progress=None):
        raise ValueError("tensorrt is unavailable here (no NVIDIA GPU)")

    monkeypatch.setattr(Specializer, "precision_drop", refuse)
    base = ["search", "--checkpoint", ctx.name, "--table", str(path), "--samples", "20", "--latency-ms", "50",
            "--no-drift-check", "--no-measure", "--out", str(tmp_path / "s")]
    res = CliRunner().invoke(app, [*base, "--precision", "int8"])
    assert res.exit_code == 0 and "warning: int8's cost in top-1 not measured (tensorrt is unavailable" in res.output
    res = CliRunner().invoke(app, [*base, "--precision", "auto"])
    assert res.exit_code == 2 and "--precision auto needs what int8 costs in top-1" in res.stderr, res.output
