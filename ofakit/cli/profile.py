"""``ofakit profile``: build, refresh, show, export and import device latency tables."""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

import model_zoo
from elastic.families import Spec, spec_from_dict
from ofakit.cli.common import (CLI_ERRORS, CliError, console, existing_table, fail, path_option, progress_bars,
                               read_token)
from profilers import builder
from profilers.drift import check_drift
from profilers.layers import space_layers
from profilers.record import Protocol
from profilers.runtimes import LOCAL, Runtime, list_runtimes, open_runtime
from profilers.store import DEFAULT_TABLE, LatencyTable, RuntimeKey, check_name, read_only, spec_id

profile_app = typer.Typer(no_args_is_help=True, help="Device latency tables: build, refresh, show, share.")
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
QUICK_PROTOCOL = Protocol(warmup_s=0, warmup_runs=2, blocks=2, block_s=0.002)  # --quick: smoke tests only


def parse_age(text: str | None) -> float | None:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"`` or seconds -> seconds."""
    if text is None:
        return None
    m = _AGE.match(text)
    if not m or float(m.group(1)) <= 0:
        raise CliError(f"--max-age {text!r} is not an age; use e.g. 30d, 12h, 90m or 3600")
    return float(m.group(1)) * _UNITS[m.group(2)]


MIN_RES, MAX_RES = 8, 1024  # input resolutions a table may be built for


def resolve_recipe(recipe: str, resolutions: str | None) -> tuple[str, Spec]:
    """Table name and spec of a zoo recipe (optionally at other resolutions) or of a checkpoint."""
    res = None
    if resolutions:
        try:
            res = tuple(int(v) for v in resolutions.split(","))
        except ValueError:
            raise CliError(f"--resolutions {resolutions!r} must be comma-separated integers, e.g. 128,160") from None
        bad = [v for v in res if not MIN_RES <= v <= MAX_RES]
        if bad:
            raise CliError(f"--resolutions {bad} out of range; allowed: {MIN_RES} to {MAX_RES} pixels")
    if recipe in model_zoo.list_supernets():
        spec = model_zoo.get_spec(recipe, **({"resolutions": res} if res else {}))
        return (f"{recipe}@r{'-'.join(map(str, res))}" if res else recipe), spec
    try:
        meta = model_zoo.read_checkpoint_meta(recipe)
    except (ValueError, OSError):
        raise CliError(f"--recipe {recipe!r} is neither a supernet recipe ({model_zoo.list_supernets()}) "
                       "nor a checkpoint name or path") from None
    if not isinstance(meta.get("spec"), dict) or not isinstance(meta.get("recipe"), str):
        raise CliError(f"--recipe {recipe!r}: its checkpoint sidecar lacks a 'spec' object or a 'recipe' name "
                       "(edited or truncated?)")
    spec = spec_from_dict(meta["spec"])
    if res:
        trained = list(spec.to_dict()["r"])
        if set(res) - set(trained):
            raise CliError(f"--resolutions {sorted(set(res) - set(trained))} are not resolutions of checkpoint "
                           f"{recipe!r}; allowed: {trained}")
        spec = spec_from_dict({**spec.to_dict(), "r": list(res)})
    return meta["recipe"] + (f"@r{'-'.join(map(str, res))}" if res else ""), spec


def table_name(table: LatencyTable, name: str, spec: Spec, explicit: bool = False) -> str:
    """The name to record ``spec`` under in ``table``: the name it already has there, else ``name``; when
    ``name`` is taken by another architecture, ``name@SPECID`` (or an error naming it, for an ``explicit``
    ``--name``)."""
    if explicit:
        if name in table.recipes() and spec_id(table.recipe(name)) != spec_id(spec.to_dict()):
            raise CliError(f"--name {name!r} is taken in {table.path} by another architecture; choose another")
        return name
    return table.recipe_name(name, spec.to_dict())


