"""Accuracy at reduced precision: the top-1 a target's int8 quantization costs, measured on validation images,
and the per-precision correction a search uses to weigh an int8 subnet against an fp32 one.

For a handful of subnets spread over the accuracy dataset's range (the largest, the smallest and evenly
spaced ones by measured top-1), the subnet is exported by the target's own exporter at that precision
(calibrated on the first :data:`CALIBRATION_IMAGES` validation images, as ``ofakit export`` does) and its top-1
on the remaining validation images is compared with the fp32 subnet's on the same images. The mean loss is the
correction: predicted accuracy at that precision = predicted fp32 accuracy - mean loss. Records are JSON lines
next to the accuracy dataset, written as they are measured, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from deploy_targets import ExportSpec, get_exporter
from elastic.batch import ConfigBatch
from elastic.families import Config
from elastic.fileio import atomic_write_text

log = logging.getLogger(__name__)

FORMAT = "ofa-kit-precision-data"
CALIBRATION_IMAGES = 256  # the validation split's first images calibrate; the rest are evaluated
DROP_SUBNETS = 6  # subnets measured per (target, precision)
OPEN_GATE_IMAGES = 8  # check images of a measurement export: below INT8_AGREEMENT_IMAGES, so no agreement gate
CHUNK = 256  # images per run of the quantized artifact (a static batch every target exports)


@dataclass(frozen=True)
class PrecisionDrop:
    """What ``precision`` on ``target`` cost on the measured subnets (top-1 fractions, fp32 minus quantized)."""

    target: str
    precision: str
    fp32: tuple[float, ...]
    quantized: tuple[float, ...]
    images: int

    @property
    def mean(self) -> float:
        """The correction: mean top-1 lost."""
        return float(np.mean(np.subtract(self.fp32, self.quantized))) if self.fp32 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The record search reports and sidecars carry."""
        drops = np.subtract(self.fp32, self.quantized)
        return {"target": self.target, "precision": self.precision, "subnets": len(self.fp32), "images": self.images,
                "mean_drop": self.mean, "max_drop": float(drops.max()) if len(drops) else 0.0,
                "fp32_top1": list(self.fp32), "quantized_top1": list(self.quantized)}


class PrecisionAccuracy:
    """An accuracy objective at a reduced precision: ``base`` (fp32) minus the measured mean loss."""

    def __init__(self, base: Any, drop: PrecisionDrop):
        self.base, self.drop = base, drop

    def predict_batch(self, batch: ConfigBatch) -> np.ndarray:
        """Predicted top-1 of ``batch`` at the drop's precision."""
        return np.asarray(self.base.predict_batch(batch)) - self.drop.mean


def spread_configs(configs: Sequence[Config], acc: np.ndarray, n: int = DROP_SUBNETS) -> list[Config]:
    """``n`` subnets of an accuracy dataset spread over its measured top-1: the first two (largest and smallest)
    and evenly spaced ranks of the rest."""
    if n < 1:
        raise ValueError(f"n={n} subnets must be at least 1")
    first, rest = list(configs[:2]), list(np.argsort(np.asarray(acc)[2:], kind="stable") + 2)
    picks = [configs[rest[int(round(q))]] for q in np.linspace(0, len(rest) - 1, max(0, n - 2))] if rest else []
    return list(dict.fromkeys(first + picks))[:n]


def calibration_split(n: int) -> int:
    """How many of ``n`` validation images calibrate (the rest are evaluated): :data:`CALIBRATION_IMAGES`, or
    half of a smaller split."""
    if n < 2:
        raise ValueError(f"accuracy at a reduced precision needs at least 2 validation images; the split has {n}")
    return min(CALIBRATION_IMAGES, n // 2)


def quantized_top1(module: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, target: str,
                   precision: str) -> float:
    """Top-1 on the images after the first :func:`calibration_split` of ``module`` exported by ``target`` at
    ``precision`` and calibrated on those first images (images already at the subnet's resolution).

    The export's parity gate is opened (a few check images, any difference allowed): the top-1 measured here
    is what is wanted, however far it falls; shipping an artifact keeps the gate."""
    exporter = get_exporter(target)
    reason = exporter.unavailable()
    if reason is not None:
        raise ValueError(f"{target} is unavailable here ({reason}); its {precision} accuracy cannot be measured")
    n_cal = calibration_split(len(images))
    cal, x, y = images[:n_cal], images[n_cal:], labels[n_cal:]
    chunk = min(CHUNK, len(x))
    with tempfile.TemporaryDirectory(prefix="ofakit-precision-") as tmp:
        spec = ExportSpec(module, (chunk, *images.shape[1:]), Path(tmp) / f"q{exporter.suffix}", precision=precision,
                          inputs=x[:min(chunk, OPEN_GATE_IMAGES)], calibration=tuple(cal.split(chunk)),
                          atol=float(np.finfo(np.float32).max))
        path = exporter.export(spec).path
        hits = 0
        for start in range(0, len(x), chunk):
            part = x[start:start + chunk]
            padded = torch.cat([part, x[:chunk - len(part)]]) if len(part) < chunk else part
            logits = np.asarray(exporter.bind(path, padded.contiguous().numpy())())[:len(part)]
            hits += int((torch.as_tensor(logits).argmax(1) == y[start:start + chunk]).sum())
    return hits / len(x)


def _read(path: Path, header: dict[str, Any]) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    try:
        head = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        head = None
    if head != header:
        log.info("%s was measured for another checkpoint or protocol; measuring again", path)
        return []
    out = []
    for line in lines[1:]:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a torn last line of a killed run
            break
    return out


def measure_drop(configs: Sequence[Config], evaluate: Callable[[Config], tuple[float, float]], path: str | Path,
                 header: dict[str, Any], target: str, precision: str,
                 progress: Callable[[int, int], None] | None = None) -> PrecisionDrop:
    """The :class:`PrecisionDrop` of ``target`` at ``precision`` over ``configs``; ``evaluate(cfg)`` returns
    (fp32 top-1, quantized top-1) on the same images. Read from ``path`` (JSON lines under ``header``),
    measuring what is missing and appending each record as it is measured."""
    path = Path(path)
    header = {"format": FORMAT, **header}
    records = _read(path, header)
    text = json.dumps(header) + "\n" + "".join(json.dumps(r) + "\n" for r in records)
    if not path.is_file() or path.read_text() != text:  # new, another checkpoint's, or a killed run's torn line
        atomic_write_text(path, text)
    done = {(r["target"], r["precision"], json.dumps(r["config"], sort_keys=True)): r for r in records}
    out: list[dict[str, Any]] = []
    for i, cfg in enumerate(configs):
        key = (target, precision, json.dumps(cfg.to_dict(), sort_keys=True))
        if key not in done:
            fp32, quantized = evaluate(cfg)
            done[key] = {"target": target, "precision": precision, "config": cfg.to_dict(), "fp32_top1": fp32,
                         "top1": quantized}
            with path.open("a") as fh:
                fh.write(json.dumps(done[key]) + "\n")
            log.info("%s %s: top-1 %.2f%% -> %.2f%% (%d of %d subnets)", target, precision, 100 * fp32,
                     100 * quantized, i + 1, len(configs))
        out.append(done[key])
        if progress:
            progress(i + 1, len(configs))
    images = int(header.get("images", 0))
    return PrecisionDrop(target, precision, tuple(r["fp32_top1"] for r in out), tuple(r["top1"] for r in out), images)
