"""``ofakit zoo``: the registered supernet recipes, training recipes and shipped checkpoints; ``ofakit parity``:
the engine checked against its extraction and against the reference ``ofa`` package."""

from __future__ import annotations

import json
from dataclasses import asdict

import typer
from rich.console import Console
from rich.table import Table

import model_zoo
from ofakit.cli.common import millions, name_table
from ofakit.summary import extraction_check, recipe_summary

zoo_app = typer.Typer(no_args_is_help=True, help="Supernet recipes and checkpoints.")
console = Console()  # tables go to stdout


def _table(title: str, *columns: str, names: list[str] | None = None) -> Table:
    """A table whose first column (supernet names by default) never wraps."""
    return name_table(title, *columns, names=names or model_zoo.list_supernets())


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
                      f"{millions(r['smallest']['macs'])}-{millions(r['largest']['macs'])}",
                      f"{millions(r['smallest']['params'])}-{millions(r['largest']['params'])}")
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


def parity(configs: int = typer.Option(20, min=1, max=10000,
                                       help="Random subnets for the OFA parity check."),
           as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """Engine checks: supernet summary, extraction parity and parity with the reference `ofa` package."""
    result: dict = {"recipes": [recipe_summary(n) for n in model_zoo.list_supernets()]}
    with console.status("extraction parity (supernet vs extracted static network)..."):
        result["extraction"] = [extraction_check(n) for n in model_zoo.list_supernets()]
    from model_zoo.ofa_parity import OFA_REFERENCES, check_parity
    result["ofa_parity"] = []
    for name in OFA_REFERENCES:
        try:
            with console.status(f"parity with the ofa package on {configs} subnets of {name}..."):
                rep = check_parity(name, n_configs=configs)
                result["ofa_parity"].append({**asdict(rep), "relative": rep.relative, "ok": rep.ok(1e-5)})
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
        good = r["ok"]
        ok &= good
        t.add_row(r["recipe"], str(r["configs"]), ",".join(map(str, r["resolutions"])),
                  f"{r['max_abs_diff_supernet']:.2e}", f"{r['max_abs_diff_extracted']:.2e}",
                  f"[green]OK (relative {r['relative']:.1e})[/]" if good else "[red]MISMATCH[/]")
    console.print(t)
    if not ok:
        raise typer.Exit(1)
