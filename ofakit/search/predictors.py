"""Accuracy predictors behind one interface: scikit-learn gradient-boosted trees and OFA's MLP, both on
OFA's one-hot architecture encoding (plus the subnet's log MACs when a cost grid is given), compared by
k-fold cross-validation on the measured subnets in :func:`select_predictor`."""

from __future__ import annotations

import hashlib
import json
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from elastic import Registry
from elastic.batch import ConfigBatch, CostGrid
from elastic.fileio import atomic_write_text
from ofakit.search.accuracy import AccuracyData, kendall_tau

log = logging.getLogger(__name__)
POOR_TAU = 0.3  # held-out Kendall τ below this: the predictor's ranking is close to noise
FOLDS = 4
REPORT_VERSION = 2  # bump when a predictor's training changes: cached selection reports are then redone


@dataclass(frozen=True)
class Encoder:
    """A predictor's input: OFA's one-hot encoding of a subnet, plus, with a cost grid, its log MACs scaled
    to [0, 1] between the space's smallest and largest subnet. Accuracy follows compute more than any one
    choice, and the one-hot code spreads compute over a hundred features (on the d1234 zoo checkpoint the
    extra feature raised the MLP's cross-validated τ from 0.71 to 0.75, benchmarks/RESULTS.md)."""

    grid: CostGrid | None = None

    def __call__(self, batch: ConfigBatch) -> np.ndarray:
        x = batch.onehot()
        if self.grid is None:
            return x
        sp = batch.space
        lo, hi = np.log(self.grid.macs(ConfigBatch.from_configs(sp, [sp.smallest(), sp.largest()])))
        cost = (np.log(self.grid.macs(batch)) - lo) / max(hi - lo, 1e-12)
        return np.hstack([x, cost.astype(np.float32)[:, None]])


class AccuracyPredictor(ABC):
    """Predicts validation top-1 (a fraction) from a subnet's encoding (see :class:`Encoder`)."""

    name: ClassVar[str]

    def __init__(self, seed: int = 0, encoder: Encoder = Encoder()):
        self.seed, self.encoder = seed, encoder

    @abstractmethod
    def fit(self, x: np.ndarray, y: np.ndarray) -> "AccuracyPredictor":
        """Train on encodings ``x`` ``[N, F]`` and accuracies ``y`` ``[N]``; returns ``self``."""

    @abstractmethod
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted accuracies of encodings ``x``."""

    def _xy(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``x`` and ``y`` checked for :meth:`fit`: as many finite labels as rows, at least two."""
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if x.ndim != 2 or y.ndim != 1 or len(x) != len(y) or len(y) < 2:
            raise ValueError(f"{self.name} fit on x of shape {x.shape} and y of shape {y.shape}; allowed: x [N, F] "
                             "and y [N], N >= 2")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError(f"{self.name} fit on NaN or infinite values; allowed: finite encodings and accuracies")
        return x, y

    def _check_fitted(self, attr: str) -> None:
        if not hasattr(self, attr):
            raise ValueError(f"the {self.name} accuracy predictor is not fitted; call fit(x, y) first")

    def predict_batch(self, batch: ConfigBatch) -> np.ndarray:
        """Predicted accuracies of a population."""
        return self.predict(self.encoder(batch))


PREDICTORS: Registry[type[AccuracyPredictor]] = Registry("accuracy predictor")


