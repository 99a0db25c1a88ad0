"""Is the supernet worth it? Its subnets against the plain alternative, measured (issue 12, part 1).

On a zoo checkpoint (default ``ofa_mbv3_tiny_d1234_e2346_k357.fmnist_v2``):

1. **Peers.** torchvision MobileNetV3-small and -large (one-channel stem, 10 classes) are trained the
   ordinary way on the checkpoint's training data, with its recipe's epochs, learning rate, warm-up,
   optimiser, label smoothing, augmentation and memory format, at the supernet's largest resolution; no
   distillation. Each run checkpoints every epoch under ``--work`` and resumes when re-run.
2. **Subnets.** A pool (the largest and smallest subnet at every resolution, the checkpoint's tracked
   subnets, and ``--random`` seeded random ones) is evaluated on the official test split after BatchNorm
   recalibration, no fine-tuning; the peers keep their own BatchNorm statistics.
3. **Latency.** Every subnet and peer is exported to ONNX and all files are timed interleaved by the
   independent onnxruntime timing of ``benchmarks/_timing.py`` (1 thread, batch 1, median of rounds).

Printed: the measured latency span of the space, the measured Pareto front (its fastest and its most
accurate point), and at each peer's measured latency the best subnet at or under it, with the margin.
Written: ``--out``/vs_peers.json and vs_peers.png (subnets_only.json/.png with ``--peers none``).

    .venv/bin/python benchmarks/bench_vs_peers.py [--work runs/peers] [--random 40] [--out benchmarks]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from _timing import independent_medians
from torch import nn
from torch.utils.data import DataLoader, Subset
from torch.utils.data.distributed import DistributedSampler

from deploy_targets import ExportSpec, get_exporter
from elastic import SubnetConfig
from elastic.ops import resize
from elastic.training.evaluate import loader, top1
from elastic.training.schedule import Phase
from elastic.training.train_state import TrainState, load_train_state, save_train_state
from elastic.training.trainer import TrainConfig, make_optimizer
from model_zoo.training_recipes import TrainingRecipe, load_training_recipe
from ofakit.context import CheckpointContext
from profilers.record import local_device

log = logging.getLogger("bench_vs_peers")
PEERS = ("mobilenet_v3_small", "mobilenet_v3_large")


def make_peer(name: str, in_channels: int, num_classes: int) -> nn.Module:
    """A torchvision MobileNetV3 with its stem convolution replaced for ``in_channels`` inputs."""
    import torchvision

    net = getattr(torchvision.models, name)(num_classes=num_classes)
    stem = net.features[0][0]
    net.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding,
                                   bias=False)
    return net


def train_peer(net: nn.Module, ctx: CheckpointContext, recipe: TrainingRecipe, r: int, work: Path,
               epochs: int | None = None, limit: int | None = None) -> list[dict]:
    """Train ``net`` as the recipe trains the supernet, minus the elastic parts; resumable per epoch.

    ``epochs`` and ``limit`` (training images) shorten the run for smoke tests only.
    """
    cfg: TrainConfig = recipe.train
    epochs = epochs or sum(p.epochs for p in recipe.phases)
    first = recipe.phases[0]
    phase = Phase("peer", epochs, first.lr, warmup_epochs=min(first.warmup_epochs, epochs / 8),
                  lr_schedule=first.lr_schedule)
    train = ctx.splits.train if not limit else Subset(ctx.splits.train, range(limit))
    sampler = DistributedSampler(train, num_replicas=1, rank=0, shuffle=True, seed=cfg.seed, drop_last=True)
    batches = DataLoader(train, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                         num_workers=cfg.num_workers)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    net.to(memory_format=fmt)
    opt, sched = make_optimizer(net, phase, cfg, len(batches))
    records: list[dict] = []
    start = 0
    if (work / "state.json").is_file():
        state = load_train_state(work)
        net.load_state_dict(state.model)
        opt.load_state_dict(state.optimizer)
        sched.load_state_dict(state.scheduler)
        torch.set_rng_state(state.rng["torch"])
        start, records = state.epoch, list(state.meta.get("records", []))
        log.info("%s: resuming after epoch %d of %d", work.name, start, epochs)
    for epoch in range(start, epochs):
        net.train()
        sampler.set_epoch(epoch)
        t0, total = time.perf_counter(), 0.0
        for step, (x, y) in enumerate(batches):
            x = resize(x.contiguous(memory_format=fmt), r)
            loss = F.cross_entropy(net(x), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
            if cfg.log_every and (step + 1) % cfg.log_every == 0:
                log.info("%s epoch %d/%d step %d/%d loss %.4f", work.name, epoch + 1, epochs, step + 1,
                         len(batches), total / (step + 1))
        net.eval()
        val = top1(net, loader(ctx.splits.val, cfg.eval_batch_size), r)
        records.append({"epoch": epoch + 1, "loss": total / len(batches), "val_top1": val,
                        "train_s": time.perf_counter() - t0})
        log.info("%s epoch %d/%d: loss %.4f, val top-1 %.4f", work.name, epoch + 1, epochs, records[-1]["loss"], val)
        save_train_state(work, TrainState(phase_index=0, epoch=epoch + 1, global_epoch=epoch + 1,
                                          model=net.state_dict(), teacher={}, optimizer=opt.state_dict(),
                                          scheduler=sched.state_dict(), rng={"torch": torch.get_rng_state()},
                                          meta={"records": records, "resolution": r}))
    return records


def subnet_pool(ctx: CheckpointContext, n_random: int, seed: int = 0) -> dict[str, SubnetConfig]:
    """Largest and smallest at every resolution, the checkpoint's tracked subnets and seeded random ones."""
    space = ctx.supernet.space
    pool = {f"largest@{r}": space.largest(r) for r in space.r}
    pool.update({f"smallest@{r}": space.smallest(r) for r in space.r})
    for name, entry in ctx.meta.get("metrics", {}).get("subnets", {}).items():
        cfg = SubnetConfig.from_dict(entry["config"])
        if cfg not in pool.values():
            pool[name] = cfg
    rng = np.random.default_rng([seed, 2024])
    pool.update({f"random{i}": space.sample(rng) for i in range(n_random)})
    return pool


