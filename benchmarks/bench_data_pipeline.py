"""Cost of preparing one augmented Fashion-MNIST training batch: torchvision's PIL transforms (the reference)
against ofa-kit's in-memory tensor pipeline (``elastic.training.data.TensorImages``), interleaved in one process.

Both draw the ``crop_flip_erase`` policy (random crop with 2 px zero padding, horizontal flip, random
erasing) for 128 images and collate them as the trainer's DataLoader does (one process, no workers). The
figure is the ratio of the medians. Run on a quiet machine.

    .venv/bin/python benchmarks/bench_data_pipeline.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from elastic.training.data import FMNIST_DIR, DataSource, fashion_mnist_root, load_splits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (the first is dropped)")
    ap.add_argument("--batches", type=int, default=5, help="batches timed per pipeline per round")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OFAKIT_THREADS", "1")))
    from torchvision import datasets
    from torchvision import transforms as T

    ours = load_splits(DataSource("fashion-mnist", FMNIST_DIR), val_size=5000, augment="crop_flip_erase")
    reference = datasets.FashionMNIST(str(fashion_mnist_root(FMNIST_DIR)), train=True, transform=T.Compose([
        T.RandomCrop(28, padding=2), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(ours.mean, ours.std),
        T.RandomErasing(p=0.5)]))
    pipelines = {"torchvision PIL transforms (reference)": reference, "ofa-kit TensorImages": ours.train}
    times: dict[str, list[float]] = {k: [] for k in pipelines}
    for _ in range(args.rounds):
        for name, ds in pipelines.items():
            it = iter(DataLoader(ds, batch_size=128, shuffle=True))
            next(it)
            t0 = time.perf_counter()
            for _ in range(args.batches):
                next(it)
            times[name].append((time.perf_counter() - t0) / args.batches)
    ref = float(np.median(times[next(iter(pipelines))][1:]))
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.2f}")
    for name, t in times.items():
        t = np.array(t[1:]) * 1000
        print(f"{name:42s} median {np.median(t):7.1f} ms/batch (p90 {np.percentile(t, 90):7.1f})  "
              f"{np.median(t) / 1000 / ref:.3f}x the reference")


if __name__ == "__main__":
    main()
