"""``ofakit demo``: the main job end to end on the zoo's Fashion-MNIST supernet.

Build (or reuse) this machine's onnxruntime-CPU latency table, search subnets for three budgets spread over
the predicted front's accuracy range (:func:`demo_budgets`), ship each as ONNX through the closed loop (and
convert it to CoreML; the middle budget's pick also to an ExecuTorch ``.pte``, timed with ExecuTorch here),
measure test-set accuracy, and print
budget, MACs, precision, predicted and test accuracy, predicted and measured latency; plus the Pareto PNG.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any, Optional, Sequence

import typer
from rich.console import Console
from rich.table import Table

from deploy_targets import ExporterUnavailable, get_exporter
from elastic.batch import ConfigBatch
from elastic.training.evaluate import paired_gain
from ofakit.artifact import PREDICTIONS, export_subnet, nearest_existing
from ofakit.cli.common import console, fail, path_option
from ofakit.cli.profile import resolve_recipe, run_build
from ofakit.cli.search import (DEFAULT_CHECKPOINT, DRIFT, MEASURE, SAMPLES, check_retries, check_samples,
                               drift_json, specializer)
from ofakit.context import CheckpointContext
from ofakit.plots import plot_front
from ofakit.search.evolution import BudgetError, fastest_candidate
from ofakit.ship import ShipReport, ship
from ofakit.specialize import Budget
from profilers import LOCAL, BuildSettings
from profilers.runtimes import MeasureSpec, get_runtime
from profilers.store import read_only

ACCURACY_LEVELS = (0.5, 0.75, 0.97)  # budgets where the front reaches these fractions of its accuracy range
BUDGET_SLACK = 1.1  # a budget is the latency of the front point that reaches its level, plus this margin
FRACTIONS = (0.2, 0.5, 0.85)  # fallback: fractions of the latency range, for a front without an accuracy range
WITHIN = 0.10  # a pick's measured latency should be within ±10% of the latency the kit expected of it
NOISE_SE = 2.0  # an accuracy gain counts when it exceeds 2 paired standard errors on the test split


def demo(checkpoint: str = typer.Option(DEFAULT_CHECKPOINT, help="Zoo checkpoint name or path."),
         workdir: Path = typer.Option(Path("ofakit-demo"), help="Table, artifacts and plots go here.",
                                      parser=path_option),
         runtime: str = typer.Option("onnxruntime", help="Runtime to profile and measure with."),
         samples: Optional[int] = SAMPLES,
         coreml: bool = typer.Option(True, help="Also convert every pick to CoreML."),
         executorch: bool = typer.Option(True, help="Also ship the middle budget's pick as an ExecuTorch .pte "
                                                    "and time it with ExecuTorch."),
         retries: int = typer.Option(3, help="Re-searches per budget after a missed or a wasted budget."),
         measure: bool = MEASURE, drift: bool = DRIFT,
         as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """Specialise the zoo supernet for three latency budgets on this machine and ship each one."""
    table = workdir / "lut.sqlite"
    try:
        check_retries(retries)
        check_samples(samples, 0)  # before the table's minutes of measuring, not after them
        _check_workdir(workdir)  # made by the table build, after the checks below: a refusal leaves nothing
        if read_only(table):  # the closed loop stores its measurements there: refused now, not mid-demo
            raise ValueError(f"--workdir {workdir}: its table {table} is read-only; the demo measures into it; "
                             "fix its permissions or give another --workdir")
        ctx = CheckpointContext(checkpoint)
        ctx.supernet  # noqa: B018  (loads and checks the weights before the table's minutes of measuring)
        name, spec = resolve_recipe(checkpoint, None)
        build = run_build(table, name, spec, runtime, LOCAL, None, BuildSettings(), as_json)
        spz = specializer(ctx, table, [Budget(LOCAL, runtime, 1.0)], samples, 0, as_json, drift)
    except (ValueError, OSError, BudgetError) as exc:
        fail(exc)
    metric = spz.metrics[Budget(LOCAL, runtime, 1.0).metric_name]
    lo = fastest_candidate(spz.space, metric).metrics[metric.name]
    hi = float(metric.fn(ConfigBatch.from_configs(spz.space, [spz.space.largest()]))[0])
    front, _ = spz.pareto(metric.name)
    rows, chosen, measured, correct = [], [], [], []
    try:
        budgets = demo_budgets(front, metric.name, lo, hi)
    except ValueError as exc:  # e.g. predictions that are not finite
        fail(exc)
    for i, ms in enumerate(budgets):
        budget = Budget(LOCAL, runtime, ms)
        with console.status(f"budget {budget.ms:.3f} ms: search, export, measure..."):
            try:
                rep = ship(spz, [budget], "onnx", workdir / f"subnet_{i + 1}.onnx", retries=retries,
                           measure_shortlist=measure)
            except BudgetError as exc:  # the machine slowed down since the budgets were set: none fits now
                rows.append({"budget_ms": budget.ms, "budget_met": False, "measured_latency_ms": None,
                             "error": str(exc).splitlines()[0]})
                continue
            correct.append(spz.ctx.correct(rep.final.config, "test"))
            test_acc = float(correct[-1].mean())
        row = {"budget_ms": budget.ms, "config": rep.final.config.to_dict(), "macs": rep.final.metrics["macs"],
               "params": rep.final.metrics["params"], "predicted_accuracy": rep.final.accuracy,
               "test_accuracy": test_acc, "predicted_latency_ms": rep.shipped["predicted_ms"][metric.name],
               "expected_latency_ms": rep.shipped["expected_ms"][metric.name],
               "expected_from": rep.shipped["expected_from"],
               "expected_machine_ratio": rep.shipped["expected_machine_ratio"].get(metric.name),
               "measured_latency_ms": rep.shipped["measured_ms"].get(metric.name), "budget_met": rep.met,
               "machine_ratio": rep.shipped.get("machine_ratio", {}).get(metric.name),
               "attempts": len(rep.attempts), "onnx": str(rep.artifact.path), "precision": "fp32"}
        predicted = _predictions(rep)  # for the sidecars of the pick's other exports
        if coreml:
            reason = get_exporter("coreml").unavailable()
            if reason is None:
                try:
                    res, _ = export_subnet(spz.ctx, rep.final.config, "coreml", workdir / f"subnet_{i + 1}.mlpackage",
                                           info=predicted)
                    row["coreml"] = str(res.path)
                except (ExporterUnavailable, RuntimeError, ValueError) as exc:
                    row["coreml"] = f"failed: {exc}"
            else:
                row["coreml"] = f"unavailable: {reason}"
        if executorch and i == 1:
            row |= _pte(spz.ctx, rep.final.config, workdir / f"subnet_{i + 1}.pte", predicted)
        rows.append(row)
        chosen.append(rep.final)
        measured.append(row["measured_latency_ms"])
    shipped = [r for r in rows if "error" not in r]
    png = plot_front(front, metric.name, workdir / "pareto.png", chosen, [r["budget_ms"] for r in shipped], measured,
                     title=f"{checkpoint} on this machine ({runtime}, 1 thread)")
    checks = demo_checks(rows, correct)
    result = {"checkpoint": checkpoint, "table": str(table), "table_build": build.__dict__,
              "accuracy_predictor": spz.accuracy_report, "drift": drift_json(spz), "latency_range_ms": [lo, hi],
              "rows": rows, "checks": checks,
              "pareto_png": str(png)}
    missed = any(r["budget_met"] is False for r in rows)  # exit status 1 in both output modes
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        if missed:
            raise typer.Exit(1)
        return
    acc = spz.accuracy_report
    t = Table(title=f"{checkpoint}: subnets for three latency budgets on this machine ({runtime}, 1 thread)")
    for col in ("budget", "MACs", "precision", "pred. acc", "test acc", "expected", "measured", "met",
                "files"):
        t.add_column(col, no_wrap=True)
    for r in rows:
        if "error" in r:
            t.add_row(f"{r['budget_ms']:.3f} ms", "-", "-", "-", "-", "-", "n/a", "[red]NO[/]", r["error"][:60])
            continue
        arts = "onnx" + "".join(f"+{k}" for k in ("coreml", "pte") if str(r.get(k, "")).endswith(f".{_SUFFIX[k]}"))
        t.add_row(f"{r['budget_ms']:.3f} ms", f"{r['macs'] / 1e6:.2f}M", r["precision"],
                  f"{100 * r['predicted_accuracy']:.2f}%",
                  f"{100 * r['test_accuracy']:.2f}%",
                  f"{r['expected_latency_ms']:.3f} ms",
                  f"{r['measured_latency_ms']:.3f} ms" if r["measured_latency_ms"] is not None else "n/a",
                  {True: "[green]yes[/]", False: "[red]NO[/]", None: "-"}[r["budget_met"]]
                  + (f" ({r['attempts']} tries)" if r["attempts"] > 1 else ""), arts)
    Console(width=max(100, Console().width)).print(t)
    typer.echo(f"artifacts and sidecars: {workdir}/subnet_{{1,2,3}}.onnx(.json), .mlpackage(.json)")
    for r in rows:
        if r.get("pte_latency_ms") is not None:
            typer.echo(f"ExecuTorch: {r['pte']} measured {r['pte_latency_ms']:.3f} ms here (XNNPACK, 1 thread; the "
                       f"{runtime} pick measured {r['measured_latency_ms']:.3f} ms; an ExecuTorch budget needs an "
                       "ExecuTorch table)")
        elif "pte" in r:
            typer.echo(f"ExecuTorch: {r['pte']}")
    ch = acc["candidates"][acc["chosen"]]
    typer.echo(f"latency range on this machine: {lo:.3f}-{hi:.3f} ms (predicted); accuracy predictor: "
               f"{acc['chosen']} from {acc['samples']} measured subnets (cross-validated τ {ch['kendall_tau']:.3f}, "
               f"RMSE {ch['rmse_pp']:.2f} pp{_ceiling(acc)}); Pareto plot: {png}")
    for c in checks:
        mark = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "n/a"}[c["ok"]]
        Console().print(f"check {mark}: {c['claim']} ({c['detail']})")
    if missed:
        raise typer.Exit(1)


_SUFFIX = {"coreml": "mlpackage", "pte": "pte"}


def _check_workdir(workdir: Path) -> None:
    """``ValueError`` when ``workdir`` is, or lies under, a file (checked before anything is made there)."""
    p = nearest_existing(workdir)
    if not p.is_dir():
        raise ValueError(f"--workdir {workdir}: {p} is a file, not a directory; give a directory")


def _positive(v: Any, what: str, zero: bool = False) -> float:
    """``v`` as a float if it is a positive finite number (or 0, with ``zero``); ``ValueError`` naming ``what``
    otherwise."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (0 <= v if zero else 0 < v) or v == math.inf:
        raise ValueError(f"{what}={v!r} must be a {'finite number >= 0' if zero else 'positive finite number'}")
    return float(v)


