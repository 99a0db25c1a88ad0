"""The schedule as data, subnet drawing, LR factors and training recipes."""

from __future__ import annotations

import numpy as np
import pytest

import model_zoo
from elastic.training.schedule import Phase, ofa_schedule, sandwich_schedule, validate_schedule
from elastic.training.trainer import TrainConfig, draw_subnets, lr_factor, trained_widths
from model_zoo.training_recipes import list_training_recipes, load_training_recipe, recipe_from_dict

SPACE = model_zoo.get_spec("ofa_mbv3_tiny").space


def test_ofa_schedule_is_progressive_shrinking():
    phases = validate_schedule(ofa_schedule(space=SPACE), SPACE)
    assert [p.name for p in phases] == ["teacher", "kernel", "depth1", "depth2", "expand1", "expand2"]
    spaces = [p.space(SPACE) for p in phases]
    assert spaces[0].ks == (7,) and spaces[0].e == (6,) and spaces[0].d == (4,)
    assert spaces[1].ks == (3, 5, 7) and spaces[1].d == (4,)
    assert spaces[2].d == (3, 4) and spaces[3].d == (2, 3, 4) and spaces[3].e == (6,)
    assert spaces[4].e == (4, 6) and spaces[5].e == (3, 4, 6)
    assert not phases[0].uses_teacher and all(p.uses_teacher for p in phases[1:])
    assert [p.sort_channels for p in phases] == [False] * 4 + [True, True]
    assert trained_widths(phases[:4], SPACE) == (6,) and trained_widths(phases[:5], SPACE) == (4, 6)


def test_sandwich_schedule():
    (p,) = sandwich_schedule(3, space=SPACE, random_subnets=2)
    cfgs = draw_subnets(p, p.space(SPACE), np.random.default_rng(0))
    assert len(cfgs) == 4 and cfgs[0] == SPACE.largest(cfgs[0].r) and cfgs[1] == SPACE.smallest(cfgs[0].r)
    assert len({c.r for c in cfgs}) == 1 and p.kd_source == "inplace"


def test_sandwich_resolution_rule():
    """BigNAS: the largest subnet always at the largest resolution, the smallest at the smallest, and the
    random ones each at their own resolution (all of them seen)."""
    (p,) = sandwich_schedule(3, space=SPACE, random_subnets=2, resolution="sandwich")
    sub = p.space(SPACE)
    steps = [draw_subnets(p, sub, np.random.default_rng([0, 0, 0, i])) for i in range(40)]
    assert all(s[0] == SPACE.largest() and s[1] == SPACE.smallest() for s in steps)
    assert SPACE.largest().r == max(SPACE.r) and SPACE.smallest().r == min(SPACE.r)
    assert {c.r for s in steps for c in s[2:]} == set(SPACE.r)
    assert any(s[2].r != s[3].r for s in steps)
    assert Phase.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="resolution='sandwich' needs sampler='sandwich'"):
        Phase("x", 1, 0.1, resolution="sandwich")
    with pytest.raises(ValueError, match=r"resolution='per_step'; allowed: \['shared', 'sandwich'\]"):
        Phase("x", 1, 0.1, resolution="per_step")


def test_draw_subnets_is_deterministic_and_in_phase_space():
    p = ofa_schedule(space=SPACE)[3]
    sub = p.space(SPACE)
    a = draw_subnets(p, sub, np.random.default_rng([0, 3, 1, 7]))
    b = draw_subnets(p, sub, np.random.default_rng([0, 3, 1, 7]))
    assert a == b and len(a) == 2 and all(c in sub and c in SPACE for c in a)
    assert set(a[0].e) == {6}


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="x", epochs=0, lr=0.1), "epochs=0 is out of range; allowed: 1 to"),
    (dict(name="x", epochs=1, lr=0), "lr=0 is out of range"),
    (dict(name="x", epochs=1, lr=0.1, sampler="greedy"), "sampler='greedy'; allowed"),
    (dict(name="x", epochs=1, lr=0.1, sampler="sandwich", subnets_per_step=1), "must be >= 2"),
    (dict(name="x", epochs=1, lr=0.1, kd_source="peer"), "kd_source='peer'"),
    (dict(name="x", epochs=1, lr=0.1, lr_schedule="step"), "lr_schedule='step'"),
])
def test_phase_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Phase(**kwargs)


