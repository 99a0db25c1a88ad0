"""A fresh fault probe for issue 13, weighted toward the ResNet and ProxylessNAS families.

Runs a few hundred malformed inputs and injected faults against the Python API, the ``ofakit`` command line
(through ``typer.testing.CliRunner``) and the profiling agent's HTTP API, and classifies every outcome:

``ok``
    a clear one-line error (``ValueError``/``OSError``-like; on the CLI exit status 2 and one ``error:`` line),
    or valid input correctly accepted;
``traceback``
    a Python traceback reaches the user, an exception type that is not ``ValueError``/``OSError``-like leaves
    the library, an error message of more than one line, or (agent) a 5xx / non-JSON reply to a bad request;
``silent``
    bad input accepted without an error, or a wrong result;
``lost``
    good data (a checkpoint, table, artifact, sidecar, run) damaged or removed.

An ``ok`` refusal whose message does not name the bad value is flagged ``unclear`` (counted as ok).

Usage::

    .venv/bin/python benchmarks/probe_faults.py [--out /tmp/probe_faults.json] [--only AREA_PREFIX]

Everything is written under a temporary folder; nothing in the repository is touched (zoo files are copied).
The probes live in ``benchmarks/probes/``: the harness, then one module per area (spaces, weights, training,
tables, cli, faults, agent); this script runs them in that order and prints the tally.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

# the harness puts the repository on sys.path and quiets the run (drift pauses off, logging at ERROR)
from probes import harness
from probes.agent import probes_agent
from probes.cli import probes_cache, probes_cli
from probes.faults import probes_injected
from probes.harness import REPO, RESULTS, custom, damaged, setup, snapshot
from probes.spaces import probes_configs, probes_specs
from probes.tables import probes_tables
from probes.training import probes_training
from probes.weights import probes_checkpoints, probes_ofa

import model_zoo  # noqa: E402 - after the harness, which puts the repository on the path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/probe_faults.json", help="results JSON")
    ap.add_argument("--only", default=None, help="run only probes whose id starts with this")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    harness.ONLY = args.only
    root = Path(tempfile.mkdtemp(prefix="ofakit-probe-"))
    os.environ["OFAKIT_CACHE"] = str(root / "cache")
    zoo_before = snapshot([REPO / "model_zoo" / "weights"])
    import subprocess
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or "(not a git checkout)"
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--short", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.split("\n")
    print(f"probing the code in {Path(model_zoo.__file__).parents[1]} (commit {head}; "
          f"{len([d for d in dirty if d.strip()])} tracked files modified)", flush=True)
    t0 = time.perf_counter()
    try:
        F = setup(root)
        for section in (probes_configs, probes_specs, probes_checkpoints, probes_ofa, probes_training, probes_tables,
                        probes_cli, probes_cache, probes_injected, probes_agent):
            print(f"\n{section.__name__}: ", end="", flush=True)
            try:
                section(F)
            except Exception:  # a bug of the probe itself: say so, go on with the other sections
                print(f"\nPROBE BUG in {section.__name__}:\n{traceback.format_exc()}", flush=True)
        custom("ZZ-01", "repo", "the repository's zoo weights are untouched by the whole probe",
               lambda: ("lost", "; ".join(damaged(zoo_before, [REPO / "model_zoo" / "weights"])))
               if damaged(zoo_before, [REPO / "model_zoo" / "weights"]) else ("ok", "unchanged"))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print()
    counts: dict[str, int] = {}
    for r in RESULTS:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    unclear = [r for r in RESULTS if r.get("unclear")]
    Path(args.out).write_text(json.dumps(RESULTS, indent=2))
    print(f"{len(RESULTS)} probes in {time.perf_counter() - t0:.0f}s: " +
          ", ".join(f"{k} {counts.get(k, 0)}" for k in ("ok", "traceback", "silent", "lost")) +
          f" (of the ok: {len(unclear)} unclear)")
    for r in RESULTS:
        if r["outcome"] != "ok" or r.get("unclear"):
            tag = r["outcome"] + ("/unclear" if r.get("unclear") else "")
            print(f"  [{tag}] {r['id']} {r['description']}: {' '.join(r['detail'].split())[:300]}")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
