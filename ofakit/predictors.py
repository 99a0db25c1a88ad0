"""Accuracy predictors behind one interface: scikit-learn gradient-boosted trees and OFA's MLP, both on
OFA's one-hot architecture encoding, compared on held-out subnets by :func:`select_predictor`."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch

from elastic import Registry
from elastic.batch import ConfigBatch
from ofakit.accuracy import AccuracyData, kendall_tau

log = logging.getLogger(__name__)
POOR_TAU = 0.3  # held-out Kendall τ below this: the predictor's ranking is close to noise


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

    @classmethod
    def from_weights(cls, weights: list[tuple[np.ndarray, np.ndarray | None]], base: float) -> "MLPPredictor":
        """A predictor with given layers ``(weight [in, out], bias or None)`` and bias ``base`` (e.g. OFA's)."""
        pred = cls()
        pred.weights, pred.base = list(weights), float(base)
        return pred

    def predict(self, x: np.ndarray) -> np.ndarray:
        h = np.asarray(x, dtype=np.float32)
        for i, (w, b) in enumerate(self.weights):
            h = h @ w
            if b is not None:
                h += b
            if i < len(self.weights) - 1:
                np.maximum(h, 0, out=h)
        return h[:, 0].astype(np.float64) + self.base


def select_predictor(data: AccuracyData, seed: int = 0, holdout: float = 0.25,
                     names: tuple[str, ...] | None = None) -> tuple[AccuracyPredictor, dict[str, Any]]:
    """Fit every predictor on part of ``data``, score it on the held-out rest, refit the best on all of it.

    The best has the highest Kendall τ on the held-out subnets (ranking is what search needs), then the
    lowest RMSE. Returns the chosen predictor and a report of every candidate's held-out RMSE (percentage
    points) and τ, plus ``noise_ceiling_tau``: τ between the two validation halves on the same held-out
    subnets (``None`` without per-half figures), which tells predictor error from measurement noise.
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
    report["noise_ceiling_tau"] = data.noise_ceiling(test)
    log.info("accuracy predictor: %s (held-out τ %.3f, RMSE %.2f pp; label-noise ceiling τ %s)", best,
             report["candidates"][best]["kendall_tau"], report["candidates"][best]["rmse_pp"],
             "n/a" if report["noise_ceiling_tau"] is None else f"{report['noise_ceiling_tau']:.3f}")
    tau = report["candidates"][best]["kendall_tau"]
    if tau < POOR_TAU:
        log.warning("the accuracy predictor ranks poorly (held-out τ %.3f < %.1f): its picks are close to arbitrary; "
                    "measure more subnets (--samples) or check the checkpoint's subnets really differ", tau, POOR_TAU)
    report["poor"] = tau < POOR_TAU
    return PREDICTORS.get(best)(seed).fit(x, y), report
