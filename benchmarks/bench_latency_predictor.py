"""Predicted vs measured whole-subnet latency on onnxruntime CPU (issue "Device latency tables").

For each family (the Fashion-MNIST `ofa_mbv3_tiny` space, the ImageNet OFA-MobileNetV3 w1.0 space at
a small resolution, the tiny OFA-ResNet and OFA-ProxylessNAS variants) this builds a fresh lookup table on this machine (layers + calibration subnets, timed),
then measures N held-out random subnets as whole exported networks and compares them with the calibrated
prediction: % within ±10%, MAPE, Kendall τ (also for the uncalibrated layer sum), the table build time, and
a PNG scatter plot. The figure of merit is itself a ratio measured in the same run (predicted / measured).

The held-out subnets are timed in one interleaved measurement (blocks of runs alternating between all of
them), as the build times its calibration subnets, so a slow drift of this shared machine scales them all
alike instead of scattering them; the calibration subnets are timed again in the same measurement and the
median ratio to their stored figures is printed as ``drift`` (the machine's change since the build).

    .venv/bin/python benchmarks/bench_latency_predictor.py [--subnets 100] [--out benchmarks]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

import model_zoo
from profilers.builder import BuildSettings, build_table, calibration_configs, prepare_subnet
from profilers.predictor import LatencyPredictor
from profilers.record import load_average
from profilers.runtimes import get_runtime
from profilers.store import LatencyTable, spec_id

FAMILIES = {"tiny": ("ofa_mbv3_tiny", None),  # Fashion-MNIST family, 28-32 px
            "d1234": ("ofa_mbv3_tiny_d1234_e2346_k357", None),  # the shipped Fashion-MNIST space, 16-40 px
            "mbv3-128": ("ofa_mbv3_d234_e346_k357_w1.0", (128,)),  # ImageNet OFA-MobileNetV3 w1.0 at 128 px
            "resnet-tiny": ("ofa_resnet_tiny", None),  # the OFA-ResNet family's Fashion-MNIST variant, 28/32 px
            "proxyless-tiny": ("ofa_proxyless_tiny", None)}  # the OFA-ProxylessNAS family's variant, 28/32 px


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-a of two equally long sequences."""
    sa = np.sign(a[:, None] - a[None, :])
    sb = np.sign(b[:, None] - b[None, :])
    n = len(a)
    return float((sa * sb).sum() / (n * (n - 1)))


def scores(pred: np.ndarray, meas: np.ndarray) -> dict:
    """Accuracy figures of predictions against measurements."""
    rel = pred / meas - 1
    return {"within_10pct": float(np.mean(np.abs(rel) <= 0.10)), "within_5pct": float(np.mean(np.abs(rel) <= 0.05)),
            "mape": float(np.mean(np.abs(rel))), "max_abs_rel_err": float(np.abs(rel).max()),
            "kendall_tau": kendall_tau(pred, meas)}


