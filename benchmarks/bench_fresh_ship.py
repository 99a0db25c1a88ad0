"""A new checkpoint shipped from nothing (issue 16): `ofakit ship --checkpoint NEW --latency-ms B`, with no
latency table and no accuracy data, timed end to end as a user runs it, then checked from outside.

The zoo's Fashion-MNIST checkpoint is copied without its accuracy dataset (a "new" checkpoint: same weights,
nothing cached) and shipped into a table file that does not exist. For comparison the zoo checkpoint itself,
with its shipped 300 + 200-subnet accuracy dataset, is shipped against the table the first run built. Printed:
the wall time of the fresh ship and of its phases (table, accuracy dataset, the rest; from the arrival times
of its log lines), each pick's test top-1 (BatchNorm recalibrated as the kit does; the test split is used by
neither search), and each artifact's latency timed here, interleaved, with plain onnxruntime against the budget.
Run on a quiet machine.

    .venv/bin/python benchmarks/bench_fresh_ship.py [--latency-ms 0.4] [--checkpoint NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _timing import independent_medians

from elastic.families import Config
from model_zoo.checkpoint import checkpoint_paths, resolve_checkpoint
from ofakit.context import CheckpointContext
from profilers.record import local_device

OFAKIT = [sys.executable, "-m", "ofakit"]


def ship(checkpoint: str, table: Path, budget: float, out: Path) -> tuple[dict, list[tuple[float, str]], float]:
    """Run `ofakit ship` as a user would; its JSON record, its stderr lines with their arrival times (seconds
    from the start), and its wall time."""
    cmd = [*OFAKIT, "ship", "--checkpoint", checkpoint, "--table", str(table), "--latency-ms", str(budget),
           "--out", str(out), "--json"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [(time.perf_counter() - t0, line.rstrip()) for line in proc.stderr]  # type: ignore[union-attr]
    stdout = proc.stdout.read()  # type: ignore[union-attr]
    if proc.wait() not in (0, 1):
        raise SystemExit("ship failed:\n" + "\n".join(line for _, line in lines[-20:]))
    return json.loads(stdout), lines, time.perf_counter() - t0


def phases(lines: list[tuple[float, str]], total: float) -> dict[str, float]:
    """Seconds of the table build, the accuracy dataset and the rest, from the first log line of each phase."""
    def first(text: str) -> float | None:
        return next((t for t, line in lines if text in line), None)

    acc = first("accuracy dataset:")
    pred = first("accuracy predictor:")
    if acc is None or pred is None:
        return {}
    return {"table": acc, "accuracy dataset": pred - acc, "the rest": total - pred}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="ofa_mbv3_tiny_d1234_e2346_k357.fmnist_v2")
    ap.add_argument("--latency-ms", type=float, default=0.4, help="the budget, on this machine with onnxruntime")
    args = ap.parse_args()
    weights, sidecar = checkpoint_paths(resolve_checkpoint(args.checkpoint))
    with tempfile.TemporaryDirectory(prefix="fresh-ship-") as tmp:
        work = Path(tmp)
        shutil.copyfile(weights, work / "new.safetensors")
        shutil.copyfile(sidecar, work / "new.json")
        table = work / "lut.sqlite"
        fresh, lines, wall = ship(str(work / "new"), table, args.latency_ms, work / "fresh.onnx")
        full, _, full_wall = ship(args.checkpoint, table, args.latency_ms, work / "full.onnx")
        ctx = CheckpointContext(args.checkpoint)
        space = ctx.supernet.space

        def test_top1(rec: dict) -> float:
            cfg: Config = space.validate(space.config_type.from_json(json.dumps(rec["config"])))
            return ctx.top1(cfg, "test")

        ms = independent_medians([Path(fresh["artifact"]), Path(full["artifact"])])
        env = local_device(gpu=False)
        print(f"{env.cpu}, {os.cpu_count()} cores, torch {torch.__version__}, load average "
              f"{os.getloadavg()[0]:.2f}; budget {args.latency_ms} ms (onnxruntime, 1 thread, batch 1)")
        parts = ", ".join(f"{k} {v:.0f} s" for k, v in phases(lines, wall).items())
        print(f"fresh ship from nothing: {wall:.0f} s ({wall / 60:.2f} min; {parts}), "
              f"{fresh['attempts']} attempt(s), budget {'met' if fresh['budget_met'] else 'NOT met'} by its own check")
        print(f"zoo ship with its 500-subnet dataset on that table: {full_wall:.0f} s")
        for name, rec, t in (("fresh", fresh, ms[0]), ("zoo data", full, ms[1])):
            print(f"{name:9s} pick: {rec['macs'] / 1e6 if 'macs' in rec else float('nan'):.2f}M MACs, predicted "
                  f"val {100 * rec['predicted_accuracy']:.2f}%, test {100 * test_top1(rec):.2f}%, timed here "
                  f"{t:.3f} ms ({'within' if t <= args.latency_ms else 'OVER'} the budget)")


if __name__ == "__main__":
    main()
