"""``ofakit search``, ``ofakit export`` and ``ofakit ship``: pick a subnet for a budget, export it, close the loop."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any, Collection, Optional

import typer
from rich.console import Console
from rich.table import Table

from deploy_targets import ExporterUnavailable, ParityError, get_exporter, list_exporters
from deploy_targets.base import PRECISIONS
from elastic.families import Config, config_from_dict
from ofakit.artifact import check_out_folder, export_subnet
from ofakit.cli.common import artifact_option, console, fail, path_option, progress_bars, read_token
from ofakit.cli.profile import build_missing
from ofakit.context import QUICK_ACCURACY_SAMPLES, CheckpointContext
from ofakit.plots import plot_front
from ofakit.search.evolution import BudgetError, Candidate, EvolutionSettings
from ofakit.search.precision import DROP_SUBNETS
from ofakit.ship import refuse_read_only, ship
from ofakit.shortlist import TIMING_ERRORS, measured_choice, time_candidates
from ofakit.specialize import Budget, Specializer, precision_plans
from profilers import DEFAULT_TABLE, LOCAL
from profilers.agent.client import AgentError
from profilers.runtimes import RuntimeUnavailable

DEFAULT_CHECKPOINT = "ofa_mbv3_tiny_d1234_e2346_k357.fmnist_v2"
CHECKPOINT = typer.Option(DEFAULT_CHECKPOINT, help="Zoo checkpoint name or path of a trained supernet.")
TABLE = typer.Option(Path(DEFAULT_TABLE), help="Latency table (see `ofakit profile build`).")
DEVICE = typer.Option(LOCAL, help="Device of the budget: 'local' or an agent URL.")
RUNTIME = typer.Option("onnxruntime", help="Runtime of the budget (as in the table).")
ALSO = typer.Option(None, "--also", help="Another device's budget, DEVICE,RUNTIME,MS (repeatable): joint constraints.")
MAX_MACS = typer.Option(None, help="Also cap MACs (millions).")
MAX_PARAMS = typer.Option(None, help="Also cap parameters (millions).")
SAMPLES = typer.Option(None, help="Random subnets measured for the accuracy predictor, plus 2/3 as many along the "
                                   f"predicted front (cached); default: all the cache holds, at least "
                                   f"{QUICK_ACCURACY_SAMPLES}.")
SEED = typer.Option(0, help="Seed of sampling, predictor training and search.")
JSON = typer.Option(False, "--json", help="Print JSON for scripts.")
MEASURE = typer.Option(True, "--measure/--no-measure", help="Time a shortlist around the budget and pick the "
                       "most accurate subnet measured within it.")
PRECISION = typer.Option(None, help="fp32, fp16, int8, or auto: every precision the table holds for the budget's "
                         "runtime, searched jointly with the architecture (what int8 costs in top-1 is measured "
                         "on validation images). Default: fp32 where the table holds it, else its one precision.")
DRIFT = typer.Option(True, "--drift-check/--no-drift-check",
                     help="Re-time the table's reference subnets first (seconds) and rescale predictions by how "
                          "much faster or slower the machine runs now than when the table was calibrated.")


MAX_RETRIES = 100  # closed-loop re-searches: each exports and measures an artifact


def check_retries(retries: int) -> None:
    """A one-line error unless ``--retries`` is within 0 .. :data:`MAX_RETRIES`."""
    if not 0 <= retries <= MAX_RETRIES:
        raise ValueError(f"--retries {retries} must be >= 0 and at most {MAX_RETRIES} (each one exports and "
                         "measures a subnet)")
MAX_SAMPLES = 20000  # measured subnets for the accuracy predictor: ~1-5 s each, so 20,000 is a day of work
MIN_SAMPLES = 12  # with 2/3 as many front subnets, the 20 that the predictors' cross-validation needs


def check_samples(samples: int | None, seed: int) -> None:
    """One-line errors for ``--samples`` and ``--seed`` out of range (before any table or checkpoint is read)."""
    if samples is not None and not MIN_SAMPLES <= samples <= MAX_SAMPLES:
        raise ValueError(f"--samples {samples} must be an integer from {MIN_SAMPLES} to {MAX_SAMPLES} (random "
                         "subnets measured for the accuracy predictor, ~1 s each, plus 2/3 as many along the front: "
                         "its cross-validation needs 20)")
    if not 0 <= seed < 2 ** 32:
        raise ValueError(f"--seed {seed} must be an integer from 0 to {2 ** 32 - 1}")


def specializer(checkpoint: str | CheckpointContext, table: Path, budgets: list[Budget], samples: int | None,
                seed: int,
                quiet: bool, drift: bool = True, token: str | None = None,
                fresh: Collection[tuple[str, str]] = ()) -> Specializer:
    """Load everything a search needs, with a progress bar while the accuracy dataset is measured (if it is);
    with ``drift``, re-time each budget's reference subnets and rescale its predictor (skipped, with a
    warning, where the runtime cannot run; and for the ``(device, runtime)`` pairs of ``fresh``, whose table
    was just built). ``checkpoint`` is a zoo name or path, or an already loaded one."""
    check_samples(samples, seed)
    bar = progress_bars(quiet)
    task: dict[str, int] = {}

    def update(done: int, total: int) -> None:
        if "t" not in task:  # started on the first report only: a cached dataset prints nothing
            bar.start()
            task["t"] = bar.add_task("accuracy dataset (val top-1)", total=total)
        bar.update(task["t"], completed=done)

    try:
        ctx = checkpoint if isinstance(checkpoint, CheckpointContext) else CheckpointContext(checkpoint)
        spz = Specializer(ctx, table, [(b.device, b.runtime) for b in budgets], samples,
                          seed, update)
    finally:
        if task:
            bar.stop()
    pairs = [(dev, rt) for dev, rt in dict.fromkeys((b.device, b.runtime) for b in budgets)
             if (dev, rt.split("/")[0]) not in fresh]  # a budget's runtime may be a label: name/provider/...
    for dev, rt in pairs if drift else ():
        try:
            with console.status(f"re-timing reference subnets on {dev}/{rt} (drift check)..."):
                check = spz.check_drift(dev, rt, token=token)
        except TIMING_ERRORS as exc:
            console.print(f"warning: drift not checked on {dev}/{rt}: {exc}")
            continue
        if not quiet:
            console.print(f"drift on {dev}/{rt}: latency now {check.ratio:.2f}x the table's; predictions rescaled")
    return spz


def measured_pick(spz: Specializer, budgets: list[Budget], caps: tuple[float | None, float | None],
                  settings: EvolutionSettings, token: str | None, predicted: Candidate
                  ) -> tuple[Candidate, list[dict[str, Any]] | None]:
    """The most accurate subnet of a shortlist measured within every budget; the predicted pick (with a
    warning) when the runtime cannot run or no candidate measured within the budgets."""
    try:
        with console.status("timing candidates around the budget..."):
            best, rows = measured_choice(spz, budgets, lambda cfgs, b: time_candidates(spz, cfgs, b, token), *caps,
                                         settings)
    except TIMING_ERRORS as exc:
        console.print(f"warning: candidates not measured ({exc}); the pick is predicted only")
        return predicted, None
    if best is None:
        console.print("warning: no candidate measured within the budget now; the pick is predicted only "
                      "(`ofakit ship` measures, recalibrates and searches again)")
    return best or predicted, rows


def drift_json(spz: Specializer) -> dict[str, Any]:
    """The ``--json`` record of the drift checks made."""
    return {k: c.to_dict() for k, c in spz.drift_checks.items()}


def precision_drops(spz: Specializer, plans: list[tuple[str, list[Budget]]], samples: int | None,
                    quiet: bool) -> dict[str, Any]:
    """What each plan's precision costs in top-1 (measured once per checkpoint and target, then cached). Where
    it cannot be measured here (a TensorRT table on a machine without a GPU), one fixed precision is searched
    with fp32's predicted accuracy and a warning; ``auto`` cannot compare precisions and stops."""
    out: dict[str, Any] = {}
    for p, budgets in plans:
        if p != "fp32":
            try:
                with console.status(f"measuring what {p} costs in top-1 ({DROP_SUBNETS} subnets, cached)...") \
                        if not quiet else contextlib.nullcontext():
                    out[p] = spz.precision_drop(budgets[0], p, samples)
            except ValueError as exc:
                if len(plans) > 1:
                    raise ValueError(f"--precision auto needs what {p} costs in top-1, which cannot be measured "
                                     f"here: {exc}; pass a fixed --precision") from None
                console.print(f"warning: {p}'s cost in top-1 not measured ({exc}); predicted accuracies are fp32's")
    return out


