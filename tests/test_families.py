"""The OFA-ProxylessNAS family on the shared MBConv engine: a space whose last stage has one block slot,
its configs and populations, the supernet against extraction and against the reference ``ofa`` package,
and the OFA weight layout both ways."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import model_zoo
from elastic import SearchSpace, SubnetConfig
from elastic.batch import ConfigBatch, CostGrid, space_cardinalities
from elastic.spec import MobileNetV3Spec, costs
from model_zoo.ofa_parity import check_parity, randomize_, reference_supernet
from model_zoo.ofa_weights import export_ofa_checkpoint, import_ofa_checkpoint, to_ofa_state_dict
from ofakit.ship import ship
from ofakit.specialize import Budget
from profilers import LatencyPredictor, LatencyTable
from profilers.layers import subnet_layers
from tests.conftest import assert_extraction_exact, ofa_available
from tests.shipyard import LAT, build_shipyard, macs_specializer

PROXYLESS = "ofa_proxyless_d234_e346_k357_w1.3"
TINY = "ofa_proxyless_tiny"
needs_ofa = pytest.mark.skipif(not ofa_available(), reason="the reference 'ofa' package is not installed")


def test_proxyless_space_has_a_one_slot_last_stage():
    sp = model_zoo.get_spec(PROXYLESS).space
    assert sp.slots == (4, 4, 4, 4, 4, 1) and sp.n_blocks == 21  # OFA's 21 ks/e entries, 6 depths
    assert sp.depth_choices[-1] == (1,) and sp.depth_choices[0] == (2, 3, 4)
    assert sp.largest().d == (4, 4, 4, 4, 4, 1) and sp.smallest().d == (2, 2, 2, 2, 2, 1)
    assert sp.size(with_resolution=False) == sum(9**d for d in (2, 3, 4)) ** 5 * 9
    assert SearchSpace.from_dict(sp.to_dict()) == sp
    assert "stage_slots" not in model_zoo.get_spec("ofa_mbv3_tiny").space.to_dict()  # older forms unchanged
    bad = sp.largest()
    with pytest.raises(ValueError, match=r"SubnetConfig.d\[5\]=4 is outside the space; allowed: \[1\]"):
        sp.validate(SubnetConfig(bad.ks, bad.e, (4,) * 6, bad.r))
    with pytest.raises(ValueError, match=r"needs 21 \(block slots per stage: \[4, 4, 4, 4, 4, 1\]\)"):
        sp.validate(SubnetConfig((3,) * 24, (3,) * 24, bad.d, bad.r))
    with pytest.raises(ValueError, match="stage_slots"):
        SearchSpace(ks=(3,), e=(3,), d=(2, 3), r=(32,), n_stages=2, stage_slots=(4, 1))
    with pytest.raises(ValueError, match="ask its space"):
        sp.largest().active_blocks()  # a config alone cannot know which of its slots run


def test_sampled_configs_follow_ofa_and_round_trip(rng):
    sp = model_zoo.get_spec(PROXYLESS).space
    for _ in range(20):
        cfg = sp.sample(rng)
        assert cfg.d[-1] == 1 and cfg in sp  # OFA's sample_active_subnet forces the last depth to 1
        assert SubnetConfig.from_ofa(cfg.to_ofa(), r=cfg.r) == cfg
        assert sp.active_blocks(cfg)[-1] == 20
    batch = ConfigBatch.random(sp, 200, rng)
    cfgs = batch.configs()
    assert all(c in sp for c in cfgs)
    again = ConfigBatch.from_configs(sp, cfgs)
    assert np.array_equal(again.genome(), batch.genome())
    assert space_cardinalities(sp)[42:48] == [3, 3, 3, 3, 3, 1]
    assert np.array_equal(ConfigBatch.from_configs(sp, [sp.canonical(c) for c in cfgs]).genome(),
                          batch.canonical_genome())
    assert np.array_equal(batch.active.sum(1), np.array([sum(c.d) for c in cfgs]))


def test_cost_grid_matches_planned_costs(rng):
    spec = model_zoo.get_spec(TINY)
    grid = CostGrid.build(spec)
    batch = ConfigBatch.random(spec.space, 50, rng)
    assert grid.macs(batch).tolist() == [costs(spec, c)[0] for c in batch.configs()]
    assert grid.params(batch).tolist() == [costs(spec, c)[1] for c in batch.configs()]


def test_tiny_variant_extracts_exactly_and_trains(rng):
    net = randomize_(model_zoo.get_supernet(TINY), seed=3).eval()
    assert net.mix_conv is None and net.classifier.in_features == 256
    assert_extraction_exact(net, rng)
    net.train()
    loss = net(torch.randn(4, 1, 28, 28), net.space.smallest()).logsumexp(1).mean()
    loss.backward()
    assert net.blocks[-1].dw_conv.weight.grad is not None  # the one-slot last stage always runs
    assert net.blocks[1].dw_conv.weight.grad is None  # depth 1: the second slot of the first stage did not


def test_spec_round_trip_and_validation():
    spec = model_zoo.get_spec(PROXYLESS)
    data = spec.to_dict()
    assert data["family"] == "proxylessnas" and data["stages"][-1]["slots"] == 1
    assert "slots" not in data["stages"][0]
    assert MobileNetV3Spec.from_dict(data) == spec
    assert "family" not in model_zoo.get_spec("ofa_mbv3_tiny").to_dict()  # spec ids of older tables unchanged
    with pytest.raises(ValueError, match="family='resnet' is not an MBConv family"):
        MobileNetV3Spec.from_dict({**data, "family": "resnet"})
    with pytest.raises(ValueError, match="head_act='gelu' is not supported"):
        MobileNetV3Spec.from_dict({**data, "head_act": "gelu"})


@needs_ofa
def test_parity_with_ofa_proxyless_20_configs():
    report = check_parity(PROXYLESS, n_configs=20, resolutions=(128, 160, 192, 224))
    assert report.configs == 20 and report.logit_scale > 0.05
    assert report.ok(1e-5), report


@needs_ofa
def test_proxyless_ofa_layout_both_ways(tmp_path):
    ours = randomize_(model_zoo.get_supernet(PROXYLESS, num_classes=10), seed=4).eval()
    ref = reference_supernet(PROXYLESS, num_classes=10)
    assert set(to_ofa_state_dict(ours)) == set(ref.state_dict())
    path = export_ofa_checkpoint(ours, tmp_path / "proxyless.pth")
    ref.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    ref.eval()
    cfg = ours.space.sample(np.random.default_rng(3))
    ref.set_active_subnet(**cfg.to_ofa())
    x = torch.randn(2, 3, cfg.r, cfg.r)
    with torch.no_grad():
        assert (ref(x) - ours(x, cfg)).abs().max() <= 1e-5
    again = import_ofa_checkpoint(PROXYLESS, path)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in ours.state_dict().items())
    with pytest.raises(ValueError, match="does not match recipe 'ofa_mbv3_d234_e346_k357_w1.0'"):
        import_ofa_checkpoint("ofa_mbv3_d234_e346_k357_w1.0", path)


def test_tiny_proxyless_table_search_export_ship(tmp_path):
    """The whole path on the family's tiny variant: a latency table timed in onnxruntime, then `ship` (search,
    export with parity, a real measurement of the artifact interleaved with the table's reference subnets)
    meeting a budget; MACs stand in for accuracy (the CLI's accuracy data is family-blind and tested on
    MobileNetV3)."""
    ctx, table = build_shipyard(tmp_path, recipe=TINY, calibration=6)
    spec = ctx.supernet.spec
    pred = LatencyPredictor.load(table, "local", "onnxruntime", spec)
    cfgs = [spec.space.sample(np.random.default_rng(i), r=28) for i in range(30)]
    with LatencyTable(table, readonly=True) as t:
        assert {k for c in cfgs for k in subnet_layers(spec, c)} <= {e.key for e in t.entries("local")}
    lat = pred.predict(cfgs)
    assert np.all(lat > 0) and np.corrcoef(lat, [costs(spec, c)[0] for c in cfgs])[0, 1] > 0.5
    budget = Budget("local", "onnxruntime", 20 * float(pred.predict([spec.space.largest(28)])[0]))
    report = ship(macs_specializer(ctx, table), [budget], "onnx", tmp_path / "m.onnx", retries=1,
                  measure_shortlist=False)
    pick = report.final.config
    assert pick in spec.space and pick.d[-1] == 1 and report.met is True
    assert 0 < report.shipped["measured_ms"][LAT] <= budget.ms and report.artifact.max_abs_diff <= 1e-4
    session = ort.InferenceSession(str(report.artifact.path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28), dtype=np.float32)
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (1, 10)
