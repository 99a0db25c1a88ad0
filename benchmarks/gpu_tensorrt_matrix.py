"""GPU check of the TensorRT exporter in one call: fp32/fp16/int8 x static/dynamic batch on a zoo subnet.

Needs an NVIDIA GPU and TensorRT 10 or 11 (``pip install -e '.[tensorrt]'``, or JetPack's on a Jetson).
Each case builds an engine through the exporter (which picks the TensorRT-10 or TensorRT-11 path and runs
the parity gate), then times it with the ``tensorrt`` runtime; a last case checks that a dynamic-batch model
given the wrong channel count is refused before the build. Inputs and int8 calibration batches are seeded
random normal data (the subnet's inputs are normalised images; no dataset is assumed on the GPU machine).
Without TensorRT or a GPU it exits 2 with the reason, and nothing is faked.

Run: ``python benchmarks/gpu_tensorrt_matrix.py [--subnet largest] [--out gpu_tensorrt_matrix.json]``
Prints a table, writes JSON; exit 0 when every case passed, 1 otherwise. Not run yet: no session so far has
had a GPU with TensorRT (README, TensorRT).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import model_zoo
from deploy_targets import ExportSpec, get_exporter
from deploy_targets.onnx_export import onnx_bytes
from deploy_targets.tensorrt_export import build_engine, tensorrt_unavailable
from profilers.runtimes import MeasureSpec, get_runtime

CHECKPOINT = "ofa_mbv3_tiny.fmnist"


def _randn(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def run_case(net: torch.nn.Module, shape: tuple[int, ...], precision: str, dynamic: bool, out: Path) -> dict:
    """Export one engine (parity-gated) and time it; the record, with the one-line error on failure."""
    row = {"precision": precision, "dynamic_batch": dynamic, "ok": False}
    calibration = tuple(_randn((8, *shape[1:]), 100 + i) for i in range(8)) if precision == "int8" else ()
    spec = ExportSpec(net, shape, out, precision=precision, dynamic_batch=dynamic, calibration=calibration,
                      inputs=_randn((8 if dynamic else 1, *shape[1:]), 1))
    try:
        res = get_exporter("tensorrt").export(spec)
        m = get_runtime("tensorrt").measure(MeasureSpec(res.path, shape, precision=precision))
    except Exception as exc:  # noqa: BLE001 - every failure is a result of the matrix
        return {**row, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    return {**row, "ok": True, "max_abs_diff": res.max_abs_diff, "tolerance": res.settings["parity_tolerance"],
            "build_s": round(res.seconds, 2), "engine_kb": round(res.path.stat().st_size / 1024, 1),
            "median_ms": m.stats.median_ms, "versions": res.versions}


def wrong_channels_case(net: torch.nn.Module, shape: tuple[int, ...]) -> dict:
    """A dynamic-batch model built with another channel count must fail up front, naming the allowed shape."""
    bad = (shape[0], shape[1] + 2, *shape[2:])
    spec = ExportSpec(net, shape, Path("unused.engine"), dynamic_batch=True)
    try:
        build_engine(onnx_bytes(spec), "fp32", input_shape=bad)
    except ValueError as exc:
        return {"case": "dynamic, wrong channels", "ok": "allowed: (N, " in str(exc), "error": str(exc)}
    return {"case": "dynamic, wrong channels", "ok": False, "error": "built an engine for a wrong input shape"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subnet", choices=("smallest", "largest"), default="largest")
    ap.add_argument("--out", type=Path, default=Path("gpu_tensorrt_matrix.json"))
    args = ap.parse_args()
    reason = tensorrt_unavailable()
    if reason is not None:
        print(f"error: unavailable: tensorrt: {reason}", file=sys.stderr)
        return 2
    supernet = model_zoo.load_checkpoint(CHECKPOINT)
    cfg = getattr(supernet.space, args.subnet)()
    net = supernet.extract(cfg).eval()
    shape = (1, supernet.spec.in_channels, cfg.r, cfg.r)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ofakit-trt-") as tmp:
        rows = [run_case(net, shape, p, d, Path(tmp) / f"{p}_{'dynamic' if d else 'static'}.engine")
                for d in (False, True) for p in ("fp32", "fp16", "int8")]
    check = wrong_channels_case(net, shape)
    print(f"{CHECKPOINT} {args.subnet} subnet, input {shape}, GPU {torch.cuda.get_device_name(0)}")
    print(f"{'precision':9} {'batch':7} {'ok':3} {'max|diff|':>10} {'tolerance':>10} {'build s':>8} {'ms':>8}  error")
    for r in rows:
        nums = (f"{r['max_abs_diff']:10.3g} {r['tolerance']:10.3g} {r['build_s']:8.2f} {r['median_ms']:8.3f}"
                if r["ok"] else f"{'':10} {'':10} {'':8} {'':8}")
        print(f"{r['precision']:9} {'dynamic' if r['dynamic_batch'] else 'static':7} {'yes' if r['ok'] else 'NO':3} "
              f"{nums}  {r.get('error', '')}")
    print(f"{check['case']}: {'refused up front' if check['ok'] else 'NOT refused as expected'}: {check['error']}")
    report = {"checkpoint": CHECKPOINT, "subnet": args.subnet, "input_shape": list(shape),
              "gpu": torch.cuda.get_device_name(0), "cases": rows, "shape_check": check,
              "seconds": round(time.perf_counter() - t0, 1)}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(r["ok"] for r in rows) and check["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
