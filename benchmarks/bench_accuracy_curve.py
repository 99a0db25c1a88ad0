"""How many measured subnets an accuracy predictor needs (issue 16): held-out Kendall τ against the number
of training subnets, on a checkpoint's cached accuracy dataset (nothing is measured here).

The cache's random subnets are split once: the last ``--held-out`` are the test set of every point; the
predictor is trained on the first N of the rest, drawn in ``--repeats`` seeded orders (median, min-max).
Beside each point: the label-noise ceiling of the held-out subnets (the τ a perfect predictor would reach
against labels this noisy, from the two validation halves). Writes a JSON record and a PNG plot.

    .venv/bin/python benchmarks/bench_accuracy_curve.py [--checkpoint NAME] [--out benchmarks]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from elastic.batch import ConfigBatch
from ofakit.context import CheckpointContext
from ofakit.search.accuracy import AccuracyData, kendall_tau, load_accuracy_data
from ofakit.search.predictors import PREDICTORS, Encoder


def subset(data: AccuracyData, idx: np.ndarray) -> AccuracyData:
    """The records ``idx`` of ``data`` as a dataset of their own."""
    halves = None if data.halves is None else data.halves[idx]
    return AccuracyData(data.space, tuple(data.configs[i] for i in idx), data.acc[idx], data.header, halves)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="ofa_mbv3_tiny_d1234_e2346_k357.fmnist_v2")
    ap.add_argument("--held-out", type=int, default=100, help="random subnets kept out of every training set")
    ap.add_argument("--sizes", default="20,30,50,75,100,150,200", help="training-set sizes")
    ap.add_argument("--repeats", type=int, default=5, help="seeded orders of the training pool")
    ap.add_argument("--predictor", default="gbt", choices=sorted(PREDICTORS.names()))
    ap.add_argument("--out", default="benchmarks", help="folder of accuracy_curve.json/.png")
    args = ap.parse_args()

    ctx = CheckpointContext(args.checkpoint)
    data = load_accuracy_data(ctx.accuracy_cache(), ctx.supernet.space)
    origin = [json.loads(line).get("origin") for line in ctx.accuracy_cache().read_text().splitlines()[1:]]
    random_idx = np.array([i for i, o in enumerate(origin[:len(data.acc)]) if o != "front"])
    held, pool = random_idx[-args.held_out:], random_idx[:-args.held_out]
    sizes = [int(s) for s in args.sizes.split(",") if int(s) <= len(pool)]
    test = subset(data, held)
    encoder = Encoder(ctx.cost_grid)
    x_test = encoder(ConfigBatch.from_configs(data.space, list(test.configs)))
    ceiling = test.noise_ceiling()
    rows = []
    for n in sizes:
        taus, secs = [], []
        for rep in range(args.repeats):
            idx = np.random.default_rng(rep).permutation(pool)[:n]
            train = subset(data, idx)
            t0 = time.perf_counter()
            model = PREDICTORS.get(args.predictor)(seed=rep, encoder=encoder)
            model.fit(encoder(train.batch()), train.acc)
            secs.append(time.perf_counter() - t0)
            taus.append(kendall_tau(model.predict(x_test), test.acc))
        rows.append({"n": n, "tau_median": float(np.median(taus)), "tau_min": float(min(taus)),
                     "tau_max": float(max(taus)), "taus": taus, "fit_s_median": float(np.median(secs))})
        print(f"N={n:4d}  held-out tau {np.median(taus):.3f} (min {min(taus):.3f}, max {max(taus):.3f}, "
              f"{args.repeats} orders)  fit {np.median(secs):.2f} s")
    print(f"held-out: {len(held)} random subnets; label-noise ceiling tau {ceiling:.3f}")
    out = Path(args.out)
    record = {"checkpoint": args.checkpoint, "predictor": args.predictor, "held_out": len(held),
              "noise_ceiling_tau": ceiling, "rows": rows}
    (out / "accuracy_curve.json").write_text(json.dumps(record, indent=1) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ns = [r["n"] for r in rows]
    ax.errorbar(ns, [r["tau_median"] for r in rows],
                yerr=[[r["tau_median"] - r["tau_min"] for r in rows], [r["tau_max"] - r["tau_median"] for r in rows]],
                marker="o", capsize=3, label=f"{args.predictor}: held-out τ (median, min-max)")
    ax.axhline(ceiling, color="grey", ls="--", label=f"label-noise ceiling {ceiling:.3f}")
    ax.set_xlabel("measured subnets the predictor is trained on")
    ax.set_ylabel("Kendall τ on held-out subnets")
    ax.set_title(args.checkpoint, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "accuracy_curve.png", dpi=120)


if __name__ == "__main__":
    main()
