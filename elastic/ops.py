"""Elastic (dynamic) layers in the once-for-all style.

Every op owns the weights of its largest form and receives the active size of each call as an explicit
argument (or reads it from the input's shape); nothing about the active subnet is stored on the module.
Each op also has an ``active_*`` method returning the exact tensors a static layer of that size uses, so
subnet extraction and the elastic forward share one definition.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` without going more than 10% below it.

    This is the channel rounding rule of MobileNet/OFA; exact agreement with it is needed to import
    official OFA weights.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * v else rounded


def apply_act(x: torch.Tensor, act: str | None) -> torch.Tensor:
    """Apply a named activation: ``relu``, ``relu6``, ``h_swish``, ``h_sigmoid`` or ``None``."""
    if act is None:
        return x
    if act == "relu":
        return F.relu(x)
    if act == "relu6":
        return F.relu6(x)
    if act == "h_swish":
        return F.hardswish(x)
    if act == "h_sigmoid":
        return F.hardsigmoid(x)
    raise ValueError(f"unknown activation {act!r}; allowed: relu, relu6, h_swish, h_sigmoid, None")


def init_batchnorms(model: nn.Module, momentum: float, eps: float) -> None:
    """Every BatchNorm of ``model`` at weight 1, bias 0, with the spec's momentum and eps."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum, m.eps = momentum, eps
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def nonfinite(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity (weights a diverged run left)."""
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def check_input(x: torch.Tensor, in_channels: int, dtype: torch.dtype) -> None:
    """``ValueError`` unless ``x`` is an ``(N, in_channels, H, W)`` batch of ``dtype``."""
    if x.dim() != 4 or x.shape[1] != in_channels or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"input shape {tuple(x.shape)} must be (N, {in_channels}, H, W), H and W >= 1")
    if x.dtype != dtype:
        raise ValueError(f"input dtype {x.dtype} differs from the weights' {dtype}; convert it (x.to({dtype}))")


def resize(x: torch.Tensor, r: int) -> torch.Tensor:
    """Bilinearly resize a batch to ``r x r`` (a no-op when it already has that size)."""
    if x.shape[-2:] == (r, r):
        return x
    return F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)


SMALL_MAP = 4  # pixels: a 1x1 conv on a map this small runs faster as one batched matrix product (2x2 maps)


def _pointwise(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A stride-1 1x1 conv as ``W @ x`` per image on the flattened map (NCHW needs no transpose); on 2x2 maps
    1.3-1.7x faster than oneDNN's conv forward and backward on CPU (benchmarks/RESULTS.md, OFA-ResNet50)."""
    b, c, h, wd = x.shape
    y = torch.matmul(w.reshape(w.shape[0], c), x.reshape(b, c, h * wd))
    if bias is not None:
        y = y + bias[:, None]
    return y.reshape(b, -1, h, wd)


class ElasticConv2d(nn.Module):
    """Dense conv (usually 1x1) with elastic input and output channels: weight ``[:out, :in]``."""

    def __init__(self, max_in: int, max_out: int, kernel_size: int = 1, stride: int = 1, bias: bool = False):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.weight = nn.Parameter(torch.empty(max_out, max_in, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(max_out)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def active_weight(self, out_ch: int, in_ch: int) -> torch.Tensor:
        """Weight of the active ``out_ch x in_ch`` conv (the leading channels)."""
        return self.weight[:out_ch, :in_ch]

    def active_bias(self, out_ch: int) -> torch.Tensor | None:
        """Bias of the active conv, if any."""
        return None if self.bias is None else self.bias[:out_ch]

    def forward(self, x: torch.Tensor, out_ch: int) -> torch.Tensor:
        """``same``-padded conv of ``x`` to ``out_ch`` channels. As in :class:`ElasticDepthwiseConv2d`, taps
        that can only meet zero padding on a map smaller than the kernel are cropped first (same output and
        gradients, fewer multiplications: ResNet's last stage runs on 1x1 maps at low resolution). On a 1x1
        map the conv is a matrix product, run as one (about 3x faster forward and backward on CPU)."""
        w = self.active_weight(out_ch, x.shape[1])
        half = self.kernel_size // 2
        radius = min(half, max(x.shape[-2], x.shape[-1]) - 1)
        if radius < half:
            lo = half - radius
            w = w[:, :, lo:lo + 2 * radius + 1, lo:lo + 2 * radius + 1]
        if x.shape[-2:] == (1, 1):  # the kernel is cropped to its centre: a matrix product
            return F.linear(x.flatten(1), w.reshape(w.shape[0], -1), self.active_bias(out_ch))[:, :, None, None]
        if w.shape[-1] == 1 and self.stride == 1 and x.shape[-2] * x.shape[-1] <= SMALL_MAP:
            return _pointwise(x, w, self.active_bias(out_ch))
        return F.conv2d(x, w, self.active_bias(out_ch), self.stride, radius)


class ElasticLinear(nn.Module):
    """Linear layer with elastic input and output features."""

    def __init__(self, max_in: int, max_out: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_out, max_in))
        self.bias = nn.Parameter(torch.zeros(max_out)) if bias else None
        nn.init.normal_(self.weight, 0.0, 0.01)

    def forward(self, x: torch.Tensor, out_features: int | None = None) -> torch.Tensor:
        out = self.weight.shape[0] if out_features is None else out_features
        b = None if self.bias is None else self.bias[:out]
        return F.linear(x, self.weight[:out, : x.shape[1]], b)


class ElasticDepthwiseConv2d(nn.Module):
    """Depthwise conv with elastic channels and elastic kernel size.

    A smaller kernel is the centre crop of the next larger one, passed through a learned
    ``k_small^2 x k_small^2`` transformation matrix (identity at init), applied from the largest kernel
    down (7 -> 5 -> 3), as in the OFA paper's elastic kernel.
    """

    def __init__(self, max_channels: int, kernel_sizes: tuple[int, ...], stride: int = 1):
        super().__init__()
        self.kernel_sizes = tuple(sorted(set(kernel_sizes)))
        self.max_kernel = self.kernel_sizes[-1]
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(max_channels, 1, self.max_kernel, self.max_kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.transforms = nn.ParameterDict({
            f"{big}to{small}": nn.Parameter(torch.eye(small * small))
            for small, big in zip(self.kernel_sizes[:-1], self.kernel_sizes[1:])
        })

    def active_weight(self, channels: int, kernel_size: int) -> torch.Tensor:
        """The ``channels x 1 x k x k`` filter of the active kernel."""
        if kernel_size not in self.kernel_sizes:
            raise ValueError(f"kernel size {kernel_size} is not elastic here; allowed: {list(self.kernel_sizes)}")
        w = self.weight[:channels]
        for big, small in zip(reversed(self.kernel_sizes), reversed(self.kernel_sizes[:-1])):
            if big <= kernel_size:
                break
            lo = (big - small) // 2
            crop = w[:, :, lo:lo + small, lo:lo + small].reshape(channels, small * small)
            w = F.linear(crop, self.transforms[f"{big}to{small}"]).view(channels, 1, small, small)
        return w

    def forward(self, x: torch.Tensor, kernel_size: int) -> torch.Tensor:
        """Depthwise conv of ``x`` with the active ``kernel_size`` filter (``same`` padding).

        On feature maps smaller than the kernel, taps that can only ever meet zero padding are cropped
        away first (radius ``min(k // 2, max(H, W) - 1)``): the output and both gradients are unchanged,
        but low-resolution training avoids paying for multiplications by padding.
        """
        c = x.shape[1]
        w = self.active_weight(c, kernel_size)
        half = kernel_size // 2
        radius = min(half, max(x.shape[-2], x.shape[-1]) - 1)
        if radius < half:
            lo = half - radius
            w = w[:, :, lo:lo + 2 * radius + 1, lo:lo + 2 * radius + 1]
        return F.conv2d(x, w, None, self.stride, radius, 1, c)


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the leading ``C`` channels of the input, sharing statistics with wider subnets.

    In training mode the running statistics of the active channels are updated in place (the slices are
    views), exactly like ``nn.BatchNorm2d`` would for a layer of that width.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        factor = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch = self.training or not self.track_running_stats
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c],
                            use_batch, factor, self.eps)


class ElasticSqueezeExcite(nn.Module):
    """Squeeze-and-excite over the active channels; its hidden width follows the active width."""

    def __init__(self, max_channels: int, reduction: int = 4, divisor: int = 8):
        super().__init__()
        self.reduction, self.divisor = reduction, divisor
        mid = self.mid_channels(max_channels)
        self.reduce = nn.Conv2d(max_channels, mid, 1, bias=True)
        self.expand = nn.Conv2d(mid, max_channels, 1, bias=True)

    def mid_channels(self, channels: int) -> int:
        """Hidden width of the SE for ``channels`` active channels."""
        return make_divisible(channels // self.reduction, self.divisor)

    def active_params(self, channels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(reduce_w, reduce_b, expand_w, expand_b)`` of the active SE."""
        mid = self.mid_channels(channels)
        return (self.reduce.weight[:mid, :channels], self.reduce.bias[:mid],
                self.expand.weight[:channels, :mid], self.expand.bias[:channels])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rw, rb, ew, eb = self.active_params(x.shape[1])
        y = x.mean((2, 3), keepdim=True)
        y = F.relu(F.conv2d(y, rw, rb))
        return x * F.hardsigmoid(F.conv2d(y, ew, eb))
