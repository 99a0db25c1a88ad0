"""Engine benchmark: ofa-kit vs the reference ``ofa`` package, measured in the same run.

Config (the issue's): ImageNet OFA-MobileNetV3 w1.0 space (or ``--recipe ofa_resnet50``: OFA-ResNet50),
10 classes, 32 px, batch 64, 2 threads.
Both supernets hold the same weights (ours exported to OFA's layout). Measures the training-step
throughput with a random subnet per step and with the largest subnet, and subnet extraction time
(``extract`` vs ``get_active_subnet``). Steps are interleaved in blocks (ofa, ours, ofa, ours, ...) so
that machine noise hits both alike; medians and p90 are reported, with ratios ours/ofa.

Run: ``.venv/bin/python benchmarks/bench_engine.py [--recipe ofa_resnet50] [--rounds 6] [--steps 5]
[--channels-last none|ours|both] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F

import model_zoo
from model_zoo.ofa_parity import reference_supernet
from model_zoo.ofa_weights import to_ofa_state_dict

RECIPES = ("ofa_mbv3_d234_e346_k357_w1.0", "ofa_resnet50")  # the recipes with an `ofa` reference here


def _stats(xs: list[float]) -> dict[str, float]:
    return {"median": float(np.median(xs)), "p90": float(np.percentile(xs, 90)), "n": len(xs)}


def train_steps(args: argparse.Namespace, ours, ref, cfgs) -> dict[str, dict]:
    x = torch.randn(args.batch, 3, args.res, args.res)
    y = torch.randint(0, 10, (args.batch,))
    layout = {"ours": torch.channels_last if args.channels_last in ("ours", "both") else torch.contiguous_format,
              "ofa": torch.channels_last if args.channels_last == "both" else torch.contiguous_format}
    inputs = {impl: x.contiguous(memory_format=fmt) for impl, fmt in layout.items()}
    opts = {"ours": torch.optim.SGD(ours.parameters(), lr=1e-3, momentum=0.9),
            "ofa": torch.optim.SGD(ref.parameters(), lr=1e-3, momentum=0.9)}

    def step(impl: str, cfg) -> float:
        t0 = time.perf_counter()
        opts[impl].zero_grad(set_to_none=True)
        if impl == "ours":
            out = ours(inputs[impl], cfg)
        else:
            ref.set_active_subnet(**cfg.to_ofa())
            out = ref(inputs[impl])
        F.cross_entropy(out, y).backward()
        opts[impl].step()
        return time.perf_counter() - t0

    results = {}
    for mode in ("random", "largest"):
        times: dict[str, list[float]] = {"ours": [], "ofa": []}
        for impl in times:  # warm-up
            for i in range(3):
                step(impl, cfgs[i])
        k = 0
        for _ in range(args.rounds):
            for impl in ("ofa", "ours"):
                for i in range(args.steps):
                    cfg = cfgs[(k + i) % len(cfgs)] if mode == "random" else ours.space.largest()
                    times[impl].append(step(impl, cfg))
            k += args.steps
        results[mode] = {impl: {**_stats(t), "img_per_s": args.batch / float(np.median(t))}
                         for impl, t in times.items()}
        results[mode]["ratio"] = results[mode]["ours"]["img_per_s"] / results[mode]["ofa"]["img_per_s"]
    return results


def extraction(ours, ref, cfgs) -> dict:
    times: dict[str, list[float]] = {"ours": [], "ofa": []}
    for cfg in cfgs[:3]:  # warm-up, both alike
        ours.extract(cfg)
        ref.set_active_subnet(**cfg.to_ofa())
        ref.get_active_subnet(preserve_weight=True)
    for i, cfg in enumerate(cfgs):  # interleaved, who goes first alternating
        for impl in ("ofa", "ours") if i % 2 == 0 else ("ours", "ofa"):
            if impl == "ofa":
                ref.set_active_subnet(**cfg.to_ofa())
                t0 = time.perf_counter()
                ref.get_active_subnet(preserve_weight=True)
            else:
                t0 = time.perf_counter()
                ours.extract(cfg)
            times[impl].append(time.perf_counter() - t0)
    out = {impl: {k: v * 1e3 if k != "n" else v for k, v in _stats(t).items()} for impl, t in times.items()}
    out["speedup"] = out["ofa"]["median"] / out["ours"]["median"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=RECIPES[0], choices=RECIPES)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--extract-configs", type=int, default=40)
    ap.add_argument("--channels-last", choices=("none", "ours", "both"), default="none",
                    help="feed the training steps NHWC batches: to ofa-kit only (as its trainer's channels_last "
                         "option does), or to both (a control: what the layout alone gives)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = model_zoo.get_supernet(args.recipe, num_classes=10, resolutions=(args.res,)).train()
    ref = reference_supernet(args.recipe, num_classes=10).train()
    ref.load_state_dict(to_ofa_state_dict(ours))
    rng = np.random.default_rng(0)
    cfgs = [ours.space.sample(rng) for _ in range(max(args.extract_configs, args.rounds * args.steps))]
    env = {"recipe": args.recipe, "torch": torch.__version__, "threads": torch.get_num_threads(), "batch": args.batch,
           "res": args.res, "dtype": "float32", "device": "cpu", "cpu": platform.processor() or platform.machine(),
           "channels_last": args.channels_last}
    res = {"env": env, "train": train_steps(args, ours, ref, cfgs)}
    ours.eval(), ref.eval()
    res["extract_ms"] = extraction(ours, ref, cfgs[: args.extract_configs])
    print(f"ofa-kit engine benchmark ({args.recipe}, 10 classes, {args.res}px, batch {args.batch}, "
          f"{env['threads']} threads, torch {env['torch']}, NHWC batches: {args.channels_last})")
    for mode, r in res["train"].items():
        print(f"  train step, {mode:7s} subnet: ofa {r['ofa']['img_per_s']:7.1f} img/s  "
              f"ofa-kit {r['ours']['img_per_s']:7.1f} img/s  ratio {r['ratio']:.2f}x")
    e = res["extract_ms"]
    print(f"  extraction (median of {e['ours']['n']}): ofa {e['ofa']['median']:.1f} ms (p90 {e['ofa']['p90']:.1f})  "
          f"ofa-kit {e['ours']['median']:.1f} ms (p90 {e['ours']['p90']:.1f})  speedup {e['speedup']:.1f}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
