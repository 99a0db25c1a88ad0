"""The supernet forward, extraction to static networks and their exportability."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import model_zoo
from elastic import StaticMobileNetV3, SubnetConfig
from elastic.static import MBConv, SqueezeExcite
from model_zoo.ofa_parity import randomize_

ALLOWED_LEAVES = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.Dropout, nn.Hardswish, nn.ReLU)


def test_extract_matches_supernet(tiny, rng):
    with torch.no_grad():
        for i in range(12):
            cfg = tiny.space.sample(rng)
            x = torch.randn(3, 1, cfg.r, cfg.r)
            y = tiny(x, cfg)
            static = tiny.extract(cfg)
            assert isinstance(static, StaticMobileNetV3)
            assert (static(x) - y).abs().max().item() <= 1e-5
            assert y.abs().mean() > 1e-2  # randomised weights: the check is not vacuous


def test_wide_space_family_spans_depth_1_to_4_and_16_to_40_px(rng):
    net = randomize_(model_zoo.get_supernet("ofa_mbv3_tiny_d1234_e2346_k357"), seed=2).eval()
    space = net.space
    assert (space.d, space.e, space.r) == ((1, 2, 3, 4), (2, 3, 4, 6), (16, 20, 24, 28, 32, 36, 40))
    assert net.flops(space.largest()) > 20 * net.flops(space.smallest())
    with torch.no_grad():
        for cfg in [space.smallest(), space.largest(), *(space.sample(rng) for _ in range(4))]:
            x = torch.randn(2, 1, cfg.r, cfg.r)
            y = net(x, cfg)
            assert (net.extract(cfg)(x) - y).abs().max().item() <= 1e-5 and y.abs().mean() > 1e-2


def test_extracted_network_is_plain(tiny):
    static = tiny.extract(tiny.space.largest())
    for m in static.modules():
        if not list(m.children()):
            assert isinstance(m, ALLOWED_LEAVES), type(m)
        else:
            assert isinstance(m, (nn.Sequential, MBConv, SqueezeExcite, StaticMobileNetV3)), type(m)
    assert static.input_shape == (1, 32, 32)
    assert SubnetConfig.from_json(static.subnet_json) == tiny.space.largest()


def test_extract_copies_weights(tiny):
    cfg = tiny.space.largest()
    static = tiny.extract(cfg)
    with torch.no_grad():
        static.stem.conv.weight.add_(1.0)
    assert not torch.equal(static.stem.conv.weight, tiny.stem_conv.weight)
    assert all(p.requires_grad for p in static.parameters())
    static.register_forward_hook(lambda *a: None)
    assert not tiny.extract(cfg)._forward_hooks  # extracted nets share no mutable state


def test_forward_leaves_no_state(tiny, rng):
    a, b = tiny.space.sample(rng), tiny.space.sample(rng)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        ya = tiny(x, a)
        tiny(x, b)
        assert torch.equal(tiny(x, a), ya)
    fresh = model_zoo.get_supernet("ofa_mbv3_tiny")
    fresh.load_state_dict(tiny.state_dict())
    assert torch.equal(fresh.eval()(x, a), ya)


def test_elastic_resolution_resizes_input(tiny):
    cfg = tiny.space.smallest()  # r = 28
    x = torch.randn(2, 1, 32, 32)
    small = nn.functional.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    with torch.no_grad():
        assert torch.allclose(tiny(x, cfg), tiny(small, cfg))
        assert torch.allclose(tiny.extract(cfg)(small), tiny(x, cfg), atol=1e-5)


def test_bad_inputs(tiny):
    cfg = tiny.space.largest()
    with pytest.raises(ValueError, match=r"input shape \(2, 3, 32, 32\) must be \(N, 1, H, W\)"):
        tiny(torch.randn(2, 3, 32, 32), cfg)
    with pytest.raises(ValueError, match="outside the space"):
        tiny(torch.randn(2, 1, 32, 32), SubnetConfig(ks=(9,) * 16, e=(3,) * 16, d=(2,) * 4, r=32))


def test_training_step_updates_only_active_weights(rng):
    net = model_zoo.get_supernet("ofa_mbv3_tiny").train()
    cfg = SubnetConfig(ks=(3,) * 16, e=(3,) * 16, d=(2,) * 4, r=28)
    out = net(torch.randn(8, 1, 28, 28), cfg)
    nn.functional.cross_entropy(out, torch.randint(0, 10, (8,))).backward()
    block = net.blocks[0]
    mid = block.mid_channels(3)
    assert block.expand_conv.weight.grad[:mid].abs().sum() > 0
    assert block.expand_conv.weight.grad[mid:].abs().sum() == 0
    assert net.blocks[2].expand_conv.weight.grad is None  # depth 2: third block inactive
    assert block.expand_bn.running_mean[mid:].abs().sum() == 0  # inactive channels' stats untouched
    assert block.expand_bn.running_mean[:mid].abs().sum() > 0


def test_torch_export_and_onnx(tiny, tmp_path, rng):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    cfg = tiny.space.sample(rng)
    static = tiny.extract(cfg).eval()
    x = torch.randn(2, 1, cfg.r, cfg.r)
    exported = torch.export.export(static, (x,))
    assert torch.allclose(exported.module()(x), static(x), atol=1e-5)
    path = tmp_path / "subnet.onnx"
    torch.onnx.export(static, (x,), str(path), input_names=["x"], output_names=["logits"],
                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x5 = torch.randn(5, 1, cfg.r, cfg.r)
    (got,) = sess.run(None, {"x": x5.numpy()})
    with torch.no_grad():
        assert abs(got - static(x5).numpy()).max() <= 1e-4
