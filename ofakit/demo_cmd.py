"""``ofakit demo``: the main job end to end on the zoo's Fashion-MNIST supernet.

Build (or reuse) this machine's onnxruntime-CPU latency table, search subnets for three budgets spread over
the feasible range, ship each as ONNX through the closed loop (and convert it to CoreML), measure test-set
accuracy, and print budget, MACs, predicted and test accuracy, predicted and measured latency; plus the
Pareto PNG.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from deploy_targets import ExporterUnavailable, get_exporter
from elastic.batch import ConfigBatch
from ofakit.plots import plot_front
from ofakit.profile_cmd import _run_build, fail, resolve_recipe
from ofakit.search import BudgetError, fastest_candidate
from ofakit.search_cmd import DEFAULT_CHECKPOINT, DRIFT, MEASURE, drift_json, specializer
from ofakit.ship import export_subnet, ship
from ofakit.specialize import Budget
from profilers import LOCAL, BuildSettings

console = Console(stderr=True)
FRACTIONS = (0.2, 0.5, 0.85)


def demo(checkpoint: str = typer.Option(DEFAULT_CHECKPOINT, help="Zoo checkpoint name or path."),
         workdir: Path = typer.Option(Path("ofakit-demo"), help="Table, artifacts and plots go here."),
         runtime: str = typer.Option("onnxruntime", help="Runtime to profile and measure with."),
         samples: int = typer.Option(300, help="Measured subnets for the accuracy predictor (cached)."),
         coreml: bool = typer.Option(True, help="Also convert every pick to CoreML."),
         measure: bool = MEASURE, drift: bool = DRIFT,
         as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """Specialise the zoo supernet for three latency budgets on this machine and ship each one."""
    workdir.mkdir(parents=True, exist_ok=True)
    table = workdir / "lut.sqlite"
    try:
        name, spec = resolve_recipe(checkpoint, None)
        build = _run_build(table, name, spec, runtime, LOCAL, None, BuildSettings(), as_json)
        spz = specializer(checkpoint, table, [Budget(LOCAL, runtime, 1.0)], samples, 0, as_json, drift)
    except (ValueError, BudgetError) as exc:
        fail(exc)
    metric = spz.metrics[Budget(LOCAL, runtime, 1.0).metric_name]
    lo = fastest_candidate(spz.space, metric).metrics[metric.name]
    hi = float(metric.fn(ConfigBatch.from_configs(spz.space, [spz.space.largest()]))[0])
    rows, chosen, measured = [], [], []
    for i, frac in enumerate(FRACTIONS):
        budget = Budget(LOCAL, runtime, round(lo + frac * (hi - lo), 4))
        with console.status(f"budget {budget.ms:.3f} ms: search, export, measure..."):
            rep = ship(spz, [budget], "onnx", workdir / f"subnet_{i + 1}.onnx", measure_shortlist=measure)
            test_acc = spz.ctx.top1(rep.final.config, "test")
        row = {"budget_ms": budget.ms, "config": rep.final.config.to_dict(), "macs": rep.final.metrics["macs"],
               "params": rep.final.metrics["params"], "predicted_accuracy": rep.final.accuracy,
               "test_accuracy": test_acc, "predicted_latency_ms": rep.shipped["predicted_ms"][metric.name],
               "measured_latency_ms": rep.shipped["measured_ms"].get(metric.name), "budget_met": rep.met,
               "attempts": len(rep.attempts), "onnx": str(rep.artifact.path)}
        if coreml:
            reason = get_exporter("coreml").unavailable()
            if reason is None:
                try:
                    res, _ = export_subnet(spz.ctx, rep.final.config, "coreml", workdir / f"subnet_{i + 1}.mlpackage")
                    row["coreml"] = str(res.path)
                except (ExporterUnavailable, RuntimeError, ValueError) as exc:
                    row["coreml"] = f"failed: {exc}"
            else:
                row["coreml"] = f"unavailable: {reason}"
        rows.append(row)
        chosen.append(rep.final)
        measured.append(row["measured_latency_ms"])
    front, _ = spz.pareto(metric.name)
    png = plot_front(front, metric.name, workdir / "pareto.png", chosen, [r["budget_ms"] for r in rows], measured,
                     title=f"{checkpoint} on this machine ({runtime}, 1 thread)")
    result = {"checkpoint": checkpoint, "table": str(table), "table_build": build.__dict__,
              "accuracy_predictor": spz.accuracy_report, "drift": drift_json(spz), "latency_range_ms": [lo, hi],
              "rows": rows,
              "pareto_png": str(png)}
    missed = any(r["budget_met"] is False for r in rows)  # exit status 1 in both output modes
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        if missed:
            raise typer.Exit(1)
        return
    acc = spz.accuracy_report
    t = Table(title=f"{checkpoint}: subnets for three latency budgets on this machine ({runtime}, 1 thread)")
    for col in ("budget", "MACs", "pred. acc", "test acc", "pred. latency", "measured", "met", "files"):
        t.add_column(col, no_wrap=True)
    for r in rows:
        arts = "onnx" + ("" if str(r.get("coreml", "")).startswith(("unavail", "failed"))
                         or "coreml" not in r else "+coreml")
        t.add_row(f"{r['budget_ms']:.3f} ms", f"{r['macs'] / 1e6:.2f}M", f"{100 * r['predicted_accuracy']:.2f}%",
                  f"{100 * r['test_accuracy']:.2f}%", f"{r['predicted_latency_ms']:.3f} ms",
                  f"{r['measured_latency_ms']:.3f} ms" if r["measured_latency_ms"] is not None else "n/a",
                  {True: "[green]yes[/]", False: "[red]NO[/]", None: "-"}[r["budget_met"]]
                  + (f" ({r['attempts']} tries)" if r["attempts"] > 1 else ""), arts)
    Console(width=max(100, Console().width)).print(t)
    typer.echo(f"artifacts and sidecars: {workdir}/subnet_{{1,2,3}}.onnx(.json), .mlpackage(.json)")
    ch = acc["candidates"][acc["chosen"]]
    typer.echo(f"latency range on this machine: {lo:.3f}-{hi:.3f} ms (predicted); accuracy predictor: "
               f"{acc['chosen']} from {acc['samples']} measured subnets (cross-validated τ {ch['kendall_tau']:.3f}, "
               f"RMSE {ch['rmse_pp']:.2f} pp{_ceiling(acc)}); Pareto plot: {png}")
    if missed:
        raise typer.Exit(1)


def _ceiling(report: dict) -> str:
    """The label-noise ceiling next to a predictor's τ, when the accuracy data has per-half figures."""
    tau = report.get("noise_ceiling_tau")
    if tau is None:
        return ""
    return f"; label-noise ceiling τ {tau:.3f}, from two validation halves that agree at τ {report['halves_tau']:.3f}"
