"""The shipped artifact: a subnet exported to a target, and its sidecar JSON.

The sidecar (``<artifact>.json``) records the subnet config, the source checkpoint and its sha256, the
input preprocessing, predicted accuracy and latency, measured latency (when measured), tool and runtime
versions, and the export settings, so a deployed file can always be traced and fed correctly. A new
artifact never sits beside an old artifact's sidecar, even after a crash (:func:`export_subnet`).
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from deploy_targets import ExportResult, ExportSpec, get_exporter, list_exporters
from elastic.families import Config
from elastic.fileio import atomic_write_text, sha256_file
from ofakit.context import CheckpointContext
from profilers import LOCAL, open_runtime

SIDECAR_FORMAT = "ofa-kit-artifact"
PREDICTIONS = {"predicted_accuracy": None, "predicted_latency_ms": None}  # in every sidecar; null when unknown
AGREEMENT = "min_top1_agreement"  # the exporter option --min-agreement sets (int8 targets that check top-1)
CALIBRATION_IMAGES = 256  # int8 calibration: the first validation images; top-1 agreement checks the next ones


def sidecar_path(artifact: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` (also for ``.mlpackage`` directories)."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def nearest_existing(path: str | Path) -> Path:
    """``path`` itself if it exists, else its nearest existing parent (where making ``path`` would start)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_out_folder(out: str | Path) -> None:
    """``ValueError`` when the artifact path ``out`` lies under a file (its folder cannot be made): checked before
    the export's work, naming ``out`` rather than a helper file beside it."""
    p = nearest_existing(Path(out).parent)
    if not p.is_dir():
        raise ValueError(f"out={str(out)!r}: {p} is a file, not a directory; give a path in a folder")


