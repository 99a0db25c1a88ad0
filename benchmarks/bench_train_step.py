"""Training-step time of the Fashion-MNIST sandwich recipes, interleaved in one process (issue 12, part 1).

One step = forward + backward of every subnet the recipe draws for it (largest, smallest, N random, each at
its BigNAS resolution), batch 128, on randomly initialised supernets. The old recipe's step is the
reference measured in the same run; the figure is the ratio to it. Run on a quiet machine.

    .venv/bin/python benchmarks/bench_train_step.py [--steps 5]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

import model_zoo
from elastic.ops import resize
from elastic.training.schedule import sandwich_schedule
from elastic.training.trainer import draw_subnets

# name -> (supernet, channels_last, random subnets per step)
VARIANTS = {"old fmnist_tiny_sandwich (NCHW)": ("ofa_mbv3_tiny", False, 2),
            "new space, 4 subnets, NCHW": ("ofa_mbv3_tiny_d1234_e2346_k357", False, 2),
            "new space, 4 subnets, channels_last (fmnist_d1234_sandwich)": ("ofa_mbv3_tiny_d1234_e2346_k357", True, 2),
            "new space, 3 subnets, channels_last": ("ofa_mbv3_tiny_d1234_e2346_k357", True, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant (the first is dropped)")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OFAKIT_THREADS", "2")))
    torch.manual_seed(0)
    x0, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    nets = {}
    for name, (arch, cl, n_random) in VARIANTS.items():
        net = model_zoo.get_supernet(arch).train()
        nets[name] = (net.to(memory_format=torch.channels_last) if cl else net, cl,
                      sandwich_schedule(1, random_subnets=n_random, resolution="sandwich", space=net.space)[0])
    times: dict[str, list[float]] = {k: [] for k in nets}
    for step in range(args.steps):
        for name, (net, cl, phase) in nets.items():  # interleaved: every variant once per round
            cfgs = draw_subnets(phase, net.space, np.random.default_rng([0, step]))
            x = x0.contiguous(memory_format=torch.channels_last) if cl else x0
            t0 = time.perf_counter()
            for cfg in cfgs:
                F.cross_entropy(net(resize(x, cfg.r), cfg), y).backward()
            times[name].append(time.perf_counter() - t0)
    ref = float(np.median(times[next(iter(VARIANTS))][1:]))
    for name, t in times.items():
        t = t[1:]
        print(f"{name:62s} {np.median(t):.2f} s/step (min {min(t):.2f}, max {max(t):.2f})  "
              f"{np.median(t) / ref:.2f}x the old step")


if __name__ == "__main__":
    main()