def budgets_of(device: str, runtime: str, latency_ms: float, also: list[str] | None) -> list[Budget]:
    """The primary budget followed by ``--also`` ones."""
    return [Budget(device, runtime, latency_ms), *(Budget.parse(a) for a in also or [])]


def candidate_json(c: Candidate, primary: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``--json`` record of a chosen subnet."""
    return {"config": c.config.to_dict(), "predicted_latency_ms": c.metrics.get(primary),
            "predicted_accuracy": c.accuracy, "macs": c.metrics.get("macs"), "params": c.metrics.get("params"),
            "metrics": c.metrics, **(extra or {})}


def feasible_range(checkpoint: str, table: Path, device: str, runtime: str) -> dict[str, Any]:
    """Predicted latency of the checkpoint's smallest and largest subnets on ``device``/``runtime``: the
    range of budgets worth asking for (below the first nothing fits, above the second the largest does)."""
    from profilers import LatencyPredictor

    ctx = CheckpointContext(checkpoint)
    space = ctx.supernet.space
    pred = LatencyPredictor.load(table, device, runtime, ctx.supernet.spec)
    lo, hi = (float(v) for v in pred.predict([space.smallest(), space.largest()]))
    return {"checkpoint": checkpoint, "device": device, "runtime": pred.runtime.label(),
            "smallest_ms": lo, "largest_ms": hi, "smallest": space.smallest().to_dict(),
            "largest": space.largest().to_dict()}


def search(checkpoint: str = CHECKPOINT, table: Path = TABLE, device: str = DEVICE, runtime: str = RUNTIME,
           latency_ms: Optional[float] = typer.Option(None, help="Latency budget (ms) on --device with --runtime; "
                                                                 "omit it to print the feasible range."),
           also: Optional[list[str]] = ALSO, max_macs: Optional[float] = MAX_MACS,
           max_params: Optional[float] = MAX_PARAMS,
           pareto: bool = typer.Option(False, "--pareto", help="Also print the accuracy-vs-latency Pareto front."),
           population: int = typer.Option(100, help="Evolution population."),
           generations: int = typer.Option(500, help="Evolution generations."),
           samples: Optional[int] = SAMPLES, seed: int = SEED, drift: bool = DRIFT,
           measure: bool = MEASURE, precision: Optional[str] = PRECISION,
           token_file: Path = typer.Option(None, help="Agent token file (budgets on agent URLs)."),
           out: Path = typer.Option(Path("ofakit-search"), help="Directory for subnet.json and front.png.",
                                    parser=path_option),
           as_json: bool = JSON) -> None:
    """The most accurate subnet within a latency budget, as JSON plus a front PNG.

    With ``--measure`` (the default where the budget's runtime can run) a shortlist around the budget is
    timed interleaved and the most accurate candidate measured within every budget is the pick.
    """
    if latency_ms is None:
        try:
            if also:
                raise ValueError(f"--also {also[0]!r} needs --latency-ms (the budget on --device); without a "
                                 "budget, search prints the feasible range")
            rng = feasible_range(checkpoint, table, device, runtime)
        except (ValueError, OSError) as exc:
            fail(exc)
        if as_json:
            typer.echo(json.dumps(rng, indent=2))
        else:
            typer.echo(f"{checkpoint} on {device} [{rng['runtime']}]: budgets from {rng['smallest_ms']:.3f} ms "
                       f"(the smallest subnet, predicted) to {rng['largest_ms']:.3f} ms (the largest); pass "
                       "--latency-ms")
        return
    try:
        budgets = budgets_of(device, runtime, latency_ms, also)
        caps = _caps(max_macs, max_params)
        settings = EvolutionSettings(population=population, generations=generations)
        _check_out_dir(out)
        check_samples(samples, seed)
        plans = precision_plans(table, budgets, precision)
        token = read_token(token_file)
        spz = specializer(checkpoint, table, [b for _, bs in plans for b in bs], samples, seed, as_json, drift, token)
        chosen, budgets, result, offers = spz.choose_precision(plans, precision_drops(spz, plans, samples, as_json),
                                                               *caps, settings)
        cons = spz.constraints(budgets, *caps)
        pick, shortlist = measured_pick(spz, budgets, caps, settings, token, result.best) if measure else \
            (result.best, None)
        front, front_s = spz.pareto(budgets[0].metric_name, cons[1:])
    except (ValueError, OSError, BudgetError) as exc:
        fail(exc)
    primary = budgets[0].metric_name
    record = candidate_json(pick, primary, {
        "constraints": list(result.constraints), "search_seconds": result.seconds,
        "accuracy_predictor": spz.accuracy_report, "latency_predictor": spz.latency[primary].describe(),
        "drift": drift_json(spz), "shortlist": shortlist, "checkpoint": checkpoint_ref(spz.ctx),
        "precision": chosen, "precision_choice": offers,
        "measured_latency_ms": next((r["measured_ms"] for r in shortlist or () if r["picked"]), None)})
    if pareto:
        record["front"] = [candidate_json(c, primary) for c in front]
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "subnet.json").write_text(json.dumps(record, indent=2) + "\n")
    except OSError as exc:
        fail(ValueError(f"--out {out}: {exc.strerror}"))
    png = plot_front(front, primary, out / "front.png", [pick], [b.ms for b in budgets[:1]],
                     title=f"{checkpoint}: budget {latency_ms:g} ms on {device}/{runtime}")
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    t = Table(title=f"Chosen subnet ({result.seconds:.2f}s search; front {front_s:.2f}s)")
    for col in ("budget", "precision", "predicted latency", "predicted accuracy", "MACs", "params", "config"):
        t.add_column(col)
    b = pick
    t.add_row(" & ".join(result.constraints), chosen, f"{b.metrics[primary]:.3f} ms", f"{100 * b.accuracy:.2f}%",
              f"{b.metrics['macs'] / 1e6:.2f}M", f"{b.metrics['params'] / 1e6:.2f}M", b.config.to_json())
    Console().print(t)
    if pareto:
        f = Table(title=f"Pareto front (predicted; {len(front)} subnets, every {max(1, len(front) // 15)}th shown)")
        for col in ("latency ms", "accuracy", "MACs"):
            f.add_column(col)
        step = max(1, len(front) // 15)
        for c in front[::step]:
            f.add_row(f"{c.metrics[primary]:.3f}", f"{100 * c.accuracy:.2f}%", f"{c.metrics['macs'] / 1e6:.2f}M")
        Console().print(f)
    typer.echo(f"wrote {out / 'subnet.json'} and {png}")


def checkpoint_ref(ctx: CheckpointContext) -> dict[str, str]:
    """How a subnet file names the checkpoint it was searched on: what the user gave, the path, the sha256."""
    return {"name": ctx.name, "path": str(ctx.weights_path.resolve()), "sha256": ctx.meta["sha256"]}


def read_subnet(path: Path) -> tuple[Config, dict[str, Any] | None]:
    """A SubnetConfig from a JSON file (a bare config, or ``ofakit search`` output) and the search record
    (``None`` for a bare config)."""
    try:
        data = json.loads(path.read_text(), parse_constant=_no_constant)
    except OSError as exc:
        raise ValueError(f"--subnet {path}: {exc.strerror or exc}") from None
    except _NotANumber as exc:
        raise ValueError(f"--subnet {path} holds {exc}, which is not a number (JSON has no NaN or Infinity)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"--subnet {path} is not JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"--subnet {path} is nested too deeply to be a subnet config") from None
    except ValueError as exc:  # Python's limit on an integer's digits
        raise ValueError(f"--subnet {path} holds a value Python refuses: {exc}") from None
    searched = isinstance(data, dict) and "config" in data
    ref = data.get("checkpoint") if searched else None
    if ref is not None and not (isinstance(ref, dict) and all(isinstance(ref.get(k), str)
                                                              for k in ("name", "path", "sha256"))):
        raise ValueError(f"--subnet {path}: 'checkpoint' must be {{name, path, sha256}} as `ofakit search` "
                         f"writes it, got {ref!r}")
    if not isinstance(data, dict):
        raise ValueError(f"--subnet {path} must hold a JSON object (a subnet config), got {type(data).__name__}")
    acc = data.get("predicted_accuracy") if searched else None
    if acc is not None and (isinstance(acc, bool) or not isinstance(acc, (int, float)) or not 0 <= acc <= 1):
        raise ValueError(f"--subnet {path}: predicted_accuracy={acc!r}; allowed: a top-1 from 0 to 1, or null")
    for key in ("predicted_latency_ms", "measured_latency_ms"):  # a number, or per-device numbers
        v = data.get(key) if searched else None
        values = list(v.values()) if isinstance(v, dict) else [v]
        if v is not None and not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x < math.inf
                                     for x in values):
            raise ValueError(f"--subnet {path}: {key}={str(v)[:80]}; allowed: a positive number of milliseconds (or "
                             "one per device), or null")
    return config_from_dict(data["config"] if searched else data), (data if searched else None)


class _NotANumber(ValueError):
    """``NaN`` or ``Infinity`` in a JSON file (Python's json module accepts them; JSON does not)."""


def _no_constant(name: str) -> Any:
    raise _NotANumber(name)


# What the export sidecar keeps of a search record (the predictions behind the pick).
_SEARCH_KEYS = ("predicted_accuracy", "predicted_latency_ms", "measured_latency_ms", "constraints")


def checkpoint_for_subnet(given: str | None, ref: dict[str, Any] | None, subnet: Path) -> CheckpointContext:
    """The checkpoint to export ``subnet`` from: ``given``, else the one the file names; a mismatch is an error.

    No silent fallback: a bare config needs ``--checkpoint``, and a subnet searched on one checkpoint is
    never exported from another.
    """
    if given is None:
        if ref is None:
            raise ValueError(f"--subnet {subnet} is a bare config that names no checkpoint; pass --checkpoint "
                             f"(a trained supernet's path or a zoo name such as {DEFAULT_CHECKPOINT})")
        where = ref["path"] if Path(ref["path"]).is_file() else ref["name"]
        try:
            ctx = CheckpointContext(where)
            ctx.meta
        except ValueError as exc:
            raise ValueError(f"--subnet {subnet} names checkpoint {ref['path']}, which cannot be loaded ({exc}); "
                             "pass --checkpoint") from None
    else:
        ctx = CheckpointContext(given)
    if ref is not None and ctx.meta["sha256"] != ref["sha256"]:
        raise ValueError(f"--subnet {subnet} was searched on checkpoint {ref['name']} (sha256 {ref['sha256'][:12]}), "
                         f"not on {ctx.name} (sha256 {ctx.meta['sha256'][:12]}); export from the checkpoint it "
                         "names or search again")
    return ctx


def export(checkpoint: Optional[str] = typer.Option(None, help="Zoo checkpoint name or path of a trained supernet; "
                                                          "default: the one the --subnet file names."),
           subnet: Path = typer.Option(..., help="Subnet JSON (a SubnetConfig or `ofakit search` output)."),
           target: str = typer.Option("onnx", help="Exporter: onnx, coreml, tensorrt, openvino, executorch."),
           out: str = typer.Option(..., help="Artifact path (.onnx, .mlpackage, .engine, .xml, .pte).",
                                   parser=artifact_option),
           precision: str = typer.Option("fp32", help="fp32, fp16 or int8 (as the target supports)."),
           dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Let the batch dimension vary."),
           min_agreement: Optional[float] = typer.Option(
               None, help="int8 on executorch: the top-1 agreement with fp32 required (default 0.99), 0.5 to 1."),
           device: str = typer.Option(LOCAL, help="TensorRT only: build the engine on this agent URL's GPU."),
           token_file: Path = typer.Option(None, help="Agent token file (with --device)."),
           as_json: bool = JSON) -> None:
    """Export one subnet (BatchNorm recalibrated) with a sidecar JSON next to the artifact."""
    try:
        token = read_token(token_file)
        if target not in list_exporters():
            raise ValueError(f"--target {target!r} is unknown; allowed: {list_exporters()}")
        if get_exporter(target).unavailable() is None:  # before the checkpoint, images and BN recalibration
            get_exporter(target).check_out(precision, out)
        cfg, record = read_subnet(subnet)
        ctx = checkpoint_for_subnet(checkpoint, record and record.get("checkpoint"), subnet)
        info = ({k: record.get(k) for k in _SEARCH_KEYS} if record else
                {"predicted_accuracy": None, "predicted_latency_ms": None,
                 "note": "exported from a bare config: no search predictions (use `ofakit search` output)"})
        with console.status(f"exporting {cfg.to_json()} to {target}..."):
            result, side = export_subnet(ctx, cfg, target, out, precision, dynamic_batch, info, device=device,
                                         token=token, min_agreement=min_agreement)
    except (ValueError, OSError, ExporterUnavailable, ParityError, RuntimeUnavailable, AgentError) as exc:
        fail(exc)
    record = {"artifact": str(result.path), "sidecar": str(side), "target": result.target,
              "max_abs_diff": result.max_abs_diff, "seconds": result.seconds, "notes": list(result.notes),
              "settings": result.settings, "versions": result.versions}
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    diff = "not checked here" if result.max_abs_diff is None else f"max |diff| {result.max_abs_diff:.2e}"
    if result.settings.get("top1_agreement") is not None:
        diff += f", top-1 agreement {result.settings['top1_agreement']:.1%}"
    typer.echo(f"wrote {result.path} ({target}, parity {diff}) and {side}")
    for note in result.notes:
        typer.echo(f"note: {note}")


def _check_out_dir(out: Path) -> None:
    """Refuse an ``--out`` folder that cannot be one before the search runs (not after minutes of it)."""
    p = Path(out)
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise ValueError(f"--out {out}: {p} is a file, not a directory; give a directory for subnet.json and "
                         "front.png")


def _caps(max_macs: float | None, max_params: float | None) -> tuple[float | None, float | None]:
    """``--max-macs``/``--max-params`` (millions) in raw units, checked before anything is loaded."""
    for name, v in (("--max-macs", max_macs), ("--max-params", max_params)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} {v} must be a positive number (millions)")
    return (max_macs * 1e6 if max_macs is not None else None, max_params * 1e6 if max_params is not None else None)


def ship_cmd(checkpoint: str = CHECKPOINT, table: Path = TABLE, device: str = DEVICE, runtime: str = RUNTIME,
             latency_ms: float = typer.Option(..., help="Latency budget (ms) on --device with --runtime."),
             also: Optional[list[str]] = ALSO, max_macs: Optional[float] = MAX_MACS,
             max_params: Optional[float] = MAX_PARAMS,
             target: str = typer.Option("onnx", help="Exporter of the shipped artifact."),
             out: str = typer.Option(..., help="Artifact path.", parser=artifact_option),
             retries: int = typer.Option(3, help="Re-searches after a missed budget."),
             token_file: Path = typer.Option(None, help="Agent token file (remote devices)."),
             samples: Optional[int] = SAMPLES, seed: int = SEED, drift: bool = DRIFT, measure: bool = MEASURE,
             precision: Optional[str] = PRECISION,
             min_agreement: Optional[float] = typer.Option(
                 None, help="int8 only: the top-1 agreement with the fp32 subnet the artifact must reach "
                            "(default 0.99; recorded in the sidecar)."),
             build_table: bool = typer.Option(
                 True, "--build-table/--no-build-table",
                 help="Measure first what --table lacks for this checkpoint on each budget's device and runtime "
                      "(as `ofakit profile build` would); off: such a table is an error."),
             as_json: bool = JSON) -> None:
    """Search, export, measure on the device; recalibrate and re-search until the budget is met."""
    try:
        budgets = budgets_of(device, runtime, latency_ms, also)
        caps = _caps(max_macs, max_params)
        check_retries(retries)
        if target not in list_exporters():  # before the search's minutes, not after them
            raise ValueError(f"--target {target!r} is unknown; allowed: {list_exporters()}")
        suffix = get_exporter(target).suffix
        if Path(out).suffix != suffix:
            raise ValueError(f"--out {out}: a {target} artifact's name must end with {suffix}")
        check_out_folder(out)
        if get_exporter(target).unavailable() is None:  # a path ending with a slash names a folder
            get_exporter(target).check_out("fp32", out)
        refuse_read_only(table, retries, ("--table", "--retries 0"))  # before the checkpoint and the search
        check_samples(samples, seed)
        if precision not in (None, "auto", *PRECISIONS):  # these three: before minutes of building a table
            raise ValueError(f"--precision {precision!r} is not supported; allowed: {[*PRECISIONS, 'auto']}")
        if min_agreement is not None and precision in ("fp32", "fp16"):
            raise ValueError(f"--min-agreement {min_agreement} applies to int8 artifacts; this ship exports "
                             f"{precision} (pass --precision int8 or auto)")
        if precision in PRECISIONS and get_exporter(target).unavailable() is None:
            get_exporter(target).check_out(precision, out)
        token = read_token(token_file)
        fresh = build_missing(table, checkpoint, [(b.device, b.runtime) for b in budgets],
                              precision if precision in PRECISIONS else None, token, as_json) if build_table else []
        plans = precision_plans(table, budgets, precision, get_exporter(target).precisions)
        if min_agreement is not None and all(p != "int8" for p, _ in plans):
            raise ValueError(f"--min-agreement {min_agreement} applies to int8 artifacts; this ship exports "
                             f"{plans[0][0]} (pass --precision int8 or auto)")
        if precision != "auto" and get_exporter(target).unavailable() is None:
            get_exporter(target).check_out(plans[0][0], out)
        spz = specializer(checkpoint, table, [b for _, bs in plans for b in bs], samples, seed, as_json, drift, token,
                          fresh)
        chosen, budgets, _, offers = spz.choose_precision(plans, precision_drops(spz, plans, samples, as_json), *caps)
        if len(plans) > 1 and not as_json:
            console.print(f"precision {chosen}: " + "; ".join(
                f"{p} {100 * o['predicted_accuracy']:.2f}% predicted" if "error" not in o else f"{p} fits no subnet"
                for p, o in offers.items()))

        def show(rec: dict[str, Any]) -> None:
            if not as_json:
                over, under = rec.get("over_budget_pct", {}), rec.get("under_budget_pct", {})
                parts = [f"{k}: predicted {rec['predicted_ms'][k]:.3f} ms"
                         + (f" (measured {rec['expected_ms'][k]:.3f} ms in the shortlist)"
                            if rec["expected_from"] == "shortlist measurement" else "") + ", measured "
                         + (f"{rec['measured_ms'][k]:.3f} ms" if k in rec["measured_ms"] else "n/a")
                         + (f" ({over[k]:.1f}% over the budget; recalibrating)" if k in over else "")
                         + (f" ({under[k]:.0f}% of the budget unused; recalibrating)" if k in under else "")
                         for k in rec["predicted_ms"]]
                verdict = {True: "met", False: "MISSED", None: "not measured on every budget"}[rec["met"]]
                console.print(f"attempt {rec['attempt']}: {verdict}; " + "; ".join(parts))

        report = ship(spz, budgets, target, out, retries, *caps, token, precision=chosen, on_attempt=show,
                      measure_shortlist=measure, min_agreement=min_agreement)
    except (ValueError, OSError, BudgetError, ExporterUnavailable, ParityError, RuntimeUnavailable, AgentError) as exc:
        fail(exc)
    record = candidate_json(report.final, budgets[0].metric_name, {
        "measured_latency_ms": report.shipped["measured_ms"], "expected_latency_ms": report.shipped["expected_ms"],
        "expected_from": report.shipped["expected_from"],
        "expected_machine_ratio": report.shipped["expected_machine_ratio"], "budget_met": report.met,
        "artifact": str(report.artifact.path), "sidecar": str(report.sidecar), "attempts": len(report.attempts),
        "drift": drift_json(spz), "precision": chosen, "precision_choice": offers})
    if as_json:
        typer.echo(json.dumps(record, indent=2))
    else:
        typer.echo(f"shipped {report.artifact.path} (sidecar {report.sidecar}); budget "
                   + {True: "met", False: "NOT met", None: "not measured here"}[report.met])
    if report.met is False:
        raise typer.Exit(1)
