"""PNG plots people compare: accuracy-vs-latency fronts with chosen subnets and budget lines."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from elastic.fileio import atomic_path
from ofakit.search.evolution import Candidate


def plot_front(front: Sequence[Candidate], metric: str, path: str | Path, chosen: Sequence[Candidate] = (),
               budgets: Sequence[float] = (), measured: Sequence[float | None] = (), title: str = "") -> Path:
    """Predicted accuracy vs ``metric`` of the front, chosen subnets (and their measured ``metric``), budgets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    if front:
        ax.plot([c.metrics[metric] for c in front], [100 * c.accuracy for c in front], "o-", ms=3, lw=1,
                color="tab:blue", label="Pareto front (NSGA-II, predicted)")
    for i, c in enumerate(chosen):
        ax.plot(c.metrics[metric], 100 * c.accuracy, "*", ms=14, color="tab:red",
                label="chosen (predicted)" if i == 0 else None)
        m = measured[i] if i < len(measured) else None
        if m is not None:
            ax.plot(m, 100 * c.accuracy, "x", ms=9, color="black", label="chosen (measured)" if i == 0 else None)
    for i, b in enumerate(budgets):
        ax.axvline(b, color="tab:red", ls="--", lw=0.8, label="budget" if i == 0 else None)
    ax.set_xlabel(metric)
    ax.set_ylabel("predicted validation top-1 (%)")
    ax.set_title(title or "accuracy vs latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
