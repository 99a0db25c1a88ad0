"""Plain static networks produced by subnet extraction.

Only ordinary ``nn.Conv2d``/``nn.BatchNorm2d``/``nn.Linear`` and standard activations: no elastic code
runs at inference, so ``torch.onnx.export``, ``torch.export.export``, CoreML or TensorRT need no special
cases. Builders here copy the given tensors into fresh parameters (modules are created on the meta device
first so that no time is spent on random initialisation that would be overwritten).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

_ACT_MODULES = {"relu": nn.ReLU, "relu6": nn.ReLU6, "h_swish": nn.Hardswish}
_ACT_FUNCS = {"relu": F.relu, "relu6": F.relu6, "h_swish": F.hardswish}


def act_module(name: str | None) -> nn.Module | None:
    """Module for a named activation (``relu``, ``relu6``, ``h_swish``) or ``None``."""
    if name is None:
        return None
    try:
        return _ACT_MODULES[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; allowed: {sorted(_ACT_MODULES)}") from None


def _copy(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of ``t`` that shares nothing with it."""
    return t.detach().clone(memory_format=torch.contiguous_format)


def _param(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(_copy(t))


@functools.lru_cache(maxsize=4096)
def _prototype(kind: type, args: tuple) -> tuple[dict, tuple[str, ...]]:
    proto = kind(*args, device="meta")
    containers = tuple(k for k, v in proto.__dict__.items() if isinstance(v, (dict, set, list)))
    return proto.__dict__, containers


def _fresh(kind: type, *args: object) -> nn.Module:
    """A new ``kind(*args)`` module without running its (costly, here useless) random initialisation.

    Construction of a prototype on the meta device happens once per layer shape; each call makes a
    shallow copy whose containers (parameters, buffers, hooks, ...) are fresh, so copies share nothing
    mutable. This keeps extraction of a whole subnet within a few milliseconds.
    """
    state, containers = _prototype(kind, args)
    module = object.__new__(kind)
    module.__dict__.update(state)
    for key in containers:
        module.__dict__[key] = state[key].copy()
    return module


def make_conv(weight: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """``nn.Conv2d`` holding a copy of ``weight`` (and ``bias``), ``same`` padding for odd kernels."""
    out_ch, in_per_group, k, _ = weight.shape
    conv = _fresh(nn.Conv2d, in_per_group * groups, out_ch, k, stride, k // 2, 1, groups, bias is not None)
    conv._parameters["weight"] = _param(weight)
    if bias is not None:
        conv._parameters["bias"] = _param(bias)
    return conv


def make_bn(src: nn.BatchNorm2d, channels: int) -> nn.BatchNorm2d:
    """``nn.BatchNorm2d`` with a copy of the first ``channels`` of ``src`` (affine and running stats)."""
    bn = _fresh(nn.BatchNorm2d, channels, src.eps, src.momentum)
    bn._parameters["weight"] = _param(src.weight[:channels])
    bn._parameters["bias"] = _param(src.bias[:channels])
    bn._buffers["running_mean"] = _copy(src.running_mean[:channels])
    bn._buffers["running_var"] = _copy(src.running_var[:channels])
    bn._buffers["num_batches_tracked"] = _copy(src.num_batches_tracked)
    return bn


def make_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """``nn.Linear`` holding a copy of ``weight`` and ``bias``."""
    lin = _fresh(nn.Linear, weight.shape[1], weight.shape[0], bias is not None)
    lin._parameters["weight"] = _param(weight)
    if bias is not None:
        lin._parameters["bias"] = _param(bias)
    return lin


def conv_bn_act(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, act: str | None) -> nn.Sequential:
    """``Sequential(conv, [bn], [act])`` with the children named ``conv``, ``bn``, ``act``."""
    seq = nn.Sequential()
    seq.add_module("conv", conv)
    if bn is not None:
        seq.add_module("bn", bn)
    a = act_module(act)
    if a is not None:
        seq.add_module("act", a)
    return seq


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite: ``x * hardsigmoid(expand(relu(reduce(mean(x)))))``."""

    def __init__(self, reduce: nn.Conv2d, expand: nn.Conv2d):
        super().__init__()
        self.reduce, self.expand = reduce, expand

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean((2, 3), keepdim=True)
        return x * F.hardsigmoid(self.expand(F.relu(self.reduce(y))))


class MBConv(nn.Module):
    """Inverted-residual block: [1x1 expand] -> depthwise -> [SE] -> 1x1 project (+ identity).

    Activations are applied functionally (``relu``, ``relu6`` or ``h_swish``), so the block's children are only
    convolutions, BatchNorms and the optional :class:`SqueezeExcite`.
    """

    def __init__(self, expand: tuple[nn.Conv2d, nn.BatchNorm2d] | None, dw: tuple[nn.Conv2d, nn.BatchNorm2d],
                 se: SqueezeExcite | None, project: tuple[nn.Conv2d, nn.BatchNorm2d], act: str, residual: bool):
        super().__init__()
        if act not in _ACT_FUNCS:
            raise ValueError(f"unknown activation {act!r}; allowed: {sorted(_ACT_FUNCS)}")
        self.expand_conv, self.expand_bn = expand if expand is not None else (None, None)
        self.dw_conv, self.dw_bn = dw
        self.se = se
        self.project_conv, self.project_bn = project
        self.act, self.residual = act, residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = _ACT_FUNCS[self.act]
        y = x if self.expand_conv is None else act(self.expand_bn(self.expand_conv(x)))
        y = act(self.dw_bn(self.dw_conv(y)))
        if self.se is not None:
            y = self.se(y)
        y = self.project_bn(self.project_conv(y))
        return x + y if self.residual else y

    def extra_repr(self) -> str:
        return f"act={self.act}, residual={self.residual}"


def head_forward(final_expand: nn.Module, feature_mix: nn.Module, classifier: nn.Module,
                 x: torch.Tensor) -> torch.Tensor:
    """The head on the last block's features: final expand, global average pool, feature mix (an
    ``nn.Identity`` in heads without one, as ProxylessNAS's), classifier (shared by extracted subnets and the
    latency tables' head layers)."""
    x = feature_mix(final_expand(x).mean((2, 3), keepdim=True))
    return classifier(torch.flatten(x, 1))


class StaticMobileNetV3(nn.Module):
    """An extracted subnet: stem, blocks, final expand, global pool, feature mix, classifier.

    Attributes:
        input_shape: ``(channels, height, width)`` the subnet was specialised for.
        subnet_json: The ``SubnetConfig`` JSON it was extracted with.
    """

    def __init__(self, stem: nn.Module, blocks: nn.Sequential, final_expand: nn.Module, feature_mix: nn.Module,
                 classifier: nn.Module, input_shape: tuple[int, int, int], subnet_json: str):
        super().__init__()
        self.stem, self.blocks, self.final_expand = stem, blocks, final_expand
        self.feature_mix, self.classifier = feature_mix, classifier
        self.input_shape = tuple(input_shape)
        self.subnet_json = subnet_json

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return head_forward(self.final_expand, self.feature_mix, self.classifier, self.blocks(self.stem(x)))
