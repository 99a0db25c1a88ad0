"""``ofakit train``: train a supernet from a recipe (progressive shrinking or the sandwich rule)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from ofakit.cli.common import fail, millions, name_table, path_option

console = Console()  # the result table goes to stdout


def train(recipe: str = typer.Option(None, help="Built-in recipe name (see `ofakit zoo recipes`) or a .toml/.yaml file."),
          data: str = typer.Option(None, help="fashion-mnist[:DIR], imagefolder:DIR, cifar10:DIR or a directory; "
                                              "default: the recipe's."),
          out: Path = typer.Option(..., help="Run directory (checkpoints, metrics.jsonl, accuracy.png, supernet).",
                                   parser=path_option),
          resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
          limit: int = typer.Option(None, min=1, help="Use only this many training images (quick runs)."),
          val_size: int = typer.Option(None, "--val-size", min=1,
                                       help="Training images held out for validation; default: the recipe's, "
                                            "else 10% of the training set, at most 5000."),
          as_json: bool = typer.Option(False, "--json", help="Print the final checkpoint metadata as JSON.")) -> None:
    """Train a supernet by progressive shrinking (or the sandwich rule); runs under torchrun too."""
    from ofakit.train import run_training

    try:
        meta = run_training(recipe, out, data=data, resume=resume, train_limit=limit, progress=not as_json,
                            val_size=val_size)
    except (ValueError, OSError) as exc:
        fail(exc)  # one line, never wrapped
    if not meta:
        return
    if as_json:
        typer.echo(json.dumps(meta, indent=2))
        return
    m = meta["metrics"]
    t = name_table(f"Trained supernet: {out / 'supernet.safetensors'}", "subnet", "MACs", "params", "val top-1",
                   "test top-1", names=list(m["subnets"]))
    for name, info in m["subnets"].items():
        t.add_row(name, millions(info["macs"]), millions(info["params"]), f"{100 * m['val_top1'].get(name, 0):.2f}%",
                  f"{100 * m.get('test_top1', {}).get(name, float('nan')):.2f}%")
    console.print(t)
