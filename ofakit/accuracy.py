"""Accuracy prediction for search: a cached (subnet, validation accuracy) dataset built from a trained
supernet, and two regressors behind one interface (gradient-boosted trees and OFA's MLP).

The dataset is measured, not modelled: each sampled subnet is extracted, its BatchNorm recalibrated, and
its top-1 taken on the held-out validation split (never the test split). It is written as JSON lines, one
subnet per line, flushed as it goes, so a killed build resumes where it stopped; the header line names
the checkpoint (sha256) and protocol, and a cache for another checkpoint or protocol is rebuilt.
"""

from __future__ import annotations

import json
import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from elastic import Registry, SearchSpace, SubnetConfig
from elastic.batch import ConfigBatch
from elastic.evaluate import loader
from elastic.fileio import atomic_write_text
from elastic.ops import resize

log = logging.getLogger(__name__)

FORMAT = "ofa-kit-accuracy-data"
VERSION = 1


def materialize(ds: Dataset, batch_size: int = 1000) -> TensorDataset:
    """``ds`` decoded once into tensors (evaluating hundreds of subnets then costs only the forward passes)."""
    xs, ys = zip(*loader(ds, batch_size))
    return TensorDataset(torch.cat(xs), torch.cat(ys))


def ort_top1(net: torch.nn.Module, data: TensorDataset, r: int, batch_size: int = 500) -> float:
    """Top-1 of ``net`` on ``data`` (resized to ``r``) run in onnxruntime on one thread (``net`` untouched)."""
    from deploy_targets import ExportSpec
    from deploy_targets.onnx_export import INPUT_NAME, onnx_bytes, ort_session

    images, labels = data.tensors
    session = ort_session(onnx_bytes(ExportSpec(net, (1, images.shape[1], r, r), Path("unused.onnx"),
                                                dynamic_batch=True)))
    correct = 0
    for i in range(0, len(labels), batch_size):
        x = resize(images[i:i + batch_size], r).contiguous().numpy()
        logits = session.run(None, {INPUT_NAME: x})[0]
        correct += int((logits.argmax(1) == labels[i:i + batch_size].numpy()).sum())
    if len(labels) == 0:
        raise ValueError("accuracy needs at least one labelled image")
    return correct / len(labels)


@dataclass(frozen=True)
class AccuracyData:
    """Measured subnets of one supernet: ``configs[i]`` reached top-1 ``acc[i]`` on the validation split."""

    space: SearchSpace
    configs: tuple[SubnetConfig, ...]
    acc: np.ndarray
    header: dict[str, Any] = field(default_factory=dict)

    def batch(self) -> ConfigBatch:
        """The configs as a :class:`ConfigBatch`."""
        return ConfigBatch.from_configs(self.space, list(self.configs))


def sample_configs(space: SearchSpace, n: int, seed: int) -> list[SubnetConfig]:
    """``n`` distinct subnets: the largest and smallest, then seeded random ones (distinct networks)."""
    if n < 2:
        raise ValueError(f"n={n} subnets is too few for an accuracy dataset; allowed: 2 or more")
    rng = np.random.default_rng(seed)
    out, seen = [], set()
    for cfg in [space.largest(), space.smallest()]:
        out.append(cfg)
        seen.add(space.canonical(cfg))
    while len(out) < n:
        cfg = space.sample(rng)
        if space.canonical(cfg) not in seen:
            seen.add(space.canonical(cfg))
            out.append(cfg)
    return out


def _read(path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]], int]:
    """Header, complete records, and the byte length of the complete part (a torn last line is dropped)."""
    if not path.is_file():
        return None, [], 0
    raw = path.read_bytes()
    lines, good, header, records = raw.split(b"\n"), 0, None, []
    for i, line in enumerate(lines[:-1]):  # the part after the last newline is incomplete by construction
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            break
        if i == 0:
            header = obj
        else:
            records.append(obj)
        good += len(line) + 1
    return header, records, good