def test_phase_against_space():
    with pytest.raises(ValueError, match=r"ks=\[3, 9\] has \[9\] outside the space"):
        Phase("k", 1, 0.1, ks=(3, 9)).space(SPACE)
    with pytest.raises(ValueError, match="must include the space's largest depth 4"):
        Phase("d", 1, 0.1, d=(2, 3)).space(SPACE)
    with pytest.raises(ValueError, match="phase names must be unique"):
        validate_schedule([Phase("a", 1, 0.1), Phase("a", 1, 0.1)], SPACE)
    with pytest.raises(ValueError, match="no phases"):
        validate_schedule([], SPACE)
    with pytest.raises(ValueError, match=r"unknown phase key\(s\) \['epoch'\]"):
        Phase.from_dict({"name": "a", "epoch": 1, "lr": 0.1})
    assert Phase.from_dict(Phase("a", 2, 0.1, ks=(3, 7)).to_dict()) == Phase("a", 2, 0.1, ks=(7, 3))


def test_lr_factor():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(99, 100, 0, "cosine") < 0.01
    assert lr_factor(50, 100, 0, "constant") == 1.0


def test_builtin_recipes_load():
    names = list_training_recipes()
    assert {"fmnist_tiny", "fmnist_tiny_sandwich"} <= set(names)
    r = load_training_recipe("fmnist_tiny")
    assert r.supernet == "ofa_mbv3_tiny" and r.phases[0].name == "teacher" and r.train.batch_size == 128
    assert recipe_from_dict(r.to_dict()).to_dict() == r.to_dict()
    assert load_training_recipe("fmnist_tiny_sandwich").phases[0].sampler == "sandwich"
    for name in names:  # every built-in recipe loads and names a registered supernet
        rec = load_training_recipe(name)
        assert rec.name == name and model_zoo.get_spec(rec.supernet, **rec.supernet_options).in_channels >= 1
    wide = model_zoo.get_spec(load_training_recipe("fmnist_w10_sandwich").supernet)
    assert wide.in_channels == 1 and wide.num_classes == 10 and wide.r == tuple(range(16, 41, 4))
    assert [s.width for s in wide.stages] == [24, 40, 80, 112, 160] and wide.feature_mix_width == 1280


def test_bad_recipes(tmp_path):
    with pytest.raises(ValueError, match="unknown training recipe 'nope'"):
        load_training_recipe("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text("supernet = [")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_training_recipe(bad)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['epochs'\]"):
        recipe_from_dict({"supernet": "ofa_mbv3_tiny", "epochs": 3})
    with pytest.raises(ValueError, match="must name a supernet"):
        recipe_from_dict({})
    with pytest.raises(ValueError, match="unknown supernet recipe 'resnet'"):
        recipe_from_dict({"supernet": "resnet"})
    with pytest.raises(ValueError, match=r"unknown train setting\(s\) \['lr'\]"):
        recipe_from_dict({"supernet": "ofa_mbv3_tiny", "train": {"lr": 0.1}})
    with pytest.raises(ValueError, match="strategy='greedy'"):
        recipe_from_dict({"supernet": "ofa_mbv3_tiny", "strategy": "greedy"})
    with pytest.raises(ValueError, match=r"bad \[schedule\]"):
        recipe_from_dict({"supernet": "ofa_mbv3_tiny", "schedule": {"epoch": 3}})
    with pytest.raises(ValueError, match=r"unknown \[data\] key"):
        recipe_from_dict({"supernet": "ofa_mbv3_tiny", "data": {"path": "x"}})
    assert TrainConfig.from_dict({"seed": 4}).seed == 4