def _predictions(rep: ShipReport) -> dict:
    """The shipped pick's predictions (as its ONNX sidecar states them), for the sidecars of its other exports."""
    side = json.loads(rep.sidecar.read_text())
    return {k: side.get(k) for k in PREDICTIONS}


def _pte(ctx: CheckpointContext, cfg, out: Path, info: dict | None = None) -> dict:
    """Export ``cfg`` to an ExecuTorch ``.pte`` and time it with the executorch runtime; what happened as
    row fields (``pte``: the path, or why not; ``pte_latency_ms``)."""
    reason = get_exporter("executorch").unavailable()
    if reason is not None:
        return {"pte": f"unavailable: {reason}"}
    try:
        res, _ = export_subnet(ctx, cfg, "executorch", out, info=info)
        shape = tuple(res.settings["input_shape"])
        m = get_runtime("executorch").measure(MeasureSpec(res.path, shape))
    except (ExporterUnavailable, RuntimeError, ValueError) as exc:
        return {"pte": f"failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"}
    return {"pte": str(res.path), "pte_latency_ms": m.stats.median_ms}


def demo_budgets(front: list, metric: str, lo: float, hi: float, levels: tuple[float, ...] = ACCURACY_LEVELS,
                 slack: float = BUDGET_SLACK) -> list[float]:
    """Three budgets (ms) spread over the trade-off: for each of ``levels``, a fraction of the way from the
    predicted front's least to its most accurate point, the latency of the fastest front point reaching it,
    times ``slack`` (at most ``hi``, the largest subnet's). Equal steps of latency would put two budgets on
    the flat top of a front that rises steeply at first and then slowly (its picks then differ by less than
    the noise of the test split). A front without an accuracy range, or budgets that do not rise, fall back
    to :data:`FRACTIONS` of the latency range ``lo``-``hi``."""
    lo, hi = _positive(lo, "lo", zero=True), _positive(hi, "hi")
    if lo > hi:
        raise ValueError(f"lo={lo!r} ms is above hi={hi!r} ms; give the fastest and the largest subnet's latency")
    if isinstance(slack, bool) or not isinstance(slack, numbers.Real) or not 1 <= slack < math.inf:
        raise ValueError(f"slack={slack!r} must be a finite number >= 1 (a margin over the front point's latency)")
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence) or not levels or not all(
            isinstance(lv, numbers.Real) and not isinstance(lv, bool) and 0 <= lv <= 1 for lv in levels):
        raise ValueError(f"levels={levels!r} must be a non-empty sequence of fractions from 0 to 1")
    if not isinstance(front, (list, tuple)):
        raise ValueError(f"front must be a list of candidates, got {type(front).__name__}")
    try:
        pts = sorted((_positive(c.metrics[metric], f"front latency {metric!r}", zero=True), c.accuracy)
                     for c in front)
    except (AttributeError, KeyError, TypeError):
        raise ValueError(f"front holds a point without latency {metric!r} or accuracy; give Pareto candidates "
                         "of that metric") from None
    if not all(isinstance(a, numbers.Real) and math.isfinite(a) for _, a in pts):
        raise ValueError(f"front accuracies {[a for _, a in pts]!r} must be finite numbers")
    accs = [a for _, a in pts]
    if pts and max(accs) > min(accs):
        targets = [min(accs) + lv * (max(accs) - min(accs)) for lv in levels]
        out = [round(min(hi, slack * next(m for m, a in pts if a >= t - 1e-12)), 4) for t in targets]
        if all(b > a for a, b in zip(out, out[1:])):
            return out
    return [round(lo + f * (hi - lo), 4) for f in FRACTIONS]