def run_build(table_path: Path, name: str, spec: Spec, runtime_name: str, device: str,
              token: str | None, settings: builder.BuildSettings, quiet: bool,
              explicit_name: bool = False) -> builder.BuildReport:
    """Build (or resume) ``name``'s table for ``runtime_name`` on ``device``; a refused build leaves no file."""
    if runtime_name not in list_runtimes():
        raise CliError(f"--runtime {runtime_name!r} is unknown; allowed: {list_runtimes()}")
    runtime = open_runtime(runtime_name, device, token)
    reason = runtime.unavailable()  # before the table file is created, so a refusal leaves nothing behind
    if reason is not None:
        raise CliError(f"runtime {runtime_name} is unavailable on device {device!r}: {reason}")
    existed = table_path.exists()
    try:
        return _build_into(table_path, name, spec, runtime, device, settings, quiet, explicit_name)
    except BaseException:
        if not existed:
            _drop_if_empty(table_path)  # a build refused before its first measurement leaves no file
        raise


def _drop_if_empty(path: Path) -> None:
    """Remove a table file (and its SQLite companions) that holds no measurement."""
    try:
        with LatencyTable(path, readonly=True) as t:
            empty = not t.entries()
    except ValueError:
        return
    if empty:
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            p.unlink(missing_ok=True)


def _build_into(table_path: Path, name: str, spec: Spec, runtime: Runtime, device: str,
                settings: builder.BuildSettings, quiet: bool, explicit_name: bool) -> builder.BuildReport:
    with LatencyTable(table_path) as table, progress_bars(quiet) as bar:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if not tasks:  # the architecture named once, so that the bars' columns fit an 80-column terminal
                bar.print(f"measuring {name} on {device} with {runtime.name}:")
            if phase not in tasks:
                tasks[phase] = bar.add_task(f"  {phase}", total=total)
            bar.update(tasks[phase], completed=done)

        name = table_name(table, name, spec, explicit_name)
        return builder.build_table(table, name, spec, runtime, device, settings, progress)


def holds(table_path: Path, spec: Spec, device: str, runtime: str, precision: str | None = None) -> bool:
    """Whether ``table_path`` holds ``spec``'s architecture complete on ``device`` for one configuration of
    ``runtime`` (at ``precision``, if given): every layer of its space measured and the correction fitted (a
    build killed half-way is not complete, and ``build_missing`` resumes it)."""
    if not table_path.is_file():
        return False
    sid = spec_id(spec.to_dict())
    keys = {layer.key for layer in space_layers(spec)}
    with LatencyTable(table_path, readonly=True) as table:
        if not any(spec_id(table.recipe(name)) == sid for name in table.recipes()) or device not in table.devices():
            return False
        configs = {e.runtime for e in table.entries(device)
                   if e.runtime.name == runtime and precision in (None, e.runtime.precision)}
        return any(keys <= {e.key for e in table.entries(device, rk)} and table.correction(device, rk, sid) is not None
                   for rk in configs)


def build_missing(table_path: Path, checkpoint: str, targets: list[tuple[str, str]], precision: str | None,
                  token: str | None, quiet: bool) -> list[tuple[str, str]]:
    """Build, with ``ofakit profile build``'s defaults at ``precision`` (``None``: fp32 unless the table holds the
    runtime complete at another precision), what ``table_path`` lacks for ``checkpoint``'s architecture among the
    ``(device, runtime)`` pairs of ``targets``, resuming a build killed half-way; returns the pairs built."""
    if table_path.is_dir():
        raise CliError(f"latency table {table_path} is a directory; give the .sqlite file")
    name, spec = resolve_recipe(checkpoint, None)
    built = []
    for device, runtime in dict.fromkeys(targets):
        if holds(table_path, spec, device, runtime, precision):
            continue
        at = precision or "fp32"
        if not quiet:
            console.print(f"{table_path} lacks {at} {runtime} latencies of {name} on {device}: measuring them now "
                          f"(as `ofakit profile build --recipe {checkpoint} --runtime {runtime} --device {device} "
                          f"--precision {at}` would; resumable, kept for every later search)")
        run_build(table_path, name, spec, runtime, device, token, builder.BuildSettings(precision=at), quiet)
        built.append((device, runtime))
    return built


