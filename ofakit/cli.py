"""The ``ofakit`` command line."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

import model_zoo
from ofakit.agent_cmd import agent_app
from ofakit.demo_cmd import demo
from ofakit.profile_cmd import fail, path_option, profile_app
from ofakit.search_cmd import export, search, ship_cmd
from ofakit.summary import extraction_check, recipe_summary

app = typer.Typer(add_completion=False, no_args_is_help=True, help="ofa-kit: once-for-all elastic model kit.")
zoo_app = typer.Typer(no_args_is_help=True, help="Supernet recipes and checkpoints.")
app.add_typer(zoo_app, name="zoo")
app.add_typer(profile_app, name="profile")
app.add_typer(agent_app, name="agent")
app.command("search")(search)
app.command("export")(export)
app.command("ship")(ship_cmd)
app.command("demo")(demo)
console = Console()


def _fmt_m(v: int) -> str:
    return f"{v / 1e6:.2f}M"


def _table(title: str, *columns: str, names: list[str] | None = None) -> Table:
    """A table whose first column (names; supernet names by default) never wraps or truncates."""
    table = Table(title=title)
    width = max(len(n) for n in (names or model_zoo.list_supernets()))
    table.add_column(columns[0], no_wrap=True, min_width=width)
    for col in columns[1:]:
        table.add_column(col)
    return table


@zoo_app.command("list")
def zoo_list(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """List registered supernet recipes with their space and cost range."""
    rows = [recipe_summary(name) for name in model_zoo.list_supernets()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = _table("Supernet recipes", "recipe", "input", "classes", "subnets", "MACs (min-max)",
                   "params (min-max)")
    for r in rows:
        table.add_row(r["recipe"], f"{r['in_channels']}x{{{min(r['resolutions'])}..{max(r['resolutions'])}}}",
                      str(r["num_classes"]), f"{r['subnets']:.2e}",
                      f"{_fmt_m(r['smallest']['macs'])}-{_fmt_m(r['largest']['macs'])}",
                      f"{_fmt_m(r['smallest']['params'])}-{_fmt_m(r['largest']['params'])}")
    console.print(table)
    checkpoints = [model_zoo.read_checkpoint_meta(n) for n in model_zoo.list_checkpoints()]
    if checkpoints:
        t = _table("Zoo checkpoints", "checkpoint", "recipe", "test top-1 (largest / smallest)", "sha256",
                   names=[m["name"] for m in checkpoints])
        for m in checkpoints:
            acc = m.get("metrics", {}).get("test_top1", {})
            t.add_row(m["name"], m["recipe"], f"{100 * acc.get('largest', 0):.2f}% / {100 * acc.get('smallest', 0):.2f}%",
                      m["sha256"][:12])
        console.print(t)


@zoo_app.command("recipes")
def zoo_recipes(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """List the built-in training recipes."""
    from model_zoo.training_recipes import list_training_recipes, load_training_recipe

    rows = [load_training_recipe(n) for n in list_training_recipes()]
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    t = _table("Training recipes", "recipe", "supernet", "strategy", "epochs", "phases",
               names=[r.name for r in rows])
    for r in rows:
        t.add_row(r.name, r.supernet, r.strategy, str(sum(p.epochs for p in r.phases)),
                  " > ".join(p.name for p in r.phases))
    console.print(t)


@app.command()
def parity(configs: int = typer.Option(20, min=1, max=10000,
                                       help="Random subnets for the OFA parity check."),
           as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """Engine checks: supernet summary, extraction parity and parity with the reference `ofa` package."""
    result: dict = {"recipes": [recipe_summary(n) for n in model_zoo.list_supernets()]}
    with console.status("extraction parity (supernet vs extracted static network)..."):
        result["extraction"] = [extraction_check(n) for n in model_zoo.list_supernets()]
    from model_zoo.ofa_parity import OFA_WIDTHS, check_parity
    result["ofa_parity"] = []
    for name in OFA_WIDTHS:
        try:
            with console.status(f"parity with the ofa package on {configs} subnets of {name}..."):
                result["ofa_parity"].append(asdict(check_parity(name, n_configs=configs)))
        except RuntimeError as exc:
            result["ofa_parity"].append({"recipe": name, "unavailable": str(exc)})
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    zoo_list(as_json=False)
    t = _table("Extraction parity: supernet(x, cfg) vs extract(cfg)(x), eval mode", "recipe", "configs",
               "max |diff|", "extract ms (median)")
    for r in result["extraction"]:
        t.add_row(r["recipe"], str(r["configs"]), f"{r['max_abs_diff']:.2e}", f"{r['extract_ms_median']:.1f}")
    console.print(t)
    t = _table("Parity with the reference ofa package (same random weights)", "recipe", "configs",
               "resolutions", "max |diff| supernet", "max |diff| extracted", "verdict")
    ok = True
    for r in result["ofa_parity"]:
        if "unavailable" in r:
            t.add_row(r["recipe"], "-", "-", "-", "-", f"unavailable: {r['unavailable']}")
            continue
        good = max(r["max_abs_diff_supernet"], r["max_abs_diff_extracted"]) <= 1e-5
        ok &= good
        t.add_row(r["recipe"], str(r["configs"]), ",".join(map(str, r["resolutions"])),
                  f"{r['max_abs_diff_supernet']:.2e}", f"{r['max_abs_diff_extracted']:.2e}",
                  "[green]OK (<=1e-5)[/]" if good else "[red]MISMATCH[/]")
    console.print(t)
    if not ok:
        raise typer.Exit(1)


@app.command()
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
    t = _table(f"Trained supernet: {out / 'supernet.safetensors'}", "subnet", "MACs", "params", "val top-1",
               "test top-1")
    m = meta["metrics"]
    for name, info in m["subnets"].items():
        t.add_row(name, _fmt_m(info["macs"]), _fmt_m(info["params"]), f"{100 * m['val_top1'].get(name, 0):.2f}%",
                  f"{100 * m.get('test_top1', {}).get(name, float('nan')):.2f}%")
    console.print(t)


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("coremltools").setLevel(logging.ERROR)  # import-time version notices, not our problems
    app()


if __name__ == "__main__":
    main()
