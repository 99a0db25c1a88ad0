"""Cost of the accuracy dataset per subnet (issue 16): one process (the protocol before issue 16, the
reference) against forked worker processes with one thread each (``ofakit``'s default now), same subnets,
interleaved chunk by chunk in one run, with the agreement of their labels.

Each subnet is extracted, its BatchNorm recalibrated on 2,000 training images and evaluated on the
validation split, exactly as ``CheckpointContext.accuracy_data`` does (``build_accuracy_data`` into a fresh
temporary cache, nothing reused between the two). Printed: seconds per subnet of each (median over chunks,
min-max), the ratio, the largest top-1 difference between the two on the same subnet and Kendall's τ
between them. Run on a quiet machine.

    .venv/bin/python benchmarks/bench_accuracy_data.py [--subnets 24] [--chunk 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ofakit.context import CheckpointContext
from ofakit.search.accuracy import build_accuracy_data, kendall_tau, sample_configs
from profilers.record import local_device


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="ofa_mbv3_tiny_d1234_e2346_k357.fmnist")
    ap.add_argument("--subnets", type=int, default=24, help="subnets measured by each protocol")
    ap.add_argument("--chunk", type=int, default=8, help="subnets per interleaved chunk")
    ap.add_argument("--workers", type=int, default=2, help="worker processes of the fast protocol")
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads of the one-process reference")
    ap.add_argument("--seed", type=int, default=123, help="seed of the sampled subnets (not the dataset's own)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ctx = CheckpointContext(args.checkpoint)
    header = {"checkpoint_sha256": ctx.meta["sha256"], "calib_images": len(ctx.calib), "val": len(ctx.val)}
    cfgs = sample_configs(ctx.supernet.space, args.subnets + 2, args.seed)[2:]  # random ones only
    runs = {"one process (reference)": 1, f"{args.workers} worker processes": args.workers}
    per: dict[str, list[float]] = {k: [] for k in runs}
    labels: dict[str, list[float]] = {k: [] for k in runs}
    with tempfile.TemporaryDirectory() as tmp:
        for c, start in enumerate(range(0, len(cfgs), args.chunk)):
            chunk = cfgs[start:start + args.chunk]
            order = list(runs.items()) if c % 2 == 0 else list(runs.items())[::-1]
            for name, workers in order:
                ctx.forget_subnets()  # nothing measured before is reused (forked workers inherit it)
                path = Path(tmp) / f"{name[:3]}{c}.jsonl"
                t0 = time.perf_counter()
                data = build_accuracy_data(ctx.supernet.space, ctx.correct, path, 0, header,
                                           extra=chunk, workers=workers)
                per[name].append((time.perf_counter() - t0) / len(chunk))
                labels[name] += [float(a) for a in data.acc]
    env = local_device(gpu=False)
    print(f"{env.cpu}, {os.cpu_count()} cores, torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}; "
          f"{len(cfgs)} subnets of {args.checkpoint} in chunks of {args.chunk}")
    ref = float(np.median(per[next(iter(runs))]))
    for name, t in per.items():
        print(f"{name:28s} {np.median(t):6.2f} s/subnet (chunks {min(t):.2f}-{max(t):.2f})  "
              f"{np.median(t) / ref:.3f}x the reference ({ref / np.median(t):.2f}x faster)")
    a, b = (np.array(v) for v in labels.values())
    print(f"labels: max |top-1 difference| {np.abs(a - b).max() * 100:.3f} pp on the same subnets, "
          f"Kendall tau between the two {kendall_tau(a, b):.4f}")


if __name__ == "__main__":
    main()
