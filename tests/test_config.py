"""SubnetConfig and SearchSpace: validation, JSON/OFA round trips, sampling, size, search helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest

import model_zoo
from elastic import SearchSpace, SubnetConfig

MBV3 = model_zoo.get_spec("ofa_mbv3_d234_e346_k357_w1.0").space


def test_json_round_trip(rng):
    for _ in range(20):
        cfg = MBV3.sample(rng)
        text = cfg.to_json()
        assert SubnetConfig.from_json(text) == cfg
        assert json.loads(text) == {"ks": list(cfg.ks), "e": list(cfg.e), "d": list(cfg.d), "r": cfg.r}
        assert hash(SubnetConfig.from_json(text)) == hash(cfg)


def test_ofa_round_trip_and_formats(rng):
    cfg = MBV3.sample(rng)
    arch = cfg.to_ofa()
    assert set(arch) == {"ks", "e", "d"}
    assert SubnetConfig.from_ofa(arch, cfg.r) == cfg
    # OFA's evolution finder writes r as a one-element list and a wid key
    assert SubnetConfig.from_ofa({**arch, "r": [cfg.r], "wid": None}) == cfg


def test_frozen_and_normalised():
    cfg = SubnetConfig(ks=[3] * 20, e=[3.0] * 20, d=[2] * 5, r=128)
    assert isinstance(cfg.ks, tuple) and cfg.e[0] == 3 and isinstance(cfg.e[0], int)
    with pytest.raises(AttributeError):
        cfg.r = 160  # type: ignore[misc]


@pytest.mark.parametrize("kwargs, match", [
    (dict(ks=[3] * 19, e=[3] * 20, d=[2] * 5, r=128), "ks has 19 entries but e has 20"),
    (dict(ks=[3] * 4, e=[3] * 4, d=[2] * 5, r=128), "fewer than the 5 stages"),
    (dict(ks=[3] * 20, e=[3] * 20, d=[2] * 5, r=-1), r"r=-1"),
    (dict(ks=[3] * 19 + ["7"], e=[3] * 20, d=[2] * 5, r=128), r"ks\[19\]='7'"),
    (dict(ks=[3] * 20, e=[3] * 19 + [True], d=[2] * 5, r=128), r"e\[19\]=True"),
    (dict(ks=3, e=[3] * 20, d=[2] * 5, r=128), "must be a list"),
])
def test_structural_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SubnetConfig(**kwargs)


def test_unknown_and_missing_keys():
    good = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 128}
    with pytest.raises(ValueError, match=r"unknown SubnetConfig key\(s\) \['kernel'\]"):
        SubnetConfig.from_dict({**good, "kernel": 3})
    with pytest.raises(ValueError, match=r"missing key\(s\) \['r'\]"):
        SubnetConfig.from_dict({k: v for k, v in good.items() if k != "r"})
    with pytest.raises(ValueError, match="not valid JSON"):
        SubnetConfig.from_json("{ks: 3")
    with pytest.raises(ValueError, match=r"unknown OFA arch key\(s\) \['x'\]"):
        SubnetConfig.from_ofa({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "x": 1}, 128)
    with pytest.raises(ValueError, match="resolution is required"):
        SubnetConfig.from_ofa({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5})


@pytest.mark.parametrize("change, match", [
    (dict(ks=(3,) * 15, e=(3,) * 15), "ks has 15 entries; this space needs 20"),
    (dict(d=(2,) * 4), "d has 4 entries; this space has 5 stages"),
    (dict(ks=(3,) * 19 + (9,)), r"ks\[19\]=9 is outside the space; allowed: \[3, 5, 7\]"),
    (dict(e=(3,) * 5 + (5,) + (3,) * 14), r"e\[5\]=5 is outside the space; allowed: \[3, 4, 6\]"),
    (dict(d=(2, 2, 5, 2, 2)), r"d\[2\]=5 is outside the space"),
    (dict(r=130), r"r=130 is outside the space"),
])
def test_space_validation_errors(change, match):
    base = MBV3.smallest().to_dict()
    base.update(change)
    cfg = SubnetConfig(**base)
    with pytest.raises(ValueError, match=match):
        MBV3.validate(cfg)
    assert cfg not in MBV3


def test_space_size_matches_paper():
    # (9^2 + 9^3 + 9^4)^5 architectures ~ 2.2e19, times 25 resolutions
    assert MBV3.size(with_resolution=False) == (81 + 729 + 6561) ** 5
    assert 2e19 < MBV3.size(with_resolution=False) < 2.3e19
    assert MBV3.size() == MBV3.size(with_resolution=False) * 25


def test_space_size_counts_distinct_architectures():
    space = SearchSpace(ks=(3, 5), e=(1, 2), d=(1, 2), r=(8,), n_stages=1)
    seen = {space.canonical(SubnetConfig(ks=(a, b), e=(c, e), d=(d,), r=8))
            for a in (3, 5) for b in (3, 5) for c in (1, 2) for e in (1, 2) for d in (1, 2)}
    assert len(seen) == space.size() == 4 + 16


def test_sampling_is_seeded_and_in_space():
    a = [MBV3.sample(np.random.default_rng(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng = np.random.default_rng(1)
    cfgs = [MBV3.sample(rng) for _ in range(200)]
    assert all(c in MBV3 for c in cfgs)
    assert len({c.r for c in cfgs}) > 10 and {k for c in cfgs for k in c.ks} == {3, 5, 7}


def test_largest_smallest():
    hi, lo = MBV3.largest(), MBV3.smallest()
    assert set(hi.ks) == {7} and set(hi.e) == {6} and set(hi.d) == {4} and hi.r == 224
    assert set(lo.ks) == {3} and set(lo.e) == {3} and set(lo.d) == {2} and lo.r == 128


def test_canonical_and_active_blocks():
    cfg = SubnetConfig(ks=(7,) * 20, e=(6,) * 20, d=(2, 3, 4, 2, 2), r=128)
    assert cfg.active_blocks()[:5] == [0, 1, 4, 5, 6]
    canon = MBV3.canonical(cfg)
    assert canon.ks[2] == 3 and canon.ks[0] == 7 and len(cfg.active_blocks()) == 13
