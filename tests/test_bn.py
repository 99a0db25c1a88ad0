"""BatchNorm recalibration for one subnet."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import model_zoo
from elastic import SubnetConfig, calibrated_subnet, recalibrate_bn
from model_zoo.ofa_parity import randomize_


def _bn_reference(net, cfg, images):
    """PyTorch's own BatchNorm with momentum 1: one train-mode pass leaves exact batch statistics."""
    ref = net.extract(cfg)
    ref.eval()
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.train()
            m.momentum = 1.0
    with torch.no_grad():
        ref(images)
    return ref


def test_recalibration_equals_exact_batch_statistics(tiny, rng):
    cfg = tiny.space.sample(rng)
    images = torch.randn(48, 1, cfg.r, cfg.r) * 2 + 0.5
    assert recalibrate_bn(tiny, cfg, [images]) == 48
    ref = _bn_reference(tiny, cfg, images)
    got = tiny.extract(cfg)
    pairs = [(a, b) for a, b in zip(got.modules(), ref.modules()) if isinstance(a, nn.BatchNorm2d)]
    assert len(pairs) > 20
    for a, b in pairs:
        assert torch.allclose(a.running_mean, b.running_mean, atol=1e-5, rtol=1e-4)
        assert torch.allclose(a.running_var, b.running_var, atol=1e-5, rtol=1e-4)


def test_recalibration_pools_over_batches(tiny):
    cfg = tiny.space.largest()
    images = torch.randn(40, 1, 32, 32)
    recalibrate_bn(tiny, cfg, [images])
    one = tiny.stem_bn.running_var.clone()
    recalibrate_bn(tiny, cfg, [(images[:15], None), (images[15:], None)])  # (images, labels) pairs
    assert torch.allclose(tiny.stem_bn.running_var, one, rtol=1e-5)


def test_recalibration_changes_nothing_else(rng):
    net = randomize_(model_zoo.get_supernet("ofa_mbv3_tiny"), seed=3).train()
    cfg = SubnetConfig(ks=(5,) * 16, e=(3,) * 16, d=(2, 3, 2, 4), r=28)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    recalibrate_bn(net, cfg, [torch.randn(16, 1, 28, 28)])
    assert net.training  # mode restored
    after = net.state_dict()
    active = {id(bn) for _, bn in net.extract_with_bn_pairs(cfg)[1]}
    bn_names = {n: m for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)}
    changed = 0
    for key, old in before.items():
        owner, _, field = key.rpartition(".")
        new = after[key]
        if field in ("running_mean", "running_var") and id(bn_names.get(owner)) in active:
            c = next(s.num_features for s, b in net.extract_with_bn_pairs(cfg)[1] if b is bn_names[owner])
            assert torch.equal(new[c:], old[c:]), key  # inactive channels untouched
            changed += int(not torch.equal(new[:c], old[:c]))
        else:
            assert torch.equal(new, old), key
    assert changed > 20


def test_recalibration_errors(tiny):
    with pytest.raises(ValueError, match="got no images"):
        recalibrate_bn(tiny, tiny.space.largest(), [])
    with pytest.raises(ValueError, match="tensors or"):
        recalibrate_bn(tiny, tiny.space.largest(), ["not a batch"])


def test_calibrated_subnet_is_in_the_default_memory_format():
    """Statistics are gathered in channels-last (faster on CPU), but the subnet handed out has contiguous
    weights like any extracted one: a channels-last 3x3 conv weight breaks ExecuTorch's int8 lowering."""
    net = randomize_(model_zoo.get_supernet("ofa_resnet_tiny"), seed=1).eval()
    cfg = net.space.largest()
    sub = calibrated_subnet(net, cfg, [torch.randn(8, 1, cfg.r, cfg.r)])
    convs = [m.weight for m in sub.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert convs and all(w.is_contiguous() for w in convs)
    assert not sub.training


def test_calibrated_subnet_keeps_nothing_of_the_calibration(tiny, rng):
    """The subnet handed out runs its BatchNorm layers as plain eval-mode modules: no forward of the
    calibration left on them, no hook, and its output is that of a fresh eval-mode copy with those statistics."""
    cfg = tiny.space.sample(rng)
    sub = calibrated_subnet(tiny, cfg, [torch.randn(24, 1, cfg.r, cfg.r) * 2 + 0.5])
    bns = [m for m in sub.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all("forward" not in vars(m) and not m._forward_pre_hooks and not m._forward_hooks for m in bns)
    fresh = tiny.extract(cfg).eval()
    fresh.load_state_dict(sub.state_dict())
    x = torch.randn(5, 1, cfg.r, cfg.r)
    with torch.no_grad():
        assert torch.equal(sub(x), fresh(x))
        assert torch.equal(sub(x), sub(x))  # running statistics no longer move


def test_statistics_survive_a_constant_channel(tiny):
    """A channel with zero variance in a batch (a dead ReLU, a constant image) gets variance 0, never NaN
    or a negative value from inverting the kernel's 1 / sqrt(var + eps)."""
    cfg = tiny.space.smallest()
    recalibrate_bn(tiny, cfg, [torch.zeros(4, 1, cfg.r, cfg.r), torch.zeros(4, 1, cfg.r, cfg.r)])
    for static_bn, src in tiny.extract_with_bn_pairs(cfg)[1]:
        var = src.running_var[:static_bn.num_features]
        assert torch.isfinite(var).all() and (var >= 0).all()
    assert float(tiny.stem_bn.running_var[:8].abs().max()) < 1e-6  # constant input: no spread at all
