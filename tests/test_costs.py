"""Analytic MACs and parameter counts against real counts."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import model_zoo


def real_counts(net, cfg) -> tuple[int, int]:
    static = net.extract(cfg).eval()
    x = torch.randn(1, net.spec.in_channels, cfg.r, cfg.r)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        static(x)
    return counter.get_total_flops() // 2, sum(p.numel() for p in static.parameters())


@pytest.mark.parametrize("name, n", [("ofa_mbv3_tiny", 8), ("ofa_mbv3_tiny_d1234_e2346_k357", 6),
                                     ("ofa_mbv3_d234_e346_k357_w1.0", 3),
                                     ("ofa_mbv3_d234_e346_k357_w1.2", 2), ("ofa_proxyless_tiny", 6),
                                     ("ofa_proxyless_d234_e346_k357_w1.3", 2)])
def test_flops_and_params_match_real_counts(name, n, rng):
    net = model_zoo.get_supernet(name, num_classes=10)
    cfgs = [net.space.largest(), net.space.smallest()] + [net.space.sample(rng) for _ in range(n)]
    for cfg in cfgs:
        assert (net.flops(cfg), net.params(cfg)) == real_counts(net, cfg), cfg.to_json()


def test_flops_grow_with_each_dimension():
    net = model_zoo.get_supernet("ofa_mbv3_d234_e346_k357_w1.0")
    lo = net.space.smallest()
    for field, value in (("ks", (5,) * 20), ("e", (4,) * 20), ("d", (3,) * 5), ("r", 160)):
        bigger = type(lo)(**{**lo.to_dict(), field: value})
        assert net.flops(bigger) > net.flops(lo), field


def test_official_space_known_figures():
    # OFA-MobileNetV3 w1.0 with 1000 classes: the largest subnet at 224 px has ~7.7M parameters.
    net = model_zoo.get_supernet("ofa_mbv3_d234_e346_k357_w1.0")
    assert 7.5e6 < net.params(net.space.largest()) < 7.8e6
    assert 550e6 < net.flops(net.space.largest()) < 600e6
