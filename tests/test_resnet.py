"""The OFA-ResNet50 family: configs in OFA's d/e/w format, its space, exact costs, extraction, and parity
with the reference ``ofa`` package's ``OFAResNets`` (supernet and extracted) through its weight layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner
from torch.utils.flop_counter import FlopCounterMode

import model_zoo
from elastic import sort_channels
from elastic.batch import ConfigBatch, CostGrid, space_cardinalities
from elastic.families import build_supernet, get_family, list_families, spec_from_dict
from elastic.resnet import ElasticResNet, ResNetConfig, ResNetSpace, ResNetSpec
from elastic.resnet.spec import costs as spec_costs
from elastic.training.data import DataSource, load_splits
from elastic.training.schedule import Phase, ofa_schedule
from elastic.training.trainer import TrainConfig, Trainer
from model_zoo.checkpoint import load_checkpoint, save_checkpoint
from model_zoo.ofa_parity import check_parity, randomize_, reference_supernet
from model_zoo.ofa_weights import export_ofa_checkpoint, import_ofa_checkpoint, to_ofa_state_dict
from ofakit.artifact import sidecar_path
from ofakit.cli import app
from ofakit.search.evolution import Constraint, Metric, evolve
from ofakit.search.pareto import pareto_front
from ofakit.ship import ship
from ofakit.specialize import Budget
from profilers import LatencyPredictor, LatencyTable
from profilers.layers import subnet_layers
from tests.conftest import assert_extraction_exact, ofa_available
from tests.fakedata import write_fmnist
from tests.shipyard import LAT, build_shipyard, macs_specializer

R50, TINY = "ofa_resnet50", "ofa_resnet_tiny"
needs_ofa = pytest.mark.skipif(not ofa_available(), reason="the reference 'ofa' package is not installed")


def test_config_round_trips_and_rejects_bad_structure(rng):
    sp = model_zoo.get_spec(R50).space
    cfg = sp.sample(rng)
    assert ResNetConfig.from_json(cfg.to_json()) == cfg and ResNetConfig.from_ofa(cfg.to_ofa(), r=cfg.r) == cfg
    assert set(cfg.to_dict()) == {"d", "e", "w", "r"} and len(cfg.e) == 18 and len(cfg.w) == 6
    for kwargs, match in [(dict(d=[0, -1, 0, 0, 0]), r"d\[1\]=-1 must be an integer >= 0"),
                          (dict(w=[0] * 5), "5 depth genes and 5 width genes"),
                          (dict(e=[0.2, True] + [0.2] * 16), r"e\[1\]=True")]:
        with pytest.raises(ValueError, match=match):
            ResNetConfig(**{**cfg.to_dict(), **kwargs})
    with pytest.raises(ValueError, match=r"unknown ResNetConfig key\(s\) \['ks'\]"):
        ResNetConfig.from_dict({**cfg.to_dict(), "ks": [3]})
    with pytest.raises(ValueError, match="not valid JSON"):
        ResNetConfig.from_json("{")


def test_space_follows_ofa_resnets(rng):
    sp = model_zoo.get_spec(R50).space
    assert sp.slots == (4, 4, 6, 4) and sp.n_blocks == 18 and sp.stem_depths == (0, 2)
    big, small = sp.largest(), sp.smallest()
    assert big.d == (2,) * 5 and big.w == (2,) * 6 and small.d == (0,) * 5 and small.w == (0,) * 6
    assert len(sp.active_blocks(big)) == 18 and len(sp.active_blocks(small)) == 10
    assert sp.size(with_resolution=False) == 2 * 9 * np.prod([3 * sum(3 ** (b + x) for x in (0, 1, 2))
                                                              for b in (2, 2, 4, 2)])
    assert ResNetSpace.from_dict(sp.to_dict()) == sp
    for cfg in (sp.sample(rng) for _ in range(20)):
        assert cfg in sp and cfg.d[0] in (0, 2)  # OFA samples the stem's depth from {min, max}
        canon = sp.canonical(cfg)
        assert [canon.e[i] for i in sp.active_blocks(cfg)] == [cfg.e[i] for i in sp.active_blocks(cfg)]
    bad = big.to_dict()
    for change, match in [({"d": [1, 2, 2, 2, 2]}, r"d\[0\]=1 is outside the space; allowed: \[0, 2\]"),
                          ({"w": [0, 0, 0, 3, 0, 0]}, r"w\[3\]=3 is outside the space; allowed: \[0, 1, 2\]"),
                          ({"e": [0.5] * 18}, r"e\[0\]=0.5 is outside"), ({"e": [0.2] * 17}, "needs 18"),
                          ({"r": 100}, "r=100 is outside")]:
        with pytest.raises(ValueError, match=match):
            sp.validate(ResNetConfig.from_dict({**bad, **change}))


@pytest.mark.parametrize("name, n", [(TINY, 8), (R50, 2)])
def test_costs_match_real_counts(name, n, rng):
    net = model_zoo.get_supernet(name, num_classes=10, resolutions=(28,) if name == TINY else (64,))
    for cfg in [net.space.largest(min(net.space.r)), net.space.smallest()] + [
            net.space.sample(rng, r=min(net.space.r)) for _ in range(n)]:
        static = net.extract(cfg).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            static(torch.randn(1, net.spec.in_channels, cfg.r, cfg.r))
        assert net.flops(cfg) == counter.get_total_flops() // 2, cfg.to_json()
        assert net.params(cfg) == sum(p.numel() for p in static.parameters())


def test_tiny_variant_extracts_exactly_and_trains_only_active_weights(rng):
    net = randomize_(model_zoo.get_supernet(TINY), seed=3).eval()
    assert_extraction_exact(net, rng)
    net.train()
    small = net.space.smallest()
    net(torch.randn(4, 1, 28, 28), small).logsumexp(1).mean().backward()
    assert net.stem1_conv.weight.grad is None  # d[0] = 0: the stem's residual conv is skipped
    assert net.blocks[1].conv1.weight.grad is None  # depth 0 beyond the base: the stage's second slot idles
    assert net.blocks[0].conv1.weight.grad[net.spec.mid_channels(24, 0.2):].abs().sum() == 0  # narrow subnet
    assert net.classifier.weight.grad[:, 88:].abs().sum() == 0  # the last stage at width 0.65 (88 channels)


def test_populations_costs_encoding_and_search(rng):
    """ResNet populations on the shared ConfigBatch: round trips, exact vectorised costs (a block's cost
    depends on its input and output widths), canonical forms, the one-hot encoding, and the search."""
    spec = model_zoo.get_spec(TINY)
    sp, grid = spec.space, CostGrid.build(spec)
    batch = ConfigBatch.random(sp, 300, rng)
    cfgs = batch.configs()
    assert all(c in sp for c in cfgs) and set(batch.groups()) == {"d", "e", "w", "r"}
    assert np.array_equal(ConfigBatch.from_configs(sp, cfgs).genome(), batch.genome())
    assert np.array_equal(ConfigBatch.from_values(sp, **batch.values()).genome(), batch.genome())
    assert space_cardinalities(sp)[:5] == [2, 3, 3, 3, 3]  # the stem's depth gene: smallest or largest
    want = np.array([model_zoo.get_supernet(TINY).flops(c) for c in cfgs[:40]])
    assert np.array_equal(grid.macs(batch.take(np.arange(40))), want)
    assert grid.params(batch).tolist() == [spec_costs(spec, c)[1] for c in cfgs]
    canon = ConfigBatch.from_configs(sp, [sp.canonical(c) for c in cfgs])
    assert np.array_equal(canon.genome(), batch.canonical_genome())
    enc = batch.onehot()
    assert np.array_equal(enc.sum(1), 1 + 5 + batch.active.sum(1) + 6) and np.array_equal(canon.onehot(), enc)
    w = np.random.default_rng(1).standard_normal(enc.shape[1]).astype(np.float32)
    assert np.allclose(batch.onehot_dot(w), enc @ w, atol=1e-4)
    with pytest.raises(ValueError, match=r"ResNetConfig.w=3 is outside the space; allowed: \[0, 1, 2\]"):
        ConfigBatch.from_values(sp, **{**batch.values(), "w": np.full_like(batch.values()["w"], 3)})
    macs = Metric("macs", grid.macs, "M", 1e6)
    budget = float(np.median(grid.macs(batch)))
    res = evolve(sp, lambda b: np.log(grid.macs(b)) + 0.01 * b.e.sum(1), [Constraint(macs, budget)], seed=0)
    assert res.best.config in sp and budget * 0.9 < res.best.metrics["macs"] <= budget
    front, _ = pareto_front(sp, lambda b: np.log(grid.macs(b)), macs, generations=20, population=40)
    assert len(front) > 3 and all(c.config in sp for c in front)


def test_families_registry_and_spec_dispatch():
    assert list_families() == ["mobilenetv3", "proxylessnas", "resnet"]
    spec = model_zoo.get_spec(TINY)
    assert spec_from_dict(spec.to_dict()) == spec and isinstance(build_supernet(spec), ElasticResNet)
    assert isinstance(spec_from_dict(model_zoo.get_spec("ofa_mbv3_tiny").to_dict()), type(model_zoo.get_spec(
        "ofa_mbv3_tiny")))  # no family key: MobileNetV3
    with pytest.raises(ValueError, match="unknown supernet family 'vit'"):
        get_family("vit")
    with pytest.raises(ValueError, match="ResNetSpec strides"):
        ResNetSpec.from_dict({**spec.to_dict(), "strides": [1, 3, 2, 1]})


@needs_ofa
def test_parity_with_ofa_resnets_20_configs():
    report = check_parity(R50, n_configs=20, resolutions=(64, 96))
    assert report.configs == 20 and report.logit_scale > 0.05
    assert report.relative <= 1e-5, report


@needs_ofa
def test_resnet_ofa_layout_both_ways(tmp_path, rng):
    ours = randomize_(model_zoo.get_supernet(R50, num_classes=10, resolutions=(64,)), seed=4).eval()
    ref = reference_supernet(R50, num_classes=10)
    assert set(to_ofa_state_dict(ours)) == set(ref.state_dict())
    path = export_ofa_checkpoint(ours, tmp_path / "resnet.pth")
    ref.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    ref.eval()
    cfg = ours.space.sample(rng)
    ref.set_active_subnet(**cfg.to_ofa())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ref(x) - ours(x, cfg)).abs().max() <= 1e-4
    again = import_ofa_checkpoint(R50, path, resolutions=[64])
    assert all(torch.equal(again.state_dict()[k], v) for k, v in ours.state_dict().items())
    with pytest.raises(ValueError, match="does not match recipe 'ofa_mbv3_d234_e346_k357_w1.0'"):
        import_ofa_checkpoint("ofa_mbv3_d234_e346_k357_w1.0", path)


def test_tiny_resnet_table_search_export_ship(tmp_path):
    """The whole path on the family's tiny variant: a checkpoint, a latency table timed in onnxruntime whose
    layers cover every subnet, then `ship` (search, export with parity, a real measurement interleaved with
    the table's reference subnets) meeting a budget; MACs stand in for accuracy."""
    ctx, table = build_shipyard(tmp_path, recipe=TINY, calibration=6)
    spec = ctx.supernet.spec
    assert isinstance(ctx.supernet, ElasticResNet) and ctx.supernet.spec == model_zoo.get_spec(TINY, resolutions=(28,))
    pred = LatencyPredictor.load(table, "local", "onnxruntime", spec)
    cfgs = [spec.space.sample(np.random.default_rng(i)) for i in range(30)]
    with LatencyTable(table, readonly=True) as t:
        assert {k for c in cfgs for k in subnet_layers(spec, c)} <= {e.key for e in t.entries("local")}
    lat = pred.predict(cfgs)
    assert np.all(lat > 0) and np.corrcoef(lat, [spec_costs(spec, c)[0] for c in cfgs])[0, 1] > 0.5
    budget = Budget("local", "onnxruntime", 20 * float(pred.predict([spec.space.largest()])[0]))
    report = ship(macs_specializer(ctx, table), [budget], "onnx", tmp_path / "m.onnx", retries=1,
                  measure_shortlist=False)
    pick = report.final.config
    assert isinstance(pick, ResNetConfig) and pick in spec.space and report.met is True
    assert 0 < report.shipped["measured_ms"][LAT] <= budget.ms and report.artifact.max_abs_diff <= 1e-4
    side = json.loads(sidecar_path(tmp_path / "m.onnx").read_text())
    assert ResNetConfig.from_dict(side["config"]) == pick
    (tmp_path / "pick.json").write_text(pick.to_json())  # the CLI reads a ResNet subnet file by its keys
    res = CliRunner().invoke(app, ["export", "--checkpoint", ctx.name, "--subnet", str(tmp_path / "pick.json"),
                                   "--target", "onnx", "--out", str(tmp_path / "cli.onnx"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["max_abs_diff"] <= 1e-4


def test_resnet_progressive_shrinking_trains_and_sorting_keeps_the_function(tmp_path, monkeypatch, rng):
    """OFA's schedule for a ResNet space has no kernel phase and ends with width phases; each phase samples
    configs of the full space; sorting hidden channels keeps the widest subnet's function and the channel
    sets of trained ratios; a trained supernet is saved and loaded as a checkpoint."""
    monkeypatch.setenv("OFAKIT_CACHE", str(tmp_path / "cache"))
    net = model_zoo.get_supernet(TINY, resolutions=(28,))
    sp = net.space
    phases = ofa_schedule({k: 1 for k in ("teacher", "depth1", "depth2", "expand1", "expand2", "width1", "width2")},
                          lr=0.02, space=sp)
    assert [p.name for p in phases] == ["teacher", "depth1", "depth2", "expand1", "expand2", "width1", "width2"]
    width1 = phases[-2].space(sp)
    assert width1.width_choices == (1, 2) and all(width1.sample(rng) in sp for _ in range(20))
    with pytest.raises(ValueError, match="ks=\\[3\\] is not an elastic dimension of this supernet"):
        Phase("k", 1, 0.1, ks=(3,)).space(sp)
    with pytest.raises(ValueError, match=r"w=\[3\] has \[3\] outside the space; allowed: \[0, 1, 2\]"):
        Phase("w", 1, 0.1, w=(3,)).space(sp)
    data = write_fmnist(tmp_path / "fmnist", n_train=64, n_test=16)
    splits = load_splits(DataSource("fashion-mnist", data), val_size=16, seed=0, train_limit=32)
    config = TrainConfig(batch_size=16, seed=1, calib_images=16, epoch_calib_images=16, eval_images=16,
                         eval_random_subnets=1, eval_batch_size=16, log_every=0)
    records = Trainer(net, splits, [phases[0], phases[3], phases[5]], config, tmp_path / "run",
                      progress=False).run()
    assert [r["phase"] for r in records] == ["teacher", "expand1", "width1"]
    assert all(np.isfinite(r["loss"]) for r in records)
    net = randomize_(net, seed=2).eval()
    x = torch.randn(2, 1, 28, 28)
    big, mid = sp.largest(), ResNetConfig.from_dict({**sp.largest().to_dict(), "e": [0.25] * sp.n_blocks})
    with torch.no_grad():
        want_big, want_mid = net(x, big), net(x, mid)
        sort_channels(net, keep=(0.25,))
        assert torch.allclose(net(x, big), want_big, atol=1e-4)  # the widest subnet is unchanged
        assert torch.allclose(net(x, mid), want_mid, atol=1e-4)  # a kept ratio keeps its channel set
    path = save_checkpoint(net, tmp_path / "resnet")
    again = load_checkpoint(path)
    assert isinstance(again, ElasticResNet) and all(torch.equal(again.state_dict()[k], v)
                                                    for k, v in net.state_dict().items())


def test_layer_grid_matches_the_variant_numbering(rng):
    """Table keys, costs and variants agree, also for a space with one depth (one stem depth)."""
    from profilers.layers import slot_grid

    base = model_zoo.get_spec(TINY, resolutions=(28,))
    for spec in (base, ResNetSpec.from_dict({**base.to_dict(), "d": [2]})):
        grid, costs = slot_grid(spec), CostGrid.build(spec)
        sp = spec.space
        assert len(grid.fixed_keys[0]) == sp.n_fixed_variants == costs.fixed_macs.shape[1]
        assert all(len(row) == sp.n_slot_variants for slot in grid.block_keys for row in slot)
        batch = ConfigBatch.random(sp, 20, rng)
        for i, cfg in enumerate(batch.configs()):
            keys = subnet_layers(spec, cfg)
            fixed = grid.fixed_keys[0][batch.fixed_choice[i]]
            blocks = [grid.block_keys[s][0][v % sp.n_slot_variants] for s, v in
                      zip(np.flatnonzero(batch.active[i]), batch.slot_choice[i][batch.active[i]])]
            assert keys == [fixed[0], *blocks, fixed[1]]
