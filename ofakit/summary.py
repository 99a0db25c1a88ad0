"""Supernet summaries for people and scripts: space size, cost range, extraction parity."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

import model_zoo


def recipe_summary(name: str, **kwargs: Any) -> dict[str, Any]:
    """Space size and the MACs/params range of a recipe, as a JSON-ready dict."""
    net = model_zoo.get_supernet(name, **kwargs)
    space = net.space
    lo, hi = space.smallest(), space.largest()
    return {
        "recipe": name, "family": net.spec.family, "in_channels": net.spec.in_channels, "num_classes": net.spec.num_classes,
        "resolutions": list(space.r), **space.choices(), "stages": space.n_stages, "block_slots": list(space.slots),
        "subnets": space.size(),
        "supernet_params": sum(p.numel() for p in net.parameters()),
        "smallest": {"macs": net.flops(lo), "params": net.params(lo), "r": lo.r},
        "largest": {"macs": net.flops(hi), "params": net.params(hi), "r": hi.r},
    }


def extraction_check(name: str, n_configs: int = 5, seed: int = 0, **kwargs: Any) -> dict[str, Any]:
    """Max |supernet(x, cfg) - extract(cfg)(x)| over random subnets at the recipe's smallest resolution, and the
    median extraction time."""
    net = model_zoo.get_supernet(name, **kwargs).eval()
    rng = np.random.default_rng(seed)
    worst, times = 0.0, []
    with torch.no_grad():
        for _ in range(n_configs):
            cfg = net.space.sample(rng, r=min(net.space.r))  # the smallest resolution: a quick check
            x = torch.randn(2, net.spec.in_channels, cfg.r, cfg.r)
            t0 = time.perf_counter()
            static = net.extract(cfg)
            times.append(time.perf_counter() - t0)
            worst = max(worst, (static(x) - net(x, cfg)).abs().max().item())
    return {"recipe": name, "configs": n_configs, "max_abs_diff": worst,
            "extract_ms_median": float(np.median(times) * 1e3)}
