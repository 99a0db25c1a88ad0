"""The closed loop of ``ofakit ship`` and the measured shortlist, against devices of known latency: tables
made wrong on purpose (too fast, too slow, drifting), measurements of real exported artifacts replayed from
the known truth, so that every decision is deterministic whatever this machine's speed."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
import torch

from elastic import SubnetConfig
from elastic.batch import ConfigBatch, CostGrid
from ofakit.search.evolution import Candidate
from ofakit.artifact import sidecar_path
from ofakit.ship import ship
from ofakit.shortlist import measured_choice, rerank
from ofakit.specialize import Budget, Specializer
from profilers import LatencyPredictor, LatencyTable
from profilers.store import RuntimeKey
from tests.shipyard import LAT, known_device, macs_specializer, recorded, replay


def test_closed_loop_recovers_from_a_wrong_table(shipyard, tmp_path):
    """Quarter the stored correction: the first pick runs 4x slower than predicted and misses; the loop must
    confirm the miss, store it as a calibration sample, refit, choose again, and ship a subnet that meets.

    Deterministic whatever this machine's speed: the device's true latency is a known function, and the
    loop's measurements of the real exported artifacts are replayed from it. The accuracy objective is
    "more MACs is better"."""
    ctx, good = shipyard
    table = tmp_path / "wrong.sqlite"
    truth, rk, sid = known_device(ctx, good, table, 0.25)
    big, small = ctx.supernet.space.largest(), ctx.supernet.space.smallest()
    budget = Budget("local", "onnxruntime", 0.5 * (truth(small) + truth(big)))  # between them whatever their ratio
    assert truth(small) < budget.ms < truth(big)
    calls = []
    out = tmp_path / "m.onnx"
    report = ship(macs_specializer(ctx, table), [budget], "onnx", out, retries=4, meter=replay(truth, calls, budget),
                  measure_shortlist=False)
    first, last = report.attempts[0], report.attempts[-1]
    missed = json.dumps(first["config"], separators=(",", ":"))
    assert len(report.attempts) == 2 and first["met"] is False and last["met"] is True and report.met is True
    assert first["predicted_ms"][LAT] == pytest.approx(0.25 * first["measured_ms"][LAT], rel=1e-6)
    assert calls == [missed, missed, report.final.config.to_json()]  # the miss was confirmed; the pick measured
    assert report.shipped is last and last["measured_ms"][LAT] <= budget.ms
    assert last["measured_ms"][LAT] == pytest.approx(last["predicted_ms"][LAT], rel=1e-6)
    with LatencyTable(table) as t:  # the miss was stored as a calibration sample and the correction refitted
        samples = {c.subnet: c.measured_ms for c in t.calibration("local", rk, sid)}
        assert samples[missed] == first["measured_ms"][LAT] == truth(SubnetConfig.from_json(missed))
    refitted = LatencyPredictor.load(table, "local", rk, ctx.supernet.spec)
    assert refitted.predict([SubnetConfig.from_json(missed)])[0] == pytest.approx(truth(SubnetConfig.from_json(missed)),
                                                                                rel=1e-6)
    side = json.loads(sidecar_path(out).read_text())
    assert side["config"] == report.final.config.to_dict() and side["checkpoint"]["sha256"] == ctx.meta["sha256"]
    assert side["budget_met"] is True and side["measured_latency_ms"][LAT] == last["measured_ms"][LAT]
    assert side["export"]["max_abs_diff"] <= 1e-4 and side["versions"]["onnxruntime"]
    assert side["input"]["mean"] == [0.2] and len(side["closed_loop"]) == len(report.attempts)


def test_closed_loop_uses_a_wasted_budget(shipyard, tmp_path):
    """The table predicts twice the device's latency (the machine sped up since it was built): the first pick
    meets its budget with half of it unused. The loop stores that measurement, refits, and ships a bigger
    subnet that still meets the budget and uses at least 80% of it."""
    ctx, good = shipyard
    table = tmp_path / "slow.sqlite"
    truth, rk, sid = known_device(ctx, good, table, 2.0)
    big, small = ctx.supernet.space.largest(), ctx.supernet.space.smallest()
    budget = Budget("local", "onnxruntime", 0.5 * (truth(big) + 2 * truth(small)))
    calls = []
    report = ship(macs_specializer(ctx, table), [budget], "onnx", tmp_path / "m.onnx", retries=3,
                  meter=replay(truth, calls, budget), measure_shortlist=False)
    first, last = report.attempts[0], report.attempts[-1]
    assert first["met"] is True and first["measured_ms"][LAT] < 0.8 * budget.ms <= first["predicted_ms"][LAT]
    assert first["under_budget_pct"][LAT] > 20 and len(calls) == len(report.attempts) == 2
    assert report.met is True and report.shipped is last and 0.8 * budget.ms <= last["measured_ms"][LAT] <= budget.ms
    assert report.final.metrics["macs"] > CostGrid.build(ctx.supernet.spec).macs(
        ConfigBatch.from_configs(ctx.supernet.space, [SubnetConfig.from_dict(first["config"])]))[0]
    with LatencyTable(table) as t:
        samples = {c.subnet: c.measured_ms for c in t.calibration("local", rk, sid)}
    assert samples[json.dumps(first["config"], separators=(",", ":"))] == first["measured_ms"][LAT]


def test_closed_loop_ships_the_best_subnet_that_met(shipyard, tmp_path):
    """A pick well under a roomy budget is not re-searched (nothing better exists). When every attempt after
    a wasteful first one misses, the first subnet is exported again and shipped."""
    ctx, good = shipyard
    table = tmp_path / "t.sqlite"
    truth, rk, _ = known_device(ctx, good, table, 2.0)
    big, small = ctx.supernet.space.largest(), ctx.supernet.space.smallest()
    calls = []
    roomy = Budget("local", "onnxruntime", 3 * truth(big))
    report = ship(macs_specializer(ctx, table), [roomy], "onnx", tmp_path / "a.onnx", meter=replay(truth, calls),
                  measure_shortlist=False)
    assert len(report.attempts) == 1 and report.met is True and report.final.config == big and len(calls) == 1
    first_seen: list[SubnetConfig] = []

    def slower_after_the_first(cfg, artifact, b):  # the device slows down 3x after the first pick
        first_seen[:] = first_seen or [cfg]
        return recorded(truth(cfg) * (1.0 if cfg == first_seen[0] else 3.0), rk)

    table2 = tmp_path / "t2.sqlite"
    truth, rk, _ = known_device(ctx, good, table2, 2.0)
    budget = Budget("local", "onnxruntime", 0.5 * (truth(big) + 2 * truth(small)))
    out = tmp_path / "b.onnx"
    report = ship(macs_specializer(ctx, table2), [budget], "onnx", out, retries=2, meter=slower_after_the_first,
                  measure_shortlist=False)
    first = report.attempts[0]
    assert first["met"] and len(report.attempts) >= 2 and not any(a["met"] for a in report.attempts[1:])
    assert report.shipped is first and report.met is True and report.final.config == first_seen[0]
    side = json.loads(sidecar_path(out).read_text())
    assert side["config"] == first["config"] and side["shipped_attempt"] == 1 and side["budget_met"] is True
    x = ctx.real_inputs(report.final.config, 1)
    with torch.no_grad():
        ref = ctx.subnet(report.final.config)(x).numpy()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(got - ref).max() <= 1e-4  # the file on disk is the first subnet, exported again


def test_measured_shortlist_picks_within_the_budget(shipyard, tmp_path):
    """The table underestimates this device by 15% (the optimizer's curse at its worst). Timing a shortlist
    around the budget first (picks at 1.1x ... 0.85x of it; the last one is within it by construction)
    ships, on the first attempt, the most accurate candidate that measured within the budget."""
    ctx, good = shipyard
    table = tmp_path / "t.sqlite"
    truth, rk, _ = known_device(ctx, good, table, 0.85)
    big, small = ctx.supernet.space.largest(), ctx.supernet.space.smallest()
    budget = Budget("local", "onnxruntime", 0.5 * (truth(big) + truth(small)))
    timed: list[list[str]] = []

    def timer(cfgs, b):
        assert b == budget
        timed.append([c.to_json() for c in cfgs])
        return [recorded(truth(c), rk) for c in cfgs]

    calls = []
    report = ship(macs_specializer(ctx, table), [budget], "onnx", tmp_path / "m.onnx", retries=0,
                  meter=replay(truth, calls, budget), timer=timer)
    rows = report.attempts[0]["shortlist"]
    assert report.met is True and len(report.attempts) == 1 and len(timed) == 1 and len(rows) >= 2
    within = [r for r in rows if r["measured_ms"][LAT] <= budget.ms]
    assert [r["picked"] for r in rows].count(True) == 1 and within
    picked = next(r for r in rows if r["picked"])
    assert picked["config"] == report.final.config.to_dict()
    assert picked["predicted_accuracy"] == max(r["predicted_accuracy"] for r in within)
    assert all(r["measured_ms"][LAT] == truth(SubnetConfig.from_dict(r["config"])) for r in rows)
    # the kit expects the pick to run as it measured in the shortlist (the table under-predicts it by 15%)
    first = report.attempts[0]
    assert first["expected_from"] == "shortlist measurement" and first["expected_ms"] == picked["measured_ms"]
    assert first["expected_ms"][LAT] != first["predicted_ms"][LAT] and first["expected_machine_ratio"] == {}
    side = json.loads(sidecar_path(tmp_path / "m.onnx").read_text())
    assert side["expected_latency_ms"] == picked["measured_ms"] and side["expected_from"] == "shortlist measurement"


def test_measured_shortlist_far_under_the_budget_is_searched_again_rescaled(shipyard, tmp_path):
    """The table over-predicts this device 2x (it sped up since the build): every first-round candidate
    measures near half the budget. Their own measurements give the ratio; the second round, searched at the
    rescaled budget, finds subnets that use the budget, and the pick is within it."""
    ctx, good = shipyard
    table = tmp_path / "t.sqlite"
    truth, rk, _ = known_device(ctx, good, table, 2.0)
    big, small = ctx.supernet.space.largest(), ctx.supernet.space.smallest()
    # within reach of the first round (the 2x-inflated smallest fits its 1.1x fraction) whatever this machine's
    # big/small latency ratio, with room above for the second round
    budget = Budget("local", "onnxruntime", min(truth(big), max(0.5 * (truth(big) + truth(small)), 2.4 * truth(small))))

    def timer(cfgs, b):
        return [recorded(truth(c), rk) for c in cfgs]

    spz = macs_specializer(ctx, table)
    pick, rows = measured_choice(spz, [budget], timer)
    first = [r for r in rows if r["round"] == 1]
    second = [r for r in rows if r["round"] == 2]
    assert first and second and max(r["measured_ms"][LAT] for r in first) < 0.7 * budget.ms
    picked = next(r for r in rows if r["picked"])
    assert picked["round"] == 2 and pick.config.to_dict() == picked["config"]
    assert 0.85 * budget.ms <= picked["measured_ms"][LAT] <= budget.ms
    # predictions that are right leave nothing to rescale: one round
    truth, rk, _ = known_device(ctx, good, tmp_path / "right.sqlite", 1.0)
    pick, rows = measured_choice(macs_specializer(ctx, tmp_path / "right.sqlite"), [budget], timer)
    assert {r["round"] for r in rows} == {1} and truth(pick.config) >= 0.85 * budget.ms


def test_rerank_none_within_the_budget():
    cfg = SubnetConfig((3,) * 16, (3,) * 16, (2,) * 4, 28)
    cand = Candidate(cfg, 0.5, {LAT: 1.0})
    pick, rows = rerank([cand], [Budget("local", "onnxruntime", 1.0)],
                        lambda cfgs, b: [recorded(2.0, RuntimeKey("onnxruntime", "CPUExecutionProvider"))])
    assert pick is None and rows[0]["measured_ms"][LAT] == 2.0 and rows[0]["picked"] is False


def test_rerank_judges_at_the_predictors_machine_speed():
    """Timed while the references ran 2x slow, a candidate measured at twice its budget is within it at the
    predictor's speed; the raw judgement (no drift factors) refuses it. A drift factor of 1.5 (the
    predictor already expects a slower machine) moves the judged figure with it."""
    cfg = SubnetConfig((3,) * 16, (3,) * 16, (2,) * 4, 28)
    cand = Candidate(cfg, 0.5, {LAT: 1.0})
    budget = Budget("local", "onnxruntime", 1.0)
    rk = RuntimeKey("onnxruntime", "CPUExecutionProvider")
    timer = lambda cfgs, b: ([recorded(2.0, rk)], 2.0)  # noqa: E731
    pick, rows = rerank([cand], [budget], timer, {LAT: 1.0})
    assert pick is cand and rows[0]["measured_ms"][LAT] == 2.0 and rows[0]["judged_ms"][LAT] == 1.0
    assert rows[0]["machine_ratio"][LAT] == 2.0
    assert rerank([cand], [budget], timer)[0] is None
    pick, rows = rerank([cand], [budget], timer, {LAT: 1.5})
    assert pick is None and rows[0]["judged_ms"][LAT] == 1.5


def test_rerank_breaks_an_accuracy_tie_by_budget_use():
    """Candidates predicted within 0.05 pp of the best are a tie (far below the predictor's error): the one
    that uses the budget most is picked; a real accuracy difference still wins over budget use."""
    rk = RuntimeKey("onnxruntime", "CPUExecutionProvider")
    budget = Budget("local", "onnxruntime", 1.0)
    cfgs = [SubnetConfig((3,) * 16, (3,) * 16, (d,) * 4, 28) for d in (2, 3, 4)]

    def pick(accs, ms):
        cands = [Candidate(c, a, {LAT: m}) for c, a, m in zip(cfgs, accs, ms)]
        got, rows = rerank(cands, [budget], lambda cfgs_, b: [recorded(m, rk) for m in ms])
        assert [r["picked"] for r in rows].count(True) == (got is not None)
        return cands.index(got)

    assert pick([0.9003, 0.9000, 0.9001], [0.70, 0.95, 1.20]) == 1  # tie: the 95% one, not the over-budget one
    assert pick([0.9100, 0.9000, 0.9001], [0.70, 0.95, 0.90]) == 0  # 1 pp more accurate: kept at 70%


def test_recalibration_under_drift_stores_the_table_frame(shipyard, tmp_path):
    """With a predictor rescaled for drift (the machine runs 2x slower now), a closed-loop measurement is
    stored divided by the drift, like the samples measured at build time, and the refitted predictor keeps
    the factor."""
    ctx, good = shipyard
    table = tmp_path / "t.sqlite"
    truth, rk, sid = known_device(ctx, good, table, 1.0)
    spz = macs_specializer(ctx, table)
    spz._set_latency(LAT, spz.latency[LAT].rescaled(2.0))
    cfg = ctx.supernet.space.largest()
    before = float(spz.latency[LAT].predict([cfg])[0])
    assert before == pytest.approx(2 * truth(cfg), rel=1e-6)
    spz.recalibrate("local", "onnxruntime", cfg.to_json(), recorded(2 * truth(cfg), rk))
    with LatencyTable(table) as t:
        samples = {c.subnet: c.measured_ms for c in t.calibration("local", rk, sid)}
    assert samples[cfg.to_json()] == pytest.approx(truth(cfg), rel=1e-12)
    assert spz.latency[LAT].drift == 2.0 and float(spz.latency[LAT].predict([cfg])[0]) == pytest.approx(before, rel=1e-6)
    assert spz.metrics[LAT].fn(ConfigBatch.from_configs(ctx.supernet.space, [cfg]))[0] == pytest.approx(before,
                                                                                                  rel=1e-6)


def test_recalibration_with_the_machine_ratio_of_the_moment(shipyard, tmp_path):
    """A measurement taken with the table's reference subnets interleaved is stored divided by the machine
    ratio they showed; a ratio within 10% of the predictor's drift leaves it alone, one that outlasted the
    settling pauses (1.6x) rescales the predictor."""
    ctx, good = shipyard
    table = tmp_path / "t.sqlite"
    truth, rk, sid = known_device(ctx, good, table, 1.0)
    spz = macs_specializer(ctx, table)
    big, small = ctx.supernet.space.largest(), ctx.supernet.space.smallest()
    spz.recalibrate("local", "onnxruntime", big.to_json(), recorded(1.05 * truth(big), rk), machine_ratio=1.05)
    assert spz.latency[LAT].drift == 1.0
    spz.recalibrate("local", "onnxruntime", small.to_json(), recorded(1.6 * truth(small), rk), machine_ratio=1.6)
    with LatencyTable(table) as t:
        samples = {c.subnet: c.measured_ms for c in t.calibration("local", rk, sid)}
    assert samples[big.to_json()] == pytest.approx(truth(big), rel=1e-12)
    assert samples[small.to_json()] == pytest.approx(truth(small), rel=1e-12)
    assert spz.latency[LAT].drift == 1.6
    assert float(spz.latency[LAT].predict([big])[0]) == pytest.approx(1.6 * truth(big), rel=1e-6)
    with pytest.raises(ValueError, match="machine_ratio=0 must be a positive factor"):
        spz.recalibrate("local", "onnxruntime", big.to_json(), recorded(1.0, rk), machine_ratio=0)


def test_a_lasting_machine_ratio_becomes_the_drift_factor(shipyard, tmp_path, monkeypatch):
    """Candidates timed with the table's reference subnets: when the machine ratio stays far from the
    predictor's drift through the settling pauses (0.7x in three tries), the predictor adopts it, so the
    next measurement expects it and spends no pauses; a ratio near the drift factor changes nothing."""
    import ofakit.shortlist
    import profilers.drift
    from ofakit.shortlist import time_candidates

    ctx, good = shipyard
    table = tmp_path / "t.sqlite"
    known_device(ctx, good, table, 1.0)
    spz = macs_specializer(ctx, table)
    real = ofakit.shortlist.measure_referenced
    ratios: list[float] = []

    def at(ratio_seq):
        seq = iter(ratio_seq)

        def measure(*args):
            got = real(*args)
            ratios.append(next(seq))
            return replace(got, check=replace(got.check, ratio=ratios[-1]))
        return measure

    monkeypatch.setattr(profilers.drift, "SETTLE_PAUSES_S", (0.0, 0.0, 0.0))
    budget = Budget("local", "onnxruntime", 1.0)
    cfgs = [ctx.supernet.space.smallest()]
    monkeypatch.setattr(ofakit.shortlist, "measure_referenced", at([1.05]))
    ms, ratio = time_candidates(spz, cfgs, budget)
    assert ratio == 1.05 and len(ratios) == 1 and spz.latency[LAT].drift == 1.0
    ratios.clear()
    monkeypatch.setattr(ofakit.shortlist, "measure_referenced", at([0.72, 0.68, 0.7, 1.0]))
    ms, ratio = time_candidates(spz, cfgs, budget)
    assert ratio == 0.7 and len(ratios) == 3 and spz.latency[LAT].drift == 0.7
    assert len(ms) == 1 and ms[0].stats.median_ms > 0
    ratios.clear()
    monkeypatch.setattr(ofakit.shortlist, "measure_referenced", at([0.74, 2.0]))
    _, ratio = time_candidates(spz, cfgs, budget)
    assert ratio == 0.74 and len(ratios) == 1 and spz.latency[LAT].drift == 0.7


def test_closed_loop_on_a_machine_that_stays_slower(shipyard, tmp_path):
    """The meter reports the machine ratio with each measurement: the device runs 2x slower than its (right)
    table, and stays so. The miss is stored in the table's frame (the correction stays exact), the predictor
    is rescaled by 2, and the next pick meets the budget on the slower machine."""
    ctx, good = shipyard
    table = tmp_path / "t.sqlite"
    truth, rk, sid = known_device(ctx, good, table, 1.0)
    big, small = ctx.supernet.space.largest(), ctx.supernet.space.smallest()
    budget = Budget("local", "onnxruntime", truth(small) + truth(big))  # the largest fits at the table's speed
    assert 2 * truth(small) < budget.ms < 2 * truth(big)

    def meter(cfg, artifact, b):
        return recorded(2 * truth(cfg), rk), 2.0

    spz = macs_specializer(ctx, table)
    report = ship(spz, [budget], "onnx", tmp_path / "m.onnx", retries=3, meter=meter, measure_shortlist=False)
    first, last = report.attempts[0], report.attempts[-1]
    assert first["met"] is False and first["machine_ratio"][LAT] == 2.0
    assert report.met is True and last["measured_ms"][LAT] <= budget.ms and spz.latency[LAT].drift == 2.0
    with LatencyTable(table) as t:
        samples = {c.subnet: c.measured_ms for c in t.calibration("local", rk, sid)}
    missed = SubnetConfig.from_dict(first["config"])
    assert samples[missed.to_json()] == pytest.approx(truth(missed), rel=1e-12)


def test_closed_loop_gives_up_after_its_retries(shipyard, tmp_path):
    """A device slower than any table can say (every measurement over the budget): bounded retries, each miss
    confirmed and stored, the report and the sidecar say the budget was not met."""
    ctx, table = shipyard
    mine = tmp_path / "t.sqlite"
    mine.write_bytes(table.read_bytes())
    pred = LatencyPredictor.load(mine, "local", "onnxruntime", ctx.supernet.spec)
    budget = Budget("local", "onnxruntime", float(pred.predict([ctx.supernet.space.largest()])[0]))
    calls = []

    def meter(cfg, artifact, b):
        calls.append(cfg.to_json())
        return recorded(10 * budget.ms, pred.runtime)

    spz = Specializer(ctx, mine, [("local", "onnxruntime")], accuracy_samples=20)
    report = ship(spz, [budget], "onnx", tmp_path / "m.onnx", retries=2, meter=meter, measure_shortlist=False)
    assert report.met is False and all(a["met"] is False for a in report.attempts)
    stopped = [a for a in report.attempts if "stopped" in a]
    assert len(report.attempts) == 3 or (stopped and stopped[0] is report.attempts[-1])
    assert len(calls) == 2 * len(report.attempts)  # every miss measured twice
    assert json.loads(sidecar_path(tmp_path / "m.onnx").read_text())["budget_met"] is False
