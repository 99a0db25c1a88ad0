"""BatchNorm recalibration for one subnet (OFA's ``set_running_statistics``, exact pooled statistics).

After progressive shrinking the shared running statistics fit no particular subnet; recalibrating them
on a few thousand training images restores a subnet's accuracy without any gradient step.
"""

from __future__ import annotations

import logging
from typing import Iterable

import torch

from elastic.config import SubnetConfig
from elastic.ops import resize

log = logging.getLogger(__name__)


class _Moments:
    """Per-channel count, sum and sum of squares of a BatchNorm's inputs, in float64."""

    def __init__(self) -> None:
        self.n = 0
        self.s: torch.Tensor | None = None
        self.ss: torch.Tensor | None = None

    def __call__(self, _module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0].detach().double()
        s, ss = x.sum((0, 2, 3)), (x * x).sum((0, 2, 3))
        self.s = s if self.s is None else self.s + s
        self.ss = ss if self.ss is None else self.ss + ss
        self.n += x.shape[0] * x.shape[2] * x.shape[3]

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.s / self.n
        var = (self.ss - self.n * mean * mean) / max(self.n - 1, 1)
        return mean, var.clamp_min(0.0)


def _images(batch: object) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise ValueError(f"recalibrate_bn batches must be tensors or (images, labels) pairs, got {type(batch).__name__}")


def recalibrate_bn(supernet: torch.nn.Module, cfg: SubnetConfig, batches: Iterable[object]) -> int:
    """Recompute the running mean/variance of every BatchNorm that subnet ``cfg`` uses.

    The subnet is run with batch statistics (as in training) on all ``batches``; each BatchNorm's running
    mean and unbiased variance are set to the exact statistics of its inputs pooled over every image.
    Only the active channels of the active BatchNorm layers change; weights, other channels, other
    layers, ``num_batches_tracked`` and the train/eval mode are left as they were.

    Args:
        supernet: An :class:`~elastic.supernet.ElasticMobileNetV3`.
        cfg: The subnet to recalibrate.
        batches: Image tensors ``(N, C, H, W)`` or ``(images, labels)`` pairs; resized to ``cfg.r``.

    Returns:
        The number of images used.
    """
    net, pairs = supernet.extract_with_bn_pairs(cfg)
    net.eval()
    moments = []
    for static_bn, _ in pairs:
        static_bn.train()
        m = _Moments()
        static_bn.register_forward_pre_hook(m)
        moments.append(m)
    param = next(supernet.parameters())
    seen = 0
    with torch.no_grad():
        for batch in batches:
            x = _images(batch).to(device=param.device, dtype=param.dtype)
            net(resize(x, cfg.r))
            seen += x.shape[0]
    if seen == 0:
        raise ValueError("recalibrate_bn got no images: pass at least one non-empty batch")
    with torch.no_grad():
        for (static_bn, src), m in zip(pairs, moments):
            mean, var = m.mean_var()
            c = static_bn.num_features
            src.running_mean[:c].copy_(mean)
            src.running_var[:c].copy_(var)
    log.debug("recalibrated %d BatchNorm layers of %s on %d images", len(pairs), cfg.to_json(), seen)
    return seen