def _print_report(r: builder.BuildReport, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(r.__dict__, indent=2))
        return
    c = r.correction
    loo = f"{100 * c['loo_mape']:.1f}%" if c.get("loo_mape") is not None else "n/a"
    typer.echo(f"{r.recipe} on {r.device} [{r.runtime}]: {r.measured}/{r.layers} layers measured, "
               f"{r.calibration_measured} calibration subnets measured, correction from {r.calibration_used} "
               f"subnets ({'+'.join(c['features'])}, leave-one-out error {loo}), {r.seconds:.0f}s"
               + (f"; {r.contended} measurements taken under load" if r.contended else ""))


@profile_app.command("build")
def build(recipe: str = typer.Option(..., help="Supernet recipe (see `ofakit zoo list`) or a checkpoint name/path."),
          runtime: str = typer.Option("onnxruntime", help="Runtime to measure with."),
          table: Path = typer.Option(Path(DEFAULT_TABLE), help="SQLite table file."),
          device: str = typer.Option(LOCAL, help="'local' (this machine) or an agent URL http://HOST:8470."),
          token_file: Path = typer.Option(None, help="File holding the agent token (remote devices)."),
          resolutions: str = typer.Option(None, help="Only these resolutions, e.g. 128 or 128,160."),
          threads: int = typer.Option(1, help="Intra-op threads."),
          precision: str = typer.Option("fp32", help="fp32, fp16 or int8 (as the runtime supports)."),
          provider: str = typer.Option(None, help="Execution provider / device / compute units."),
          calibrate: int = typer.Option(12, help="Whole subnets measured to calibrate the predictor."),
          max_age: str = typer.Option(None, help="Also re-measure entries older than this (e.g. 30d)."),
          force: bool = typer.Option(False, "--force", help="Re-measure everything."),
          quick: bool = typer.Option(False, "--quick", help="Short timing protocol (smoke tests, not for decisions)."),
          name: str = typer.Option(None, help="Name of this architecture in the table (default: the recipe's, "
                                              "or NAME@SPECID when another architecture has that name)."),
          as_json: bool = typer.Option(False, "--json", help="Print the build report as JSON.")) -> None:
    """Measure a recipe's layers and calibration subnets on a device; resumes where a killed build stopped."""
    try:
        cores = os.cpu_count() or 1
        if device == LOCAL and threads > cores:
            raise CliError(f"--threads {threads}: this machine has {cores} cores; allowed: 1 to {cores}")
        default_name, spec = resolve_recipe(recipe, resolutions)
        protocol = QUICK_PROTOCOL if quick else Protocol()
        settings = builder.BuildSettings(threads=threads, precision=precision, provider=provider, protocol=protocol,
                                         calibration_subnets=calibrate, max_age_s=parse_age(max_age), force=force)
        if name is not None:
            check_name(name, "--name")
        report = run_build(table, default_name if name is None else name, spec, runtime, device, read_token(token_file),
                            settings, as_json,
                            explicit_name=name is not None)
    except CLI_ERRORS as exc:
        fail(exc)
    _print_report(report, as_json)


@profile_app.command("refresh")
def refresh(table: Path = typer.Option(Path(DEFAULT_TABLE), help="SQLite table file."),
            device: str = typer.Option(LOCAL, help="'local' or the agent URL the table was built with."),
            token_file: Path = typer.Option(None, help="File holding the agent token (remote devices)."),
            recipe: str = typer.Option(None, help="Only this recipe name of the table (default: all)."),
            runtime: str = typer.Option(None, help="Only this runtime (default: all on the device)."),
            max_age: str = typer.Option(None, help="Re-measure entries older than this (e.g. 30d)."),
            quick: bool = typer.Option(False, "--quick", help="Short timing protocol (smoke tests)."),
            as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON.")) -> None:
    """Re-measure only what is missing, older than --max-age, or taken with another runtime version or hardware."""
    reports = []
    try:
        with LatencyTable(existing_table(table)) as t:
            recipes = [recipe] if recipe is not None else t.recipes()
            specs = {n: spec_from_dict(t.recipe(n)) for n in recipes}
            configs = sorted({e.runtime for e in t.entries(device)}, key=RuntimeKey.label)
        configs = [rk for rk in configs if runtime in (None, rk.name)]
        if not configs:
            raise CliError(f"no entries for device {device!r}" + (f" and runtime {runtime!r}" if runtime else "")
                           + f" in {table}")
        protocol = QUICK_PROTOCOL if quick else Protocol()
        for rk in configs:
            for name, spec in specs.items():
                settings = builder.BuildSettings(threads=rk.threads, precision=rk.precision, provider=rk.provider,
                                                 batch=rk.batch, protocol=protocol, max_age_s=parse_age(max_age),
                                                 calibration_subnets=0)  # the table's own set, none added
                reports.append(run_build(table, name, spec, rk.name, device, read_token(token_file), settings, as_json))
    except CLI_ERRORS as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps([r.__dict__ for r in reports], indent=2))
        return
    for r in reports:
        _print_report(r, False)


