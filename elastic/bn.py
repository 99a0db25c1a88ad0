"""BatchNorm recalibration for one subnet (OFA's ``set_running_statistics``, statistics pooled over all images).

After progressive shrinking the shared running statistics fit no particular subnet; recalibrating them
on a few thousand training images restores a subnet's accuracy without any gradient step.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

import torch
from torch import nn

from elastic.config import SubnetConfig
from elastic.ops import resize

log = logging.getLogger(__name__)


class _Moments:
    """Per-channel count, mean and sum of squared deviations of a BatchNorm's inputs.

    Each batch's statistics (one pass over its activations, in their precision) are merged in float64 with
    Chan et al.'s parallel formula, so pooling many batches adds no error of its own.
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, nb: int, mean_b: torch.Tensor, var_b: torch.Tensor) -> None:
        """Merge one batch of ``nb`` values per channel with biased variance ``var_b``."""
        mean_b, m2_b = mean_b.double(), var_b.double() * nb
        if self.mean is None:
            self.n, self.mean, self.m2 = nb, mean_b, m2_b
            return
        n = self.n + nb
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2_b + delta * delta * (self.n * nb / n)
        self.n = n

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean, self.m2 / max(self.n - 1, 1)


def _gathering_forward(bn: nn.BatchNorm2d, moments: _Moments) -> Callable[[torch.Tensor], torch.Tensor]:
    """A forward for ``bn`` that normalises each batch with its own statistics (train-mode BatchNorm, as OFA
    recalibrates) and adds them to ``moments``; its running buffers are not touched.

    The statistics are the ones the train-mode kernel computes to normalise the batch (its mean and inverse
    standard deviation): a separate ``var_mean`` over the same activations cost 3-7x the BatchNorm on CPU. The
    variance comes back from the float32 ``1 / sqrt(var + eps)``, so ``var + eps`` is exact to float32 precision
    (what normalisation uses); a variance far below ``eps`` keeps only its order of magnitude."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        y, mean_b, invstd_b = torch.native_batch_norm(x, bn.weight, bn.bias, None, None, True, 0.0, bn.eps)
        var_b = (invstd_b.double().pow(-2) - bn.eps).clamp_min(0)  # biased, from invstd = 1 / sqrt(var + eps)
        moments.add(x.shape[0] * x.shape[2] * x.shape[3], mean_b, var_b)
        return y

    return forward


def _images(batch: object) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise ValueError(f"recalibrate_bn batches must be tensors or (images, labels) pairs, got {type(batch).__name__}")


def _pooled_statistics(supernet: torch.nn.Module, cfg: SubnetConfig, batches: Iterable[object]):
    """Extract ``cfg`` and run it with batch statistics over ``batches``; returns (net, pairs, stats, images)."""
    net, pairs = supernet.extract_with_bn_pairs(cfg)
    net.eval().to(memory_format=torch.channels_last)  # same values, 2-3x faster on CPU
    moments = [_Moments() for _ in pairs]
    for (static_bn, _), m in zip(pairs, moments):  # instance attributes of this fresh subnet, removed below
        static_bn.forward = _gathering_forward(static_bn, m)
    param = next(supernet.parameters())
    seen = 0
    try:
        with torch.no_grad():
            channels = supernet.spec.in_channels
            for batch in batches:
                x = _images(batch).to(device=param.device, dtype=param.dtype)
                if x.dim() != 4 or x.shape[1] != channels or x.shape[0] < 1:
                    raise ValueError(f"recalibrate_bn got a batch of shape {tuple(x.shape)}; allowed: (N, {channels}, "
                                     "H, W) image batches (an iterable of them, not one tensor)")
                if not bool(torch.isfinite(x).all()):
                    raise ValueError("recalibrate_bn got NaN or infinite pixel values; the statistics would be NaN")
                net(resize(x, cfg.r).contiguous(memory_format=torch.channels_last))
                seen += x.shape[0]
    finally:
        for static_bn, _ in pairs:
            del static_bn.forward
    if seen == 0:
        raise ValueError("BatchNorm recalibration got no images: pass at least one non-empty batch")
    return net, pairs, [m.mean_var() for m in moments], seen


def recalibrate_bn(supernet: torch.nn.Module, cfg: SubnetConfig, batches: Iterable[object]) -> int:
    """Recompute the running mean/variance of every BatchNorm that subnet ``cfg`` uses.

    The subnet is run with batch statistics (as in training) on all ``batches``; each BatchNorm's running
    mean and unbiased variance are set to the statistics of its inputs pooled over every image.
    Only the active channels of the active BatchNorm layers change; weights, other channels, other
    layers, ``num_batches_tracked`` and the train/eval mode are left as they were.

    Args:
        supernet: An :class:`~elastic.supernet.ElasticMobileNetV3`.
        cfg: The subnet to recalibrate.
        batches: Image tensors ``(N, C, H, W)`` or ``(images, labels)`` pairs; resized to ``cfg.r``.

    Returns:
        The number of images used.
    """
    _, pairs, stats, seen = _pooled_statistics(supernet, cfg, batches)
    with torch.no_grad():
        for (static_bn, src), (mean, var) in zip(pairs, stats):
            c = static_bn.num_features
            src.running_mean[:c].copy_(mean)
            src.running_var[:c].copy_(var)
    log.debug("recalibrated %d BatchNorm layers of %s on %d images", len(pairs), cfg.to_json(), seen)
    return seen


def calibrated_subnet(supernet: torch.nn.Module, cfg: SubnetConfig, batches: Iterable[object]) -> torch.nn.Module:
    """The extracted static subnet ``cfg`` with BatchNorm statistics recalibrated on ``batches``.

    Same statistics as :func:`recalibrate_bn`, but the supernet is left untouched (use this to evaluate
    subnets during training). The result is in eval mode, its weights in the default (contiguous) memory format
    like any freshly extracted subnet (the statistics are gathered in channels-last, which is faster on CPU).
    """
    net, pairs, stats, _ = _pooled_statistics(supernet, cfg, batches)
    with torch.no_grad():
        for (static_bn, _), (mean, var) in zip(pairs, stats):
            static_bn.running_mean.copy_(mean)
            static_bn.running_var.copy_(var)
    return net.eval().to(memory_format=torch.contiguous_format)