@PREDICTORS.register("gbt")
class GBTPredictor(AccuracyPredictor):
    """scikit-learn's histogram gradient-boosted trees.

    150 trees at learning rate 0.1: the same cross-validated τ as 400 at 0.05 on the zoo checkpoint's data
    (0.838 vs 0.839 on 500 subnets, 0.779 vs 0.777 on 166, 0.704 vs 0.704 on 100; three fold splits each) at
    a third of the prediction cost, which a search pays ~10,000 times (benchmarks/RESULTS.md, issue 16).
    """

    name = "gbt"

    def fit(self, x: np.ndarray, y: np.ndarray) -> "GBTPredictor":
        from sklearn.ensemble import HistGradientBoostingRegressor

        x, y = self._xy(x, y)
        self.model = HistGradientBoostingRegressor(max_iter=150, learning_rate=0.1, max_leaf_nodes=15,
                                                   min_samples_leaf=5, l2_regularization=1.0,
                                                   early_stopping=False, random_state=self.seed)
        self.model.fit(x, y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        self._check_fitted("model")
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
        self._xy(x, y)
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

    @classmethod
    def from_weights(cls, weights: list[tuple[np.ndarray, np.ndarray | None]], base: float) -> "MLPPredictor":
        """A predictor with given layers ``(weight [in, out], bias or None)`` and bias ``base`` (e.g. OFA's)."""
        pred = cls()
        pred.weights, pred.base = list(weights), float(base)
        return pred

    def predict(self, x: np.ndarray) -> np.ndarray:
        self._check_fitted("weights")
        h = np.asarray(x, dtype=np.float32)
        for i, (w, b) in enumerate(self.weights):
            h = h @ w
            if b is not None:
                h += b
            if i < len(self.weights) - 1:
                np.maximum(h, 0, out=h)
        return h[:, 0].astype(np.float64) + self.base


def select_predictor(data: AccuracyData, seed: int = 0, folds: int = FOLDS, names: tuple[str, ...] | None = None,
                     encoder: Encoder = Encoder(), cache: Path | None = None
                     ) -> tuple[AccuracyPredictor, dict[str, Any]]:
    """Score every predictor by ``folds``-fold cross-validation, then refit the best on all of ``data``.

    Every measured subnet is predicted once by a model that never saw it; the best predictor has the highest
    Kendall τ between those held-out predictions and the measurements (ranking is what search needs), then
    the lowest RMSE. Returns the chosen predictor and a report of every candidate's held-out RMSE
    (percentage points) and τ, plus the label noise (``None`` without per-half figures):
    ``halves_tau``, τ between the two validation halves, and ``noise_ceiling_tau``, the τ a perfect
    predictor would reach against the labels (see :meth:`AccuracyData.noise_ceiling`).

    With ``cache`` (a JSON file), the report is reused when it was made from the same encodings,
    accuracies and settings, so only the chosen predictor is fitted again (seconds, not a minute).
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds={folds!r} must be an integer >= 2")
    x, y = encoder(data.batch()), np.asarray(data.acc, dtype=np.float64)
    if len(y) < max(20, 2 * folds):
        raise ValueError(f"{len(y)} measured subnets are too few to train and compare accuracy predictors; "
                         f"allowed: at least {max(20, 2 * folds)}")
    names = names or tuple(PREDICTORS.names())
    key = hashlib.sha256(repr((REPORT_VERSION, seed, folds, names)).encode() + x.tobytes() + y.tobytes()).hexdigest()
    report = _cached_report(cache, key)
    if report is None:
        report = _cross_validate(data, x, y, seed, folds, names, encoder)
        if cache is not None:
            atomic_write_text(cache, json.dumps({"key": key, "report": report}, indent=1) + "\n")
    best, tau = report["chosen"], report["candidates"][report["chosen"]]["kendall_tau"]
    report["poor"] = not tau >= POOR_TAU  # also a NaN τ (every subnet measured alike); decided here, not cached
    log.info("accuracy predictor: %s (cross-validated τ %.3f, RMSE %.2f pp; label-noise ceiling τ %s)", best,
             tau, report["candidates"][best]["rmse_pp"],
             "n/a" if report["noise_ceiling_tau"] is None else f"{report['noise_ceiling_tau']:.3f}")
    if report["poor"]:
        log.warning("the accuracy predictor ranks poorly (held-out τ %.3f < %.1f): its picks are close to arbitrary; "
                    "measure more subnets (--samples) or check the checkpoint's subnets really differ", tau, POOR_TAU)
    return PREDICTORS.get(best)(seed, encoder).fit(x, y), report


def _cached_report(cache: Path | None, key: str) -> dict[str, Any] | None:
    """The report stored in ``cache`` under ``key``; ``None`` when absent, unreadable or for other data."""
    if cache is None or not cache.is_file():
        return None
    try:
        stored = json.loads(cache.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        log.warning("ignoring the unreadable predictor report %s", cache)
        return None
    report = stored.get("report") if isinstance(stored, dict) and stored.get("key") == key else None
    if report is None:
        return None
    cands = report.get("candidates") if isinstance(report, dict) else None
    ok = (isinstance(cands, dict) and report.get("chosen") in cands and report.get("chosen") in PREDICTORS.names()
          and all(
              isinstance(c, dict) and all(isinstance(c.get(k), (int, float)) for k in ("rmse_pp", "kendall_tau"))
              for c in cands.values()))
    if not ok:
        log.warning("ignoring the malformed predictor report %s (the predictors are cross-validated again)", cache)
        return None
    return report


def _cross_validate(data: AccuracyData, x: np.ndarray, y: np.ndarray, seed: int, folds: int,
                    names: tuple[str, ...], encoder: Encoder) -> dict[str, Any]:
    """The selection report: every candidate's out-of-fold τ and RMSE, the chosen one, the label noise."""
    parts = np.array_split(np.random.default_rng(seed).permutation(len(y)), folds)
    report: dict[str, Any] = {"folds": folds, "samples": int(len(y)), "candidates": {}}
    for name in names:
        pred = np.empty_like(y)
        for test in parts:
            train = np.setdiff1d(np.arange(len(y)), test)
            pred[test] = PREDICTORS.get(name)(seed, encoder).fit(x[train], y[train]).predict(x[test])
        report["candidates"][name] = {"rmse_pp": float(100 * np.sqrt(np.mean((pred - y) ** 2))),
                                      "kendall_tau": kendall_tau(pred, y)}
    best = max(report["candidates"], key=lambda k: (round(report["candidates"][k]["kendall_tau"], 3),
                                                    -report["candidates"][k]["rmse_pp"]))
    report["chosen"] = best
    report["halves_tau"] = data.halves_tau()
    report["noise_ceiling_tau"] = data.noise_ceiling()
    return report
