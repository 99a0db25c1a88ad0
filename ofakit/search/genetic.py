"""The search's genetic operators on whole populations of genomes (:meth:`elastic.batch.ConfigBatch.genome`):
OFA's mutation law (every gene resampled with a probability, the resolution with its own) and uniform
crossover, each a handful of array operations per generation."""

from __future__ import annotations

import numpy as np

from elastic.batch import space_cardinalities
from elastic.families import Space


def mutate(space: Space, g: np.ndarray, rng: np.random.Generator, prob: float = 0.1,
           r_prob: float = 0.5) -> np.ndarray:
    """Each gene of every row resampled with probability ``prob`` (the resolution with ``r_prob``), as OFA."""
    return offspring(space, g, g, len(g), rng, prob, r_prob)


def crossover(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uniform crossover of paired rows: every gene from ``a`` or ``b`` with equal probability."""
    return _select(rng.random(a.shape, dtype=np.float32) < 0.5, b, a)


def offspring(space: Space, a: np.ndarray, b: np.ndarray, n_mut: int, rng: np.random.Generator,
              prob: float = 0.1, r_prob: float = 0.5) -> np.ndarray:
    """Children of paired parent rows: ``a[:n_mut]`` mutated (as :func:`mutate`), the rest uniform crossovers
    of ``a`` and ``b`` (as :func:`crossover`).

    One uniform number per gene serves both: a crossover gene comes from ``b`` when it is below 0.5; a
    mutant gene is resampled when it is below the gene's probability ``p``, and then ``u / p`` is itself
    uniform, which picks the new choice. A whole generation's children thus cost a handful of array
    operations.
    """
    thr, scale = _mutation_law(space, float(prob), float(r_prob))
    u = rng.random(a.shape, dtype=np.float32)
    out = _select(u < 0.5, b, a)
    um = u[:n_mut]
    out[:n_mut] = _select(um < thr, (um * scale).astype(np.int8), a[:n_mut])
    return out


def _select(mask: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``np.where(mask, x, y)`` for int8 genes without branches (a random mask defeats branch prediction)."""
    return y + mask.view(np.int8) * (x - y)


def _mutation_law(space: Space, prob: float, r_prob: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene resampling probability and the factor mapping ``u < p`` to a uniform choice index (kept on the
    space per probability pair: hashing a whole space on every generation costs more than the operators)."""
    laws = space.__dict__.get("_mutation_laws")
    if laws is None:
        laws = {}
        object.__setattr__(space, "_mutation_laws", laws)  # frozen dataclasses: a cache, not a field
    if (prob, r_prob) not in laws:
        laws[prob, r_prob] = _law(space, prob, r_prob)
    return laws[prob, r_prob]


def _law(space: Space, prob: float, r_prob: float) -> tuple[np.ndarray, np.ndarray]:
    for name, p in (("prob", prob), ("r_prob", r_prob)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"mutation {name}={p!r} must be within [0, 1]")
    card = np.asarray(space_cardinalities(space), dtype=np.float32)
    thr = np.full(len(card), prob, dtype=np.float32)
    thr[-1] = r_prob
    # (1 - 2^-20) keeps u * scale < card despite float32 rounding; unused where p == 0.
    scale = np.where(thr > 0, card / np.maximum(thr, 1e-30) * np.float32(1 - 2 ** -20), 0).astype(np.float32)
    return thr, scale
