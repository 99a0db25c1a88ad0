"""Cost of the accuracy dataset per subnet (issue 16): the protocol as it was when the issue was filed (the
reference) against today's, same subnets, interleaved chunk by chunk in one run, with the agreement of their
labels.

Every protocol extracts each subnet, recalibrates its BatchNorm on the same 2,000 training images (batches of
500, each normalised with its own statistics, the statistics pooled exactly) and takes its top-1 on the
validation split in onnxruntime, into a fresh temporary cache (``build_accuracy_data``; nothing reused between
protocols):

- reference: one process with ``--threads`` PyTorch threads; statistics gathered by a ``var_mean`` hook on
  every train-mode BatchNorm (the code before issue 16, kept here), validation batches of 500;
- today, one process: the same process and threads with today's ``CheckpointContext.correct`` (statistics
  taken from the BatchNorm kernel itself, validation batches of 200);
- today, N workers: ``ofakit``'s default, forked worker processes with one thread each, which also keep freed
  memory instead of page-faulting fresh activations (``keep_freed_memory``).

Printed: seconds per subnet of each (median over chunks, min-max), the ratio to the reference, and for each
protocol the largest top-1 difference from the reference labels on the same subnets and Kendall's τ between
them. Run on a quiet machine.

    .venv/bin/python benchmarks/bench_accuracy_data.py [--subnets 24] [--chunk 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from elastic.bn import _Moments
from elastic.ops import resize
from elastic.training.evaluate import loader
from ofakit.context import CheckpointContext
from ofakit.search.accuracy import build_accuracy_data, kendall_tau, ort_correct, sample_configs
from profilers.record import local_device


def reference_subnet(supernet: torch.nn.Module, cfg: Any, calib: Any) -> torch.nn.Module:
    """BatchNorm recalibration as it was before issue 16: train-mode BatchNorm, plus a ``var_mean`` of every
    BatchNorm's input in a forward pre-hook, merged exactly over the batches."""
    net, pairs = supernet.extract_with_bn_pairs(cfg)
    net.eval().to(memory_format=torch.channels_last)
    moments, handles = [], []
    for bn, _ in pairs:
        bn.train()
        m = _Moments()

        def hook(_module: torch.nn.Module, args: tuple[torch.Tensor, ...], m: _Moments = m) -> None:
            x = args[0].detach()
            var_b, mean_b = torch.var_mean(x, dim=(0, 2, 3), correction=0)
            m.add(x.shape[0] * x.shape[2] * x.shape[3], mean_b, var_b)

        handles.append(bn.register_forward_pre_hook(hook))
        moments.append(m)
    with torch.no_grad():
        for x, _ in loader(calib, 500):
            net(resize(x, cfg.r).contiguous(memory_format=torch.channels_last))
        for h in handles:
            h.remove()
        for (bn, _), m in zip(pairs, moments):
            mean, var = m.mean_var()
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
    return net.eval().to(memory_format=torch.contiguous_format)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="ofa_mbv3_tiny_d1234_e2346_k357.fmnist_v2")
    ap.add_argument("--subnets", type=int, default=24, help="subnets measured by each protocol")
    ap.add_argument("--chunk", type=int, default=8, help="subnets per interleaved chunk")
    ap.add_argument("--workers", type=int, default=2, help="worker processes of today's default")
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads of the one-process protocols")
    ap.add_argument("--seed", type=int, default=123, help="seed of the sampled subnets (not the dataset's own)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ctx = CheckpointContext(args.checkpoint)
    header = {"checkpoint_sha256": ctx.meta["sha256"], "calib_images": len(ctx.calib), "val": len(ctx.val)}
    cfgs = sample_configs(ctx.supernet.space, args.subnets + 2, args.seed)[2:]  # random ones only

    def reference(cfg: Any) -> np.ndarray:
        return ort_correct(reference_subnet(ctx.supernet, cfg, ctx.calib), ctx.val, cfg.r, batch_size=500)

    runs: dict[str, tuple[Callable[[Any], np.ndarray], int]] = {
        "reference (issue filed)": (reference, 1), "today, one process": (ctx.correct, 1),
        f"today, {args.workers} workers": (ctx.correct, args.workers)}
    per: dict[str, list[float]] = {k: [] for k in runs}
    labels: dict[str, list[float]] = {k: [] for k in runs}
    with tempfile.TemporaryDirectory() as tmp:
        for c, start in enumerate(range(0, len(cfgs), args.chunk)):
            chunk = cfgs[start:start + args.chunk]
            names = list(runs)
            for name in names[c % len(names):] + names[:c % len(names)]:  # each protocol leads in turn
                evaluate, workers = runs[name]
                ctx.forget_subnets()  # nothing measured before is reused (forked workers inherit it)
                path = Path(tmp) / f"{len(per[name])}-{names.index(name)}.jsonl"
                t0 = time.perf_counter()
                data = build_accuracy_data(ctx.supernet.space, evaluate, path, 0, header, extra=chunk,
                                           workers=workers)
                per[name].append((time.perf_counter() - t0) / len(chunk))
                labels[name] += [float(a) for a in data.acc]
    env = local_device(gpu=False)
    print(f"{env.cpu}, {os.cpu_count()} cores, torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}; "
          f"{len(cfgs)} random subnets of {args.checkpoint} in chunks of {args.chunk}")
    ref_name = next(iter(runs))
    ref, ref_labels = float(np.median(per[ref_name])), np.array(labels[ref_name])
    for name, t in per.items():
        got = np.array(labels[name])
        agree = ("" if name == ref_name else f"; labels vs reference: max |top-1 diff| "
                 f"{np.abs(got - ref_labels).max() * 100:.3f} pp, Kendall tau {kendall_tau(got, ref_labels):.4f}")
        print(f"{name:26s} {np.median(t):6.3f} s/subnet (chunks {min(t):.3f}-{max(t):.3f}), "
              f"{ref / np.median(t):.2f}x faster than the reference{agree}")


if __name__ == "__main__":
    main()
