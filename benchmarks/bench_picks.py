"""Do picks meet their budget when someone else measures them? (issue "A supernet worth specializing", 3)

On the zoo checkpoint and a fresh onnxruntime-CPU table of this machine, for N budgets spread over the
feasible range, pick a subnet as `ofakit search` does: the predicted pick alone (`--no-measure`), the pick
of the measured shortlist (the default: `measured_choice`, with its second round when the first one's
candidates measure far from their predictions or use too little of the budget) and, for comparison, the
same shortlist with each candidate judged at the table's machine speed by the reference subnets timed
beside it (``normalise=True``; the two alternate which is timed first); with ``--drift``, both after the drift check, as
`ofakit search --drift-check` does. Every pick is exported to ONNX
as `ofakit export` does. Then an independent timing, written here with plain onnxruntime and
`time.perf_counter` (not ofa-kit's protocol code), times all exported files interleaved, in rounds, and
takes each file's median. Printed per method: the share of budgets met (measured <= budget) and met within
10% measurement noise (<= 1.1 x budget), and the share of the budget used (measured / budget).

    .venv/bin/python benchmarks/bench_picks.py [--budgets 10] [--out benchmarks] [--name picks]

The record keeps every budget's timed shortlist (round, predicted and measured ms, machine ratio).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _timing import independent_medians

from elastic.batch import ConfigBatch
from ofakit.cli.search import DEFAULT_CHECKPOINT
from ofakit.context import CheckpointContext
from ofakit.search.evolution import fastest_candidate
from ofakit.artifact import export_subnet
from ofakit.shortlist import measured_choice, time_candidates
from ofakit.specialize import Budget, Specializer
from profilers import LOCAL, BuildSettings, LatencyTable, build_table, get_runtime
from profilers.record import load_average, local_device


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    ap.add_argument("--drift", action="store_true", help="re-time the reference subnets and rescale first")
    ap.add_argument("--budgets", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("benchmarks"))
    ap.add_argument("--name", default="picks", help="record file name: <out>/<name>.json")
    args = ap.parse_args()
    ctx = CheckpointContext(args.checkpoint)
    spec = ctx.supernet.spec
    with tempfile.TemporaryDirectory(prefix="bench-picks-") as tmp:
        tmp = Path(tmp)
        table = tmp / "lut.sqlite"
        t0 = time.perf_counter()
        with LatencyTable(table) as t:
            build_table(t, "bench", spec, get_runtime("onnxruntime"), settings=BuildSettings())
        build_s = time.perf_counter() - t0
        spz = Specializer(ctx, table, [(LOCAL, "onnxruntime")])
        drift = spz.check_drift(LOCAL, "onnxruntime").ratio if args.drift else None
        metric = spz.metrics[Budget(LOCAL, "onnxruntime", 1.0).metric_name]
        lo = fastest_candidate(spz.space, metric).metrics[metric.name]
        hi = float(metric.fn(ConfigBatch.from_configs(spz.space, [spz.space.largest()]))[0])
        budgets = [Budget(LOCAL, "onnxruntime", float(b)) for b in np.linspace(lo * 1.05, hi * 0.98, args.budgets)]
        picks: dict[str, list] = {"predicted": [], "measured shortlist": [], "normalised shortlist": []}
        shortlists = []
        for i, b in enumerate(budgets):
            predicted = spz.search(spz.constraints([b])).best
            picks["predicted"].append(predicted)
            record = {"budget_ms": b.ms}
            order = [("measured shortlist", False), ("normalised shortlist", True)]
            for method, normalise in order if i % 2 == 0 else order[::-1]:  # alternate which one times first
                best, timed = measured_choice(spz, [b], lambda cfgs, bb: time_candidates(spz, cfgs, bb),
                                              normalise=normalise)
                picks[method].append(best or predicted)
                record[method] = timed
            shortlists.append(record)
        files = [export_subnet(ctx, c.config, "onnx", tmp / f"{method.split()[0]}_{i}.onnx")[0].path
                 for method, cands in picks.items() for i, c in enumerate(cands)]
        load = load_average()
        ms = independent_medians(files)
    rows, summary = [], {}
    k = 0
    for method, cands in picks.items():
        got = np.array(ms[k:k + len(cands)])
        k += len(cands)
        bud = np.array([b.ms for b in budgets])
        summary[method] = {"met": float(np.mean(got <= bud)), "met_within_10pct": float(np.mean(got <= 1.1 * bud)),
                           "used_median": float(np.median(got / bud)), "used_min": float(np.min(got / bud))}
        rows += [{"method": method, "budget_ms": b.ms, "predicted_ms": c.metrics[metric.name], "independent_ms": m,
                  "predicted_accuracy": c.accuracy, "config": c.config.to_dict()} for b, c, m in zip(budgets, cands, got)]
    record = {"checkpoint": args.checkpoint, "table_build_s": build_s, "drift": drift, "range_ms": [lo, hi],
              "load_avg": load, "device": local_device().to_dict(), "summary": summary, "rows": rows,
              "shortlists": shortlists, "at": time.strftime("%Y-%m-%d %H:%M")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{len(budgets)} budgets over {lo:.3f}-{hi:.3f} ms (predicted range), drift "
          f"{'not checked' if drift is None else f'{drift:.3f}'}, load {load:.2f}")
    for method, s in summary.items():
        print(f"{method:>20}: met {100 * s['met']:.0f}%, met within 10% {100 * s['met_within_10pct']:.0f}%, "
              f"budget used median {100 * s['used_median']:.0f}% (min {100 * s['used_min']:.0f}%)")


if __name__ == "__main__":
    main()