def run_family(label: str, recipe: str, res: tuple[int, ...] | None, n: int, workdir: Path) -> dict:
    kw = {"resolutions": res} if res else {}
    spec = model_zoo.get_spec(recipe, **kw)
    rt = get_runtime("onnxruntime")
    table_path = workdir / f"{recipe}.sqlite"
    settings = BuildSettings()
    t0 = time.perf_counter()
    with LatencyTable(table_path) as table, Progress() as bar:
        task = bar.add_task(f"{label}: table", total=None)
        report = build_table(table, recipe, spec, rt, settings=settings,
                             progress=lambda phase, d, t: bar.update(task, completed=d, total=t, description=f"{label}: {phase}"))
    build_s = time.perf_counter() - t0
    pred = LatencyPredictor.load(table_path, "local", "onnxruntime", recipe)
    torch.manual_seed(0)
    supernet = model_zoo.get_supernet(recipe, **kw).eval()
    cal = calibration_configs(spec, settings.calibration_subnets, settings.seed)
    taken = {c.to_json() for c in cal}
    rng, cfgs = np.random.default_rng(12345), []
    while len(cfgs) < n:
        c = spec.space.sample(rng)
        if c.to_json() not in taken:
            taken.add(c.to_json())
            cfgs.append(c)
    specs = []
    with Progress() as bar:  # the held-out subnets, then the calibration subnets again (to see the drift)
        task = bar.add_task(f"{label}: export {n} whole subnets", total=n + len(cal))
        for i, c in enumerate(cfgs + cal):
            specs.append(prepare_subnet(rt, supernet.extract(c), (1, spec.in_channels, c.r, c.r), workdir / f"s{i}",
                                        settings))
            bar.advance(task)
    # all of them in one interleaved measurement, as the calibration subnets were during the build
    ms = rt.measure_many(specs)
    meas, loads = np.array([m.stats.median_ms for m in ms[:n]]), [m.load_avg for m in ms]
    with LatencyTable(table_path) as table:
        stored = {c.subnet: c.measured_ms for c in table.calibration("local", pred.runtime, spec_id(spec.to_dict()))}
    drift = float(np.median([m.stats.median_ms / stored[c.to_json()] for c, m in zip(cal, ms[n:])]))
    p, raw = pred.predict(cfgs), pred.predict_raw(cfgs)
    return {"family": label, "recipe": recipe, "resolutions": list(spec.space.r), "layers": report.layers,
            "table_build_s": build_s, "table_layers_and_calibration_s": report.seconds,
            "calibration_subnets": report.calibration_used, "correction": report.correction,
            "calibration_drift": drift,
            "calibrated": scores(p, meas), "raw_layer_sum": scores(raw, meas), "subnets": n,
            "measured_ms_range": [float(meas.min()), float(meas.max())], "contended_measurements": int(
                sum(load > 1.0 for load in loads)), "max_load_avg": float(max(loads)),
            "points": {"measured": meas.tolist(), "predicted": p.tolist(), "raw": raw.tolist()}}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 5.5))
    for ax, r in zip(np.atleast_1d(axes), results):
        m, p, raw = (np.array(r["points"][k]) for k in ("measured", "predicted", "raw"))
        lo, hi = min(m.min(), p.min(), raw.min()) * 0.9, max(m.max(), p.max(), raw.max()) * 1.1
        xs = np.linspace(lo, hi, 10)
        ax.fill_between(xs, xs * 0.9, xs * 1.1, color="0.9", label="±10%")
        ax.plot(xs, xs, "k--", lw=0.8)
        ax.scatter(m, raw, s=10, c="tab:gray", alpha=0.5, label="sum of layers (uncalibrated)")
        c = r["calibrated"]
        ax.scatter(m, p, s=12, c="tab:blue", label=f"calibrated: {100 * c['within_10pct']:.0f}% within ±10%, "
                                                    f"τ={c['kendall_tau']:.2f}")
        ax.set(xlabel="measured latency (ms, onnxruntime CPU, 1 thread)", ylabel="predicted latency (ms)",
               title=r["family"], xlim=(lo, hi), ylim=(lo, hi))
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subnets", type=int, default=100)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated, of {list(FAMILIES)}")
    ap.add_argument("--name", default="latency_predictor", help="record and plot file name: <out>/<name>.json|png")
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.families.split(","):
            recipe, res = FAMILIES[label]
            results.append(run_family(label, recipe, res, args.subnets, Path(tmp)))
    env = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu_count": os.cpu_count(), "load_avg_end": load_average(),
           "onnxruntime": get_runtime("onnxruntime").version(), "torch": torch.__version__}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps({"env": env, "results": results}, indent=1))
    plot(results, args.out / f"{args.name}.png")
    print(f"{'family':34s} {'build s':>8s} {'layers':>6s} {'cal':>4s} {'±10% cal':>9s} {'±10% raw':>9s} "
          f"{'MAPE cal':>9s} {'MAPE raw':>9s} {'tau cal':>8s} {'ms range':>14s} {'drift':>6s}")
    for r in results:
        c, w = r["calibrated"], r["raw_layer_sum"]
        print(f"{r['family']:34s} {r['table_build_s']:8.1f} {r['layers']:6d} {r['calibration_subnets']:4d} "
              f"{100 * c['within_10pct']:8.0f}% {100 * w['within_10pct']:8.0f}% {100 * c['mape']:8.1f}% "
              f"{100 * w['mape']:8.1f}% {c['kendall_tau']:8.3f} {r['measured_ms_range'][0]:6.2f}-{r['measured_ms_range'][1]:.2f} {r['calibration_drift']:6.3f}")
    print(f"env: {env}; plot: {args.out / f'{args.name}.png'}")


if __name__ == "__main__":
    main()