def table_summary(path: Path) -> dict:
    """Devices, runtime configurations and per-recipe coverage and calibration of a table."""
    with LatencyTable(path, readonly=True) as t:
        devices = {n: i.to_dict() for n, i in t.devices().items()}
        entries = t.entries()
        specs = {n: spec_from_dict(t.recipe(n)) for n in t.recipes()}
        groups: dict[tuple[str, RuntimeKey], list] = {}
        for e in entries:
            groups.setdefault((e.device, e.runtime), []).append(e)
        rows = []
        for (dev, rk), es in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1].label())):
            have = {e.key for e in es}
            for name, spec in specs.items():
                keys = {L.key for L in space_layers(spec)}
                sid = spec_id(spec.to_dict())
                corr = t.correction(dev, rk, sid)
                rows.append({"device": dev, "runtime": rk.label(), "recipe": name, "layers": len(keys),
                             "measured": len(keys & have),
                             "quick": sum(e.key in keys and Protocol.stored_is_shorter(e.protocol, Protocol())
                                          for e in es), "runtime_versions": dict(Counter(e.runtime_version for e in es)),
                             "oldest_age_s": time.time() - min(e.measured_at for e in es),
                             "calibration_samples": len(t.calibration(dev, rk, sid)),
                             "correction": corr.to_dict() if corr is not None else None,
                             "drift": (t.drift(dev, rk, sid) or [None])[-1],
                             "contended": sum(e.load_avg > max(1.0, devices[dev]["cores"] - 1) for e in es)})
    return {"table": str(path), "devices": devices, "recipes": sorted(specs), "tables": rows}


