"""Accuracy-vs-cost Pareto fronts with pymoo's NSGA-II over subnet genomes.

The genome is the integer vector of :meth:`elastic.batch.ConfigBatch.genome`; sampling and mutation draw
from each gene's own choices (OFA's per-gene resampling), crossover is pymoo's uniform crossover.
Objectives: maximise predicted accuracy, minimise one :class:`~ofakit.search.evolution.Metric`; further
:class:`~ofakit.search.evolution.Constraint` s (e.g. other devices' latency budgets) are pymoo inequality constraints.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from elastic.batch import ConfigBatch, space_cardinalities
from elastic.families import Space
from ofakit.search.evolution import BatchFn, Candidate, Constraint, Metric, _candidate
from ofakit.search.genetic import mutate


def pareto_front(space: Space, accuracy: BatchFn, objective: Metric, constraints: Sequence[Constraint] = (),
                 seed: int = 0, population: int = 100, generations: int = 200,
                 report: Sequence[Metric] = ()) -> tuple[list[Candidate], float]:
    """Non-dominated subnets (accuracy up, ``objective`` down) meeting ``constraints``, cheapest first.

    Returns the front and the search time in seconds.
    """
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.mutation import Mutation
    from pymoo.core.problem import Problem
    from pymoo.core.sampling import Sampling
    from pymoo.operators.crossover.ux import UniformCrossover
    from pymoo.optimize import minimize

    card = np.array(space_cardinalities(space))

    class Subnets(Problem):
        def __init__(self) -> None:
            super().__init__(n_var=len(card), n_obj=2, n_ieq_constr=len(constraints), xl=0, xu=card - 1,
                             vtype=int)

        def _evaluate(self, x, out, *args, **kwargs):  # noqa: ANN001 - pymoo's signature
            batch = ConfigBatch.from_genome(space, np.asarray(x, dtype=np.int8))
            out["F"] = np.stack([-accuracy(batch), objective.fn(batch)], axis=1)
            if constraints:
                out["G"] = np.stack([c.metric.fn(batch) / c.limit - 1.0 for c in constraints], axis=1)

    class Sample(Sampling):  # random subnets plus the two ends of the space, so the front spans the range
        def _do(self, problem, n_samples, *args, random_state=None, **kwargs):  # noqa: ANN001
            g = ConfigBatch.random(space, n_samples, random_state).genome()
            g[:2] = ConfigBatch.from_configs(space, [space.largest(), space.smallest()]).genome()[: min(2, n_samples)]
            return g.astype(int)

    class Resample(Mutation):
        def _do(self, problem, x, random_state=None, **kwargs):  # noqa: ANN001
            return mutate(space, np.asarray(x, dtype=np.int8), random_state, 0.1, 0.5).astype(int)

    t0 = time.perf_counter()
    algo = NSGA2(pop_size=population, sampling=Sample(), crossover=UniformCrossover(), mutation=Resample(),
                 eliminate_duplicates=True)
    res = minimize(Subnets(), algo, ("n_gen", generations), seed=seed, verbose=False)
    seconds = time.perf_counter() - t0
    if res.X is None:
        return [], seconds
    xs = np.atleast_2d(np.asarray(res.X, dtype=np.int8))
    acc = -np.atleast_2d(res.F)[:, 0]
    metrics = [objective, *(c.metric for c in constraints), *report]
    seen, front = set(), []
    for g, a in zip(xs, acc):
        cand = _candidate(space, g, a, list({m.name: m for m in metrics}.values()))
        if cand.config.to_json() not in seen:
            seen.add(cand.config.to_json())
            front.append(cand)
    front.sort(key=lambda c: c.metrics[objective.name])
    return front, seconds