def build_accuracy_data(space: SearchSpace, evaluate: Callable[[SubnetConfig], float], path: str | Path, n: int,
                        header: dict[str, Any], seed: int = 0,
                        progress: Callable[[int, int], None] | None = None) -> AccuracyData:
    """Measure (or resume measuring) ``n`` subnets of ``space`` into the JSON-lines cache ``path``.

    Args:
        space: The supernet's space.
        evaluate: Validation top-1 of one subnet (extraction, BatchNorm recalibration, evaluation).
        path: The cache; resumed when its header equals ``header`` (plus format fields), rebuilt otherwise.
            Subnets are drawn in a fixed seeded order, so a cache of more subnets serves fewer.
        n: Number of subnets (largest, smallest and seeded random ones).
        header: What identifies the measurement (checkpoint sha256, split, calibration size ...).
        seed: Seed of the sampled subnets.
        progress: Called with ``(done, total)`` after every subnet.
    """
    path = Path(path)
    want = {"format": FORMAT, "version": VERSION, "seed": seed, **header}
    have, records, good = _read(path)
    if have != want:
        if have is not None:
            log.warning("accuracy cache %s was measured for another checkpoint or protocol; rebuilding it", path)
        atomic_write_text(path, json.dumps(want, sort_keys=True) + "\n")
        records, good = [], len(json.dumps(want, sort_keys=True)) + 1
    with open(path, "r+b") as f:
        f.truncate(good)  # drop a line torn by a kill
    cfgs = sample_configs(space, n, seed)
    done = {r["config"]: r["val_top1"] for r in records}
    todo = [c for c in cfgs if c.to_json() not in done]
    with open(path, "a", encoding="utf-8") as f:
        for i, cfg in enumerate(todo):
            acc = float(evaluate(cfg))
            done[cfg.to_json()] = acc
            f.write(json.dumps({"config": cfg.to_json(), "val_top1": acc}) + "\n")
            f.flush()
            os.fsync(f.fileno())
            if progress:
                progress(len(cfgs) - len(todo) + i + 1, len(cfgs))
    return AccuracyData(space, tuple(cfgs), np.array([done[c.to_json()] for c in cfgs]), want)


def load_accuracy_data(path: str | Path, space: SearchSpace) -> AccuracyData:
    """Read a cache written by :func:`build_accuracy_data` (all its complete records)."""
    header, records, _ = _read(Path(path))
    if header is None or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not an ofa-kit accuracy dataset")
    cfgs = tuple(space.validate(SubnetConfig.from_json(r["config"])) for r in records)
    return AccuracyData(space, cfgs, np.array([r["val_top1"] for r in records], dtype=np.float64), header)


