"""Front-focused sampling for the accuracy dataset: measure more subnets where the search will pick.

Random subnets are mostly mid-sized, so a predictor fit on them alone knows little about the
accuracy-vs-cost front, the only region a search returns from, and over-rates whatever it guesses best
there (the optimizer's curse: on the d1234 zoo checkpoint the demo's picks scored ~1.5 pp below their
predictions). Each round fits the MLP predictor on what is measured, finds the predicted accuracy-vs-MACs
front with NSGA-II, and returns a few of its subnets not measured yet, spread along it, to be measured.
MACs, not a latency table, span the front, so the dataset stays one per checkpoint, valid on every device.
"""

from __future__ import annotations

import numpy as np

from elastic.batch import CostGrid
from elastic.families import Config
from ofakit.search.accuracy import AccuracyData
from ofakit.search.evolution import Metric
from ofakit.search.pareto import pareto_front
from ofakit.search.predictors import PREDICTORS, Encoder

FRONT_ROUND = 25  # subnets measured per round: the predictor is refit between rounds


def front_picks(data: AccuracyData, grid: CostGrid, k: int, seed: int = 0, generations: int = 100
                ) -> list[Config]:
    """Up to ``k`` unmeasured subnets spread evenly (by rank) along the accuracy-vs-MACs front predicted by
    an MLP fit on ``data``, cheapest first; fewer when the front has fewer new subnets."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} must be a positive integer")
    encoder = Encoder(grid)
    pred = PREDICTORS.get("mlp")(seed, encoder).fit(encoder(data.batch()), np.asarray(data.acc))
    front, _ = pareto_front(data.space, pred.predict_batch, Metric("macs", grid.macs, "M", 1e6), seed=seed,
                            generations=generations)
    seen = {data.space.canonical(c) for c in data.configs}
    new: list[Config] = []
    for cand in front:
        key = data.space.canonical(cand.config)
        if key not in seen:
            seen.add(key)
            new.append(cand.config)
    if len(new) <= k:
        return new
    return [new[i] for i in np.unique(np.round(np.linspace(0, len(new) - 1, k)).astype(int))]
