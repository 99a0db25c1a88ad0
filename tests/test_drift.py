"""Drift: a table's reference subnets re-timed now rescale its predictions; the check is recorded and shown."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import model_zoo
from ofakit.cli import app
from profilers.builder import BuildSettings, build_table
from profilers.drift import DriftCheck, Referenced, check_drift, drift_ratio, reference_samples, settled
from profilers.predictor import LatencyPredictor
from profilers.record import Measurement, Protocol, Stats, local_device
from profilers.runtimes import get_runtime
from profilers.store import CalibrationSample, LatencyTable, RuntimeKey, spec_id

QUICK = Protocol(warmup_s=0, warmup_runs=2, blocks=2, block_s=0.001, min_runs_per_block=2, max_runs_per_block=4)
SPEC = model_zoo.get_spec("ofa_mbv3_tiny", resolutions=(28,))
SID = spec_id(SPEC.to_dict())


def stored(ms: float, at: float) -> Measurement:
    """A calibration measurement with given values (as if taken on a machine of another speed)."""
    return Measurement(Stats(ms, ms, ms, ms, 0.0, ms, 10, 2), local_device(gpu=False), "onnxruntime", "recorded",
                       "CPUExecutionProvider", 1, "fp32", 1, (1, 1, 28, 28), QUICK, 0.0, at)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("drift") / "lut.sqlite"
    with LatencyTable(path) as t:
        build_table(t, "tiny28", SPEC, get_runtime("onnxruntime"),
                    settings=BuildSettings(protocol=QUICK, calibration_subnets=6))
    return path


def test_reference_samples_are_the_build_batch_spread_over_latency():
    build = [CalibrationSample(f"s{i}", float(i), 100.0, "1") for i in (6, 1, 4, 2, 5, 3)]
    later = [CalibrationSample("loop1", 9.0, 200.0, "1"), CalibrationSample("loop2", 0.5, 300.0, "1")]
    refs = reference_samples(later[:1] + build + later[1:], 4)
    assert [r.measured_ms for r in refs] == [1.0, 3.0, 4.0, 6.0]  # the fastest, the slowest and two between
    assert len(reference_samples(build, 10)) == 6 and reference_samples([], 4) == []
    with pytest.raises(ValueError, match="references=0 must be a positive integer"):
        reference_samples(build, 0)


def test_drift_ratio_is_the_median_ratio():
    assert drift_ratio([1.0, 2.0, 4.0], [0.5, 1.0, 40.0]) == 0.5  # one disturbed reference does not move it
    with pytest.raises(ValueError, match="need as many stored as re-timed"):
        drift_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="positive latencies"):
        drift_ratio([1.0], [0.0])


def test_check_drift_rescales_predictions_and_is_recorded(table, tmp_path):
    """The table is doctored as if built on a machine twice as slow: the check compares today's timings with
    the doubled stored ones, records the ratio, and a rescaled predictor multiplies every prediction by it."""
    path = tmp_path / "slow.sqlite"
    path.write_bytes(table.read_bytes())
    with LatencyTable(path) as t:
        rk = RuntimeKey("onnxruntime", "CPUExecutionProvider")
        samples = t.calibration("local", rk, SID)
        for c in samples:
            t.add_calibration("local", SID, c.subnet, stored(2 * c.measured_ms, 1000.0))
        doubled = {c.subnet: 2 * c.measured_ms for c in samples}
    check = check_drift(path, SPEC, "local", get_runtime("onnxruntime"), "onnxruntime", protocol=QUICK, settle=False)
    assert len(check.references) == 4 and check.stored_at == 1000.0
    assert all(doubled[s] == old for s, old, _ in check.references)
    assert check.ratio == drift_ratio([old for _, old, _ in check.references], [now for *_, now in check.references])
    with LatencyTable(path) as t:
        (rec,) = t.drift("local", rk, SID)
    assert rec["ratio"] == check.ratio and rec["measured_at"] == check.measured_at and len(rec["references"]) == 4
    pred = LatencyPredictor.load(path, "local", "onnxruntime", SPEC)
    cfgs = [SPEC.space.largest(), SPEC.space.smallest()]
    scaled = pred.rescaled(check.ratio)
    assert scaled.predict(cfgs) == pytest.approx(check.ratio * pred.predict(cfgs), rel=1e-12)
    assert pred.drift == 1.0 and scaled.describe()["drift"] == check.ratio
    with pytest.raises(ValueError, match="drift=0 must be a positive factor"):
        pred.rescaled(0)


def stub_referenced(ratio: float) -> Referenced:
    return Referenced((), DriftCheck(ratio, (), 0.0, 0.0))


def test_settled_waits_out_a_disturbed_moment_and_accepts_a_lasting_drift():
    waits: list[float] = []
    spike = iter([2.1, 1.9, 1.04, 3.0])  # a slow moment that passes after two pauses
    got = settled(lambda: stub_referenced(next(spike)), pauses_s=(2, 5, 10), sleep=waits.append)
    assert got.ratio == 1.04 and got.tries == 3 and waits == [2, 5]
    waits.clear()
    assert not got.lasting
    waits.clear()
    # the machine got faster and stays so: three tries far under 1 are a lasting drift; the median try is kept
    # (not the one closest to 1) and the last pause is not spent
    lasting = iter([0.62, 0.7, 0.66, 1.0])
    got = settled(lambda: stub_referenced(next(lasting)), pauses_s=(2, 5, 10), sleep=waits.append)
    assert got.ratio == 0.66 and got.tries == 3 and waits == [2, 5] and got.lasting
    waits.clear()
    # far off on both sides is a disturbed machine, not a drift: the try closest to 1 is kept after every pause
    mixed = iter([0.6, 1.5, 0.8, 1.3])
    got = settled(lambda: stub_referenced(next(mixed)), pauses_s=(2, 5, 10), sleep=waits.append)
    assert got.ratio == 0.8 and got.tries == 4 and waits == [2, 5, 10] and not got.lasting
    # judged against the predictor's drift factor, not 1: a machine known to run 1.5x slower is settled there
    got = settled(lambda: stub_referenced(1.55), expected=1.5, pauses_s=(2,), sleep=waits.append)
    assert got.tries == 1
    with pytest.raises(ValueError, match="expected=0"):
        settled(lambda: stub_referenced(1.0), expected=0)


def test_check_drift_needs_calibration_subnets(tmp_path):
    path = tmp_path / "bare.sqlite"
    with LatencyTable(path) as t:
        build_table(t, "tiny28", SPEC, get_runtime("onnxruntime"),
                    settings=BuildSettings(protocol=QUICK, calibration_subnets=0))
    with pytest.raises(ValueError, match="no calibration subnets .* to re-time"):
        check_drift(path, SPEC, "local", get_runtime("onnxruntime"), "onnxruntime")
    r = CliRunner().invoke(app, ["profile", "show", "--table", str(path), "--check-drift", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["tables"][0]["drift"] is None  # nothing to re-time: not checked, no note


def test_profile_show_checks_and_reports_drift(table, tmp_path):
    path = tmp_path / "t.sqlite"
    path.write_bytes(table.read_bytes())
    run = CliRunner().invoke
    r = run(app, ["profile", "show", "--table", str(path), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["tables"][0]["drift"] is None
    r = run(app, ["profile", "show", "--table", str(path), "--check-drift", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    row = out["tables"][0]
    assert row["drift"]["ratio"] > 0 and len(row["drift"]["references"]) == 4 and out["drift_notes"] == []
    r = run(app, ["profile", "show", "--table", str(path)])
    assert r.exit_code == 0 and f"{row['drift']['ratio']:.2f}x" in r.stdout and "reference subnets" in r.stdout