def demo_checks(rows: list[dict], correct: list) -> list[dict]:
    """What the demo claims, checked on its own figures: every budget met, every pick measured within ±10% of
    the latency the kit expected of it (``expected_latency_ms``: its shortlist measurement, before export;
    else the table's prediction), and test accuracy rising from budget to budget by more than the noise (2
    paired standard errors on the test split). ``ok`` is ``None`` where nothing was measured; a row with an
    ``error`` (no subnet fitted its budget any more, on a machine that slowed down) fails the first claim.
    The latency detail gives the table's own error where the shortlist measurement was expected, and the
    machine's speed at each measurement (the reference subnets timed beside it), when known. With fewer than
    two picks the accuracy claim is ``None`` (nothing to compare)."""
    if not isinstance(rows, (list, tuple)) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"rows must be a list of demo rows (dicts), got {rows!r:.80}")
    for r in rows:
        _positive(r.get("budget_ms"), "budget_ms")
        if r.get("measured_latency_ms") is not None:
            _positive(r["measured_latency_ms"], "measured_latency_ms")
            _positive(r.get("predicted_latency_ms"), "predicted_latency_ms")
            if r.get("expected_latency_ms") is not None:
                _positive(r["expected_latency_ms"], "expected_latency_ms")
        for key in ("machine_ratio", "expected_machine_ratio"):
            if r.get(key) is not None:
                _positive(r[key], key)
    shipped = sum("error" not in r for r in rows)
    if not isinstance(correct, (list, tuple)) or len(correct) != shipped:
        raise ValueError(f"correct must be a list with one per-image result per shipped row ({shipped}), got "
                         f"{len(correct) if isinstance(correct, (list, tuple)) else type(correct).__name__}")
    timed = [(r["measured_latency_ms"], r["budget_ms"]) for r in rows if r["measured_latency_ms"] is not None]
    off = [_latency_off(r) for r in rows if r["measured_latency_ms"] is not None]
    speed = [_latency_note(r) for r in rows if r["measured_latency_ms"] is not None]
    gains = [paired_gain(a, b) for a, b in zip(correct, correct[1:])]
    unmet = [r["budget_ms"] for r in rows if "error" in r]  # no subnet fitted the budget when its turn came
    return [
        {"claim": "every pick measured within its budget",
         "ok": False if unmet else (all(m <= b for m, b in timed) if timed else None),
         "detail": ", ".join([*(f"{m / b:.0%} of {b:.3f} ms" for m, b in timed),
                              *(f"none fits {b:.3f} ms now" for b in unmet)]) or "not measured"},
        {"claim": f"measured within ±{WITHIN:.0%} of the latency the kit expected",
         "ok": all(abs(o) <= WITHIN for o in off) if timed else None,
         "detail": ", ".join(f"{o:+.1%}{sp}" for o, sp in zip(off, speed)) or "not measured"},
        {"claim": f"test accuracy rises with the budget by more than {NOISE_SE:g} paired standard errors",
         "ok": all(g > NOISE_SE * se for g, se in gains) if gains else None,
         "detail": ", ".join(f"{100 * g:+.2f} pp (SE {100 * se:.2f})" for g, se in gains)
         or "fewer than two picks to compare"},
    ]


