"""A trained checkpoint with what specialising it needs: its data splits (validation for accuracy data and
BatchNorm calibration, test for reporting), its cached accuracy dataset, the chosen accuracy predictor, and
the top-1 a reduced precision costs it.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import TensorDataset

import model_zoo
from deploy_targets import get_exporter
from elastic import calibrated_subnet
from elastic.batch import CostGrid
from elastic.families import Config
from elastic.training.data import DataSource, Splits, load_splits
from elastic.training.evaluate import correct, loader
from model_zoo.checkpoint import checkpoint_paths
from ofakit.search.accuracy import (AccuracyData, build_accuracy_data, cached_front, cached_samples, materialize,
                                    ort_correct)
from ofakit.search.front_sampling import FRONT_ROUND, front_picks
from ofakit.search.precision import (DROP_SUBNETS, PrecisionDrop, calibration_split, measure_drop, quantized_top1,
                                     spread_configs)
from ofakit.search.predictors import AccuracyPredictor, Encoder, select_predictor

log = logging.getLogger(__name__)
QUICK_ACCURACY_SAMPLES = 64
"""Sampled subnets measured by default for a checkpoint without a cached accuracy dataset (plus 2/3 as many
along the predicted front): ~70 s on 2 cores for the zoo's Fashion-MNIST supernet, so that shipping a new
checkpoint from nothing takes under 3 min (benchmarks/RESULTS.md, issue 16). A cache holding more is used whole."""
MAX_WORKERS = 8  # a bound on memory: each process holds its own activations and onnxruntime session


@dataclass
class CheckpointContext:
    """A loaded checkpoint (zoo name or path) and lazily-built evaluation data.

    Attributes:
        name: What the user gave (zoo name or path).
        calib_images: Training images used to recalibrate BatchNorm of every evaluated subnet.
        workers: Processes measuring the accuracy dataset side by side (one thread each); 0 means one per
            core, at most :data:`MAX_WORKERS`.
    """

    name: str
    calib_images: int = 2000
    workers: int = 0
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @cached_property
    def supernet(self) -> torch.nn.Module:
        """The trained supernet (eval mode)."""
        return model_zoo.load_checkpoint(self.name).eval()

    @cached_property
    def cost_grid(self) -> CostGrid:
        """Exact MACs and parameters of every block variant of the supernet (built once, shared)."""
        return CostGrid.build(self.supernet.spec)

    @property
    def meta(self) -> dict[str, Any]:
        """The checkpoint's metadata sidecar."""
        return self.supernet.checkpoint_meta

    @property
    def weights_path(self) -> Path:
        """The ``.safetensors`` file."""
        return checkpoint_paths(model_zoo.resolve_checkpoint(self.name))[0]

    @cached_property
    def splits(self) -> Splits:
        """The training run's splits, rebuilt from the metadata (same seed, same validation images)."""
        data = self.training_data
        try:
            return load_splits(DataSource(data["kind"], Path(data["path"])), val_size=data["val_size"],
                               seed=data["seed"], train_limit=data.get("train_limit"),
                               preprocess=self.meta.get("preprocess"))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"checkpoint {self.name}: its metadata's training data or preprocessing is malformed "
                             f"({type(exc).__name__}: {exc}); allowed: what `ofakit train` writes") from None
        except ValueError as exc:
            raise ValueError(f"checkpoint {self.name}: cannot rebuild its training data: {exc}") from None

    @property
    def training_data(self) -> dict[str, Any]:
        """The checkpoint's record of its training data (kind, path, val_size, seed ...), checked."""
        training = self.meta.get("training")
        data = training.get("data") if isinstance(training, dict) else None
        if not data:
            raise ValueError(f"checkpoint {self.name} records no training data; it cannot be specialised here")
        if not isinstance(data, dict) or not all(k in data for k in ("kind", "path", "val_size", "seed")) \
                or not isinstance(data["path"], str):
            raise ValueError(f"checkpoint {self.name}: its metadata's training data {str(data)[:80]!r} is malformed; "
                             "allowed: kind, path, val_size, seed as `ofakit train` writes them")
        return data

    @cached_property
    def calib(self) -> TensorDataset:
        """Un-augmented training images for BatchNorm recalibration, decoded once."""
        return materialize(self.splits.calibration(self.calib_images))

    @cached_property
    def val(self) -> TensorDataset:
        """The held-out validation split, decoded once."""
        return materialize(self.splits.val)

    @cached_property
    def test(self) -> TensorDataset:
        """The official test split (final reporting only), decoded once."""
        if self.splits.test is None:
            raise ValueError(f"the dataset of {self.name} has no test split")
        return materialize(self.splits.test)

    def subnet(self, cfg: Config) -> torch.nn.Module:
        """The extracted static subnet with BatchNorm recalibrated (eval mode).

        The last few are kept, since shipping one subnet exports, measures and evaluates it; callers share
        the module and must not change it (exporters and runtimes work on copies).
        """
        cfg = self.supernet.space.validate(cfg)
        nets = self._cache.setdefault("subnets", {})
        if cfg not in nets:
            if len(nets) >= 4:
                nets.pop(next(iter(nets)))
            nets[cfg] = calibrated_subnet(self.supernet, cfg, loader(self.calib, 500))
        return nets[cfg]

    def forget_subnets(self) -> None:
        """Drop the kept extracted subnets, so the next :meth:`subnet` call extracts and recalibrates afresh
        (a benchmark timing that work, or a caller freeing memory)."""
        self._cache.pop("subnets", None)

    def correct(self, cfg: Config, split: str = "val") -> np.ndarray:
        """Per-image correctness of ``cfg`` after BatchNorm recalibration on the ``val`` or ``test`` split.

        Inference runs in onnxruntime when it is installed (5x faster than eager PyTorch on CPU for these
        depthwise networks; the exporter checks parity), else in PyTorch.
        """
        if split not in ("val", "test"):
            raise ValueError(f"split={split!r} is not supported; allowed: ['val', 'test']")
        data: TensorDataset = getattr(self, split)
        net = self.subnet(cfg)
        if get_exporter("onnx").unavailable() is None:
            return ort_correct(net, data, cfg.r)
        return correct(copy.deepcopy(net), loader(data, 500), cfg.r).numpy()  # it converts to channels-last

    def top1(self, cfg: Config, split: str = "val") -> float:
        """Top-1 of ``cfg`` after BatchNorm recalibration on the ``val`` or ``test`` split."""
        return float(self.correct(cfg, split).mean())

    def real_inputs(self, cfg: Config, n: int) -> torch.Tensor:
        """``n`` validation images at ``cfg``'s resolution (export parity checks)."""
        from elastic.ops import resize

        return resize(self.val.tensors[0][:n], cfg.r).contiguous()

    # ----------------------------------------------------------- accuracy
    def accuracy_cache(self, seed: int = 0) -> Path:
        """Where the accuracy dataset of ``seed`` is cached: next to the checkpoint, or the user cache if that
        folder is read-only (then a dataset shipped next to the checkpoint is copied there first and reused).
        Each seed has its own file, so measuring with another seed never discards the default's records."""
        w = self.weights_path
        name = w.name.removesuffix(".safetensors") + (f".accuracy-seed{seed}.jsonl" if seed else ".accuracy.jsonl")
        shipped = w.parent / name
        if os.access(w.parent, os.W_OK):
            return shipped
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ofakit"
        root.mkdir(parents=True, exist_ok=True)
        cache = root / f"{self.meta['sha256'][:12]}-{name}"
        if shipped.is_file() and not cache.exists():
            shutil.copyfile(shipped, cache)
        return cache

    def accuracy_header(self) -> dict[str, Any]:
        """What identifies this checkpoint's accuracy measurements (a cache for another header is rebuilt)."""
        data = self.training_data
        return {"checkpoint_sha256": self.meta["sha256"], "calib_images": len(self.calib),
                "val": {"size": data["val_size"], "seed": data["seed"], "source": data["path"]}}

    def accuracy_samples(self, n: int | None = None, seed: int = 0) -> int:
        """``n``, or by default every sampled subnet the cache of ``seed`` holds, at least
        :data:`QUICK_ACCURACY_SAMPLES`."""
        if n is not None:
            return n
        return max(QUICK_ACCURACY_SAMPLES, cached_samples(self.accuracy_cache(seed), self.accuracy_header(), seed))

    def accuracy_data(self, n: int | None = None, seed: int = 0,
                      progress: Callable[[int, int], None] | None = None,
                      front: int | None = None) -> AccuracyData:
        """The (subnet, validation top-1) dataset: ``n`` sampled subnets (default: :meth:`accuracy_samples`), then
        ``front`` (default ``2n / 3``) chosen along the predicted front in rounds
        (:mod:`ofakit.search.front_sampling`); read from the cache, measuring what is missing."""
        n = self.accuracy_samples(n, seed)
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"samples={n!r} is not a number of subnets to measure; allowed: an integer >= 2")
        front = 2 * n // 3 if front is None else front
        if isinstance(front, bool) or not isinstance(front, int) or front < 0:
            raise ValueError(f"front={front!r} must be a non-negative integer")
        key = f"data{n}-{front}-{seed}"
        if key not in self._cache:
            header = self.accuracy_header()
            space, cache = self.supernet.space, self.accuracy_cache(seed)
            self.val  # decoded here once, so that forked workers share it  # noqa: B018
            workers = self.workers or min(MAX_WORKERS, os.cpu_count() or 1)
            extra = cached_front(cache, space, header, seed)[:front]
            report = None if progress is None else (lambda done, _total: progress(done, n + front))  # the whole plan
            out = build_accuracy_data(space, self.correct, cache, n, header, seed, report, extra, workers)
            while len(extra) < front:
                picks = front_picks(out, self.cost_grid, min(FRONT_ROUND, front - len(extra)), seed + len(extra))
                if not picks:
                    break
                log.info("accuracy dataset: measuring %d subnets along the predicted front (%d of %d)", len(picks),
                         len(extra) + len(picks), front)
                extra += picks
                out = build_accuracy_data(space, self.correct, cache, n, header, seed, report, extra, workers)
            self._cache[key] = out
        return self._cache[key]

    def precision_drop(self, target: str, precision: str, n: int | None = None, seed: int = 0,
                       subnets: int = DROP_SUBNETS, progress: Callable[[int, int], None] | None = None
                       ) -> PrecisionDrop:
        """The top-1 that ``target``'s ``precision`` costs, on ``subnets`` subnets of the accuracy dataset spread
        over its range (:mod:`ofakit.search.precision`); cached next to the accuracy dataset."""
        if precision == "fp32":
            return PrecisionDrop(target, precision, (), (), 0)
        data = self.accuracy_data(n, seed)
        labels = self.val.tensors[1]
        n_cal = calibration_split(len(labels))
        header = {"checkpoint_sha256": self.meta["sha256"], "calib_images": len(self.calib),
                  "calibration_images": n_cal, "images": len(labels) - n_cal}

        def evaluate(cfg: Config) -> tuple[float, float]:
            net, x = self.subnet(cfg), self.real_inputs(cfg, len(labels))
            with torch.no_grad():
                fp32 = float((net(x[n_cal:]).argmax(1) == labels[n_cal:]).float().mean())
            return fp32, quantized_top1(net, x, labels, target, precision)

        cache = self.accuracy_cache(seed)
        path = cache.with_name(cache.name.replace(".accuracy", ".precision"))
        return measure_drop(spread_configs(data.configs, data.acc, subnets), evaluate, path, header, target,
                            precision, progress)

    def accuracy_predictor(self, n: int | None = None, seed: int = 0,
                           progress: Callable[[int, int], None] | None = None
                           ) -> tuple[AccuracyPredictor, dict[str, Any]]:
        """The better of the accuracy predictors on this checkpoint's data, and the comparison report."""
        n = self.accuracy_samples(n, seed)
        key = f"pred{n}-{seed}"
        if key not in self._cache:
            data = self.accuracy_data(n, seed, progress)
            report = self.accuracy_cache(seed).with_suffix(".predictor.json")
            self._cache[key] = select_predictor(data, seed, encoder=Encoder(self.cost_grid),
                                                cache=report)
        return self._cache[key]
