"""PNG plots of training curves (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from elastic.fileio import atomic_path


def plot_accuracy_curves(records: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Validation accuracy per named subnet against the global epoch, with phase boundaries marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    names = sorted({n for r in records for n in r.get("val", {})})
    for name in names:
        pts = [(r["global_epoch"], 100 * r["val"][name]) for r in records if name in r.get("val", {})]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=name)
    last_phase = None
    for r in records:
        if r["phase"] != last_phase:
            ax.axvline(r["global_epoch"] - 0.5, color="grey", lw=0.6, ls=":")
            ax.text(r["global_epoch"] - 0.45, 0.02, r["phase"], transform=ax.get_xaxis_transform(),
                    fontsize=7, color="grey", rotation=90, va="bottom")
            last_phase = r["phase"]
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 (%) after BN recalibration")
    ax.set_title(title or "supernet training")
    ax.grid(alpha=0.3)
    if names:
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