def _latency_off(row: dict) -> float:
    """How far a pick measured from the latency expected of it. Where both measurements were timed beside
    the table's reference subnets, at the table's speed (each divided by its moment's machine ratio): on a
    shared host the same file runs 0.7-1.5x apart minutes apart (benchmarks/RESULTS.md)."""
    m, e = row["measured_latency_ms"], row.get("expected_latency_ms") or row["predicted_latency_ms"]
    now, then = row.get("machine_ratio"), row.get("expected_machine_ratio")
    return (m / now) / (e / then) - 1 if now is not None and then is not None else m / e - 1


def _latency_note(row: dict) -> str:
    """What a pick's latency was expected from, the table's own error when that was a shortlist measurement,
    and the machine's speed at the measurements (the reference subnets timed beside them), when known."""
    notes = []
    if row.get("expected_from") == "shortlist measurement" and row.get("predicted_latency_ms"):
        notes.append(f"its shortlist measurement; the table predicted "
                     f"{row['measured_latency_ms'] / row['predicted_latency_ms'] - 1:+.1%}")
    if row.get("machine_ratio") is not None:
        then = row.get("expected_machine_ratio")
        notes.append(f"machine at {row['machine_ratio']:.2f}x the table's speed"
                     + (f", {then:.2f}x in the shortlist; compared at the table's speed" if then is not None else ""))
    return f" ({'; '.join(notes)})" if notes else ""


def _ceiling(report: dict) -> str:
    """The label-noise ceiling next to a predictor's τ, when the accuracy data has per-half figures."""
    tau = report.get("noise_ceiling_tau")
    if tau is None:
        return ""
    return f"; label-noise ceiling τ {tau:.3f}, from two validation halves that agree at τ {report['halves_tau']:.3f}"
