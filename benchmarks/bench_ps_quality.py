"""Progressive-shrinking quality: supernet subnets (BN recalibrated, no fine-tuning) vs the same
architectures trained alone from scratch for as many epochs as the whole shrinking schedule (the OFA
paper's comparison), on Fashion-MNIST's official test split.

Each from-scratch run is an ordinary ofa-kit training run with one fixed-subnet phase, so it is resumable:
re-running this script continues unfinished runs from their last epoch checkpoint.

Run: ``.venv/bin/python benchmarks/bench_ps_quality.py [--checkpoint ofa_mbv3_tiny.fmnist] [--work runs/ps_quality]``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import torch

import model_zoo
from elastic import SubnetConfig
from elastic.training.data import DataSource, load_splits
from elastic.training.evaluate import evaluate_subnets
from elastic.training.schedule import Phase
from elastic.training.trainer import TrainConfig, Trainer
from model_zoo.training_recipes import load_training_recipe

log = logging.getLogger("bench_ps_quality")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="ofa_mbv3_tiny.fmnist", help="zoo name or checkpoint path")
    ap.add_argument("--work", default="runs/ps_quality", help="directory of the from-scratch runs (resumable)")
    ap.add_argument("--epochs", type=int, default=None, help="default: the shrinking schedule's total epochs")
    ap.add_argument("--subnets", default="largest,smallest,random0", help="names from the checkpoint metadata")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(int(os.environ.get("OFAKIT_THREADS", "2")))

    supernet = model_zoo.load_checkpoint(args.checkpoint).eval()
    meta = supernet.checkpoint_meta
    epochs = args.epochs or meta["training"]["epochs"]
    data = meta["training"]["data"]
    splits = load_splits(DataSource(data["kind"], Path(data["path"])), val_size=data["val_size"], seed=data["seed"],
                         augment=data.get("augment", True))  # the augmentation the supernet was trained with
    try:
        settings = load_training_recipe(meta["training"]["recipe"]).train
    except ValueError:
        settings = TrainConfig(seed=data["seed"])
    calib = splits.calibration(settings.calib_images)
    rows = []
    for name in args.subnets.split(","):
        cfg = SubnetConfig.from_dict(meta["metrics"]["subnets"][name]["config"])
        ps = evaluate_subnets(supernet, {name: cfg}, calib, splits.test)[name]
        torch.manual_seed(settings.seed)
        alone = model_zoo.get_supernet(meta["recipe"], num_classes=supernet.spec.num_classes,
                                       in_channels=supernet.spec.in_channels, resolutions=supernet.space.r)
        work = Path(args.work) / name
        phases = [Phase("scratch", epochs, args.lr, subnet=cfg, warmup_epochs=1.0)]
        trainer = Trainer(alone, splits, phases, settings, work, progress=False, track={name: cfg})
        trainer.run(resume=(work / "state.json").exists())
        scratch = evaluate_subnets(alone, {name: cfg}, calib, splits.test)[name]
        rows.append({"subnet": name, "macs": supernet.flops(cfg), "params": supernet.params(cfg), "r": cfg.r,
                     "ps_top1": ps, "scratch_top1": scratch, "delta_pp": 100 * (ps - scratch)})
    avg = sum(r["delta_pp"] for r in rows) / len(rows)
    print(f"\nProgressive shrinking vs trained alone ({epochs} epochs each), {args.checkpoint}, "
          f"Fashion-MNIST test split, top-1 after BN recalibration on {settings.calib_images} images")
    print(f"{'subnet':10s} {'MACs':>8s} {'params':>8s} {'r':>3s} {'OFA (no FT)':>12s} {'alone':>8s} {'delta':>8s}")
    for r in rows:
        print(f"{r['subnet']:10s} {r['macs'] / 1e6:7.2f}M {r['params'] / 1e6:7.2f}M {r['r']:3d} "
              f"{100 * r['ps_top1']:11.2f}% {100 * r['scratch_top1']:7.2f}% {r['delta_pp']:+7.2f}pp")
    print(f"average delta {avg:+.2f}pp (goal: within 0.3pp on average; smallest better than alone)")
    if args.json:
        Path(args.json).write_text(json.dumps({"epochs": epochs, "rows": rows, "avg_delta_pp": avg}, indent=2))


if __name__ == "__main__":
    main()