@profile_app.command("show")
def show(table: Path = typer.Option(Path(DEFAULT_TABLE), help="SQLite table file."),
         check: bool = typer.Option(False, "--check-drift", help="Re-time each table's reference subnets now "
                                     "(seconds each) and record how much faster or slower the machine runs."),
         token_file: Path = typer.Option(None, help="Agent token file (to check agents' drift)."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """What a table holds: devices, runtimes, coverage per recipe, calibration, drift, staleness."""
    try:
        summary = table_summary(existing_table(table))
        if check:
            notes, unrecorded = _check_drifts(table, summary, read_token(token_file))
            summary = {**table_summary(table), "drift_notes": notes}
            for r in summary["tables"]:  # a read-only table keeps its older check: show the one just made
                r["drift"] = unrecorded.get((r["device"], r["runtime"], r["recipe"]), r["drift"])
    except CLI_ERRORS as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    out = Console(width=None if console.is_terminal else 160)  # pipes get the whole table, not 80 columns
    t = Table(title=f"Latency table {table}")
    for col in ("device", "runtime", "recipe", "layers", "calibration", "drift", "oldest", "versions"):
        t.add_column(col, no_wrap=col in ("runtime", "recipe"))
    for r in summary["tables"]:
        c, d = r["correction"], r["drift"]
        cal = (f"{r['calibration_samples']} subnets, LOO {100 * c['loo_mape']:.1f}%" if c and c.get("loo_mape")
               is not None else f"{r['calibration_samples']} subnets")
        when = ("now, not recorded" if d and d.get("recorded") is False else
                d and f"{(time.time() - d['measured_at']) / 60:.0f} min ago")
        drift = "-" if d is None else f"{d['ratio']:.2f}x ({when})"
        quick = f" ({r['quick']} --quick)" if r.get("quick") else ""
        t.add_row(r["device"], r["runtime"], r["recipe"], f"{r['measured']}/{r['layers']}{quick}", cal, drift,
                  f"{r['oldest_age_s'] / 86400:.1f} d", ", ".join(r["runtime_versions"]))
    out.print(t)
    for note in summary.get("drift_notes", []):
        out.print(f"drift not checked: {note}")
    out.print("drift: latency of the reference subnets now / when calibrated (above 1: slower now); "
              "`ofakit search` and `ship` re-time them and rescale before searching with --drift-check")
    for name, info in summary["devices"].items():
        out.print(f"[bold]{name}[/]: {info['cpu']} ({info['cores']} cores), {info['os']}"
                  + (f", GPU {info['gpu']}" if info.get("gpu") else "") + f", fingerprint {info['fingerprint']}")


def _check_drifts(table: Path, summary: dict, token: str | None) -> tuple[list[str], dict[tuple[str, str, str], dict]]:
    """Re-time the reference subnets of every calibrated (device, runtime, recipe) that can run; notes on the rest,
    and the checks a read-only table could not store (``recorded: False``) by (device, runtime, recipe)."""
    notes, unrecorded = [], {}
    stored = not read_only(table)
    with LatencyTable(table, readonly=True) as t:  # only read here; check_drift stores where it may
        specs = {n: spec_from_dict(t.recipe(n)) for n in t.recipes()}
    for r in summary["tables"]:
        if not r["calibration_samples"]:
            continue
        try:
            rt = open_runtime(r["runtime"].split("/")[0], r["device"], token)
            check = check_drift(table, specs[r["recipe"]], r["device"], rt, r["runtime"])
        except CLI_ERRORS as exc:
            notes.append(f"{r['device']} {r['runtime']} {r['recipe']}: {exc}")
            continue
        if not stored:
            unrecorded[r["device"], r["runtime"], r["recipe"]] = {**check.to_dict(), "recorded": False}
    return notes, unrecorded


@profile_app.command("export")
def export(table: Path = typer.Option(Path(DEFAULT_TABLE), help="SQLite table file."),
           out: Path = typer.Option(..., help="JSON file to write (atomically).", parser=path_option)) -> None:
    """Write a table as JSON to share it."""
    try:
        if out.resolve() == table.resolve():
            raise CliError(f"--out {out} is the table itself; give another file for the JSON")
        with LatencyTable(existing_table(table), readonly=True) as t:
            t.export_json(out)
    except OSError as exc:
        fail(CliError(f"--out {out}: cannot write ({exc.strerror or exc})"))
    except CLI_ERRORS as exc:
        fail(exc)
    typer.echo(f"wrote {out}")


@profile_app.command("import")
def import_(sources: list[Path] = typer.Argument(..., help="JSON exports or .sqlite tables to merge."),
            table: Path = typer.Option(Path(DEFAULT_TABLE), help="SQLite table to merge into."),
            as_: Optional[list[str]] = typer.Option(None, "--as", help="OLD=NEW: store the imported device OLD "
                                                    "as NEW (repeatable). A name taken here by another machine "
                                                    "becomes NAME@FINGERPRINT otherwise.")) -> None:
    """Merge tables from other machines (newest measurement of each entry wins; devices told apart by
    fingerprint, never overwritten by another machine's)."""
    try:
        rename = {}
        for item in as_ or []:
            old, sep, new = item.partition("=")
            if not sep or not old or not new:
                raise CliError(f"--as {item!r} must be OLD=NEW (e.g. local=lab-pc)")
            if old in rename:
                raise CliError(f"--as {item!r}: device {old!r} is already renamed to {rename[old]!r}; give it once")
            rename[old] = new
        with LatencyTable(table) as t:
            for src in sources:
                if not src.exists():
                    raise CliError(f"{src} does not exist")
                report = t.import_json(src, rename)
                typer.echo(f"{src}: {report.changed} entries added or updated")
                for old, new in report.renamed.items():
                    typer.echo(f"{src}: device {old!r} stored as {new!r}")
                for old, new in report.recipes_renamed.items():
                    typer.echo(f"{src}: architecture {old!r} stored as {new!r} ({old!r} is another one here)")
    except CLI_ERRORS as exc:
        fail(exc)
