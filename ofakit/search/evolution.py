"""Subnet search under constraints: OFA's regularised evolution, vectorised over whole populations, and
accuracy-vs-cost Pareto fronts with pymoo's NSGA-II.

Both work on :class:`~elastic.batch.ConfigBatch` genomes and take plain vectorised callables: an accuracy
estimate and any number of :class:`Metric` costs (predicted latency on a device and runtime, MACs,
parameters). A :class:`Constraint` bounds a metric; several latency constraints on different devices
express a joint budget. A budget no subnet can meet raises :class:`BudgetError` naming the cheapest subnet.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from elastic.batch import ConfigBatch, space_cardinalities
from elastic.families import Config, Space
from ofakit.search.genetic import offspring

BatchFn = Callable[[ConfigBatch], np.ndarray]


@dataclass(frozen=True)
class Metric:
    """A vectorised cost of subnets (lower is better).

    Attributes:
        name: Key in results, e.g. ``latency_ms[local/onnxruntime]``, ``macs``, ``params``.
        fn: Values for a whole :class:`ConfigBatch`.
        unit: For messages (``ms``, ``M`` ...).
        scale: Divide raw values by this for messages (``1e6`` to show MACs in millions).
    """

    name: str
    fn: BatchFn
    unit: str = ""
    scale: float = 1.0

    def fmt(self, value: float) -> str:
        """``value`` for people."""
        return f"{value / self.scale:.4g}{' ' + self.unit if self.unit else ''}"


@dataclass(frozen=True)
class Constraint:
    """``metric <= limit`` (raw units of the metric)."""

    metric: Metric
    limit: float

    def __post_init__(self) -> None:
        if not (isinstance(self.limit, (int, float)) and math.isfinite(self.limit) and self.limit > 0):
            raise ValueError(f"budget for {self.metric.name}={self.limit!r} must be a positive number")

    def describe(self) -> str:
        """``name <= limit`` for people."""
        return f"{self.metric.name} <= {self.metric.fmt(self.limit)}"


class BudgetError(ValueError):
    """No subnet meets the constraints; the message names the cheapest subnet per constraint."""


@dataclass(frozen=True)
class Candidate:
    """One searched subnet with its predicted accuracy and metrics."""

    config: Config
    accuracy: float
    metrics: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"config": self.config.to_dict(), "predicted_accuracy": self.accuracy, "metrics": self.metrics}


MAX_POPULATION, MAX_GENERATIONS = 100_000, 100_000  # a search of minutes at most, not of days or terabytes


@dataclass(frozen=True)
class EvolutionSettings:
    """OFA's evolution hyper-parameters (its defaults), plus the bound on repeated mutation attempts."""

    population: int = 100
    generations: int = 500
    parent_ratio: float = 0.25
    mutation_ratio: float = 0.5
    mutate_prob: float = 0.1
    r_mutate_prob: float = 0.5
    retries: int = 30

    def __post_init__(self) -> None:
        for name, low, top in (("population", 4, MAX_POPULATION), ("generations", 1, MAX_GENERATIONS),
                               ("retries", 1, 1000)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= top:
                raise ValueError(f"{name}={v!r} must be an integer; allowed: {low} to {top}")
        for name in ("parent_ratio", "mutation_ratio", "mutate_prob", "r_mutate_prob"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
                raise ValueError(f"{name}={v!r} must be a number; allowed: (0, 1]")


@dataclass(frozen=True)
class SearchResult:
    """The best subnet found, the best predicted accuracy per generation, and the cost of the search."""

    best: Candidate
    history: tuple[float, ...]
    seconds: float
    evaluations: int
    constraints: tuple[str, ...] = field(default=())


def _candidate(space: Space, g: np.ndarray, acc: float, metrics: Sequence[Metric]) -> Candidate:
    one = ConfigBatch.from_genome(space, g[None, :])
    return Candidate(space.canonical(one.config(0)), float(acc), {m.name: float(m.fn(one)[0]) for m in metrics})


def _violation(space: Space, g: np.ndarray, constraints: Sequence[Constraint]) -> np.ndarray:
    """Sum of relative excesses over the limits (0 for a feasible subnet)."""
    batch = ConfigBatch.from_genome(space, g)
    v = np.zeros(len(g))
    for c in constraints:
        v += np.maximum(c.metric.fn(batch) / c.limit - 1.0, 0.0)
    return v


def _small_biased(space: Space, n: int, rng: np.random.Generator) -> np.ndarray:
    """Random genomes skewed towards the first (smallest) choices, so tight budgets have starting points."""
    card = np.array(space_cardinalities(space))
    u = rng.random((n, len(card))) ** 3
    return np.minimum((u * card).astype(np.int8), card - 1).astype(np.int8)


def minimise(space: Space, fn: Callable[[np.ndarray], np.ndarray], seed: int = 0,
             generations: int = 60) -> np.ndarray:
    """The genome minimising ``fn`` (a vectorised function of genomes), by a short unconstrained evolution."""
    rng = np.random.default_rng(seed)
    s = EvolutionSettings()
    pop = np.concatenate([_small_biased(space, 200, rng), ConfigBatch.random(space, 100, rng).genome()])
    score = fn(pop)
    for _ in range(generations):
        order = np.argsort(score)[:25]
        parents, pscore = pop[order], score[order]
        a, b = np.take(parents, rng.integers(0, 25, (2, 100)), axis=0)
        kids = offspring(space, a, b, 50, rng, s.mutate_prob, s.r_mutate_prob)
        pop, score = np.concatenate([parents, kids]), np.concatenate([pscore, fn(kids)])
    return pop[int(np.argmin(score))]


def check_budget(space: Space, constraints: Sequence[Constraint], seed: int = 0) -> np.ndarray:
    """A genome meeting every constraint, or :class:`BudgetError` naming the cheapest subnet per metric."""
    best = minimise(space, lambda g: _violation(space, g, constraints), seed)
    if _violation(space, best[None, :], constraints)[0] <= 0:
        return best
    parts = []
    for c in constraints:
        cheapest = fastest_candidate(space, c.metric, seed)
        parts.append(f"{c.describe()} (the cheapest subnet predicted is "
                     f"{c.metric.fmt(cheapest.metrics[c.metric.name])}: {cheapest.config.to_json()})")
    what = "budget" if len(constraints) == 1 else "joint budget"
    raise BudgetError(f"no subnet meets the {what} " + "; ".join(parts))


def evolve(space: Space, accuracy: BatchFn, constraints: Sequence[Constraint], seed: int = 0,
           settings: EvolutionSettings | None = None, report: Sequence[Metric] = ()) -> SearchResult:
    """OFA's constrained evolution: the most accurate subnet meeting every constraint.

    Each generation keeps the best ``parent_ratio`` of the population, then makes children by mutation
    (``mutation_ratio``) and uniform crossover of random parents; a child that breaks a constraint is made
    again from the same parents (up to ``retries`` times, then the parent itself is kept).

    Args:
        space: The search space.
        accuracy: Predicted accuracy of a batch (higher is better).
        constraints: Upper bounds on metrics; all must hold.
        seed: Seeds the only generator used.
        settings: Hyper-parameters (OFA's by default: population 100, 500 generations).
        report: Further metrics to compute for the result (constraint metrics are always included).
    """
    s = settings or EvolutionSettings()
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    n_par = max(1, int(round(s.parent_ratio * s.population)))
    n_mut = int(round(s.mutation_ratio * s.population))
    evals = 0

    def feasible(batch: ConfigBatch) -> np.ndarray:
        nonlocal evals
        evals += len(batch)
        ok = np.ones(len(batch), dtype=bool)
        for c in constraints:
            ok &= c.metric.fn(batch) <= c.limit
        return ok

    init = ConfigBatch.from_genome(space, np.concatenate([ConfigBatch.random(space, 4 * s.population, rng).genome(),
                                                          _small_biased(space, 4 * s.population, rng)]))
    pop = init.genome()[feasible(init)][: s.population]
    if len(pop) == 0:
        pop = check_budget(space, constraints, seed)[None, :]
    if len(pop) < s.population:  # fill by mutating the feasible ones found
        fill = pop[rng.integers(0, len(pop), s.population - len(pop))]
        pop = np.concatenate([pop, _children(space, fill, fill, len(fill), rng, s, feasible, None)[0]])
    score = accuracy(ConfigBatch(space, pop))  # genomes made here are valid by construction: no re-check
    history = []
    for _ in range(s.generations):
        order = np.argsort(-score, kind="stable")[:n_par]
        parents, pscore = pop[order], score[order]
        history.append(float(pscore[0]))
        a, b = np.take(parents, rng.integers(0, n_par, (2, s.population)), axis=0)
        kids, kid_score = _children(space, a, b, n_mut, rng, s, feasible, accuracy)
        pop, score = np.concatenate([parents, kids]), np.concatenate([pscore, kid_score])
    i = int(np.argmax(score))
    metrics = [c.metric for c in constraints] + [m for m in report if m.name not in {c.metric.name for c in constraints}]
    best = _candidate(space, pop[i], score[i], metrics)
    return SearchResult(best, tuple(history), time.perf_counter() - t0, evals, tuple(c.describe() for c in constraints))


def _children(space: Space, a: np.ndarray, b: np.ndarray, n_mut: int, rng: np.random.Generator,
              s: EvolutionSettings, feasible: Callable[[ConfigBatch], np.ndarray],
              accuracy: BatchFn | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Feasible children (and their accuracy when ``accuracy`` is given): mutants of ``a[:n_mut]``, uniform
    crossovers of ``a[n_mut:]`` and ``b[n_mut:]``.

    Every row gets a candidate; rows whose candidate breaks a constraint get 4 more at once, then 16 (one
    array operation per round for the whole generation, not one per attempt), up to ``retries`` attempts
    per row; a row that never succeeds keeps its parent ``a``. Accuracy is estimated on the first round's
    batch, then again only for the rows that needed more rounds.
    """
    out = offspring(space, a, b, n_mut, rng, s.mutate_prob, s.r_mutate_prob)
    batch = ConfigBatch(space, out)  # offspring keeps every gene within its choices: no re-check per generation
    ok = feasible(batch)
    score = None if accuracy is None else np.array(accuracy(batch), dtype=np.float64)
    redo = np.flatnonzero(~ok)
    if len(redo) == 0:
        return out, score
    out[redo] = a[redo]
    pending = redo
    copies, tried = 4, 1
    while len(pending) and tried < s.retries:
        m = min(copies, s.retries - tried)
        rows = np.repeat(pending, m)  # sorted, so the mutant rows (index < n_mut) come first
        cand = offspring(space, a[rows], b[rows], int(np.count_nonzero(rows < n_mut)), rng, s.mutate_prob,
                         s.r_mutate_prob)
        ok = feasible(ConfigBatch(space, cand)).reshape(len(pending), m)
        hit = ok.any(1)
        out[pending[hit]] = cand.reshape(len(pending), m, -1)[hit, ok.argmax(1)[hit]]
        pending = pending[~hit]
        tried += m
        copies *= 4
    if score is not None:
        score[redo] = accuracy(ConfigBatch(space, out[redo]))
    return out, score


def fastest_candidate(space: Space, metric: Metric, seed: int = 0) -> Candidate:
    """The subnet with the lowest ``metric`` (accuracy not estimated: NaN)."""
    g = minimise(space, lambda x: metric.fn(ConfigBatch.from_genome(space, x)), seed)
    return _candidate(space, g, float("nan"), [metric])