def export_subnet(ctx: CheckpointContext, cfg: Config, target: str, out: str | Path, precision: str = "fp32",
                  dynamic_batch: bool = False, info: dict[str, Any] | None = None, device: str = LOCAL,
                  token: str | None = None, min_agreement: float | None = None) -> tuple[ExportResult, Path]:
    """Export subnet ``cfg`` of ``ctx`` (BatchNorm recalibrated) to ``out`` and write its sidecar.

    Parity is checked on real validation images; int8 targets get their calibration batches from the
    validation split's first ``CALIBRATION_IMAGES``, and those that check top-1 agreement (ExecuTorch) do it on
    the next ``CALIBRATION_IMAGES``, which the calibration never saw. ``info`` (predictions, measurements ...)
    is merged into the sidecar. A TensorRT engine for a remote ``device`` (an agent URL) is built there, for
    that device's GPU. ``min_agreement`` lowers (or raises) the int8 top-1 agreement an exporter that checks
    it requires (its ``min_top1_agreement`` option; recorded in the sidecar).
    """
    cfg = ctx.supernet.space.validate(cfg)
    check_out_folder(out)
    exporter = get_exporter(target)
    if exporter.unavailable() is None:  # ``out`` as given (a trailing slash), before the images are prepared
        exporter.check_out(precision, out)
    if min_agreement is not None and (precision != "int8" or AGREEMENT not in exporter.option_keys):
        checking = [n for n in list_exporters() if AGREEMENT in get_exporter(n).option_keys]
        raise ValueError(f"--min-agreement {min_agreement} applies to --precision int8 on a target that checks top-1 "
                         f"agreement ({', '.join(checking)}); got --precision {precision} --target {target}")
    shape = (1, ctx.supernet.spec.in_channels, cfg.r, cfg.r)
    calibration, checked = (), None
    if precision == "int8":  # calibration and agreement images: the validation split's first 256 and next 256
        pool = ctx.real_inputs(cfg, 2 * CALIBRATION_IMAGES)
        n_cal = min(CALIBRATION_IMAGES, len(pool) // 2 if exporter.checks_many_images else len(pool))
        if n_cal < 1:
            raise ValueError(f"int8 needs validation images to calibrate on; {ctx.name}'s validation split has "
                             f"{len(pool)}")
        calibration = tuple(pool[:n_cal].split(32))
        checked = pool[n_cal:2 * n_cal]  # a small split is shared half and half
    if device != LOCAL and target != "tensorrt":
        raise ValueError(f"--device {device} is for building TensorRT engines on the target; {target} "
                         "artifacts are portable: export them here")
    options = {"builder": open_runtime("tensorrt", device, token)} if device != LOCAL else {}
    if min_agreement is not None:
        options[AGREEMENT] = min_agreement
    metadata = {"short_description": f"ofa-kit subnet of {ctx.name}", "com.ofakit.config": cfg.to_json(),
                "com.ofakit.checkpoint_sha256": ctx.meta["sha256"]}
    inputs = ctx.real_inputs(cfg, 8 if dynamic_batch else 1)
    if checked is not None and exporter.checks_many_images:  # top-1 agreement on images calibration never saw
        inputs = checked
    spec = ExportSpec(ctx.subnet(cfg), shape, Path(out), precision=precision, dynamic_batch=dynamic_batch,
                      inputs=inputs, calibration=calibration, options=options, metadata=metadata)
    with _parked_sidecar(Path(out)):
        result = exporter.export(spec)
        return result, write_sidecar(ctx, cfg, result, precision, info)


def _finite(obj: Any) -> Any:
    """``obj`` with NaN and infinite floats as ``None`` (JSON has neither; e.g. a Kendall τ of constant data)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """Identity of a file or folder as written (inode, mtime, size); ``None`` when absent."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


@contextmanager
def _parked_sidecar(out: Path) -> Iterator[None]:
    """Move ``out``'s old sidecar aside while a new artifact is written, so that a crash never leaves a new
    artifact beside the old artifact's description; put it back when the export fails and the old
    artifact is still there untouched (a refused export loses nothing)."""
    side = sidecar_path(out)
    parked = side.with_name(side.name + ".old")
    parked.unlink(missing_ok=True)  # left by an export killed earlier: it describes no artifact here now
    before = _stamp(out)
    moved = side.is_file()
    if moved:
        os.replace(side, parked)
    try:
        yield
    except BaseException:
        if moved and before is not None and _stamp(out) == before:
            os.replace(parked, side)  # the old pair is whole again
        else:
            parked.unlink(missing_ok=True)  # the artifact changed: its old description must not come back
        raise
    parked.unlink(missing_ok=True)


def artifact_files(result: ExportResult) -> dict[str, str]:
    """sha256 of every file an artifact consists of, by path relative to the artifact's folder: the file, the
    weights file its settings name (OpenVINO's ``.bin``), or every file inside a package directory (CoreML)."""
    root = result.path
    if root.is_dir():
        return {p.relative_to(root.parent).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}
    weights = result.settings.get("weights")
    return {p.name: sha256_file(p) for p in [root, *([root.with_name(weights)] if weights else [])]}


def write_sidecar(ctx: CheckpointContext, cfg: Config, result: ExportResult, precision: str,
                  info: dict[str, Any] | None = None) -> Path:
    """Write (atomically) the sidecar of an exported artifact; returns its path."""
    meta = ctx.meta
    pre = {k: v for k, v in meta.get("preprocess", {}).items() if k not in ("resolutions", "image_size", "scale")}
    size = meta.get("preprocess", {}).get("image_size")
    side = {"format": SIDECAR_FORMAT, "artifact": result.path.name, "target": result.target,
            "artifact_sha256": sha256_file(result.path) if result.path.is_file() else None,
            "artifact_files": artifact_files(result),
            "config": cfg.to_dict(), "checkpoint": {"name": ctx.name, "sha256": meta["sha256"],
                                                    "recipe": meta["recipe"]},
            "input": {"shape": [1, ctx.supernet.spec.in_channels, cfg.r, cfg.r],
                      "name": result.settings.get("input_name", "input"), **pre,
                      "steps": [f"load the image as {'greyscale' if ctx.supernet.spec.in_channels == 1 else 'RGB'}"
                                + (f" at {size}x{size} px (the training data's size)" if size else ""),
                                "pixel / 255, then (x - mean) / std per channel",
                                f"resize bilinearly (align_corners=False) to {cfg.r}x{cfg.r}: the shape above"]},
            "export": {**result.settings, "precision": precision, "max_abs_diff": result.max_abs_diff,
                       "notes": list(result.notes)},
            "versions": result.versions, "macs": ctx.supernet.flops(cfg), "params": ctx.supernet.params(cfg),
            "written_at": time.time(), **PREDICTIONS, **(info or {})}
    if not info or not set(PREDICTIONS) <= set(info):
        side.setdefault("note", "exported from a config, not from `ofakit search` or `ship` output: no predictions")
    path = sidecar_path(result.path)
    atomic_write_text(path, json.dumps(_finite(side), indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path
