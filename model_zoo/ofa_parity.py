"""Numerical parity between our supernets and the reference ``ofa`` package's ``OFAMobileNetV3``,
``OFAProxylessNASNets`` and ``OFAResNets``.

The reference is built with random (non-degenerate) weights, saved as an OFA checkpoint, imported with
:func:`~model_zoo.ofa_weights.import_ofa_checkpoint`, and both are run on the same random subnets:
our ``supernet(x, cfg)`` and ``supernet.extract(cfg)`` against OFA's ``set_active_subnet`` forward and
``get_active_subnet()``. Needs the ``ofa`` package (``pip install ofa``; a test-only dependency).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from model_zoo.ofa_weights import import_ofa_checkpoint

_MBCONV = {"ks_list": [3, 5, 7], "expand_ratio_list": [3, 4, 6], "depth_list": [2, 3, 4]}
OFA_REFERENCES = {  # recipe -> (the ofa package's class, its arguments besides n_classes and dropout)
    "ofa_mbv3_d234_e346_k357_w1.0": ("OFAMobileNetV3", {"width_mult": 1.0, **_MBCONV}),
    "ofa_mbv3_d234_e346_k357_w1.2": ("OFAMobileNetV3", {"width_mult": 1.2, **_MBCONV}),
    "ofa_proxyless_d234_e346_k357_w1.3": ("OFAProxylessNASNets", {"width_mult": 1.3, "bn_param": (0.1, 1e-3),
                                                                  **_MBCONV}),
    "ofa_resnet50": ("OFAResNets", {"depth_list": [0, 1, 2], "expand_ratio_list": [0.2, 0.25, 0.35],
                                    "width_mult_list": [0.65, 0.8, 1.0]}),
}


def reference_supernet(name: str, num_classes: int = 1000) -> torch.nn.Module:
    """The ``ofa`` package's supernet for recipe ``name`` (dropout off)."""
    if name not in OFA_REFERENCES:
        raise ValueError(f"recipe {name!r} has no OFA reference; allowed: {sorted(OFA_REFERENCES)}")
    try:
        from ofa.imagenet_classification.elastic_nn import networks
    except ImportError as exc:
        raise RuntimeError(f"the OFA parity check needs the 'ofa' package (pip install ofa): {exc}") from None
    cls, kwargs = OFA_REFERENCES[name]
    return getattr(networks, cls)(n_classes=num_classes, dropout_rate=0.0, **kwargs)


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every weight and BatchNorm statistic with random, scale-preserving values, in place.

    Freshly initialised networks give near-zero logits, which would make a parity check meaningless.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("_matrix") or ".transforms." in name:
                t.copy_(torch.eye(t.shape[0]) + 0.1 * torch.randn(t.shape, generator=g))
            elif t.dim() == 1 and ("bn" in name) and name.endswith("weight"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.dim() == 1:
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            else:
                fan_in = math.prod(t.shape[1:])
                t.copy_(torch.randn(t.shape, generator=g) * (1.5 / fan_in) ** 0.5)
    return module


@dataclass(frozen=True)
class ParityReport:
    """Largest absolute output differences over all configs checked."""

    recipe: str
    configs: int
    resolutions: tuple[int, ...]
    max_abs_diff_supernet: float  # ours(x, cfg) vs OFA supernet forward
    max_abs_diff_extracted: float  # ours.extract(cfg)(x) vs OFA get_active_subnet()(x)
    logit_scale: float  # mean |logit|, to show the outputs are not trivially small

    @property
    def relative(self) -> float:
        """The larger difference relative to the mean |logit|."""
        return max(self.max_abs_diff_supernet, self.max_abs_diff_extracted) / max(self.logit_scale, 1e-12)

    def ok(self, tol: float = 1e-5) -> bool:
        """Whether both differences are within ``tol`` (absolute) or within ``tol`` relative to the logits."""
        return max(self.max_abs_diff_supernet, self.max_abs_diff_extracted) <= tol or self.relative <= tol


def check_parity(name: str, n_configs: int = 20, resolutions: Sequence[int] = (128, 160, 192, 224),
                 num_classes: int = 10, batch: int = 2, seed: int = 0) -> ParityReport:
    """Compare our supernet with OFA's on ``n_configs`` random subnets cycling through ``resolutions``."""
    ref = randomize_(reference_supernet(name, num_classes), seed).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ofa.pth"
        torch.save({"state_dict": ref.state_dict()}, path)
        ours = import_ofa_checkpoint(name, path, resolutions=sorted(set(resolutions))).eval()
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    worst_super = worst_ext = scale = 0.0
    with torch.no_grad():
        for i in range(n_configs):
            r = resolutions[i % len(resolutions)]
            cfg = ours.space.sample(rng, r=r)
            x = torch.randn(batch, 3, r, r, generator=g)
            ref.set_active_subnet(**cfg.to_ofa())
            y_ref = ref(x)
            y_ref_sub = ref.get_active_subnet(preserve_weight=True).eval()(x)
            worst_super = max(worst_super, (ours(x, cfg) - y_ref).abs().max().item())
            worst_ext = max(worst_ext, (ours.extract(cfg)(x) - y_ref_sub).abs().max().item())
            scale = max(scale, y_ref.abs().mean().item())
    return ParityReport(name, n_configs, tuple(resolutions), worst_super, worst_ext, scale)
