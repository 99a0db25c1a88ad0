"""Channel importance sorting for elastic expand."""

from __future__ import annotations

import pytest
import torch

import model_zoo
from elastic import SubnetConfig, sort_channels
from model_zoo.ofa_parity import randomize_


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float32 summation-order rounding (logits here are O(10))."""
    return torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def _cfg(net, e, d=None, k=5):
    n = net.space.n_blocks
    return SubnetConfig(ks=(k,) * n, e=(e,) * n, d=d or (max(net.space.d),) * net.space.n_stages, r=32)


@pytest.fixture
def net():
    return randomize_(model_zoo.get_supernet("ofa_mbv3_tiny"), seed=5).eval()


def test_widest_function_unchanged(net):
    x = torch.randn(4, 1, 32, 32)
    cfg = net.space.largest()
    with torch.no_grad():
        before = net(x, cfg)
        sort_channels(net)
        assert close(net(x, cfg), before)


def test_sorts_by_projection_l1_norm(net):
    sort_channels(net)
    for block in net.blocks:
        imp = block.project_conv.weight.abs().sum((0, 2, 3))
        assert (imp[:-1] >= imp[1:] - 1e-6).all()


def test_trained_widths_keep_their_channel_sets(net):
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        sort_channels(net)  # phase "expand 1": sort everything
        w4 = [set(map(tuple, b.expand_conv.weight[: b.mid_channels(4)].flatten(1).tolist())) for b in net.blocks]
        for block in net.blocks:  # pretend training moved the weights: importance order changes
            block.project_conv.weight.mul_(torch.rand_like(block.project_conv.weight) + 0.5)
        y4, y6 = net(x, _cfg(net, 4)), net(x, _cfg(net, 6))
        sort_channels(net, keep=(4,))  # phase "expand 2": width 4 already trained
        for block, chans in zip(net.blocks, w4):
            now = set(map(tuple, block.expand_conv.weight[: block.mid_channels(4)].flatten(1).tolist()))
            assert now == chans
        assert close(net(x, _cfg(net, 4)), y4)
        assert close(net(x, _cfg(net, 6)), y6)
        # without protection, the width-4 subnet would have changed
        sort_channels(net, keep=())
        assert not torch.allclose(net(x, _cfg(net, 4)), y4, atol=1e-3)


def test_keep_outside_space(net):
    with pytest.raises(ValueError, match=r"keep=\[5\].*allowed: \[3, 4, 6\]"):
        sort_channels(net, keep=(5,))
