"""Elastic ops in isolation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from elastic.ops import (ElasticBatchNorm2d, ElasticConv2d, ElasticDepthwiseConv2d, ElasticLinear,
                         ElasticSqueezeExcite, make_divisible)


def test_make_divisible_matches_mobilenet_rule():
    assert [make_divisible(v) for v in (16, 19.2, 24 * 1.2, 960 * 1.2, 3)] == [16, 24, 32, 1152, 8]
    assert make_divisible(round(40 * 4)) == 160 and make_divisible(round(24 * 3)) == 72


def test_elastic_kernel_centre_crop_with_identity_transforms():
    dw = ElasticDepthwiseConv2d(8, (3, 5, 7))
    assert set(dw.transforms) == {"7to5", "5to3"}
    assert torch.equal(dw.active_weight(8, 7), dw.weight)
    assert torch.allclose(dw.active_weight(4, 5), dw.weight[:4, :, 1:6, 1:6])
    assert torch.allclose(dw.active_weight(4, 3), dw.weight[:4, :, 2:5, 2:5])


def test_elastic_kernel_uses_transform_chain():
    dw = ElasticDepthwiseConv2d(4, (3, 5, 7))
    with torch.no_grad():
        dw.transforms["7to5"].copy_(torch.randn(25, 25))
        dw.transforms["5to3"].copy_(torch.randn(9, 9))
    w5 = (dw.weight[:, :, 1:6, 1:6].reshape(4, 25) @ dw.transforms["7to5"].T).view(4, 1, 5, 5)
    w3 = (w5[:, :, 1:4, 1:4].reshape(4, 9) @ dw.transforms["5to3"].T).view(4, 1, 3, 3)
    assert torch.allclose(dw.active_weight(4, 3), w3, atol=1e-5)
    w3.sum().backward()
    assert dw.transforms["7to5"].grad is not None


def test_depthwise_crop_on_small_maps_is_exact():
    dw = ElasticDepthwiseConv2d(6, (3, 5, 7), stride=2)
    for hw in (1, 2, 3, 5):
        x = torch.randn(2, 6, hw, hw, requires_grad=True)
        ref = F.conv2d(x, dw.active_weight(6, 7), None, 2, 3, 1, 6)
        got = dw(x, 7)
        assert got.shape == ref.shape and torch.allclose(got, ref, atol=1e-6)
        g_ref = torch.autograd.grad(ref.sum(), x)[0]
        g_got = torch.autograd.grad(dw(x, 7).sum(), x)[0]
        assert torch.allclose(g_ref, g_got, atol=1e-6)


def test_elastic_conv_and_linear_slices():
    conv = ElasticConv2d(8, 12, bias=True)
    x = torch.randn(2, 5, 4, 4)
    assert torch.allclose(conv(x, 7), F.conv2d(x, conv.weight[:7, :5], conv.bias[:7]))
    lin = ElasticLinear(8, 6)
    v = torch.randn(3, 4)
    assert torch.allclose(lin(v, 2), F.linear(v, lin.weight[:2, :4], lin.bias[:2]))
    assert lin(v).shape == (3, 6)


def test_elastic_bn_updates_only_active_channels():
    bn = ElasticBatchNorm2d(8).train()
    bn(torch.randn(4, 5, 3, 3) + 3.0)
    assert (bn.running_mean[:5] > 0.1).all() and (bn.running_mean[5:] == 0).all()
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    x = torch.randn(2, 5, 3, 3)
    ref = F.batch_norm(x, bn.running_mean[:5], bn.running_var[:5], bn.weight[:5], bn.bias[:5], False, 0.0, bn.eps)
    assert torch.allclose(bn(x), ref)


def test_elastic_se_hidden_width_follows_channels():
    se = ElasticSqueezeExcite(96)
    assert se.reduce.out_channels == 24 and se.mid_channels(48) == 16
    rw, rb, ew, eb = se.active_params(48)
    assert rw.shape == (16, 48, 1, 1) and ew.shape == (48, 16, 1, 1)
    assert se(torch.randn(2, 48, 3, 3)).shape == (2, 48, 3, 3)


def test_elastic_se_computes_squeeze_and_excite_of_the_leading_weights():
    """Values, not shapes: x * hardsigmoid(W_e relu(W_r mean(x) + b_r) + b_e) with the leading 16x48 / 48x16
    weights, written out by hand; the channels it gates off (a zero expand row, bias -3) go to 0."""
    torch.manual_seed(0)
    se = ElasticSqueezeExcite(96)
    with torch.no_grad():
        se.expand.weight[5].zero_()
        se.expand.bias[5] = -3.0  # hardsigmoid(-3) = 0
    x = torch.randn(2, 48, 3, 3)
    s = x.mean((2, 3))  # (2, 48)
    h = torch.relu(s @ se.reduce.weight[:16, :48, 0, 0].T + se.reduce.bias[:16])
    gate = torch.clamp((h @ se.expand.weight[:48, :16, 0, 0].T + se.expand.bias[:48]) / 6 + 0.5, 0, 1)
    got = se(x)
    assert torch.allclose(got, x * gate[:, :, None, None], atol=1e-6)
    assert got[:, 5].abs().max() == 0 and got.abs().sum() > 0


def test_dense_conv_on_small_maps_is_exact():
    """Cropped padding-only taps, 1x1 maps as a matrix product and 1x1 convs on 2x2 maps as batched matrix
    products: outputs and gradients as a plain conv (and the other shapes through the plain conv)."""
    torch.manual_seed(0)
    for k, stride, hw in [(3, 1, 1), (3, 2, 1), (3, 2, 2), (5, 1, 2), (1, 1, 1), (3, 1, 4), (7, 2, 3), (1, 1, 2),
                          (1, 2, 2), (1, 1, 3)]:
        conv = ElasticConv2d(12, 10, k, stride, bias=True).double()
        x = torch.randn(3, 8, hw, hw, dtype=torch.float64, requires_grad=True)
        y = conv(x, 6)
        gx, gw = torch.autograd.grad(y.pow(2).sum(), [x, conv.weight])
        ref = F.conv2d(x, conv.weight[:6, :8], conv.bias[:6], stride, k // 2)
        rx, rw = torch.autograd.grad(ref.pow(2).sum(), [x, conv.weight])
        assert y.shape == ref.shape and torch.allclose(y, ref, atol=1e-12)
        assert torch.allclose(gx, rx, atol=1e-12) and torch.allclose(gw, rw, atol=1e-12)