# ------------------------------------------------------------------ predictors
class AccuracyPredictor(ABC):
    """Predicts validation top-1 (a fraction) from OFA's one-hot architecture encoding."""

    name: ClassVar[str]

    def __init__(self, seed: int = 0):
        self.seed = seed

    @abstractmethod
    def fit(self, x: np.ndarray, y: np.ndarray) -> "AccuracyPredictor":
        """Train on encodings ``x`` ``[N, F]`` and accuracies ``y`` ``[N]``; returns ``self``."""

    @abstractmethod
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted accuracies of encodings ``x``."""

    def predict_batch(self, batch: ConfigBatch) -> np.ndarray:
        """Predicted accuracies of a population."""
        return self.predict(batch.onehot())


PREDICTORS: Registry[type[AccuracyPredictor]] = Registry("accuracy predictor")


@PREDICTORS.register("gbt")
class GBTPredictor(AccuracyPredictor):
    """scikit-learn's histogram gradient-boosted trees."""

    name = "gbt"

    def fit(self, x: np.ndarray, y: np.ndarray) -> "GBTPredictor":
        from sklearn.ensemble import HistGradientBoostingRegressor

        self.model = HistGradientBoostingRegressor(max_iter=400, learning_rate=0.05, max_leaf_nodes=15,
                                                   min_samples_leaf=5, l2_regularization=1.0,
                                                   early_stopping=False, random_state=self.seed)
        self.model.fit(x, y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(x)


@PREDICTORS.register("mlp")
class MLPPredictor(AccuracyPredictor):
    """OFA's predictor: three 400-wide ReLU layers over the encoding, plus the mean accuracy as a bias.

    Trained with torch (Adam, MSE); inference runs in numpy on the learned weights (no torch call per
    generation of a search).
    """

    name = "mlp"
    hidden, layers, epochs, lr = 400, 3, 300, 1e-3

    def fit(self, x: np.ndarray, y: np.ndarray) -> "MLPPredictor":
        gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        dims = [x.shape[1]] + [self.hidden] * self.layers
        mods: list[torch.nn.Module] = []
        for a, b in zip(dims, dims[1:]):
            mods += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        net = torch.nn.Sequential(*mods, torch.nn.Linear(self.hidden, 1, bias=False))
        self.base = float(np.mean(y))
        xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y - self.base, dtype=torch.float32)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.epochs)
        bs = min(64, len(xt))
        for _ in range(self.epochs):
            for idx in torch.randperm(len(xt), generator=gen).split(bs):
                loss = torch.nn.functional.mse_loss(net(xt[idx]).squeeze(1), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
        linears = [m for m in net if isinstance(m, torch.nn.Linear)]
        self.weights = [(m.weight.detach().numpy().T.copy(),
                         None if m.bias is None else m.bias.detach().numpy().copy()) for m in linears]
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        h = np.asarray(x, dtype=np.float32)
        for i, (w, b) in enumerate(self.weights):
            h = h @ w
            if b is not None:
                h += b
            if i < len(self.weights) - 1:
                np.maximum(h, 0, out=h)
        return h[:, 0].astype(np.float64) + self.base


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's τ-b of two score vectors."""
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def select_predictor(data: AccuracyData, seed: int = 0, holdout: float = 0.25,
                     names: tuple[str, ...] | None = None) -> tuple[AccuracyPredictor, dict[str, Any]]:
    """Fit every predictor on part of ``data``, score it on the held-out rest, refit the best on all of it.

    The best has the highest Kendall τ on the held-out subnets (ranking is what search needs), then the
    lowest RMSE. Returns the chosen predictor and a report of every candidate's held-out RMSE (percentage
    points) and τ.
    """
    if not 0 < holdout < 1:
        raise ValueError(f"holdout={holdout!r} must be a fraction in (0, 1)")
    x, y = data.batch().onehot(), np.asarray(data.acc, dtype=np.float64)
    n_test = int(round(len(y) * holdout))
    if n_test < 5 or len(y) - n_test < 10:
        raise ValueError(f"{len(y)} measured subnets are too few to train and compare accuracy predictors; "
                         "allowed: at least 20")
    perm = np.random.default_rng(seed).permutation(len(y))
    test, train = perm[:n_test], perm[n_test:]
    report: dict[str, Any] = {"train": int(len(train)), "heldout": int(n_test), "candidates": {}}
    for name in names or tuple(PREDICTORS.names()):
        pred = PREDICTORS.get(name)(seed).fit(x[train], y[train]).predict(x[test])
        report["candidates"][name] = {"rmse_pp": float(100 * np.sqrt(np.mean((pred - y[test]) ** 2))),
                                      "kendall_tau": kendall_tau(pred, y[test])}
    best = max(report["candidates"], key=lambda k: (round(report["candidates"][k]["kendall_tau"], 3),
                                                    -report["candidates"][k]["rmse_pp"]))
    report["chosen"] = best
    log.info("accuracy predictor: %s (held-out τ %.3f, RMSE %.2f pp)", best,
             report["candidates"][best]["kendall_tau"], report["candidates"][best]["rmse_pp"])
    return PREDICTORS.get(best)(seed).fit(x, y), report