def pareto(points: list[dict]) -> list[dict]:
    """The points no other point beats on both latency (lower) and accuracy (higher), fastest first."""
    front, best = [], -1.0
    for p in sorted(points, key=lambda p: (p["ms"], -p["test_top1"])):
        if p["test_top1"] > best:
            front.append(p)
            best = p["test_top1"]
    return front


def compare(subnets: list[dict], peers: list[dict]) -> dict[str, Any]:
    """The figures of the issue's goals from measured points."""
    ms = [p["ms"] for p in subnets]
    front = pareto(subnets)
    out: dict[str, Any] = {"span": max(ms) / min(ms), "front": front,
                           "front_steepness_pp": 100 * (front[-1]["test_top1"] - front[0]["test_top1"]), "peers": []}
    for peer in peers:
        under = [p for p in subnets if p["ms"] <= peer["ms"]]
        best = max(under, key=lambda p: p["test_top1"]) if under else None
        out["peers"].append({**peer, "best_subnet": best,
                             "margin_pp": 100 * (best["test_top1"] - peer["test_top1"]) if best else None})
    return out


def plot(result: dict[str, Any], path: Path, title: str) -> None:
    """Test top-1 against measured latency: the pool, its front and the peers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    sub = result["subnets"]
    ax.scatter([p["ms"] for p in sub], [100 * p["test_top1"] for p in sub], s=12, c="tab:gray", label="subnets")
    front = result["front"]
    ax.plot([p["ms"] for p in front], [100 * p["test_top1"] for p in front], "o-", c="tab:blue",
            label="measured front")
    for peer in result["peers"]:
        ax.scatter([peer["ms"]], [100 * peer["test_top1"]], marker="*", s=160, zorder=5,
                   label=f"{peer['name']} (trained alone)")
    ax.set_xscale("log")
    ax.set_xlabel("measured latency, ms (onnxruntime CPU, 1 thread, batch 1)")
    ax.set_ylabel("test top-1, %")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="ofa_mbv3_tiny_d1234_e2346_k357.fmnist_v2")
    ap.add_argument("--work", type=Path, default=Path("runs/peers"), help="peer training runs (resumable)")
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated, or 'none' (the subnets' goals only)")
    ap.add_argument("--random", type=int, default=40, help="random subnets in the pool")
    ap.add_argument("--train-only", action="store_true", help="train the peers, then stop")
    ap.add_argument("--epochs", type=int, help="smoke runs only: fewer epochs than the recipe's")
    ap.add_argument("--limit", type=int, help="smoke runs only: train the peers on this many images")
    ap.add_argument("--out", type=Path, default=Path("benchmarks"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(int(os.environ.get("OFAKIT_THREADS", "2")))
    ctx = CheckpointContext(args.checkpoint)
    recipe = load_training_recipe(ctx.meta["training"]["recipe"])
    spec, r = ctx.supernet.spec, max(ctx.supernet.space.r)
    peers: dict[str, nn.Module] = {}
    histories = {}
    for name in [n for n in args.peers.split(",") if n and n != "none"]:
        torch.manual_seed(recipe.train.seed)
        net = make_peer(name, spec.in_channels, spec.num_classes)
        histories[name] = train_peer(net, ctx, recipe, r, args.work / name, args.epochs, args.limit)
        peers[name] = net.eval()
    if args.train_only:
        return
    test = loader(ctx.test, 500)
    pool = subnet_pool(ctx, args.random)
    log.info("evaluating %d subnets and %d peers on the test split", len(pool), len(peers))
    points = [{"name": n, "config": json.loads(c.to_json()), "r": c.r, "macs": ctx.supernet.flops(c),
               "test_top1": ctx.top1(c, "test")} for n, c in pool.items()]
    peer_points = [{"name": n, "r": r, "test_top1": top1(m, test, r), "epochs": len(histories[n])}
                   for n, m in peers.items()]
    onnx = get_exporter("onnx")
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        paths = []
        for p in points:
            cfg = SubnetConfig.from_dict(p["config"])
            shape = (1, spec.in_channels, cfg.r, cfg.r)
            paths.append(onnx.export(ExportSpec(ctx.subnet(cfg), shape, Path(tmp) / f"{p['name']}.onnx")).path)
        for p in peer_points:
            shape = (1, spec.in_channels, r, r)
            paths.append(onnx.export(ExportSpec(peers[p["name"]], shape, Path(tmp) / f"{p['name']}.onnx")).path)
        log.info("timing %d ONNX files interleaved", len(paths))
        ms = independent_medians(paths)
    for p, t in zip(points + peer_points, ms):
        p["ms"] = t
    result = {"checkpoint": args.checkpoint, "recipe": recipe.name, "epochs": sum(p.epochs for p in recipe.phases),
              "subnets": points, **compare(points, peer_points), "peer_histories": histories,
              "environment": local_device().to_dict(), "threads": 1, "batch": 1,
              "at": time.strftime("%Y-%m-%d %H:%M")}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "vs_peers" if peers else "subnets_only"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / f"{stem}.png", f"{args.checkpoint}: subnets vs MobileNetV3 trained alone "
         f"({result['epochs']} epochs each)")
    front = result["front"]
    print(f"\n{args.checkpoint}: {len(points)} subnets, Fashion-MNIST test split, onnxruntime CPU 1 thread batch 1")
    print(f"latency span {result['span']:.1f}x ({min(p['ms'] for p in points):.3f}-{max(p['ms'] for p in points):.3f} ms;"
          " goal >= 4x)")
    print(f"front: fastest {front[0]['name']} {front[0]['ms']:.3f} ms {100 * front[0]['test_top1']:.2f}%, most "
          f"accurate {front[-1]['name']} {front[-1]['ms']:.3f} ms {100 * front[-1]['test_top1']:.2f}%: "
          f"{result['front_steepness_pp']:.2f} pp (goal >= 2 pp)")
    largest = next(p for p in points if p["name"] == f"largest@{r}")
    print(f"largest subnet: {100 * largest['test_top1']:.2f}% (goal >= 93.0%)")
    for peer in result["peers"]:
        best = peer["best_subnet"]
        line = (f"{peer['name']}: {peer['ms']:.3f} ms {100 * peer['test_top1']:.2f}%  ->  ")
        line += (f"best subnet at or under it {best['name']} {best['ms']:.3f} ms {100 * best['test_top1']:.2f}%: "
                 f"{peer['margin_pp']:+.2f} pp (goal >= +1 pp)" if best else "no subnet at or under it")
        print(line)


if __name__ == "__main__":
    main()
