"""Precision in the search (issue 15): does ``--precision auto`` meet a budget no fp32 subnet meets, and at
other budgets is its pick more accurate on the test split than the best fp32 pick? Measured on the shipped
artifacts themselves (their runtime's latency measurement in ``ship``, their test top-1 run in that runtime).

Steps, through the CLI as a user runs them:

1. A one-resolution view of the zoo checkpoint (the same weights and sha256; its sidecar's space restricted to
   ``--resolution``), so that the tables stay minutes long.
2. fp32 and int8 tables of ``--runtime`` for it (reused when present in ``--work``).
3. Budgets: halfway between the fastest int8 and the fastest fp32 subnet (predicted), then ``--budgets``
   multiples of the fastest fp32 subnet. For each, ``ofakit ship --precision auto`` and ``--precision fp32``;
   then each shipped file's test top-1 in its own runtime and the paired difference with its standard error.

Run: ``.venv/bin/python benchmarks/bench_precision.py --runtime executorch --resolution 16 --work /tmp/bp``
(the ExecuTorch tables take ~10 min at one resolution; the accuracy dataset and the int8 cost are cached).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from elastic.ops import resize
from model_zoo.checkpoint import checkpoint_paths, resolve_checkpoint
from ofakit.context import CheckpointContext
from profilers import LatencyPredictor

OFAKIT = [sys.executable, "-m", "ofakit"]


def derive(checkpoint: str, r: int, work: Path) -> Path:
    """A copy of ``checkpoint`` whose space has the one resolution ``r`` (weights untouched)."""
    weights, sidecar = checkpoint_paths(resolve_checkpoint(checkpoint))
    out = work / f"r{r}.safetensors"
    if not out.is_file():
        meta = json.loads(sidecar.read_text())
        meta["spec"]["r"] = [r]
        shutil.copyfile(weights, out)
        out.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return out


def cli(*args: str) -> dict:
    """``ofakit ARGS``: its JSON (exit 0, or 1 for a missed budget), or ``{"error": ...}`` for a refusal (2)."""
    res = subprocess.run([*OFAKIT, *args], capture_output=True, text=True)
    if res.returncode == 2:
        return {"error": res.stderr.strip().splitlines()[-1]}
    if res.returncode not in (0, 1):
        raise SystemExit(f"ofakit {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()[-600:]}")
    return json.loads(res.stdout) if "--json" in args else {}


def smallest_vs_pick(ckpt: Path, runtime: str, target: str, pick: Path, work: Path) -> dict:
    """The fp32 smallest subnet exported for ``runtime`` and the shipped ``pick``, timed interleaved here: does
    the pick really beat every fp32 subnet?"""
    from ofakit.artifact import export_subnet
    from profilers.runtimes import MeasureSpec, get_runtime

    ctx = CheckpointContext(str(ckpt))
    cfg = ctx.supernet.space.smallest()
    res, _ = export_subnet(ctx, cfg, target, work / f"smallest_fp32{pick.suffix}")
    shape = tuple(res.settings["input_shape"])
    side = json.loads(Path(str(pick) + ".json").read_text())
    specs = [MeasureSpec(res.path, shape), MeasureSpec(pick, shape, precision=side["export"]["precision"])]
    a, b = get_runtime(runtime).measure_many(specs)
    return {"smallest_fp32_ms": a.stats.median_ms, "pick_ms": b.stats.median_ms, "pick": side["export"]["precision"]}


def artifact_top1(path: Path, images: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Per-image correctness of the shipped file, run in its own runtime (batch 1, as exported)."""
    if path.suffix == ".pte":
        from deploy_targets.executorch_export import Forward

        forward = Forward(path)
        logits = [forward(images[i:i + 1].clone()).numpy() for i in range(len(images))]
    elif path.suffix == ".onnx":
        from deploy_targets.onnx_export import ort_session

        s = ort_session(str(path))
        name = s.get_inputs()[0].name
        logits = [s.run(None, {name: images[i:i + 1].numpy()})[0] for i in range(len(images))]
    else:
        raise SystemExit(f"{path.suffix} files are not evaluated by this benchmark")
    return np.concatenate(logits).argmax(1) == labels.numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="ofa_mbv3_tiny_d1234_e2346_k357.fmnist_v2")
    ap.add_argument("--runtime", default="executorch")
    ap.add_argument("--target", default=None, help="exporter of the shipped files (default: the runtime's format)")
    ap.add_argument("--resolution", type=int, default=16)
    ap.add_argument("--samples", type=int, default=60)
    ap.add_argument("--budgets", default="1.6", help="more budgets, as multiples of the fastest fp32 subnet")
    ap.add_argument("--min-agreement", default="0.95")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_precision"))
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    ckpt, table = derive(args.checkpoint, args.resolution, work), work / "lut.sqlite"
    target = args.target or {"executorch": "executorch", "onnxruntime": "onnx", "litert": "litert"}[args.runtime]
    for p in ("fp32", "int8"):
        cli("profile", "build", "--recipe", str(ckpt), "--runtime", args.runtime, "--precision", p, "--calibrate",
            "6", "--table", str(table), "--json")
    spec = CheckpointContext(str(ckpt)).supernet.spec
    space = CheckpointContext(str(ckpt)).supernet.space
    label = {p: f"{args.runtime}/XNNPACK/1t/{p}/b1" if args.runtime != "onnxruntime" else
             f"onnxruntime/CPUExecutionProvider/1t/{p}/b1" for p in ("fp32", "int8")}
    fastest = {p: float(LatencyPredictor.load(table, "local", label[p], spec).predict([space.smallest()])[0])
               for p in label}
    budgets = [(fastest["int8"] + fastest["fp32"]) / 2] if fastest["int8"] < fastest["fp32"] else []
    budgets += [float(f) * fastest["fp32"] for f in args.budgets.split(",")]
    ctx = CheckpointContext(str(ckpt))
    images, labels = ctx.test.tensors
    images = resize(images, args.resolution).contiguous()
    rows = []
    for i, ms in enumerate(budgets):
        row: dict = {"budget_ms": ms}
        for mode in ("auto", "fp32"):
            out = work / f"b{i}_{mode}{'.pte' if target == 'executorch' else '.onnx'}"
            rec = cli("ship", "--checkpoint", str(ckpt), "--table", str(table), "--runtime", args.runtime,
                      "--target", target, "--precision", mode, "--latency-ms", f"{ms:.5f}", "--samples",
                      str(args.samples), "--out", str(out), "--retries", "1", "--json",
                      *(["--min-agreement", args.min_agreement] if mode == "auto" else []))
            if "error" in rec or not out.is_file():
                row[mode] = {"shipped": False, "error": rec.get("error")}
                continue
            hits = artifact_top1(out, images, labels)
            side = json.loads(Path(rec["sidecar"]).read_text())
            row[mode] = {"precision": rec["precision"], "config": rec["config"], "budget_met": rec["budget_met"],
                         "measured_ms": next(iter(rec["measured_latency_ms"].values()), None),
                         "predicted_accuracy": rec["predicted_accuracy"], "test_top1": float(hits.mean()),
                         "offers": rec.get("precision_choice"), "agreement": side["export"].get("top1_agreement")}
            row[mode + "_hits"] = hits
        if i == 0 and "auto_hits" in row and "fp32_hits" not in row:
            row["independent"] = smallest_vs_pick(ckpt, args.runtime, target, work / "b0_auto.pte", work)
        if "auto_hits" in row and "fp32_hits" in row:
            d = row["auto_hits"].astype(float) - row["fp32_hits"].astype(float)
            row["paired_gain_pp"] = 100 * float(d.mean())
            row["paired_se_pp"] = 100 * float(d.std(ddof=1) / np.sqrt(len(d)))
        for k in ("auto_hits", "fp32_hits"):
            row.pop(k, None)
        rows.append(row)
        print(json.dumps(row), flush=True)
    env = {"runtime": args.runtime, "target": target, "resolution": args.resolution, "torch": torch.__version__,
           "cpu": platform.processor() or platform.machine(), "fastest_predicted_ms": fastest}
    (work / "result.json").write_text(json.dumps({"env": env, "rows": rows}, indent=2))
    print(json.dumps(env))


if __name__ == "__main__":
    main()
