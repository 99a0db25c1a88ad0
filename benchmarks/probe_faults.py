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
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import io
import json
import logging
import math
import os
import shutil
import socket
import sqlite3
import struct
import sys
import tempfile
import threading
import time
import traceback
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)
import profilers.drift  # noqa: E402

profilers.drift.SETTLE_PAUSES_S = ()  # as the tests do: no pauses to re-take a disturbed measurement
logging.basicConfig(level=logging.ERROR)
import warnings  # noqa: E402

warnings.filterwarnings("ignore", message="Detected pickle protocol")

import model_zoo  # noqa: E402
from elastic import SubnetConfig  # noqa: E402
from elastic.families import config_from_dict, get_family, spec_from_dict  # noqa: E402
from elastic.resnet import ResNetConfig, ResNetSpace, ResNetSpec  # noqa: E402
from model_zoo.checkpoint import checkpoint_paths, save_checkpoint  # noqa: E402

ZOO = "ofa_mbv3_tiny.fmnist"
TOKEN = "t" * 20
RESULTS: list[dict[str, Any]] = []
ONLY: str | None = None


# ====================================================================================== harness
def _accepted_types() -> tuple[type, ...]:
    from deploy_targets import ExporterUnavailable
    from profilers.agent.client import AgentError
    from profilers.runtimes import RuntimeUnavailable
    return (ValueError, OSError, RuntimeUnavailable, AgentError, ExporterUnavailable)


ACCEPTED = _accepted_types()


def _where(tb) -> str:
    """The innermost repository frame of a traceback (file:line in function)."""
    frames = [f for f in traceback.extract_tb(tb) if str(REPO) in f.filename and "/.venv/" not in f.filename]
    if not frames:
        frames = traceback.extract_tb(tb)
    if not frames:
        return "?"
    f = frames[-1]
    return f"{Path(f.filename).relative_to(REPO) if str(REPO) in f.filename else f.filename}:{f.lineno} in {f.name}"


def _short(v: Any, n: int = 240) -> str:
    try:
        s = repr(v)
    except Exception as exc:  # noqa: BLE001
        s = f"<unrepresentable {type(v).__name__}: {exc}>"
    s = " ".join(s.split())
    return s if len(s) <= n else s[:n] + "..."


def _digest_file(p: Path) -> str:
    if p.suffix == ".sqlite":
        try:
            db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
            try:
                h = hashlib.sha256()
                names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
                for name in names:
                    h.update(name.encode())
                    for row in sorted(map(repr, db.execute(f'SELECT * FROM "{name}"'))):
                        h.update(row.encode())
                return "rows:" + h.hexdigest()
            finally:
                db.close()
        except sqlite3.Error:
            pass
    return hashlib.sha256(p.read_bytes()).hexdigest()


def snapshot(paths: Iterable[Path]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and not f.name.endswith(("-wal", "-shm", "-journal")):
                    out[str(f)] = _digest_file(f)
        elif p.is_file():
            out[str(p)] = _digest_file(p)
        else:
            out[str(p)] = None
    return out


def damaged(before: dict[str, str | None], paths: Iterable[Path]) -> list[str]:
    after = snapshot(paths)
    bad = []
    for k, v in before.items():
        if v is None:
            continue
        if k not in after or after[k] is None:
            bad.append(f"{k} removed")
        elif after[k] != v:
            bad.append(f"{k} changed")
    return bad


def _record(pid: str, area: str, desc: str, outcome: str, detail: str, **extra: Any) -> None:
    RESULTS.append({"id": pid, "area": area, "description": desc, "outcome": outcome, "detail": detail, **extra})
    mark = {"ok": ".", "traceback": "T", "silent": "S", "lost": "L"}[outcome]
    if extra.get("unclear"):
        mark = "u"
    print(mark, end="", flush=True)


def _needles(needle: Any) -> list[str]:
    if needle is None:
        return []
    return [needle] if isinstance(needle, str) else list(needle)


def _unclear(msg: str, needle: Any) -> bool:
    ns = _needles(needle)
    return bool(ns) and not any(n.lower() in msg.lower() for n in ns)


def _skip(pid: str) -> bool:
    return ONLY is not None and not pid.startswith(ONLY)


def probe(pid: str, area: str, desc: str, fn: Callable[[], Any], expect: str = "error", needle: Any = None,
          guard: Iterable[Path] = (), check: Callable[[Any], tuple[bool, str]] | None = None,
          must_not_exist: Iterable[Path] = ()) -> None:
    """Run an API probe. ``expect='error'``: a one-line ValueError/OSError-like error is ok; ``'accept'``: the
    call must succeed (and ``check(result)`` must pass)."""
    if _skip(pid):
        return
    guard = list(guard)
    before = snapshot(guard)
    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    try:
        res = fn()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001
        msg = str(exc).strip()
        if isinstance(exc, ACCEPTED) and msg and "\n" not in msg:
            if expect == "error":
                outcome, detail = "ok", f"{type(exc).__name__}: {msg[:400]}"
                if _unclear(msg, needle):
                    extra["unclear"] = True
                    extra["expected_to_name"] = _needles(needle)
            else:
                outcome, detail = "silent", f"valid input refused: {type(exc).__name__}: {msg[:400]}"
        else:
            first = msg.splitlines()[0] if msg else ""
            why = "multi-line message" if isinstance(exc, ACCEPTED) and msg else "uncaught exception"
            outcome = "traceback"
            detail = (f"{why}: {type(exc).__module__}.{type(exc).__name__}: {first[:300]} "
                      f"[at {_where(exc.__traceback__)}]")
            if isinstance(exc, ACCEPTED) and "\n" in msg:
                detail += f" (+{len(msg.splitlines()) - 1} more lines)"
    else:
        if expect == "error":
            outcome, detail = "silent", f"accepted; returned {_short(res)}"
        else:
            ok, detail = _checked(check, res)
            outcome = "ok" if ok else "silent"
    _finish(pid, area, desc, outcome, detail, before, guard, must_not_exist, expect, t0, extra)


def _finish(pid: str, area: str, desc: str, outcome: str, detail: str, before: Any, guard: Any,
            must_not_exist: Any, expect: str, t0: float, extra: dict[str, Any]) -> None:
    """Record a probe's outcome after the checks every probe shares: guarded files damaged (lost), files
    left behind by a refusal (silent)."""
    lost = damaged(before, guard)
    if lost and outcome == "silent":  # bad input accepted: the change is that acceptance, not a lost file
        detail += " | and it changed " + "; ".join(lost)
    elif lost:
        outcome, detail = "lost", "; ".join(lost) + f" | {detail}"
    made = [str(p) for p in must_not_exist if Path(p).exists()]
    if made and outcome == "ok" and expect == "error":
        outcome, detail = "silent", f"refused but left {made} behind | {detail}"
    extra["seconds"] = round(time.perf_counter() - t0, 3)
    _record(pid, area, desc, outcome, detail, **extra)


def _checked(check: Callable[[Any], tuple[bool, str]] | None, res: Any) -> tuple[bool, str]:
    """``check(res)``; a check that raises is a wrong result, described."""
    if check is None:
        return True, f"accepted: {_short(res, 120)}"
    try:
        return check(res)
    except Exception as exc:  # noqa: BLE001
        return False, f"accepted, but the result is wrong: {type(exc).__name__}: {str(exc)[:300]}"


RUNNER = None


def cli(pid: str, area: str, desc: str, argv: list[str], expect: str = "error", needle: Any = None,
        guard: Iterable[Path] = (), check: Callable[[Any], tuple[bool, str]] | None = None,
        must_not_exist: Iterable[Path] = ()) -> None:
    """Run a CLI probe through CliRunner: a refusal must be exit 2 with exactly one ``error:`` line."""
    if _skip(pid):
        return
    global RUNNER
    from typer.testing import CliRunner

    from ofakit.cli import app
    RUNNER = RUNNER or CliRunner()
    guard = list(guard)
    before = snapshot(guard)
    t0 = time.perf_counter()
    argv = [str(a) for a in argv]
    extra: dict[str, Any] = {"argv": " ".join(argv)}
    res = RUNNER.invoke(app, argv, catch_exceptions=True)
    exc = res.exception
    err = res.stderr if hasattr(res, "stderr") else ""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errlines = [ln for ln in lines if ln.startswith("error:")]
    if exc is not None and not isinstance(exc, SystemExit):
        outcome = "traceback"
        tb = res.exc_info[2] if res.exc_info else None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        detail = f"uncaught {type(exc).__module__}.{type(exc).__name__}: {first[:300]} [at {_where(tb)}]"
    elif "Traceback (most recent call last)" in err or "Traceback (most recent call last)" in res.stdout:
        outcome, detail = "traceback", f"traceback printed (exit {res.exit_code}): {err[-400:]}"
    elif expect == "error":
        if res.exit_code == 0:
            outcome, detail = "silent", f"exit 0; stdout: {res.stdout.strip()[:300]!r}; stderr: {err.strip()[:200]!r}"
        elif res.exit_code == 2 and len(errlines) == 1:
            outcome, detail = "ok", errlines[0][:400]
            if len(lines) > 1:
                extra["other_stderr"] = [ln[:200] for ln in lines if not ln.startswith("error:")][:5]
            if _unclear(errlines[0], needle):
                extra["unclear"] = True
                extra["expected_to_name"] = _needles(needle)
        elif res.exit_code == 2 and ("Usage:" in err or "Invalid value" in err or "No such option" in err):
            outcome, detail = "ok", "click usage error: " + " ".join(" ".join(lines).split())[:300]
        else:
            outcome, detail = "traceback", f"exit {res.exit_code} with {len(errlines)} error lines: {err.strip()[:400]!r}"
    else:
        if res.exit_code == 0:
            ok, detail = _checked(check, res) if check else (True, f"exit 0: {res.stdout.strip()[:160]!r}")
            outcome = "ok" if ok else "silent"
        else:
            outcome, detail = "silent", f"valid input refused (exit {res.exit_code}): {err.strip()[:300]!r}"
    _finish(pid, area, desc, outcome, detail, before, guard, must_not_exist, expect, t0, extra)


def custom(pid: str, area: str, desc: str, fn: Callable[[], tuple[str, str]]) -> None:
    """A probe that classifies itself: ``fn()`` returns ``(outcome, detail)``; an exception is a traceback."""
    if _skip(pid):
        return
    t0 = time.perf_counter()
    try:
        outcome, detail = fn()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001
        outcome = "traceback"
        detail = f"probe raised {type(exc).__name__}: {str(exc)[:300]} [at {_where(exc.__traceback__)}]"
    _record(pid, area, desc, outcome, detail, seconds=round(time.perf_counter() - t0, 3))


# ====================================================================================== fixtures
def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def copy_ckpt(src_stem: Path, dst_stem: Path) -> Path:
    w, s = checkpoint_paths(src_stem)
    dw, ds = checkpoint_paths(dst_stem)
    dst_stem.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(w, dw)
    shutil.copy(s, ds)
    return dst_stem


def edit_sidecar(src_stem: Path, dst_stem: Path, edit: Callable[[dict], Any]) -> Path:
    copy_ckpt(src_stem, dst_stem)
    _, side = checkpoint_paths(dst_stem)
    meta = json.loads(side.read_text())
    out = edit(meta)
    side.write_text(json.dumps(meta if out is None else out))
    return dst_stem


def reweigh(stem: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Replace a checkpoint's weights and update its sidecar's sha256 (a consistent but edited checkpoint)."""
    from safetensors.torch import save_file

    from elastic.fileio import sha256_file
    w, s = checkpoint_paths(stem)
    save_file(tensors, str(w))
    meta = json.loads(s.read_text())
    meta["sha256"] = sha256_file(w)
    s.write_text(json.dumps(meta))


def setup(root: Path) -> SimpleNamespace:
    from ofakit.artifact import export_subnet
    from tests.fakedata import write_fmnist
    from tests.shipyard import build_shipyard

    F = SimpleNamespace(root=root)
    t0 = time.perf_counter()
    print("setup: ResNet and ProxylessNAS checkpoints and tables ...", flush=True)
    F.rn_ctx, F.rn_table = build_shipyard(root / "rn", "ofa_resnet_tiny", calibration=2)
    F.px_ctx, F.px_table = build_shipyard(root / "px", "ofa_proxyless_tiny", calibration=2)
    F.rn_ckpt, F.px_ckpt = root / "rn" / "tiny", root / "px" / "tiny"
    F.rn_net, F.px_net = F.rn_ctx.supernet, F.px_ctx.supernet
    F.rn_spec, F.px_spec = F.rn_net.spec, F.px_net.spec
    F.rn_space, F.px_space = F.rn_net.space, F.px_net.space
    F.mb_space = model_zoo.get_spec("ofa_mbv3_tiny").space
    F.rn_small, F.rn_large = F.rn_space.smallest(), F.rn_space.largest()
    F.px_small, F.px_large = F.px_space.smallest(), F.px_space.largest()
    F.mb_small = F.mb_space.smallest()
    F.zoo_copy = copy_ckpt(model_zoo.resolve_checkpoint(ZOO).with_suffix(""), root / "zoo" / "mbv3")
    F.fm = write_fmnist(root / "fm", 64, 16)
    # an exported ResNet artifact with its sidecar (agent body; guarded against refused re-exports)
    F.art = root / "art"
    F.art.mkdir()
    export_subnet(F.rn_ctx, F.rn_small, "onnx", F.art / "rn.onnx")
    F.rn_onnx = F.art / "rn.onnx"
    # subnet files
    F.sub = root / "sub"
    write_json(F.sub / "rn_small.json", F.rn_small.to_dict())
    write_json(F.sub / "px_small.json", F.px_small.to_dict())
    write_json(F.sub / "mb_small.json", F.mb_small.to_dict())
    # trained-through-the-CLI runs (seconds)
    F.recipes = root / "recipes"
    F.recipes.mkdir()
    common = ("[data]\nval_size = 16\ntrain_limit = 32\ntest_limit = 16\n[train]\nbatch_size = 16\ncalib_images = 16\n"
              "epoch_calib_images = 16\neval_images = 16\neval_random_subnets = 1\nlog_every = 0\n")
    F.rn_recipe = F.recipes / "rn.toml"
    F.rn_recipe.write_text('supernet = "ofa_resnet_tiny"\nstrategy = "progressive"\n'
                           "supernet_options = { resolutions = [28] }\n" + common +
                           "[schedule]\nepochs = { teacher = 1, depth1 = 1, depth2 = 1, expand1 = 1, expand2 = 1, "
                           "width1 = 1, width2 = 1 }\n")
    F.px_recipe = F.recipes / "px.toml"
    F.px_recipe.write_text('supernet = "ofa_proxyless_tiny"\nstrategy = "progressive"\n'
                           "supernet_options = { resolutions = [28] }\n" + common +
                           "[schedule]\nepochs = { teacher = 1, kernel = 1, depth1 = 1, expand1 = 1 }\n")
    from typer.testing import CliRunner

    from ofakit.cli import app
    F.rn_run, F.px_run = root / "runs" / "rn", root / "runs" / "px"
    for rec, run in ((F.rn_recipe, F.rn_run), (F.px_recipe, F.px_run)):
        r = CliRunner().invoke(app, ["train", "--recipe", str(rec), "--data", f"fashion-mnist:{F.fm}", "--out",
                                     str(run), "--json"])
        assert r.exit_code == 0, r.stderr
    print(f"setup done in {time.perf_counter() - t0:.1f}s", flush=True)
    return F


# ====================================================================================== probes: configs
def probes_configs(F: SimpleNamespace) -> None:
    A = "config"
    good = F.rn_small.to_dict()
    rc = lambda **ch: ResNetConfig.from_dict({**good, **ch})  # noqa: E731
    cases = [  # (id, description, call, needle)
        ("RC-01", "ResNetConfig d as a string", lambda: rc(d="02222"), "d="),
        ("RC-02", "ResNetConfig d None", lambda: rc(d=None), "d=None"),
        ("RC-03", "ResNetConfig d of fractions", lambda: rc(d=[0.5] * 5), "0.5"),
        ("RC-04", "ResNetConfig d negative", lambda: rc(d=[0, -1, 0, 0, 0]), "-1"),
        ("RC-05", "ResNetConfig d of bools", lambda: rc(d=[True] * 5), "True"),
        ("RC-06", "ResNetConfig d a dict", lambda: rc(d={"0": 0}), "d="),
        ("RC-07", "ResNetConfig d nested lists", lambda: rc(d=[[0]] * 5), "[0]"),
        ("RC-08", "ResNetConfig one depth gene", lambda: rc(d=[0]), "depth genes"),
        ("RC-09", "ResNetConfig w one short", lambda: rc(w=good["w"][:-1]), "width genes"),
        ("RC-10", "ResNetConfig e empty", lambda: rc(e=[]), "e has 0"),
        ("RC-11", "ResNetConfig e zero", lambda: rc(e=[0] * len(good["e"])), "e[0]=0"),
        ("RC-12", "ResNetConfig e negative", lambda: rc(e=[-0.2] * len(good["e"])), "-0.2"),
        ("RC-13", "ResNetConfig e a numeric string", lambda: rc(e=["0.2"] * len(good["e"])), "'0.2'"),
        ("RC-14", "ResNetConfig e NaN", lambda: rc(e=[math.nan] * len(good["e"])), "nan"),
        ("RC-15", "ResNetConfig e infinite", lambda: rc(e=[math.inf] * len(good["e"])), "inf"),
        ("RC-16", "ResNetConfig w negative", lambda: rc(w=[-1] * len(good["w"])), "-1"),
        ("RC-17", "ResNetConfig w fractional", lambda: rc(w=[0.5] * len(good["w"])), "0.5"),
        ("RC-18", "ResNetConfig r zero", lambda: rc(r=0), "r=0"),
        ("RC-19", "ResNetConfig r text", lambda: rc(r="28"), "'28'"),
        ("RC-20", "ResNetConfig r fractional", lambda: rc(r=28.5), "28.5"),
        ("RC-21", "ResNetConfig r a list", lambda: rc(r=[28]), "[28]"),
        ("RC-22", "ResNetConfig r True", lambda: rc(r=True), "True"),
        ("RC-23", "ResNetConfig r NaN", lambda: rc(r=math.nan), "nan"),
        ("RC-24", "ResNetConfig MBConv key ks added", lambda: ResNetConfig.from_dict({**good, "ks": [3]}), "ks"),
        ("RC-25", "ResNetConfig family key added", lambda: ResNetConfig.from_dict({**good, "family": "resnet"}),
         "family"),
        ("RC-26", "ResNetConfig lacks w", lambda: ResNetConfig.from_dict({k: v for k, v in good.items() if k != "w"}),
         "w"),
        ("RC-27", "ResNetConfig from a list", lambda: ResNetConfig.from_dict([1, 2]), "[1, 2]"),
        ("RC-28", "ResNetConfig from None", lambda: ResNetConfig.from_dict(None), "None"),
        ("RC-29", "ResNetConfig JSON truncated", lambda: ResNetConfig.from_json(F.rn_small.to_json()[:-5]), "JSON"),
        ("RC-30", "ResNetConfig JSON nested 100k deep", lambda: ResNetConfig.from_json("[" * 100000 + "]" * 100000),
         "nested"),
        ("RC-31", "ResNetConfig JSON with a 5000-digit int", lambda: ResNetConfig.from_json(
            json.dumps({**good, "r": 0}).replace('"r": 0', '"r": ' + "9" * 5000)), ["ResNetConfig", "r"]),
        ("RC-32", "ResNetConfig JSON a number", lambda: ResNetConfig.from_json("28"), "28"),
        ("RC-33", "ResNetConfig JSON bytes not UTF-8", lambda: ResNetConfig.from_json(b"\xff\xfe{"), "JSON"),
        ("RC-34", "ResNetConfig.from_ofa r as two resolutions",
         lambda: ResNetConfig.from_ofa({"d": good["d"], "e": good["e"], "w": good["w"], "r": [28, 32]}), "r"),
        ("RC-35", "ResNetConfig.from_ofa with MBConv 'wid'",
         lambda: ResNetConfig.from_ofa({"d": good["d"], "e": good["e"], "w": good["w"], "wid": None}, r=28), "wid"),
        ("RC-36", "ResNetConfig.from_ofa r disagrees",
         lambda: ResNetConfig.from_ofa({"d": good["d"], "e": good["e"], "w": good["w"], "r": 32}, r=28), "32"),
        ("RC-37", "ResNetConfig.from_ofa without a resolution",
         lambda: ResNetConfig.from_ofa({"d": good["d"], "e": good["e"], "w": good["w"]}), "resolution"),
        ("RC-38", "ResNetConfig.from_ofa a string", lambda: ResNetConfig.from_ofa("d2e35w1"), "d2e35w1"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)

    # membership of the tiny ResNet's space
    sp = F.rn_space
    rv = lambda **ch: sp.validate(ResNetConfig(**{**good, **ch}))  # noqa: E731
    n = len(good["e"])
    cases = [
        ("RS-01", "stem depth gene 1 (only 0 or 2)", lambda: rv(d=[1] + good["d"][1:]), "d[0]=1"),
        ("RS-02", "stage depth 3 (space 0-2)", lambda: rv(d=good["d"][:-1] + [3]), "3"),
        ("RS-03", "depth 10**30", lambda: rv(d=good["d"][:-1] + [10 ** 30]), "1000000000000000000000000000000"),
        ("RS-04", "width index 3 (three widths)", lambda: rv(w=[3] * len(good["w"])), "w[0]=3"),
        ("RS-05", "expand 0.3 (not a choice)", lambda: rv(e=[0.3] * n), "0.3"),
        ("RS-06", "resolution 30 (space 28)", lambda: rv(r=30), "r=30"),
        ("RS-07", "six depth genes (five stages)", lambda: rv(d=good["d"] + [0], w=good["w"] + [0]), "d has"),
        ("RS-08", "e one slot short", lambda: rv(e=good["e"][:-1]), "e has"),
        ("RS-09", "an MBConv config given to the ResNet space", lambda: sp.validate(F.mb_small), "ResNetConfig"),
        ("RS-10", "a ResNet config given to the ProxylessNAS space", lambda: F.px_space.validate(F.rn_small),
         "SubnetConfig"),
        ("RS-11", "a ResNet config given to the MobileNetV3 space", lambda: F.mb_space.validate(F.rn_small),
         "SubnetConfig"),
        ("RS-12", "a dict given to validate", lambda: sp.validate(good), "ResNetConfig"),
        ("RS-13", "sample with r off the space", lambda: sp.sample(np.random.default_rng(0), r=32), "r=32"),
        ("RS-14", "largest with r a string", lambda: sp.largest(r="28"), "'28'"),
        ("RS-15", "restrict d without the largest depth", lambda: sp.restrict(d=[0]), "largest depth"),
        ("RS-16", "restrict w to an index the space lacks", lambda: sp.restrict(w=[5]), "5"),
        ("RS-17", "restrict an MBConv dimension ks", lambda: sp.restrict(ks=[3]), "ks"),
        ("RS-18", "restrict a typo dimension", lambda: sp.restrict(depth=[2]), "depth"),
        ("RS-19", "around an off-space config", lambda: sp.around(ResNetConfig(**{**good, "r": 64})), "r=64"),
        ("RS-20", "canonical of an MBConv config", lambda: sp.canonical(F.mb_small), "ResNetConfig"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)
    probe("RS-21", A, "numpy integers in a ResNet config stay plain ints", lambda: ResNetConfig(
        d=tuple(np.array(good["d"], np.int64)), e=tuple(np.array(good["e"], np.float64)),
        w=tuple(np.array(good["w"], np.int8)), r=np.int32(28)), expect="accept",
        check=lambda c: (json.loads(c.to_json())["r"] == 28 and all(type(v) is int for v in c.w)
                         and sp.validate(c) is c, c.to_json()))
    probe("RS-22", A, "ResNet config JSON round trip of a sample", lambda: ResNetConfig.from_json(
        sp.sample(np.random.default_rng(1)).to_json()), expect="accept",
        check=lambda c: (c == sp.sample(np.random.default_rng(1)), c.to_json()))

    # ProxylessNAS configs (one-slot last group)
    pg = F.px_small.to_dict()
    pv = lambda **ch: F.px_space.validate(SubnetConfig(**{**pg, **ch}))  # noqa: E731
    cases = [
        ("PX-01", "ProxylessNAS kernel 7 (space 3/5)", lambda: pv(ks=[7] * len(pg["ks"])), "7"),
        ("PX-02", "ProxylessNAS expand 4 (space 3/6)", lambda: pv(e=[4] * len(pg["e"])), "4"),
        ("PX-03", "ProxylessNAS depth 3 (space 1/2)", lambda: pv(d=[3] * len(pg["d"])), "3"),
        ("PX-04", "ProxylessNAS last group depth 2 (one slot)", lambda: pv(d=pg["d"][:-1] + [2]), "d["),
        ("PX-05", "ProxylessNAS slots as if every group had two", lambda: pv(
            ks=[3] * (2 * len(pg["d"])), e=[3] * (2 * len(pg["d"]))), "ks"),
        ("PX-06", "ProxylessNAS resolution 30 (space 28)", lambda: pv(r=30), "r=30"),
        ("PX-07", "MobileNetV3 tiny config on the ProxylessNAS space", lambda: F.px_space.validate(F.mb_small),
         ["ks", "entries", "slots"]),
        ("PX-08", "ProxylessNAS config on the MobileNetV3 space", lambda: F.mb_space.validate(F.px_small),
         ["ks", "entries", "slots"]),
        ("PX-09", "ProxylessNAS restrict w (no width dimension)", lambda: F.px_space.restrict(w=[0]), "w"),
        ("PX-10", "ProxylessNAS OFA arch with a width list", lambda: SubnetConfig.from_ofa(
            {**F.px_small.to_ofa(), "wid": [1]}, r=28), "wid"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)

    # config_from_dict: the family is told by the keys
    cases = [
        ("CF-01", "config_from_dict of None", lambda: config_from_dict(None), "None"),
        ("CF-02", "config_from_dict of a list", lambda: config_from_dict([1]), "[1]"),
        ("CF-03", "config_from_dict with both w and ks", lambda: config_from_dict({**good, "ks": [3]}), ["w", "ks"]),
        ("CF-04", "config_from_dict of w only", lambda: config_from_dict({"w": [0]}), ["missing", "d"]),
        ("CF-05", "config_from_dict of an empty object", lambda: config_from_dict({}), "missing"),
        ("CF-06", "config_from_dict with w null and MBConv keys", lambda: config_from_dict(
            {**F.mb_small.to_dict(), "w": None}), "w"),
        ("CF-07", "config_from_dict string keys of numbers", lambda: config_from_dict({"1": 2}), "1"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)


# ====================================================================================== probes: specs
def probes_specs(F: SimpleNamespace) -> None:
    A = "spec"
    base = F.rn_spec.to_dict()
    rs = lambda **ch: ResNetSpec.from_dict({**base, **ch})  # noqa: E731
    cases = [
        ("SP-01", "ResNetSpec in_channels 0", lambda: rs(in_channels=0), "in_channels=0"),
        ("SP-02", "ResNetSpec num_classes a string", lambda: rs(num_classes="10"), "'10'"),
        ("SP-03", "ResNetSpec stem_width True", lambda: rs(stem_width=True), "True"),
        ("SP-04", "ResNetSpec no stages", lambda: rs(stage_widths=[], strides=[], base_depth=[]), "stage"),
        ("SP-05", "ResNetSpec stride 3", lambda: rs(strides=[1, 3, 2, 1]), "3"),
        ("SP-06", "ResNetSpec stem_stride a string", lambda: rs(stem_stride="2"), "'2'"),
        ("SP-07", "ResNetSpec max_pool a string", lambda: rs(max_pool="yes"), "max_pool"),
        ("SP-08", "ResNetSpec dropout NaN", lambda: rs(dropout=math.nan), "nan"),
        ("SP-09", "ResNetSpec bn_momentum NaN", lambda: rs(bn_momentum=math.nan), "bn_momentum"),
        ("SP-10", "ResNetSpec bn_eps negative", lambda: rs(bn_eps=-1.0), "bn_eps"),
        ("SP-11", "ResNetSpec divisor 0", lambda: rs(divisor=0), "divisor"),
        ("SP-12", "ResNetSpec divisor negative", lambda: rs(divisor=-8), "divisor"),
        ("SP-13", "ResNetSpec family mobilenetv3", lambda: rs(family="mobilenetv3"), "mobilenetv3"),
        ("SP-14", "ResNetSpec stage width 0", lambda: rs(stage_widths=[0, 64, 96, 128]), "stage_widths"),
        ("SP-15", "ResNetSpec stage width a string", lambda: rs(stage_widths=["a", 64, 96, 128]), "'a'"),
        ("SP-16", "ResNetSpec widths NaN", lambda: rs(widths=[math.nan]), "nan"),
        ("SP-17", "ResNetSpec width multiplier 0", lambda: rs(widths=[0.0, 1.0]), "widths"),
        ("SP-18", "ResNetSpec base depth 0", lambda: rs(base_depth=[0, 1, 1, 1]), "base_depth"),
        ("SP-19", "ResNetSpec negative depth choice", lambda: rs(d=[-1, 0]), "-1"),
        ("SP-20", "ResNetSpec unknown key", lambda: rs(stem_depth=2), "stem_depth"),
        ("SP-21", "ResNetSpec with its derived 'space' key", lambda: rs(space={}), "space"),
        ("SP-22", "ResNetSpec strides longer than stages", lambda: rs(strides=[1, 2, 2, 1, 1]), "strides"),
        ("SP-23", "ResNetSpec from a list", lambda: ResNetSpec.from_dict([1]), "malformed"),
        ("SP-24", "ResNetSpec resolutions empty", lambda: rs(r=[]), "r"),
        ("SP-25", "ResNetSpec a huge stem (2**40)", lambda: rs(stem_width=2 ** 40), "stem_width"),
        ("SP-26", "ResNetSpec widths a string", lambda: rs(widths="1.0"), "widths"),
        ("SP-27", "ResNetSpec divisor a float", lambda: rs(divisor=8.5), "divisor"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)
    from elastic.families import build_supernet
    probe("SP-28", A, "build_supernet of a ResNetSpec with divisor 0", lambda: build_supernet(rs(divisor=0)),
          needle="divisor")
    probe("SP-29", A, "build_supernet of a ResNetSpec with a stage width 'a'", lambda: build_supernet(
        rs(stage_widths=["a", 64, 96, 128])), needle="stage_widths")
    probe("SP-30", A, "build_supernet of a ResNetSpec with max_pool 'no' (truthy string)", lambda: build_supernet(
        rs(max_pool="no")), needle="max_pool")

    mb = model_zoo.get_spec("ofa_mbv3_tiny").to_dict()
    px = F.px_spec.to_dict()
    cases = [
        ("SF-01", "spec_from_dict family 'vgg'", lambda: spec_from_dict({**base, "family": "vgg"}), "vgg"),
        ("SF-02", "spec_from_dict family a number", lambda: spec_from_dict({**base, "family": 5}), "5"),
        ("SF-03", "spec_from_dict family a list (unhashable)", lambda: spec_from_dict({**base, "family": ["resnet"]}),
         "resnet"),
        ("SF-04", "spec_from_dict family null", lambda: spec_from_dict({**base, "family": None}), "None"),
        ("SF-05", "spec_from_dict ResNet spec without family", lambda: spec_from_dict(
            {k: v for k, v in base.items() if k != "family"}), ["malformed", "stage_widths"]),
        ("SF-06", "spec_from_dict MobileNetV3 spec labelled resnet", lambda: spec_from_dict({**mb, "family": "resnet"}),
         "malformed"),
        ("SF-07", "spec_from_dict ProxylessNAS spec labelled resnet", lambda: spec_from_dict(
            {**px, "family": "resnet"}), "malformed"),
        ("SF-08", "spec_from_dict only a family", lambda: spec_from_dict({"family": "resnet"}), "malformed"),
        ("SF-09", "spec_from_dict of a string", lambda: spec_from_dict("resnet"), "malformed"),
        ("SF-10", "spec_from_dict ProxylessNAS with an unknown stage key", lambda: spec_from_dict(
            {**px, "stages": [{**px["stages"][0], "slotz": 1}] + px["stages"][1:]}), "slotz"),
        ("SF-11", "spec_from_dict ProxylessNAS with stage slots 0", lambda: spec_from_dict(
            {**px, "stages": px["stages"][:-1] + [{**px["stages"][-1], "slots": 0}]}), "slots"),
        ("SF-12", "spec_from_dict ProxylessNAS family typo", lambda: spec_from_dict({**px, "family": "proxyless"}),
         "proxyless"),
        ("SF-13", "get_family of a dict", lambda: get_family({"name": "resnet"}), "resnet"),
        ("SF-14", "spec_from_dict ProxylessNAS stages not a list", lambda: spec_from_dict({**px, "stages": 5}),
         "stages"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)
    probe("SF-15", A, "spec_from_dict round trip of the ProxylessNAS spec", lambda: spec_from_dict(px),
          expect="accept", check=lambda s: (s == F.px_spec and s.family == "proxylessnas", s.family))
    probe("SF-16", A, "spec_from_dict round trip of the ResNet spec", lambda: spec_from_dict(base), expect="accept",
          check=lambda s: (s == F.rn_spec, s.family))

    # get_spec / get_supernet options of the new recipes
    cases = [
        ("GS-01", "ofa_resnet_tiny resolution 0", lambda: model_zoo.get_spec("ofa_resnet_tiny", resolutions=[0]),
         "resolutions=[0]"),
        ("GS-02", "ofa_resnet_tiny resolution 28.0", lambda: model_zoo.get_spec("ofa_resnet_tiny", resolutions=[28.0]),
         "28.0"),
        ("GS-03", "ofa_resnet_tiny num_classes 0", lambda: model_zoo.get_spec("ofa_resnet_tiny", num_classes=0),
         "num_classes=0"),
        ("GS-04", "ofa_resnet_tiny num_classes 2.5", lambda: model_zoo.get_spec("ofa_resnet_tiny", num_classes=2.5),
         "2.5"),
        ("GS-05", "ofa_resnet_tiny in_channels None", lambda: model_zoo.get_spec("ofa_resnet_tiny", in_channels=None),
         "None"),
        ("GS-06", "ofa_resnet_tiny dropout 1.0", lambda: model_zoo.get_spec("ofa_resnet_tiny", dropout=1.0), "1.0"),
        ("GS-07", "ofa_resnet_tiny dropout a string", lambda: model_zoo.get_spec("ofa_resnet_tiny", dropout="0"),
         "'0'"),
        ("GS-08", "ofa_resnet_tiny unknown option width_mult",
         lambda: model_zoo.get_spec("ofa_resnet_tiny", width_mult=2), "width_mult"),
        ("GS-09", "ofa_resnet50 resolutions a tuple of strings",
         lambda: model_zoo.get_spec("ofa_resnet50", resolutions=("224",)), "'224'"),
        ("GS-10", "ofa_resnet50 num_classes 10**7", lambda: model_zoo.get_spec("ofa_resnet50", num_classes=10 ** 7),
         "10000000"),
        ("GS-11", "ofa_proxyless_d234_e346_k357_w1.3 in_channels 0",
         lambda: model_zoo.get_spec("ofa_proxyless_d234_e346_k357_w1.3", in_channels=0), "in_channels"),
        ("GS-12", "ofa_proxyless_tiny dropout -0.1", lambda: model_zoo.get_spec("ofa_proxyless_tiny", dropout=-0.1),
         "-0.1"),
        ("GS-13", "ofa_proxyless_tiny num_classes True", lambda: model_zoo.get_spec("ofa_proxyless_tiny",
                                                                                   num_classes=True), "True"),
        ("GS-14", "ofa_proxyless_tiny resolutions a set", lambda: model_zoo.get_spec("ofa_proxyless_tiny",
                                                                                    resolutions={28, 32}), "resolutions"),
        ("GS-15", "get_supernet name None", lambda: model_zoo.get_supernet(None), "None"),
        ("GS-16", "get_supernet name with a trailing space", lambda: model_zoo.get_supernet("ofa_resnet_tiny "),
         "ofa_resnet_tiny "),
        ("GS-17", "get_supernet recipe of a checkpoint name", lambda: model_zoo.get_supernet("ofa_mbv3_tiny.fmnist"),
         "ofa_mbv3_tiny.fmnist"),
        ("GS-18", "ofa_resnet_tiny resolutions a numpy array",
         lambda: model_zoo.get_spec("ofa_resnet_tiny", resolutions=np.array([28, 32])), "resolutions"),
        ("GS-19", "ofa_resnet_tiny dropout NaN", lambda: model_zoo.get_spec("ofa_resnet_tiny", dropout=math.nan),
         "nan"),
        ("GS-20", "ofa_proxyless_tiny num_classes -1", lambda: model_zoo.get_spec("ofa_proxyless_tiny",
                                                                                 num_classes=-1), "-1"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)
    probe("GS-21", A, "ofa_resnet_tiny at 64 px with numpy resolutions", lambda: model_zoo.get_spec(
        "ofa_resnet_tiny", resolutions=[np.int64(64)]), expect="accept",
        check=lambda s: (s.r == (64,) and type(s.r[0]) is int, str(s.r)))
    probe("GS-22", A, "ofa_resnet50 spec at 3 classes", lambda: model_zoo.get_spec("ofa_resnet50", num_classes=3),
          expect="accept", check=lambda s: (s.num_classes == 3 and s.family == "resnet", s.family))

    # supernets of the new families used with the wrong inputs
    x = torch.zeros(1, 1, 28, 28)
    cases = [
        ("NT-01", "ResNet forward with an MBConv config", lambda: F.rn_net(x, F.mb_small), "ResNetConfig"),
        ("NT-02", "ResNet forward with 3 channels", lambda: F.rn_net(torch.zeros(1, 3, 28, 28), F.rn_small),
         "input shape"),
        ("NT-03", "ResNet forward float64", lambda: F.rn_net(x.double(), F.rn_small), "float64"),
        ("NT-04", "ResNet forward 3-D input", lambda: F.rn_net(torch.zeros(1, 28, 28), F.rn_small), "input shape"),
        ("NT-05", "ResNet extract of a ProxylessNAS config", lambda: F.rn_net.extract(F.px_small), "ResNetConfig"),
        ("NT-06", "ProxylessNAS forward with a ResNet config", lambda: F.px_net(x, F.rn_small), "SubnetConfig"),
        ("NT-07", "ProxylessNAS extract of a ResNet config", lambda: F.px_net.extract(F.rn_small), "SubnetConfig"),
        ("NT-08", "ResNet flops of an MBConv config", lambda: F.rn_net.flops(F.mb_small), "ResNetConfig"),
        ("NT-09", "ResNet params of an off-space config", lambda: F.rn_net.params(
            ResNetConfig(**{**F.rn_small.to_dict(), "r": 64})), "r=64"),
        ("NT-10", "ResNet forward with a config dict", lambda: F.rn_net(x, F.rn_small.to_dict()), "ResNetConfig"),
        ("NT-11", "ResNet forward on an integer tensor", lambda: F.rn_net(torch.zeros(1, 1, 28, 28, dtype=torch.long),
                                                                         F.rn_small), "int64"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)

    from elastic.batch import ConfigBatch, CostGrid, genome_length
    from elastic.resnet.spec import costs as rn_costs
    cases = [
        ("CB-01", "ConfigBatch of an MBConv config in the ResNet space",
         lambda: ConfigBatch.from_configs(F.rn_space, [F.rn_small, F.mb_small]), "SubnetConfig"),
        ("CB-02", "ConfigBatch of a ResNet config in the ProxylessNAS space",
         lambda: ConfigBatch.from_configs(F.px_space, [F.rn_small]), "ResNetConfig"),
        ("CB-03", "ResNet genome of the wrong length",
         lambda: ConfigBatch.from_genome(F.rn_space, np.zeros((1, 3), np.int8)), "genome"),
        ("CB-04", "ResNet genome with gene 50",
         lambda: ConfigBatch.from_genome(F.rn_space, np.full((1, genome_length(F.rn_space)), 50, np.int8)), "gene"),
        ("CB-05", "ResNet costs of an MBConv config", lambda: rn_costs(F.rn_spec, F.mb_small), "ResNetConfig"),
        ("CB-06", "CostGrid of a ResNet spec used for a ProxylessNAS batch",
         lambda: CostGrid.build(F.rn_spec).macs(ConfigBatch.from_configs(F.px_space, [F.px_small])), "space"),
        ("CB-07", "random ResNet batch of -1", lambda: ConfigBatch.random(F.rn_space, -1, np.random.default_rng(0)),
         "-1"),
        ("CB-08", "ResNet genome of floats", lambda: ConfigBatch.from_genome(F.rn_space, np.zeros((1, 30))), "genome"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)

    # spaces built directly
    cases = [
        ("SS-01", "ResNetSpace stem_d 1 (not min/max)", lambda: ResNetSpace([0, 1, 2], [0.2], [1.0], [28], [1], stem_d=[1]),
         "stem_d"),
        ("SS-02", "ResNetSpace w index 3 of 1 width", lambda: ResNetSpace([0, 1], [0.2], [1.0], [28], [1], w=[3]), "w"),
        ("SS-03", "ResNetSpace empty depths", lambda: ResNetSpace([], [0.2], [1.0], [28], [1]), "d"),
        ("SS-04", "ResNetSpace base depth a string", lambda: ResNetSpace([0], [0.2], [1.0], [28], "11"),
         "base_depth"),
        ("SS-05", "ResNetSpace.from_dict with a typo key stem_depth", lambda: ResNetSpace.from_dict(
            {**F.rn_space.to_dict(), "stem_depth": [0]}), "stem_depth"),
        ("SS-06", "ResNetSpace.from_dict of None", lambda: ResNetSpace.from_dict(None), "missing"),
        ("SS-07", "ResNetSpace resolution a float", lambda: ResNetSpace([0], [0.2], [1.0], [28.5], [1]), "28.5"),
        ("SS-08", "ResNetSpace depths as a string", lambda: ResNetSpace("012", [0.2], [1.0], [28], [1]), "'012'"),
        ("SS-09", "ResNetSpace depth True", lambda: ResNetSpace([True], [0.2], [1.0], [28], [1]), "True"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)


# ====================================================================================== probes: checkpoints
def probes_checkpoints(F: SimpleNamespace) -> None:
    A = "checkpoint"
    C = F.root / "ck"
    rn, px = F.rn_ckpt, F.px_ckpt
    load = model_zoo.load_checkpoint

    def edited(name: str, src: Path, fn: Callable[[dict], Any]) -> Path:
        return edit_sidecar(src, C / name, fn)

    def setp(path: str, value: Any) -> Callable[[dict], None]:
        def f(meta: dict) -> None:
            obj = meta
            keys = path.split(".")
            for k in keys[:-1]:
                obj = obj[k]
            if value is _DEL:
                obj.pop(keys[-1], None)
            else:
                obj[keys[-1]] = value
        return f

    cases = [
        ("CK-01", "ResNet sidecar spec family -> mobilenetv3", rn, setp("spec.family", "mobilenetv3"), "spec"),
        ("CK-02", "ResNet sidecar recipe -> ofa_proxyless_tiny", rn, setp("recipe", "ofa_proxyless_tiny"),
         "ofa_proxyless_tiny"),
        ("CK-03", "ResNet sidecar recipe -> ofa_mbv3_tiny (another family)", rn, setp("recipe", "ofa_mbv3_tiny"),
         "ofa_mbv3_tiny"),
        ("CK-04", "ResNet sidecar recipe -> ofa_resnet50", rn, setp("recipe", "ofa_resnet50"), "ofa_resnet50"),
        ("CK-05", "ResNet sidecar three stages", rn, lambda m: m["spec"].update(
            stage_widths=[32, 64, 96], strides=[1, 2, 2], base_depth=[1, 1, 1]), "stage_widths"),
        ("CK-06", "ResNet sidecar depth choices 0/1", rn, setp("spec.d", [0, 1]), "d"),
        ("CK-07", "ResNet sidecar widths NaN", rn, setp("spec.widths", [math.nan]), "widths"),
        ("CK-08", "ResNet sidecar num_classes 11", rn, setp("spec.num_classes", 11), ["classifier", "num_classes"]),
        ("CK-09", "ResNet sidecar in_channels 3", rn, setp("spec.in_channels", 3), ["in_channels", "channel"]),
        ("CK-10", "ResNet sidecar stem stride 1", rn, setp("spec.stem_stride", 1), "stem_stride"),
        ("CK-11", "ResNet sidecar max_pool a string", rn, setp("spec.max_pool", "yes"), "max_pool"),
        ("CK-12", "ResNet sidecar spec without family", rn, setp("spec.family", _DEL), "spec"),
        ("CK-13", "ResNet sidecar recipe a number", rn, setp("recipe", 5), "recipe"),
        ("CK-14", "ResNet sidecar recipe null", rn, setp("recipe", None), "recipe"),
        ("CK-15", "ResNet sidecar preprocess mean of 3 channels", rn, setp("preprocess.mean", [0.1, 0.2, 0.3]),
         "mean"),
        ("CK-16", "ResNet sidecar preprocess std 0", rn, setp("preprocess.std", [0]), "std"),
        ("CK-17", "ResNet sidecar preprocess in_channels a string", rn, setp("preprocess.in_channels", "1"),
         "in_channels"),
        ("CK-18", "ResNet sidecar preprocess image_size 7", rn, setp("preprocess.image_size", 7), "image_size"),
        ("CK-19", "ResNet sidecar format missing", rn, setp("format", _DEL), "format"),
        ("CK-20", "ResNet sidecar spec a string", rn, setp("spec", "resnet"), "spec"),
        ("CK-21", "ProxylessNAS sidecar family -> resnet", px, setp("spec.family", "resnet"), "spec"),
        ("CK-22", "ProxylessNAS sidecar family -> mobilenetv3", px, setp("spec.family", "mobilenetv3"), "family"),
        ("CK-23", "ProxylessNAS sidecar recipe -> ofa_mbv3_tiny", px, setp("recipe", "ofa_mbv3_tiny"),
         "ofa_mbv3_tiny"),
        ("CK-24", "ProxylessNAS sidecar recipe -> ofa_resnet_tiny", px, setp("recipe", "ofa_resnet_tiny"),
         "ofa_resnet_tiny"),
        ("CK-25", "ProxylessNAS sidecar last-stage slots 2", px, lambda m: m["spec"]["stages"][-1].update(slots=2),
         ["slots", "stages"]),
        ("CK-26", "ProxylessNAS sidecar kernels 3/5/7", px, setp("spec.ks", [3, 5, 7]), "ks"),
        ("CK-27", "ProxylessNAS sidecar stem act relu", px, setp("spec.stem_act", "relu"), "stem_act"),
        ("CK-28", "ProxylessNAS sidecar bn_eps 1e-5 (the MBv3 default)", px, setp("spec.bn_eps", 1e-5), "bn_eps"),
        ("CK-29", "ProxylessNAS sidecar recipe with a trailing newline", px, setp("recipe", "ofa_proxyless_tiny\n"),
         "recipe"),
        ("CK-30", "ResNet sidecar spec dropout 2.0", rn, setp("spec.dropout", 2.0), "dropout"),
    ]
    for pid, desc, src, fn, needle in cases:
        path = edited(pid, src, fn)
        probe(pid, A, desc, lambda p=path: load(p), needle=needle)

    # consistent sidecars with edited weights
    rn_w = model_zoo.load_checkpoint(rn).state_dict()
    px_w = model_zoo.load_checkpoint(px).state_dict()

    def weights_case(pid: str, desc: str, src: Path, tensors: dict, needle: Any, expect: str = "error") -> None:
        path = copy_ckpt(src, C / pid)
        reweigh(path, {k: v.contiguous() for k, v in tensors.items()})
        probe(pid, A, desc, lambda: load(path), needle=needle, expect=expect)

    k0 = next(k for k in rn_w if k.endswith("weight") and rn_w[k].dim() == 4)
    weights_case("CW-01", "ResNet weights holding NaN (sha256 consistent)", rn,
                 {**rn_w, k0: torch.full_like(rn_w[k0], math.nan)}, ["NaN", "nan"])
    weights_case("CW-02", "ResNet weights with an extra tensor", rn, {**rn_w, "bogus": torch.zeros(1)}, "bogus")
    weights_case("CW-03", "ResNet weights lacking one tensor", rn, {k: v for k, v in rn_w.items() if k != k0}, k0)
    weights_case("CW-04", "ProxylessNAS weights under a ResNet sidecar", rn, px_w, ["fit", "architecture"])
    path5 = copy_ckpt(rn, C / "CW-05")
    reweigh(path5, {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in rn_w.items()})
    probe("CW-05", A, "ResNet weights stored as float16 load as float32 (valid)", lambda: load(path5), expect="accept",
          check=lambda n: (all(p.dtype == torch.float32 for p in n.parameters()), "float32 parameters"))
    weights_case("CW-06", "ResNet weights with a transposed tensor", rn,
                 {**rn_w, k0: rn_w[k0].transpose(0, 1).contiguous()}, k0)
    weights_case("CW-07", "ProxylessNAS weights holding infinity", px,
                 {**px_w, "classifier.weight": torch.full_like(px_w["classifier.weight"], math.inf)},
                 ["inf", "NaN"])
    tr = copy_ckpt(rn, C / "CW-08")
    w, _ = checkpoint_paths(tr)
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    meta = json.loads(checkpoint_paths(tr)[1].read_text())
    from elastic.fileio import sha256_file
    meta["sha256"] = sha256_file(w)
    checkpoint_paths(tr)[1].write_text(json.dumps(meta))
    probe("CW-08", A, "ResNet weights truncated (sha256 consistent)", lambda: load(tr), needle="safetensors")
    probe("CW-09", A, "load with map_location 'banana'", lambda: load(rn, map_location="banana"), needle="banana")
    probe("CW-10", A, "load with map_location cuda:7 (no such GPU)", lambda: load(rn, map_location="cuda:7"),
          needle="cuda")
    probe("CW-11", A, "load a checkpoint given as its folder", lambda: load(F.root / "rn"), needle="rn")

    # save_checkpoint and publish_checkpoint for the new families
    good = C / "good_rn"
    copy_ckpt(rn, good)
    gw, gs = checkpoint_paths(good)
    probe("SV-01", A, "save a ResNet supernet over a good checkpoint with a NaN preprocess", lambda: save_checkpoint(
        F.rn_net, good, extra={"preprocess": {"mean": [math.nan], "std": [1.0]}}), needle="JSON", guard=[gw, gs])
    probe("SV-02", A, "save a static extracted ResNet subnet", lambda: save_checkpoint(
        F.rn_net.extract(F.rn_small), C / "static"), needle="supernet",
          must_not_exist=[C / "static.safetensors"])
    probe("SV-03", A, "save a ResNet supernet whose recipe was cleared", lambda: save_checkpoint(
        _norecipe(F.rn_net), C / "norecipe"), needle="recipe", must_not_exist=[C / "norecipe.safetensors"])
    probe("SV-04", A, "save with extra 'spec' (reserved)", lambda: save_checkpoint(F.px_net, good, extra={"spec": 1}),
          needle="spec", guard=[gw, gs])
    probe("SV-05", A, "save with a metrics tensor over a good checkpoint", lambda: save_checkpoint(
        F.rn_net, good, metrics={"top1": torch.tensor(0.5)}), needle="JSON", guard=[gw, gs])
    zoo_dir = F.root / "zoo_dir"
    zoo_dir.mkdir()
    import model_zoo.checkpoint as mck
    real = mck.WEIGHTS_DIR

    def publish(src: Path, name: str, **kw: Any) -> Any:
        mck.WEIGHTS_DIR = zoo_dir
        try:
            return model_zoo.publish_checkpoint(src, name, **kw)
        finally:
            mck.WEIGHTS_DIR = real
    probe("PB-01", A, "publish a ResNet checkpoint under a ProxylessNAS name", lambda: publish(rn, "ofa_proxyless_tiny.x"),
          needle="ofa_resnet_tiny")
    probe("PB-02", A, "publish a ResNet checkpoint (valid)", lambda: publish(rn, "ofa_resnet_tiny.probe"),
          expect="accept", check=lambda p: (Path(p).is_file() and p.parent == zoo_dir, str(p)))
    zp = [zoo_dir / "ofa_resnet_tiny.probe.safetensors", zoo_dir / "ofa_resnet_tiny.probe.json"]
    probe("PB-03", A, "publish over a taken zoo name without overwrite", lambda: publish(rn, "ofa_resnet_tiny.probe"),
          needle="taken", guard=zp)
    probe("PB-04", A, "publish a broken sidecar over a taken name with overwrite", lambda: publish(
        C / "CK-02", "ofa_resnet_tiny.probe", overwrite=True), needle="recipe", guard=zp)
    probe("PB-05", A, "publish name with a path separator", lambda: publish(rn, "ofa_resnet_tiny/../x.y"),
          needle="ofa_resnet_tiny/../x.y")


class _Del:
    pass


_DEL = _Del()


def _norecipe(net: torch.nn.Module) -> torch.nn.Module:
    import copy
    n = copy.deepcopy(net)
    n.recipe = None
    return n


# ====================================================================================== probes: OFA weights
def probes_ofa(F: SimpleNamespace) -> None:
    A = "ofa-weights"
    from model_zoo.ofa_weights import ofa_key, to_ofa_state_dict
    O = F.root / "ofa"
    O.mkdir()
    rn_sd = to_ofa_state_dict(F.rn_net)
    px_sd = to_ofa_state_dict(F.px_net)
    mb_sd = to_ofa_state_dict(model_zoo.get_supernet("ofa_mbv3_tiny"))

    def save(name: str, obj: Any) -> Path:
        p = O / name
        torch.save(obj, p)
        return p

    good_rn = save("rn.pth", {"state_dict": rn_sd})
    good_px = save("px.pth", {"state_dict": px_sd})
    imp = model_zoo.import_ofa_checkpoint
    cls_key = next(k for k in rn_sd if k.startswith("classifier") and k.endswith("weight"))
    some = next(k for k in rn_sd if k.endswith("conv.weight"))
    probe("OW-01", A, "import the tiny ResNet's own OFA export (valid)", lambda: imp("ofa_resnet_tiny", good_rn),
          expect="accept", check=lambda n: (all(torch.equal(a, b) for a, b in zip(
              n.state_dict().values(), F.rn_net.state_dict().values())), "weights equal"))
    probe("OW-02", A, "import the tiny ProxylessNAS's own OFA export (valid)", lambda: imp("ofa_proxyless_tiny", good_px),
          expect="accept", check=lambda n: (all(torch.equal(a, b) for a, b in zip(
              n.state_dict().values(), F.px_net.state_dict().values())), "weights equal"))
    half = O / "trunc.pth"
    half.write_bytes(good_rn.read_bytes()[: good_rn.stat().st_size // 2])
    cases = [
        ("OW-03", "truncated ResNet OFA file", lambda: imp("ofa_resnet_tiny", half), "trunc.pth"),
        ("OW-04", "ResNet OFA file missing a tensor", lambda: imp("ofa_resnet_tiny", save(
            "miss.pth", {k: v for k, v in rn_sd.items() if k != some})), "missing"),
        ("OW-05", "ResNet OFA file with a wrong shape", lambda: imp("ofa_resnet_tiny", save(
            "shape.pth", {**rn_sd, some: torch.zeros(1)})), "shape"),
        ("OW-06", "MobileNetV3 OFA file into ofa_resnet_tiny", lambda: imp("ofa_resnet_tiny", save(
            "mb.pth", mb_sd)), "does not match"),
        ("OW-07", "ResNet OFA file into ofa_proxyless_tiny", lambda: imp("ofa_proxyless_tiny", good_rn),
         "does not match"),
        ("OW-08", "ProxylessNAS OFA file into ofa_mbv3_tiny", lambda: imp("ofa_mbv3_tiny", good_px), "does not match"),
        ("OW-09", "OFA file with a number among the tensors", lambda: imp("ofa_resnet_tiny", save(
            "num.pth", {**rn_sd, "x": 3})), "tensors"),
        ("OW-10", "OFA classifier weight a 0-d tensor", lambda: imp("ofa_resnet_tiny", save(
            "scalar.pth", {**rn_sd, cls_key: torch.tensor(1.0)})), cls_key),
        ("OW-11", "OFA classifier weight with 0 classes", lambda: imp("ofa_resnet_tiny", save(
            "zero.pth", {**rn_sd, cls_key: torch.zeros(0, rn_sd[cls_key].shape[1])})), ["num_classes", "0"]),
        ("OW-12", "OFA file with an integer key", lambda: imp("ofa_resnet_tiny", save(
            "intkey.pth", {**rn_sd, 7: torch.zeros(1)})), "7"),
        ("OW-13", "OFA file nested state_dict twice", lambda: imp("ofa_resnet_tiny", save(
            "nested.pth", {"state_dict": {"state_dict": rn_sd}})), "state dict"),
        ("OW-14", "OFA file holding NaN weights", lambda: imp("ofa_resnet_tiny", save(
            "nan.pth", {**rn_sd, some: torch.full_like(rn_sd[some], math.nan)})), ["NaN", "nan"]),
        ("OW-15", "OFA import into an unknown recipe", lambda: imp("ofa_resnet", good_rn), "ofa_resnet"),
        ("OW-16", "OFA import with resolutions '28'", lambda: imp("ofa_resnet_tiny", good_rn, resolutions="28"),
         "'28'"),
        ("OW-17", "OFA import with num_classes disagreeing with the file", lambda: imp(
            "ofa_resnet_tiny", good_rn, num_classes=5), "shape"),
        ("OW-18", "OFA import of a folder", lambda: imp("ofa_resnet_tiny", O), str(O)),
        ("OW-19", "OFA file that is a pickled object", lambda: imp("ofa_resnet_tiny", _pickled(O / "evil.pth")),
         "weights-only"),
        ("OW-20", "OFA file holding a list of tensors", lambda: imp("ofa_resnet_tiny", save(
            "list.pth", list(rn_sd.values()))), "state dict"),
        ("OW-21", "OFA classifier of 2,000,000 classes", lambda: imp("ofa_resnet_tiny", save(
            "huge.pth", {**rn_sd, cls_key: torch.zeros(2_000_000, 1)})), "2000000"),
        ("OW-22", "OFA int64 weight tensor", lambda: imp("ofa_resnet_tiny", save(
            "int.pth", {**rn_sd, some: rn_sd[some].long()})), ["int64", "dtype", "Long"]),
        ("OW-23", "ofa_key of an unknown family", lambda: ofa_key("blocks.0.conv1.weight", "vgg"), "vgg"),
        ("OW-24", "ofa_key of a foreign key", lambda: ofa_key("first_block.dw_conv.weight", "resnet"), "first_block"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)

    exp = model_zoo.export_ofa_checkpoint
    keep = O / "keep.pth"
    shutil.copy(good_rn, keep)
    probe("OE-01", A, "export_ofa_checkpoint of a plain Linear over a good file", lambda: exp(torch.nn.Linear(2, 2), keep),
          needle="supernet", guard=[keep])
    probe("OE-02", A, "export_ofa_checkpoint of None over a good file", lambda: exp(None, keep), needle="None",
          guard=[keep])
    probe("OE-03", A, "export_ofa_checkpoint of an extracted ResNet subnet", lambda: exp(
        F.rn_net.extract(F.rn_small), keep), needle="supernet", guard=[keep])
    probe("OE-04", A, "export_ofa_checkpoint onto a folder", lambda: exp(F.rn_net, O), needle=str(O))
    probe("OE-05", A, "export_ofa_checkpoint under a file", lambda: exp(F.rn_net, keep / "x.pth"), needle="keep.pth",
          guard=[keep])
    probe("OE-06", A, "export_ofa_checkpoint of a ResNet with NaN weights over a good file",
          lambda: exp(_nan_net(F.rn_net), keep), needle=["NaN", "nan"], guard=[keep])
    probe("OE-07", A, "export then import a ProxylessNAS supernet (valid)", lambda: imp(
        "ofa_proxyless_tiny", exp(F.px_net, O / "px2.pth")), expect="accept",
          check=lambda n: (torch.equal(n.classifier.weight, F.px_net.classifier.weight), "classifier equal"))


def _pickled(path: Path) -> Path:
    import pickle
    path.write_bytes(pickle.dumps({"state_dict": {"a": SimpleNamespace(x=1)}}))
    return path


def _nan_net(net: torch.nn.Module) -> torch.nn.Module:
    import copy
    n = copy.deepcopy(net)
    with torch.no_grad():
        next(iter(n.parameters())).fill_(math.nan)
    return n


# ====================================================================================== probes: training recipes
def probes_training(F: SimpleNamespace) -> None:
    A = "training"
    from elastic.training.schedule import Phase
    from model_zoo.training_recipes import recipe_from_dict
    RN = {"supernet": "ofa_resnet_tiny", "strategy": "progressive",
          "schedule": {"epochs": {"teacher": 1, "depth1": 1, "depth2": 1, "expand1": 1, "expand2": 1, "width1": 1,
                                  "width2": 1}}}
    PX = {"supernet": "ofa_proxyless_tiny", "strategy": "progressive",
          "schedule": {"epochs": {"teacher": 1, "kernel": 1, "depth1": 1, "expand1": 1}}}
    ph = lambda sup, **kw: recipe_from_dict({"supernet": sup, "phase": [{"name": "a", "epochs": 1, "lr": 0.1, **kw}]})  # noqa: E731
    cases = [
        ("TR-01", "ResNet progressive epochs width3", lambda: recipe_from_dict(
            {**RN, "schedule": {"epochs": {"width3": 1}}}), "width3"),
        ("TR-02", "ResNet progressive epochs expand3", lambda: recipe_from_dict(
            {**RN, "schedule": {"epochs": {"expand3": 1}}}), "expand3"),
        ("TR-03", "ProxylessNAS progressive epochs width1 (no width)", lambda: recipe_from_dict(
            {**PX, "schedule": {"epochs": {"width1": 1}}}), "width1"),
        ("TR-05", "ResNet phase with kernels", lambda: ph("ofa_resnet_tiny", ks=[3]), "ks"),
        ("TR-06", "ResNet phase width index 5", lambda: ph("ofa_resnet_tiny", w=[5]), "5"),
        ("TR-07", "ResNet phase width index a string", lambda: ph("ofa_resnet_tiny", w=["0"]), "w="),
        ("TR-08", "ResNet phase depth without the largest", lambda: ph("ofa_resnet_tiny", d=[0]), "largest"),
        ("TR-09", "ResNet phase expand 0.3", lambda: ph("ofa_resnet_tiny", e=[0.3]), "0.3"),
        ("TR-10", "ProxylessNAS phase expand 4", lambda: ph("ofa_proxyless_tiny", e=[4]), "4"),
        ("TR-11", "ProxylessNAS phase kernel 7", lambda: ph("ofa_proxyless_tiny", ks=[7]), "7"),
        ("TR-12", "ProxylessNAS phase width", lambda: ph("ofa_proxyless_tiny", w=[0]), "w"),
        ("TR-13", "ProxylessNAS phase resolution 30", lambda: ph("ofa_proxyless_tiny", r=[30]), "30"),
        ("TR-14", "ResNet phase fixed subnet of ProxylessNAS", lambda: ph(
            "ofa_resnet_tiny", subnet=F.px_small.to_dict()), "SubnetConfig"),
        ("TR-15", "ProxylessNAS phase fixed subnet of ResNet", lambda: ph(
            "ofa_proxyless_tiny", subnet=F.rn_small.to_dict()), "ResNetConfig"),
        ("TR-16", "ResNet phase fixed subnet off the space", lambda: ph(
            "ofa_resnet_tiny", subnet={**F.rn_small.to_dict(), "r": 64}), "64"),
        ("TR-17", "ResNet phase fixed subnet with NaN ratio", lambda: ph(
            "ofa_resnet_tiny", subnet={**F.rn_small.to_dict(), "e": [math.nan] * len(F.rn_small.e)}), "nan"),
        ("TR-18", "ResNet phase fixed subnet a string", lambda: ph("ofa_resnet_tiny", subnet="smallest"),
         "subnet"),
        ("TR-19", "ResNet supernet_options widths (not an option)", lambda: recipe_from_dict(
            {**RN, "supernet_options": {"widths": [1.0]}}), "widths"),
        ("TR-20", "ResNet supernet_options dropout 1.5", lambda: recipe_from_dict(
            {**RN, "supernet_options": {"dropout": 1.5}}), "1.5"),
        ("TR-21", "supernet name typo ofa_resnet", lambda: recipe_from_dict({**RN, "supernet": "ofa_resnet"}),
         "ofa_resnet"),
        ("TR-22", "ResNet sandwich with per-phase epochs", lambda: recipe_from_dict(
            {"supernet": "ofa_resnet_tiny", "strategy": "sandwich", "schedule": {"epochs": {"teacher": 1}}}),
         "epochs"),
        ("TR-23", "ResNet schedule subnets_per_step 0", lambda: recipe_from_dict(
            {**RN, "schedule": {**RN["schedule"], "subnets_per_step": 0}}), "subnets_per_step"),
        ("TR-24", "ResNet schedule subnets_per_step 10**9", lambda: recipe_from_dict(
            {**RN, "schedule": {**RN["schedule"], "subnets_per_step": 10 ** 9}}), "subnets_per_step"),
        ("TR-25", "ResNet schedule unknown key widths", lambda: recipe_from_dict(
            {**RN, "schedule": {**RN["schedule"], "widths": [0]}}), "widths"),
        ("TR-26", "ResNet schedule lr 1e10", lambda: recipe_from_dict(
            {**RN, "schedule": {**RN["schedule"], "lr": 1e10}}), "lr"),
        ("TR-27", "ResNet schedule kd_weight -1", lambda: recipe_from_dict(
            {**RN, "schedule": {**RN["schedule"], "kd_weight": -1.0}}), "kd_weight"),
        ("TR-28", "phase name empty", lambda: ph("ofa_resnet_tiny", name=""), "name"),
        ("TR-29", "phase name with a newline", lambda: recipe_from_dict({"supernet": "ofa_resnet_tiny", "phase": [
            {"name": "a\nb", "epochs": 1, "lr": 0.1}]}), "name"),
        ("TR-30", "ResNet train eval_random_subnets -1", lambda: recipe_from_dict(
            {**RN, "train": {"eval_random_subnets": -1}}), "eval_random_subnets"),
        ("TR-31", "ResNet train seed 2**70", lambda: recipe_from_dict({**RN, "train": {"seed": 2 ** 70}}), "seed"),
        ("TR-32", "ResNet phase sampler sandwich with one subnet", lambda: ph(
            "ofa_resnet_tiny", sampler="sandwich"), "subnets_per_step"),
        ("TR-33", "ResNet phase w as a dict", lambda: ph("ofa_resnet_tiny", w={"0": 1}), "w="),
        ("TR-34", "ResNet data image_size 7", lambda: recipe_from_dict({**RN, "data": {"image_size": 7}}),
         "image_size"),
        ("TR-35", "ResNet phase kd_source 'teacher2'", lambda: ph("ofa_resnet_tiny", kd_source="teacher2"),
         "teacher2"),
        ("TR-36", "Phase w of bools", lambda: Phase("a", 1, 0.1, w=[True]).space(F.rn_space), "True"),
        ("TR-37", "Phase restricting w on the MobileNetV3 space", lambda: Phase("a", 1, 0.1, w=[0]).space(F.mb_space),
         "w"),
        ("TR-38", "ResNet phase resolution rule sandwich with random sampler", lambda: ph(
            "ofa_resnet_tiny", resolution="sandwich"), "sandwich"),
        ("TR-39", "ProxylessNAS schedule epochs as a list", lambda: recipe_from_dict(
            {**PX, "schedule": {"epochs": [1, 2]}}), "epochs"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)
    probe("TR-04", A, "ProxylessNAS progressive epochs depth2 (a phase of a two-depth space; valid)",
          lambda: recipe_from_dict({**PX, "schedule": {"epochs": {"depth2": 1}}}), expect="accept",
          check=lambda r: ("depth2" in [p.name for p in r.phases], [p.name for p in r.phases]))
    probe("TR-40", A, "the built-in fmnist_resnet_tiny recipe loads", lambda: _load_recipe("fmnist_resnet_tiny"),
          expect="accept", check=lambda r: (r.supernet == "ofa_resnet_tiny" and len(r.phases) == 7,
                                            [p.name for p in r.phases]))
    probe("TR-41", A, "the built-in fmnist_proxyless_tiny recipe loads", lambda: _load_recipe("fmnist_proxyless_tiny"),
          expect="accept", check=lambda r: (r.supernet == "ofa_proxyless_tiny", [p.name for p in r.phases]))

    # the built-in recipe files edited (copies)
    T = F.root / "toml"
    T.mkdir()
    src = (REPO / "model_zoo" / "recipes" / "fmnist_resnet_tiny.toml").read_text()
    srcp = (REPO / "model_zoo" / "recipes" / "fmnist_proxyless_tiny.toml").read_text()
    from model_zoo.training_recipes import load_training_recipe

    def tom(name: str, text: str) -> Path:
        p = T / name
        p.write_text(text)
        return p
    cases = [
        ("TT-01", "fmnist_resnet_tiny with epochs kernel added",
         tom("a.toml", src.replace("teacher = 4", "teacher = 4, kernel = 1")), "kernel"),
        ("TT-02", "fmnist_resnet_tiny with lr = inf", tom("b.toml", src.replace("lr = 0.1", "lr = inf")), "inf"),
        ("TT-03", "fmnist_resnet_tiny with batch_size = 0", tom("c.toml", src.replace("batch_size = 128",
                                                                                     "batch_size = 0")), "batch_size"),
        ("TT-04", "fmnist_resnet_tiny with [data] val_size = -5", tom("d.toml", src.replace("val_size = 5000",
                                                                                           "val_size = -5")), "-5"),
        ("TT-05", "fmnist_resnet_tiny with a [train] typo momentun",
         tom("e.toml", src.replace("momentum = 0.9", "momentun = 0.9")), "momentun"),
        ("TT-06", "fmnist_resnet_tiny with strategy = 'once'", tom("f.toml", src.replace('"progressive"', '"once"')),
         "once"),
        ("TT-07", "fmnist_proxyless_tiny with epochs width2 added",
         tom("g.toml", srcp.replace("teacher = 4", "teacher = 4, width2 = 1")), "width2"),
        ("TT-08", "fmnist_proxyless_tiny with supernet ofa_resnet_tiny (kernel phase)",
         tom("h.toml", srcp.replace('supernet = "ofa_proxyless_tiny"', 'supernet = "ofa_resnet_tiny"')), "kernel"),
        ("TT-09", "fmnist_resnet_tiny with supernet = 1", tom("i.toml", src.replace('supernet = "ofa_resnet_tiny"',
                                                                                   "supernet = 1")), "supernet"),
        ("TT-10", "fmnist_resnet_tiny with nested epochs table typo",
         tom("j.toml", src.replace("width2 = 2 }", "width2 = { epochs = 2 } }")), "width2"),
        ("TT-11", "fmnist_resnet_tiny with [data] augment = 'flip'",
         tom("k.toml", src.replace('augment = "crop"', 'augment = "flip"')), "flip"),
        ("TT-12", "fmnist_resnet_tiny with a [[phase]] and a [schedule]",
         tom("l.toml", src + '\n[[phase]]\nname = "x"\nepochs = 1\nlr = 0.1\n'), ["phase", "schedule"]),
    ]
    for pid, desc, path, needle in cases:
        probe(pid, A, desc, lambda p=path: load_training_recipe(p), needle=needle)

    # the command line: resuming and runs of the new families
    rn_run, px_run = F.rn_run, F.px_run
    cli("TC-01", A, "train --resume a ResNet run with the ProxylessNAS recipe",
        ["train", "--recipe", F.px_recipe, "--out", rn_run, "--resume"], needle="differs", guard=[rn_run])
    swapped = F.root / "runs" / "swap"
    shutil.copytree(px_run, swapped)
    for f in swapped.glob("state*"):
        f.unlink()
    for f in rn_run.glob("state*"):
        shutil.copy(f, swapped / f.name)
    keep = [swapped / "supernet.safetensors", swapped / "supernet.json", swapped / "settings.json"]
    cli("TC-02", A, "train --resume a ProxylessNAS run whose state files are a ResNet run's",
        ["train", "--out", swapped, "--resume"], needle=["state", "supernet", "architecture"], guard=keep)
    edited_run = F.root / "runs" / "edited"
    shutil.copytree(rn_run, edited_run)
    settings = json.loads((edited_run / "settings.json").read_text())
    settings["recipe"]["supernet"] = "ofa_proxyless_tiny"
    settings["recipe"]["phase"] = [p for p in settings["recipe"]["phase"] if p.get("w") is None]
    (edited_run / "settings.json").write_text(json.dumps(settings))
    cli("TC-03", A, "train --resume a ResNet run whose settings.json names ofa_proxyless_tiny",
        ["train", "--out", edited_run, "--resume"], needle=["state", "supernet", "architecture", "settings"],
        guard=[edited_run / "supernet.safetensors", edited_run / "supernet.json"])
    cli("TC-04", A, "train ResNet recipe with --val-size as large as the training set",
        ["train", "--recipe", F.rn_recipe, "--data", f"fashion-mnist:{F.fm}", "--out", F.root / "runs" / "v64",
         "--val-size", "64", "--limit", "64"], needle=["val", "64"],
        must_not_exist=[F.root / "runs" / "v64" / "supernet.safetensors"])
    tiny = F.recipes / "tiny_limit.toml"
    tiny.write_text(F.rn_recipe.read_text().replace("train_limit = 32", "train_limit = 2").replace(
        "val_size = 16", "val_size = 1"))
    cli("TC-05", A, "train ResNet on 1 training image with batch_size 16 (no full batch)",
        ["train", "--recipe", tiny, "--data", f"fashion-mnist:{F.fm}", "--out", F.root / "runs" / "one"],
        needle=["batch", "image"], must_not_exist=[F.root / "runs" / "one" / "supernet.safetensors"])
    cli("TC-06", A, "train ProxylessNAS recipe with --data a ResNet checkpoint folder",
        ["train", "--recipe", F.px_recipe, "--data", str(F.root / "rn"), "--out", F.root / "runs" / "d"],
        needle=str(F.root / "rn"), must_not_exist=[F.root / "runs" / "d" / "supernet.safetensors"])
    bad_run = F.root / "runs" / "badstate"
    shutil.copytree(rn_run, bad_run)
    st = json.loads((bad_run / "state.json").read_text())
    st["phase_index"] = -1
    (bad_run / "state.json").write_text(json.dumps(st))
    cli("TC-07", A, "train --resume a ResNet run with phase_index -1",
        ["train", "--out", bad_run, "--resume"], needle="phase_index",
        guard=[bad_run / "supernet.safetensors", bad_run / "supernet.json"])
    cli("TC-08", A, "train --resume an empty folder", ["train", "--out", F.root / "runs" / "empty_resume",
                                                       "--resume"], needle=["resume", "recipe", "state"],
        must_not_exist=[F.root / "runs" / "empty_resume" / "supernet.safetensors"])
    cli("TC-09", A, "train --resume a ResNet run with --val-size changed",
        ["train", "--out", rn_run, "--resume", "--val-size", "8"], needle="val", guard=[rn_run])


def _load_recipe(name: str) -> Any:
    from model_zoo.training_recipes import load_training_recipe
    return load_training_recipe(name)


# ====================================================================================== probes: tables
def probes_tables(F: SimpleNamespace) -> None:
    A = "table"
    from profilers import LatencyPredictor
    from profilers.builder import BuildSettings
    TD = F.root / "tables"
    TD.mkdir()
    rn_t, px_t = F.rn_table, F.px_table

    def copy(name: str, src: Path = rn_t, sql: str | None = None, params: tuple = ()) -> Path:
        p = TD / name
        shutil.copy(src, p)
        if sql:
            db = sqlite3.connect(p)
            with db:
                db.execute(sql, params)
            db.close()
        return p

    rn_spec_d = F.rn_spec.to_dict()
    # predictor API
    cases = [
        ("LP-01", "ResNet table, ProxylessNAS spec", lambda: LatencyPredictor.load(rn_t, "local", "onnxruntime",
                                                                                     F.px_spec), ["spec", "entries", "lacks"]),
        ("LP-02", "ResNet predictor, ProxylessNAS config", lambda: LatencyPredictor.load(
            rn_t, "local", "onnxruntime", F.rn_spec).predict([F.px_small]), "ResNetConfig"),
        ("LP-03", "ResNet predictor, config at 32 px (table has 28)", lambda: LatencyPredictor.load(
            rn_t, "local", "onnxruntime", F.rn_spec).predict([ResNetConfig(**{**F.rn_small.to_dict(), "r": 32})]),
         "32"),
        ("LP-04", "ResNet predictor, a config dict of another family", lambda: LatencyPredictor.load(
            rn_t, "local", "onnxruntime", F.rn_spec).predict(F.mb_small.to_dict()), ["ResNetConfig", "ks"]),
        ("LP-05", "ResNet table, ofa_resnet50 spec", lambda: LatencyPredictor.load(
            rn_t, "local", "onnxruntime", model_zoo.get_spec("ofa_resnet50")), ["spec", "entries", "lacks"]),
        ("LP-06", "ResNet table, device 'remote'", lambda: LatencyPredictor.load(rn_t, "remote", "onnxruntime",
                                                                                   F.rn_spec), "remote"),
        ("LP-07", "ResNet table, runtime label of fp16", lambda: LatencyPredictor.load(
            rn_t, "local", "onnxruntime/CPUExecutionProvider/1t/fp16/b1", F.rn_spec), "fp16"),
        ("LP-08", "ResNet table recipe spec edited to family vgg", lambda: LatencyPredictor.load(
            copy("vgg.sqlite", sql="UPDATE recipes SET spec = replace(spec, '\"resnet\"', '\"vgg\"')"), "local",
            "onnxruntime", "tiny28"), "vgg"),
        ("LP-09", "ResNet table recipe spec lacking base_depth", lambda: LatencyPredictor.load(
            copy("nobase.sqlite", sql="UPDATE recipes SET spec = json_remove(spec, '$.base_depth')"), "local",
            "onnxruntime", "tiny28"), ["base_depth", "malformed"]),
        ("LP-10", "drift check of a ResNet table whose calibration subnet is an MBConv config", lambda: _drift(
            copy("calmb.sqlite", sql="UPDATE calibrations SET subnet = ? WHERE rowid = (SELECT min(rowid) FROM calibrations)", params=(F.mb_small.to_json(),)),
            F.rn_spec), ["calibration", "subnet", "reference"]),
        ("LP-11", "ResNet table layer latency text", lambda: LatencyPredictor.load(
            copy("txt.sqlite", sql="UPDATE entries SET median_ms = 'x' WHERE rowid = 1"), "local", "onnxruntime",
            "tiny28"), "'x'"),
        ("LP-12", "ResNet table with a missing layer row", lambda: LatencyPredictor.load(
            copy("hole.sqlite", sql="DELETE FROM entries WHERE rowid = (SELECT min(rowid) FROM entries)"), "local",
            "onnxruntime", "tiny28").predict([F.rn_large]), ["missing", "lacks", "layer"]),
        ("LP-13", "ResNet table correction of another family's features", lambda: LatencyPredictor.load(
            copy("corr.sqlite", sql="UPDATE corrections SET model = json_set(model, '$.features', json('[\"bogus\"]'))"),
            "local", "onnxruntime", "tiny28"), ["bogus", "correction"]),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)
    probe("LP-14", A, "ResNet predictor of its own smallest/largest (valid)", lambda: LatencyPredictor.load(
        rn_t, "local", "onnxruntime", F.rn_spec).predict([F.rn_small, F.rn_large]), expect="accept",
          check=lambda v: (bool(np.all(np.isfinite(v)) and v[0] < v[1]), str(v)))

    # the profile command line with the new families
    cli("PC-01", A, "profile build --recipe <ResNet checkpoint> --resolutions 32 (trained at 28)",
        ["profile", "build", "--recipe", F.rn_ckpt, "--resolutions", "32", "--quick", "--table", TD / "PC-01.sqlite"], needle="32",
        must_not_exist=[TD / "PC-01.sqlite"])
    cli("PC-02", A, "profile build --recipe ofa_resnet50 --threads 0", ["profile", "build", "--recipe", "ofa_resnet50",
                                                                         "--threads", "0", "--table", TD / "PC-02.sqlite"],
        needle="threads", must_not_exist=[TD / "PC-02.sqlite"])
    cli("PC-03", A, "profile build --recipe ofa_resnet50 --calibrate -1", ["profile", "build", "--recipe",
                                                                            "ofa_resnet50", "--calibrate", "-1",
                                                                            "--table", TD / "PC-03.sqlite"],
        needle="-1", must_not_exist=[TD / "PC-03.sqlite"])
    cli("PC-04", A, "profile build --recipe ofa_resnet_tiny --resolutions '28,'",
        ["profile", "build", "--recipe", "ofa_resnet_tiny", "--resolutions", "28,", "--table", TD / "PC-04.sqlite"],
        needle="28,", must_not_exist=[TD / "PC-04.sqlite"])
    cli("PC-05", A, "profile build --recipe ofa_proxyless_tiny --max-age 1e3d",
        ["profile", "build", "--recipe", "ofa_proxyless_tiny", "--max-age", "1e3d", "--table", TD / "PC-05.sqlite"],
        needle="1e3d", must_not_exist=[TD / "PC-05.sqlite"])
    cli("PC-06", A, "profile build --recipe ofa_proxyless_tiny --max-age 0s",
        ["profile", "build", "--recipe", "ofa_proxyless_tiny", "--max-age", "0s", "--quick",
         "--table", TD / "PC-06.sqlite"], needle="0s", must_not_exist=[TD / "PC-06.sqlite"])
    ckdir = F.root / "ck"
    cli("PC-07", A, "profile build --recipe <checkpoint whose sidecar spec lacks family>",
        ["profile", "build", "--recipe", ckdir / "CK-12", "--quick", "--table", TD / "PC-07.sqlite"], needle="spec",
        must_not_exist=[TD / "PC-07.sqlite"])
    cli("PC-08", A, "profile build --recipe <a folder>", ["profile", "build", "--recipe", F.root / "rn", "--quick",
                                                          "--table", TD / "PC-08.sqlite"], needle="rn", must_not_exist=[TD / "PC-08.sqlite"])
    taken = copy("taken.sqlite")
    cli("PC-09", A, "profile build ProxylessNAS --name tiny28 into the ResNet table (name taken)",
        ["profile", "build", "--recipe", "ofa_proxyless_tiny", "--resolutions", "28", "--quick", "--calibrate", "2",
         "--name", "tiny28", "--table", taken], needle="tiny28", guard=[taken])
    cli("PC-10", A, "profile build --recipe ofa_resnet50 --provider ''", ["profile", "build", "--recipe",
                                                                           "ofa_resnet50", "--provider", "",
                                                                           "--table", TD / "PC-10.sqlite"],
        needle="provider", must_not_exist=[TD / "PC-10.sqlite"])
    cli("PC-11", A, "profile build --recipe ofa_resnet_tiny --resolutions 28 --runtime executorch --precision fp16",
        ["profile", "build", "--recipe", "ofa_resnet_tiny", "--resolutions", "28", "--runtime", "executorch",
         "--precision", "fp16", "--table", TD / "PC-11.sqlite"], needle="fp16", must_not_exist=[TD / "PC-11.sqlite"])
    cli("PC-12", A, "profile show of the ResNet table (valid)", ["profile", "show", "--table", rn_t, "--json"],
        expect="accept", guard=[rn_t], check=lambda r: (json.loads(r.stdout)["tables"][0]["recipe"] == "tiny28",
                                                        r.stdout[:120]))
    vgg = copy("vgg_show.sqlite", sql="UPDATE recipes SET spec = replace(spec, '\"resnet\"', '\"vgg\"')")
    cli("PC-13", A, "profile show: ResNet recipe spec family edited to vgg", ["profile", "show", "--table", vgg],
        needle="vgg", guard=[vgg])
    nob = copy("nobase_show.sqlite", sql="UPDATE recipes SET spec = json_remove(spec, '$.base_depth')")
    cli("PC-14", A, "profile show: ResNet recipe spec lacking base_depth", ["profile", "show", "--table", nob],
        needle=["base_depth", "malformed", "tiny28"], guard=[nob])
    cli("PC-15", A, "profile refresh: ResNet recipe spec lacking base_depth",
        ["profile", "refresh", "--table", nob, "--quick"], needle=["base_depth", "malformed"], guard=[nob])
    cli("PC-16", A, "profile refresh --runtime openvino (not in the ResNet table)",
        ["profile", "refresh", "--table", copy("rt.sqlite"), "--runtime", "openvino", "--quick"],
        needle="openvino")
    cli("PC-17", A, "profile show: calibration subnet of ResNet replaced by an MBConv config",
        ["profile", "show", "--table", copy("calmb_show.sqlite", sql="UPDATE calibrations SET subnet = ? WHERE rowid = (SELECT min(rowid) FROM calibrations)",
                                             params=(F.mb_small.to_json(),))], expect="accept")
    cli("PC-18", A, "profile refresh: calibration subnets replaced by MBConv configs",
        ["profile", "refresh", "--table", copy("calmb_ref.sqlite", sql="UPDATE calibrations SET subnet = ? WHERE rowid = (SELECT min(rowid) FROM calibrations)",
                                                params=(F.mb_small.to_json(),)), "--quick"],
        needle=["calibration", "subnet", "SubnetConfig"])
    exp_out = TD / "rn.json"
    cli("PC-19", A, "profile export of the ResNet table (valid)", ["profile", "export", "--table", rn_t, "--out",
                                                                   exp_out], expect="accept", guard=[rn_t],
        check=lambda r: (exp_out.is_file() and json.loads(exp_out.read_text())["recipes"].keys() == {"tiny28"},
                         "exported"))
    cli("PC-20", A, "profile export into a folder that does not exist yet (made; valid)",
        ["profile", "export", "--table", rn_t, "--out", TD / "nodir" / "x.json"], expect="accept",
        check=lambda r: ((TD / "nodir" / "x.json").is_file(), "written"))
    mixed = copy("mixed.sqlite", src=px_t)
    cli("PC-21", A, "profile import the ResNet export into the ProxylessNAS table (same recipe name tiny28)",
        ["profile", "import", exp_out, "--table", mixed], expect="accept",
        check=lambda r: _both_kept(mixed, F), guard=[])
    data = json.loads(exp_out.read_text()) if exp_out.is_file() else {}

    def imp_edit(pid: str, desc: str, edit: Callable[[dict], None], needle: Any) -> None:
        target = copy(f"{pid}.sqlite", src=px_t)
        d = json.loads(json.dumps(data))
        edit(d)
        src = TD / f"{pid}.json"
        src.write_text(json.dumps(d))
        cli(pid, A, desc, ["profile", "import", src, "--table", target], needle=needle, guard=[target])

    if data:
        imp_edit("PI-01", "import: ResNet recipe spec relabelled mobilenetv3",
                 lambda d: d["recipes"]["tiny28"].update(family="mobilenetv3"), "malformed")
        imp_edit("PI-02", "import: ResNet calibration subnet an MBConv config",
                 lambda d: d["calibrations"][0].update(subnet=F.mb_small.to_json()), "subnet")
        imp_edit("PI-03", "import: ResNet calibration subnet with width index 9",
                 lambda d: d["calibrations"][0].update(subnet=json.dumps({**F.rn_small.to_dict(), "w": [9] * 6})),
                 "subnet")
        imp_edit("PI-04", "import: recipes a list", lambda d: d.update(recipes=[d["recipes"]["tiny28"]]), "recipes")
        imp_edit("PI-05", "import: an entry key a number", lambda d: d["entries"][0].update(key=5), "key")
        imp_edit("PI-06", "import: an entry of precision fp64", lambda d: d["entries"][0]["runtime"].update(
            precision="fp64"), "fp64")
        imp_edit("PI-07", "import: an entry on an undeclared device",
                 lambda d: d["entries"][0].update(device="ghost"), "ghost")
        imp_edit("PI-08", "import: good ResNet recipe, last entry's latency negative",
                 lambda d: d["entries"][-1].update(median_ms=-3.0), "-3.0")
        imp_edit("PI-09", "import: calibration measured_ms NaN",
                 lambda d: d["calibrations"][0].update(measured_ms=math.nan), ["nan", "measured_ms"])
        imp_edit("PI-10", "import: calibration for a spec id no recipe has",
                 lambda d: d["calibrations"][0].update(spec_id="0" * 16), ["spec", "0000"])
        imp_edit("PI-11", "import: ResNet recipe base_depth a string",
                 lambda d: d["recipes"]["tiny28"].update(base_depth="1111"), ["base_depth", "malformed"])
        imp_edit("PI-12", "import: entry runtime threads 0", lambda d: d["entries"][0]["runtime"].update(threads=0),
                 "threads")
        imp_edit("PI-13", "import: entry measured_at negative", lambda d: d["entries"][0].update(measured_at=-5),
                 "measured_at")
        imp_edit("PI-14", "import: entry input_shape a string", lambda d: d["entries"][0].update(input_shape="1x1"),
                 "input_shape")
        imp_edit("PI-15", "import: device cores -1", lambda d: d["devices"]["local"].update(cores=-1), "cores")
    trunc = TD / "trunc.json"
    if exp_out.is_file():
        trunc.write_text(exp_out.read_text()[: exp_out.stat().st_size // 2])
    tgt = copy("trunc_target.sqlite", src=px_t)
    cli("PI-16", A, "import a truncated JSON export", ["profile", "import", trunc, "--table", tgt],
        needle="trunc.json", guard=[tgt])
    self_t = copy("self.sqlite")
    before17 = _rows(self_t, ("entries", "recipes", "calibrations"))
    cli("PI-17", A, "import a table into itself (a no-op at most)", ["profile", "import", self_t, "--table", self_t],
        expect="accept", check=lambda r: (_rows(self_t, ("entries", "recipes", "calibrations")) == before17,
                                          "entries, recipes and calibrations unchanged"))
    garbage = TD / "garbage.sqlite"
    garbage.write_bytes(b"SQLite format 3\x00" + os.urandom(400))
    tgt2 = copy("garb_target.sqlite", src=px_t)
    cli("PI-18", A, "import a corrupt .sqlite", ["profile", "import", garbage, "--table", tgt2],
        needle="garbage.sqlite", guard=[tgt2])
    tgt3 = copy("dup_target.sqlite", src=px_t)
    cli("PI-19", A, "import the same ResNet export twice in one call (idempotent)",
        ["profile", "import", exp_out, exp_out, "--table", tgt3], expect="accept",
        check=lambda r: _recipe_count(tgt3, 2))
    cli("PI-20", A, "import --as with an empty old name", ["profile", "import", exp_out, "--table", copy(
        "as_target.sqlite", src=px_t), "--as", "=x"], needle="=x")
    ro_dir = TD / "ro"
    ro_dir.mkdir()
    cli("PI-21", A, "profile import into a table path that is a folder", ["profile", "import", exp_out, "--table",
                                                                          ro_dir], needle=["directory", "ro"])
    cli("PI-22", A, "profile show --table on an empty file", ["profile", "show", "--table", _empty(TD / "e.sqlite")],
        needle="e.sqlite", guard=[TD / "e.sqlite"])
    # API: BuildSettings of the new families' tables
    probe("BS-01", A, "BuildSettings calibration_subnets True", lambda: BuildSettings(calibration_subnets=True),
          needle="True")
    probe("BS-02", A, "BuildSettings group 0", lambda: BuildSettings(group=0), needle="group")
    probe("BS-03", A, "LatencyTable put_recipe of a ResNet spec under the ProxylessNAS table's name", lambda: _put(
        copy("put.sqlite", src=px_t), "tiny28", rn_spec_d), needle="tiny28", guard=[TD / "put.sqlite"])
    probe("BS-04", A, "LatencyTable put_recipe of a malformed ResNet spec", lambda: _put(
        copy("put2.sqlite"), "x", {**rn_spec_d, "stem_stride": 3}), needle="stem_stride",
          guard=[TD / "put2.sqlite"])


def _drift(path: Path, spec: Any) -> Any:
    from profilers.drift import check_drift
    from profilers.record import Protocol
    from profilers.runtimes import get_runtime
    quick = Protocol(warmup_s=0, warmup_runs=1, blocks=2, block_s=0.001, min_runs_per_block=1, max_runs_per_block=2)
    return check_drift(path, spec, "local", get_runtime("onnxruntime"), "onnxruntime", protocol=quick, settle=False)


def _onnx_config(path: Path) -> Any:
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    for p in m.metadata_props:
        if p.key == "com.ofakit.config":
            return json.loads(p.value)
    return None


def _rows(path: Path, tables: Iterable[str]) -> dict:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {t: sorted(map(repr, db.execute(f"SELECT * FROM {t}"))) for t in tables}
    finally:
        db.close()


def _put(path: Path, name: str, spec: dict) -> Any:
    from profilers import LatencyTable
    with LatencyTable(path) as t:
        return t.put_recipe(name, spec)


def _empty(p: Path) -> Path:
    p.write_bytes(b"")
    return p


def _both_kept(path: Path, F: SimpleNamespace) -> tuple[bool, str]:
    from profilers import LatencyTable
    from profilers.store import spec_id
    with LatencyTable(path, readonly=True) as t:
        names = t.recipes()
        ids = {n: spec_id(t.recipe(n)) for n in names}
    ok = (ids.get("tiny28") == spec_id(F.px_spec.to_dict())
          and spec_id(F.rn_spec.to_dict()) in ids.values())
    return ok, f"recipes {ids}"


def _recipe_count(path: Path, n: int) -> tuple[bool, str]:
    from profilers import LatencyTable
    with LatencyTable(path, readonly=True) as t:
        names = t.recipes()
    return len(names) == n, f"recipes {names}"


# ====================================================================================== probes: export/search CLI
def probes_cli(F: SimpleNamespace) -> None:
    A = "cli"
    S = F.sub
    E = F.root / "exp"
    E.mkdir()
    rn, px = str(F.rn_ckpt), str(F.px_ckpt)
    pair = [F.rn_onnx, F.rn_onnx.with_name("rn.onnx.json")]

    def sub(name: str, data: Any) -> Path:
        return write_json(S / name, data)

    cli("EX-01", A, "export: ResNet checkpoint, MobileNetV3 subnet over a good pair",
        ["export", "--checkpoint", rn, "--subnet", S / "mb_small.json", "--out", F.rn_onnx], needle="ResNetConfig",
        guard=pair)
    cli("EX-02", A, "export: zoo MobileNetV3 checkpoint, ResNet subnet",
        ["export", "--checkpoint", ZOO, "--subnet", S / "rn_small.json", "--out", E / "EX-02.onnx"], needle="SubnetConfig",
        must_not_exist=[E / "EX-02.onnx"])
    cli("EX-03", A, "export: ProxylessNAS checkpoint, MobileNetV3 tiny subnet",
        ["export", "--checkpoint", px, "--subnet", S / "mb_small.json", "--out", E / "EX-03.onnx"], needle=["ks", "entries"],
        must_not_exist=[E / "EX-03.onnx"])
    cli("EX-04", A, "export: ResNet checkpoint, ProxylessNAS subnet",
        ["export", "--checkpoint", rn, "--subnet", S / "px_small.json", "--out", E / "EX-04.onnx"], needle="ResNetConfig",
        must_not_exist=[E / "EX-04.onnx"])
    cli("EX-05", A, "export: ResNet subnet at 32 px (checkpoint at 28)",
        ["export", "--checkpoint", rn, "--subnet", sub("rn32.json", {**F.rn_small.to_dict(), "r": 32}), "--out", E / "EX-05.onnx"],
        needle="r=32", must_not_exist=[E / "EX-05.onnx"])
    cli("EX-06", A, "export: ResNet subnet with r 1e999 (JSON overflow to inf)",
        ["export", "--checkpoint", rn, "--subnet", sub("rninf.json", json.dumps(F.rn_small.to_dict()).replace(
            '"r": 28', '"r": 1e999')), "--out", E / "EX-06.onnx"], needle="inf", must_not_exist=[E / "EX-06.onnx"])
    cli("EX-07", A, "export: ResNet subnet with a 5000-digit depth",
        ["export", "--checkpoint", rn, "--subnet", sub("rnbig.json", json.dumps(F.rn_small.to_dict()).replace(
            '"r": 28', '"r": ' + "9" * 5000)), "--out", E / "EX-07.onnx"], needle="rnbig.json", must_not_exist=[E / "EX-07.onnx"])
    cli("EX-08", A, "export: ResNet subnet file with a UTF-8 BOM",
        ["export", "--checkpoint", rn, "--subnet", _bom(S / "bom.json", F.rn_small.to_json()), "--out", E / "EX-08.onnx"],
        needle="BOM", must_not_exist=[E / "EX-08.onnx"])
    rec = {"config": F.rn_small.to_dict(), "predicted_accuracy": 0.5, "predicted_latency_ms": 0.1,
           "checkpoint": {"name": rn, "path": str(F.rn_ckpt.with_suffix(".safetensors")),
                          "sha256": json.loads(F.rn_ckpt.with_suffix(".json").read_text())["sha256"]}}
    cli("EX-09", A, "export: ResNet search record given --checkpoint of the ProxylessNAS",
        ["export", "--checkpoint", px, "--subnet", sub("rec.json", rec), "--out", E / "EX-09.onnx"], needle="sha256",
        must_not_exist=[E / "EX-09.onnx"])
    cli("EX-10", A, "export: ResNet search record holding a ProxylessNAS config",
        ["export", "--subnet", sub("rec_px.json", {**rec, "config": F.px_small.to_dict()}), "--out", E / "EX-10.onnx"],
        needle="ResNetConfig", must_not_exist=[E / "EX-10.onnx"])
    cli("EX-11", A, "export: search record whose checkpoint path is gone and name unknown",
        ["export", "--subnet", sub("rec_gone.json", {**rec, "checkpoint": {**rec["checkpoint"], "path": "/nonexistent/x",
                                                                           "name": "nosuch"}}), "--out", E / "EX-11.onnx"],
        needle="nosuch", must_not_exist=[E / "EX-11.onnx"])
    cli("EX-12", A, "export: search record with a checkpoint sha256 of 64 zeros",
        ["export", "--subnet", sub("rec_sha.json", {**rec, "checkpoint": {**rec["checkpoint"], "sha256": "0" * 64}}),
         "--out", E / "EX-12.onnx"], needle="sha256", must_not_exist=[E / "EX-12.onnx"])
    cli("EX-13", A, "export: search record whose config is a string",
        ["export", "--subnet", sub("rec_str.json", {**rec, "config": F.rn_small.to_json()}), "--out", E / "EX-13.onnx"],
        needle="config", must_not_exist=[E / "EX-13.onnx"])
    cli("EX-14", A, "export: search record whose predicted_latency_ms is negative",
        ["export", "--subnet", sub("rec_lat.json", {**rec, "predicted_latency_ms": -1}), "--out", E / "EX-14.onnx"],
        needle="predicted_latency_ms", must_not_exist=[E / "EX-14.onnx"])
    cli("EX-15", A, "export: search record whose checkpoint ref has an extra list",
        ["export", "--subnet", sub("rec_ck.json", {**rec, "checkpoint": [rec["checkpoint"]]}), "--out", E / "EX-15.onnx"],
        needle="checkpoint", must_not_exist=[E / "EX-15.onnx"])
    cli("EX-16", A, "export: ResNet checkpoint with NaN weights (sha256 consistent)",
        ["export", "--checkpoint", F.root / "ck" / "CW-01", "--subnet", S / "rn_small.json", "--out", E / "EX-16.onnx"],
        needle=["NaN", "nan"], must_not_exist=[E / "EX-16.onnx"])
    cli("EX-17", A, "export: ResNet checkpoint whose training data val_size is a string",
        ["export", "--checkpoint", edit_sidecar(F.rn_ckpt, E / "vs", lambda m: m["training"]["data"].update(
            val_size="48")), "--subnet", S / "rn_small.json", "--out", E / "EX-17.onnx"], needle="val_size", must_not_exist=[E / "EX-17.onnx"])
    cli("EX-18", A, "export: ResNet checkpoint whose training data path is missing",
        ["export", "--checkpoint", edit_sidecar(F.rn_ckpt, E / "nopath", lambda m: m["training"]["data"].update(
            path=str(E / "nowhere"))), "--subnet", S / "rn_small.json", "--out", E / "EX-18.onnx"], needle="nowhere",
        must_not_exist=[E / "EX-18.onnx"])
    cli("EX-19", A, "export: ResNet checkpoint whose training data seed is negative",
        ["export", "--checkpoint", edit_sidecar(F.rn_ckpt, E / "seed", lambda m: m["training"]["data"].update(
            seed=-1)), "--subnet", S / "rn_small.json", "--out", E / "EX-19.onnx"], needle="seed", must_not_exist=[E / "EX-19.onnx"])
    cli("EX-20", A, "export: ResNet checkpoint whose training data kind is cifar10 (1-channel net)",
        ["export", "--checkpoint", edit_sidecar(F.rn_ckpt, E / "kind", lambda m: m["training"]["data"].update(
            kind="cifar10")), "--subnet", S / "rn_small.json", "--out", E / "EX-20.onnx"], needle=["cifar", "channel"],
        must_not_exist=[E / "EX-20.onnx"])
    cli("EX-21", A, "export: ResNet checkpoint whose training data val_size exceeds the data",
        ["export", "--checkpoint", edit_sidecar(F.rn_ckpt, E / "vbig", lambda m: m["training"]["data"].update(
            val_size=10 ** 6)), "--subnet", S / "rn_small.json", "--out", E / "EX-21.onnx"], needle="val_size", must_not_exist=[E / "EX-21.onnx"])
    cli("EX-22", A, "export: ResNet, --precision int8 --min-agreement on onnx",
        ["export", "--checkpoint", rn, "--subnet", S / "rn_small.json", "--out", E / "EX-22.onnx", "--precision", "int8",
         "--min-agreement", "0.9"], needle=["min-agreement", "int8"], must_not_exist=[E / "EX-22.onnx"])
    cli("EX-23", A, "export: ResNet, --min-agreement NaN", ["export", "--checkpoint", rn, "--subnet",
                                                            S / "rn_small.json", "--target", "executorch",
                                                            "--out", E / "o.pte", "--precision", "int8",
                                                            "--min-agreement", "nan"], needle="nan",
        must_not_exist=[E / "o.pte"])
    cli("EX-32", A, "export: ResNet int8 ExecuTorch from a checkpoint with 48 validation images (valid)",
        ["export", "--checkpoint", rn, "--subnet", S / "rn_small.json", "--target", "executorch", "--out",
         E / "i8.pte", "--precision", "int8", "--min-agreement", "0.5"], expect="accept",
        check=lambda r: ((E / "i8.pte").is_file(), "exported"))
    cli("EX-24", A, "export: ResNet over the good pair with the wrong suffix for the target",
        ["export", "--checkpoint", rn, "--subnet", S / "rn_small.json", "--out", F.rn_onnx, "--target", "openvino"],
        needle=".xml", guard=pair)
    cli("EX-25", A, "export: ResNet to --target '' ", ["export", "--checkpoint", rn, "--subnet", S / "rn_small.json",
                                                       "--out", E / "EX-25.onnx", "--target", ""], needle="target",
        must_not_exist=[E / "EX-25.onnx"])
    cli("EX-26", A, "export: subnet JSON with duplicate keys (d twice)",
        ["export", "--checkpoint", rn, "--subnet", sub("dup.json", '{"d": [9], ' + F.rn_small.to_json()[1:]),
         "--out", E / "EX-26.onnx"], expect="accept",
        check=lambda r: ((E / "EX-26.onnx").is_file(), "later key wins (JSON's rule)"))
    cli("EX-27", A, "export: ResNet subnet valid over the good pair (replaces it)",
        ["export", "--checkpoint", rn, "--subnet", S / "rn_small.json", "--out", E / "fresh.onnx"], expect="accept",
        check=lambda r: (json.loads((E / "fresh.onnx.json").read_text())["config"] == F.rn_small.to_dict(),
                         "sidecar names the config"))
    cli("EX-28", A, "export: a sidecar-less ResNet checkpoint (weights only)",
        ["export", "--checkpoint", _weights_only(F, E / "wonly"), "--subnet", S / "rn_small.json", "--out", E / "EX-28.onnx"],
        needle="sidecar", must_not_exist=[E / "EX-28.onnx"])
    o29 = E / "EX-29.onnx"
    cli("EX-29", A, "export: ResNet checkpoint with preprocess resolutions [999] (not used by export; valid)",
        ["export", "--checkpoint", edit_sidecar(F.rn_ckpt, E / "preres", lambda m: m["preprocess"].update(
            resolutions=[999])), "--subnet", S / "rn_small.json", "--out", o29], expect="accept",
        check=lambda r: (json.loads(o29.with_name("EX-29.onnx.json").read_text())["input"]["shape"] == [1, 1, 28, 28],
                         "sidecar input shape [1, 1, 28, 28]"))
    o31 = E / "EX-31.onnx"
    cli("EX-31", A, "export: 1-channel ResNet whose preprocess record has no in_channels: sidecar steps",
        ["export", "--checkpoint", F.rn_ckpt, "--subnet", S / "rn_small.json", "--out", o31], expect="accept",
        check=lambda r: _steps_match(o31))

    # search / ship with the new families
    search_out = F.root / "search"
    cli("SE-01", A, "search: ResNet checkpoint on the ResNet table (valid, predicted)",
        ["search", "--checkpoint", rn, "--table", F.rn_table, "--latency-ms", "0.2", "--samples", "20",
         "--population", "8", "--generations", "2", "--no-measure", "--no-drift-check", "--out", search_out],
        expect="accept", check=lambda r: _search_ok(search_out / "subnet.json", F))
    cli("SE-02", A, "search: ResNet checkpoint on the ProxylessNAS table", ["search", "--checkpoint", rn, "--table",
                                                                           F.px_table, "--no-drift-check"],
        needle=["lacks", "entries", "architecture"])
    cli("SE-03", A, "search: ProxylessNAS checkpoint on the ResNet table (range)",
        ["search", "--checkpoint", px, "--table", F.rn_table], needle=["lacks", "entries", "architecture"])
    cli("SE-04", A, "search: ResNet budget below the smallest subnet",
        ["search", "--checkpoint", rn, "--table", F.rn_table, "--latency-ms", "0.0001", "--samples", "20",
         "--population", "8", "--generations", "2", "--no-measure", "--no-drift-check", "--out", F.root / "s2"],
        needle=["0.0001", "feasible", "budget"])
    cli("SE-05", A, "search: ResNet with --max-macs 0.000001", ["search", "--checkpoint", rn, "--table", F.rn_table,
                                                               "--latency-ms", "5", "--max-macs", "0.000001",
                                                               "--samples", "20", "--population", "8",
                                                               "--generations", "2", "--no-measure",
                                                               "--no-drift-check", "--out", F.root / "s3"],
        needle=["macs", "MACs"])
    cli("SE-06", A, "search: ResNet --also on the ProxylessNAS-only device name",
        ["search", "--checkpoint", rn, "--table", F.rn_table, "--latency-ms", "5", "--also", "phone,onnxruntime,1",
         "--samples", "20", "--population", "8", "--generations", "2", "--no-measure", "--no-drift-check",
         "--out", F.root / "s4"], needle="phone")
    cli("SE-07", A, "search: ResNet --runtime openvino (not tabled)", ["search", "--checkpoint", rn, "--table",
                                                                      F.rn_table, "--runtime", "openvino"],
        needle="openvino")
    rec_file = search_out / "subnet.json"
    cli("SE-08", A, "export: the ResNet search record without --checkpoint (valid)",
        ["export", "--subnet", rec_file, "--out", E / "fromrec.onnx"], expect="accept",
        check=lambda r: _export_ok(E / "fromrec.onnx", F))
    moved = F.root / "moved"
    copy_ckpt(F.px_ckpt, moved / "tiny")
    rec2 = json.loads(rec_file.read_text()) if rec_file.is_file() else dict(rec)
    rec2["checkpoint"] = {**rec2.get("checkpoint", rec["checkpoint"]), "path": str(moved / "tiny.safetensors")}
    cli("EX-30", A, "export: ResNet search record whose checkpoint path now holds a ProxylessNAS checkpoint",
        ["export", "--subnet", sub("rec_moved.json", rec2), "--out", E / "EX-30.onnx"], needle="sha256",
        must_not_exist=[E / "EX-30.onnx"])
    cli("SH-01", A, "ship: ResNet with --retries 0 and an infeasible budget",
        ["ship", "--checkpoint", rn, "--table", F.rn_table, "--latency-ms", "0.0001", "--out", E / "sh.onnx",
         "--retries", "0", "--samples", "20", "--no-drift-check", "--no-measure"],
        needle=["0.0001", "budget", "feasible"], must_not_exist=[E / "sh.onnx"])
    cli("SH-02", A, "ship: ResNet checkpoint against the ProxylessNAS table, --no-build-table",
        ["ship", "--checkpoint", rn, "--table", F.px_table, "--latency-ms", "1", "--out", E / "sh.onnx",
         "--retries", "0", "--samples", "20", "--no-drift-check", "--no-build-table"],
        needle=["lacks", "architecture", "entries"], must_not_exist=[E / "sh.onnx"])
    mixed = E / "sh_mixed.sqlite"
    shutil.copy(F.px_table, mixed)
    px_rows = _rows(mixed, ("entries", "recipes", "calibrations", "corrections"))

    def built_beside() -> tuple[bool, str]:
        after = _rows(mixed, ("entries", "recipes", "calibrations", "corrections"))
        kept = all(set(px_rows[t]) <= set(after[t]) for t in px_rows)
        return kept and len(after["recipes"]) == len(px_rows["recipes"]) + 1, \
            f"ProxylessNAS rows kept: {kept}; recipes {len(px_rows['recipes'])} -> {len(after['recipes'])}"
    cli("SH-02b", A, "ship: ResNet checkpoint against a copy of the ProxylessNAS table builds its layers beside "
        "(valid)", ["ship", "--checkpoint", rn, "--table", mixed, "--latency-ms", "1", "--out", E / "sh_b.onnx",
                    "--retries", "0", "--samples", "20"], expect="accept", check=lambda r: built_beside())
    cli("SH-03", A, "ship: ResNet --target coreml with an .onnx path",
        ["ship", "--checkpoint", rn, "--table", F.rn_table, "--latency-ms", "1", "--out", E / "sh.onnx",
         "--target", "coreml"], needle=".mlpackage", must_not_exist=[E / "sh.onnx"])
    cli("ZL-01", A, "zoo list --json lists the three families (valid)", ["zoo", "list", "--json"], expect="accept",
        check=lambda r: (_families(r.stdout) >= {"resnet", "proxylessnas", "mobilenetv3"}, str(_families(r.stdout))))
    cli("ZL-02", A, "zoo recipes lists the new training recipes (valid)", ["zoo", "recipes"], expect="accept",
        check=lambda r: ("fmnist_resnet_tiny" in r.stdout and "fmnist_proxyless_tiny" in r.stdout, "listed"))
    tok = F.root / "tok"
    tok.write_text(TOKEN)
    tok.chmod(0o600)
    for pid, desc, extra, needle in (("AS-01", "agent serve --max-mb nan", ["--max-mb", "nan"], "nan"),
                                     ("AS-02", "agent serve --max-mb inf", ["--max-mb", "inf"], "inf"),
                                     ("AS-03", "agent serve --max-mb -1", ["--max-mb", "-1"], "-1"),
                                     ("AS-04", "agent serve --max-mb 10**9 (a petabyte)", ["--max-mb", "1e9"], "1000000000"),
                                     ("AS-05", "agent serve --token-file a folder", ["--token-file", str(F.root)],
                                      "token"),
                                     ("AS-06", "agent serve --host 'localhost junk'", ["--host", "localhost junk"],
                                      "localhost junk")):
        argv = ["agent", "serve", "--port", "0", *(["--token-file", str(tok)] if "--token-file" not in extra else []),
                *extra]
        _cli_with_deadline(pid, A, desc, argv, needle)


def _families(stdout: str) -> set:
    try:
        data = json.loads(stdout)
    except ValueError:
        return set()
    rows = data if isinstance(data, list) else data.get("supernets", data.get("recipes", []))
    fams = set()
    for r in rows if isinstance(rows, list) else rows.values():
        if isinstance(r, dict):
            fams.add(r.get("family") or r.get("spec", {}).get("family"))
    return fams


def _cli_with_deadline(pid: str, area: str, desc: str, argv: list[str], needle: Any, seconds: float = 15) -> None:
    """A command that would serve forever when it accepts its input: run it in a thread; still running at the
    deadline means the bad value was accepted."""
    if _skip(pid):
        return
    box: dict[str, Any] = {}

    def go() -> None:
        from typer.testing import CliRunner

        from ofakit.cli import app
        box["res"] = CliRunner().invoke(app, argv, catch_exceptions=True)
    t = threading.Thread(target=go, daemon=True)
    t0 = time.perf_counter()
    t.start()
    t.join(seconds)
    if t.is_alive():
        _record(pid, area, desc, "silent", f"accepted: the agent started serving ({' '.join(argv)})",
                seconds=round(time.perf_counter() - t0, 3))
        return
    res = box["res"]
    exc = res.exception
    err = res.stderr
    errlines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    if exc is not None and not isinstance(exc, SystemExit):
        outcome, detail = "traceback", f"uncaught {type(exc).__name__}: {str(exc)[:200]} [at {_where(res.exc_info[2])}]"
    elif res.exit_code == 2 and len(errlines) == 1:
        outcome, detail = "ok", errlines[0]
    elif res.exit_code == 2 and "Usage:" in err:
        outcome, detail = "ok", "click usage error: " + " ".join(err.split())[:300]
    elif res.exit_code == 0:
        outcome, detail = "silent", f"exit 0: {err[:200]!r}"
    else:
        outcome, detail = "traceback", f"exit {res.exit_code}: {err[:300]!r}"
    extra = {"argv": " ".join(argv), "seconds": round(time.perf_counter() - t0, 3)}
    if outcome == "ok" and errlines and _unclear(errlines[0], needle):
        extra["unclear"] = True
    _record(pid, area, desc, outcome, detail, **extra)


def _steps_match(art: Path) -> tuple[bool, str]:
    side = json.loads(art.with_name(art.name + ".json").read_text())
    inp = side["input"]
    first = inp["steps"][0]
    channels = inp["shape"][1]
    ok = ("greyscale" in first) if channels == 1 else ("RGB" in first)
    return ok, f"input shape {inp['shape']} (mean {inp.get('mean')}), first step {first!r}"


def _bom(path: Path, text: str) -> Path:
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    return path


def _weights_only(F: SimpleNamespace, stem: Path) -> Path:
    w, _ = checkpoint_paths(F.rn_ckpt)
    stem.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(w, stem.with_suffix(".safetensors"))
    return stem


def _search_ok(path: Path, F: SimpleNamespace) -> tuple[bool, str]:
    if not path.is_file():
        return False, "no subnet.json"
    rec = json.loads(path.read_text())
    cfg = ResNetConfig.from_dict(rec["config"])
    F.rn_space.validate(cfg)
    ok = rec["predicted_latency_ms"] <= 0.2 and rec["checkpoint"]["sha256"] and 0 <= rec["predicted_accuracy"] <= 1
    return bool(ok), f"picked {cfg.to_json()} at {rec['predicted_latency_ms']:.3f} ms"


def _export_ok(path: Path, F: SimpleNamespace) -> tuple[bool, str]:
    side = path.with_name(path.name + ".json")
    if not (path.is_file() and side.is_file()):
        return False, "artifact or sidecar missing"
    s = json.loads(side.read_text())
    ok = s.get("predicted_accuracy") is not None and s.get("predicted_latency_ms") is not None
    return ok, f"sidecar predictions {s.get('predicted_accuracy')}, {s.get('predicted_latency_ms')}"


# ====================================================================================== probes: accuracy cache
def probes_cache(F: SimpleNamespace) -> None:
    """A ResNet checkpoint's accuracy cache and predictor hand-edited, then ``ofakit search`` (cache resumed)."""
    A = "accuracy-cache"
    Q = F.root / "acc"
    acc = F.rn_ckpt.with_name("tiny.accuracy.jsonl")
    pred = F.rn_ckpt.with_name("tiny.accuracy.predictor.json")
    if not acc.is_file():
        custom("AC-00", A, "the ResNet search left an accuracy cache", lambda: ("silent", f"no {acc}"))
        return
    lines = acc.read_text().splitlines()

    def variant(pid: str, edit_lines: Callable[[list[str]], list[str]] | None = None,
                edit_pred: Callable[[str], str] | None = None) -> Path:
        stem = copy_ckpt(F.rn_ckpt, Q / pid / "tiny")
        (Q / pid / "tiny.accuracy.jsonl").write_text("\n".join(edit_lines(list(lines)) if edit_lines else lines) + "\n")
        if pred.is_file():
            text = pred.read_text()
            (Q / pid / "tiny.accuracy.predictor.json").write_text(edit_pred(text) if edit_pred else text)
        return stem

    def search(pid: str, desc: str, stem: Path, needle: Any, expect: str = "error") -> None:
        cli(pid, A, desc, ["search", "--checkpoint", stem, "--table", F.rn_table, "--latency-ms", "0.2", "--samples",
                           "20", "--population", "8", "--generations", "2", "--no-measure", "--no-drift-check",
                           "--out", Q / pid / "out"], needle=needle, expect=expect,
            guard=[] if expect == "accept" else [Q / pid / "tiny.accuracy.jsonl"])
    front = json.dumps({"config": F.px_small.to_json(), "val_top1": 0.5, "origin": "front"})
    search("AC-01", "cache: a front record holding a ProxylessNAS config", variant(
        "AC-01", lambda ls: ls + [front]), ["tiny.accuracy.jsonl", "line"])
    search("AC-02", "cache: a front record of a ResNet config at 32 px", variant(
        "AC-02", lambda ls: ls + [json.dumps({"config": json.dumps({**F.rn_small.to_dict(), "r": 32}),
                                               "val_top1": 0.5, "origin": "front"})]), ["tiny.accuracy.jsonl", "r=32"])
    search("AC-03", "cache: a record whose val_halves are text", variant(
        "AC-03", lambda ls: ls[:2] + [json.dumps({**json.loads(ls[2]), "val_halves": ["a", "b"]})] + ls[3:]),
        ["tiny.accuracy.jsonl", "val_halves"])
    search("AC-04", "cache: a record whose val_halves has three entries", variant(
        "AC-04", lambda ls: ls[:2] + [json.dumps({**json.loads(ls[2]), "val_halves": [0.1, 0.2, 0.3]})] + ls[3:]),
        ["tiny.accuracy.jsonl", "val_halves"])
    search("AC-05", "cache: a record whose config is not JSON", variant(
        "AC-05", lambda ls: ls + [json.dumps({"config": "{not json", "val_top1": 0.5, "origin": "front"})]),
        ["tiny.accuracy.jsonl", "config"])
    search("AC-06", "cache: a record with top-1 of 7 (above 1)", variant(
        "AC-06", lambda ls: ls[:2] + [json.dumps({**json.loads(ls[2]), "val_top1": 7.0})] + ls[3:]),
        ["tiny.accuracy.jsonl", "val_top1", "7"])
    search("AC-07", "cache: the accuracy predictor JSON truncated", variant(
        "AC-07", edit_pred=lambda t: t[: len(t) // 2]), None, expect="accept")
    search("AC-08", "cache: the accuracy predictor JSON a list", variant("AC-08", edit_pred=lambda t: "[1, 2]"),
           None, expect="accept")
    search("AC-09", "cache: a record with a negative top-1", variant(
        "AC-09", lambda ls: ls[:2] + [json.dumps({**json.loads(ls[2]), "val_top1": -0.5})] + ls[3:]),
        ["tiny.accuracy.jsonl", "val_top1", "-0.5"])
    search("AC-10", "cache: the header a JSON list, records after it", variant(
        "AC-10", lambda ls: ["[1]"] + ls[1:]), ["tiny.accuracy.jsonl", "header"])


# ====================================================================================== probes: injected faults
def probes_injected(F: SimpleNamespace) -> None:
    """Faults injected at the worst moment: a disk that fills while a file is written, a runtime that dies
    mid-build. Good data must survive each."""
    A = "injected"
    I = F.root / "inj"
    I.mkdir()
    import model_zoo.checkpoint as mck

    def enospc(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    real_write_text = Path.write_text

    @contextlib.contextmanager
    def disk_full_at(sidecar_name: str):
        """Writing ``sidecar_name`` (or the temporary file an atomic write makes for it) fails: a full disk."""
        def write_text(self: Path, *args: Any, **kwargs: Any) -> int:
            if self.name == sidecar_name or self.name.startswith(f".{sidecar_name}."):
                raise OSError(28, "No space left on device", str(self))
            return real_write_text(self, *args, **kwargs)
        Path.write_text = write_text
        try:
            yield
        finally:
            Path.write_text = real_write_text

    @contextlib.contextmanager
    def patched(obj: Any, name: str, value: Any):
        old = getattr(obj, name)
        setattr(obj, name, value)
        try:
            yield
        finally:
            setattr(obj, name, old)

    def loads(stem: Path) -> tuple[str, str] | None:
        try:
            model_zoo.load_checkpoint(stem)
        except ValueError as exc:
            return "lost", f"the good checkpoint no longer loads: {str(exc)[:200]}"
        return None

    from model_zoo.ofa_parity import randomize_
    other = randomize_(model_zoo.get_supernet("ofa_resnet_tiny", resolutions=(28,)), seed=7)  # other weights

    def save_disk_full() -> tuple[str, str]:
        good = copy_ckpt(F.rn_ckpt, I / "sv" / "ck")
        with disk_full_at("ck.json"):
            try:
                save_checkpoint(other, good, metrics={"top1": 0.9})
            except OSError as exc:
                err = str(exc)
            else:
                return "silent", "the sidecar write failed but save_checkpoint returned"
        return loads(good) or ("ok", f"OSError ({err}); the good checkpoint still loads")
    custom("IF-01", A, "save_checkpoint over a good ResNet checkpoint; the disk fills at the sidecar", save_disk_full)

    def publish_disk_full() -> tuple[str, str]:
        zoo = I / "zoo"
        zoo.mkdir()
        with patched(mck, "WEIGHTS_DIR", zoo):
            model_zoo.publish_checkpoint(F.rn_ckpt, "ofa_resnet_tiny.x")
            with disk_full_at("ofa_resnet_tiny.x.json"):
                try:
                    model_zoo.publish_checkpoint(F.root / "runs" / "rn" / "supernet", "ofa_resnet_tiny.x",
                                                 overwrite=True)
                except OSError as exc:
                    err = str(exc)
                else:
                    return "silent", "the sidecar write failed but publish returned"
            return loads("ofa_resnet_tiny.x") or ("ok", f"OSError ({err}); the old zoo entry still loads")
    custom("IF-02", A, "publish_checkpoint --overwrite of a zoo ResNet entry; the disk fills at the sidecar",
           publish_disk_full)

    def ofa_export_disk_full() -> tuple[str, str]:
        target = I / "ofa.pth"
        model_zoo.export_ofa_checkpoint(F.rn_net, target)
        before = target.read_bytes()

        def broken_save(obj: Any, f: Any, *a: Any, **k: Any) -> None:
            Path(f).write_bytes(b"partial")
            raise OSError(28, "No space left on device")
        with patched(torch, "save", broken_save):
            try:
                model_zoo.export_ofa_checkpoint(F.px_net, target)
            except OSError:
                pass
        return ("ok", "the good OFA file is unchanged") if target.read_bytes() == before else \
            ("lost", "the good OFA file was replaced by a partial one")
    custom("IF-03", A, "export_ofa_checkpoint over a good file; the disk fills mid-write", ofa_export_disk_full)

    def build_dies() -> tuple[str, str]:
        from profilers import LatencyTable
        from profilers.builder import BuildSettings, build_table
        from profilers.record import Protocol
        from profilers.runtimes import get_runtime
        path = I / "mixed.sqlite"
        shutil.copy(F.px_table, path)
        keep = _rows(path, ("entries", "recipes", "calibrations", "corrections"))
        rt = get_runtime("onnxruntime")
        calls = {"n": 0}
        real = rt.measure_many

        def dying(specs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("device disconnected")
            return real(specs)
        quick = Protocol(warmup_s=0, warmup_runs=1, blocks=2, block_s=0.001, min_runs_per_block=1,
                         max_runs_per_block=2)
        try:
            rt.measure_many = dying
            with LatencyTable(path) as t:
                build_table(t, "rn", F.rn_spec, rt, settings=BuildSettings(protocol=quick, calibration_subnets=2))
        except RuntimeError:
            pass
        finally:
            del rt.measure_many
        after = _rows(path, ("entries", "recipes", "calibrations", "corrections"))
        lost = [t for t in ("recipes", "calibrations", "corrections") if not set(keep[t]) <= set(after[t])]
        old_keys = {r for r in keep["entries"]}
        if lost or not old_keys <= set(after["entries"]):
            return "lost", f"rows of the ProxylessNAS recipe gone after the failed ResNet build: {lost or 'entries'}"
        from profilers import LatencyPredictor
        LatencyPredictor.load(path, "local", "onnxruntime", "tiny28").predict([F.px_small])
        return "ok", f"the ProxylessNAS rows survive ({len(after['entries']) - len(keep['entries'])} ResNet rows kept)"
    custom("IF-04", A, "ResNet table build into a ProxylessNAS table; the runtime dies on its second group",
           build_dies)

    def export_sidecar_dies() -> tuple[str, str]:
        from ofakit.artifact import export_subnet, sidecar_path
        out = I / "pair.onnx"
        export_subnet(F.px_ctx, F.px_small, "onnx", out)
        with patched(sys.modules["ofakit.artifact"], "write_sidecar", enospc):
            try:
                export_subnet(F.px_ctx, F.px_large, "onnx", out)
            except OSError:
                pass
        side = sidecar_path(out)
        if side.exists():
            cfg = json.loads(side.read_text())["config"]
            art_cfg = _onnx_config(out)
            if art_cfg is not None and art_cfg != cfg:
                return "lost", f"the artifact ({art_cfg}) sits beside another config's sidecar ({cfg})"
        return "ok", f"no stale sidecar beside the new ProxylessNAS artifact (sidecar exists: {side.exists()})"
    custom("IF-05", A, "ProxylessNAS export over a good pair; the disk fills at the sidecar", export_sidecar_dies)

    def train_final_save_dies() -> tuple[str, str]:
        run = I / "run"
        shutil.copytree(F.rn_run, run)
        save_checkpoint(other, run / "supernet", metrics={"note": "a checkpoint the resumed run will replace"})
        before = {p.name: p.read_bytes() for p in (run / "supernet.safetensors", run / "supernet.json")}
        from typer.testing import CliRunner

        from ofakit.cli import app
        with disk_full_at("supernet.json"):
            r = CliRunner().invoke(app, ["train", "--out", str(run), "--resume"], catch_exceptions=True)
        after = {p.name: p.read_bytes() for p in (run / "supernet.safetensors", run / "supernet.json")}
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            return "traceback", f"uncaught {type(r.exception).__name__}: {r.exception}"
        if after != before:
            try:
                model_zoo.load_checkpoint(run / "supernet")
            except ValueError as exc:
                return "lost", f"the finished run's checkpoint no longer loads: {str(exc)[:200]}"
        return ("ok" if r.exit_code == 2 else "silent"), f"exit {r.exit_code}: {r.stderr.strip()[:200]!r}"
    custom("IF-06", A, "train --resume of a finished ResNet run; the disk fills at the final sidecar",
           train_final_save_dies)


# ====================================================================================== probes: agent
def probes_agent(F: SimpleNamespace) -> None:
    A = "agent"
    from profilers.agent.build import BUILD_HEADER, pack_build
    from profilers.agent.server import make_server
    from profilers.agent.wire import MEASURE_HEADER
    server = make_server("127.0.0.1", 0, TOKEN)
    th = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    th.start()
    host, port = server.server_address[:2]
    good = F.rn_onnx.read_bytes()
    tiny = {"warmup_s": 0, "warmup_runs": 1, "blocks": 2, "block_s": 0.001, "min_runs_per_block": 1,
            "max_runs_per_block": 2}
    params = lambda **kw: json.dumps({"runtime": "onnxruntime", "format": "onnx", "input_shape": [1, 1, 28, 28],  # noqa: E731
                                      "protocol": tiny, **kw})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    log_lines: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            log_lines.append(self.format(record))
    grab = Grab()
    grab.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    agent_log = logging.getLogger("profilers.agent.server")
    agent_log.addHandler(grab)
    agent_log.setLevel(logging.INFO)
    agent_log.propagate = False

    def request(method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 60) -> tuple[int, bytes, dict]:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers={**auth, **(headers or {})})
            r = conn.getresponse()
            return r.status, r.read(), dict(r.getheaders())
        finally:
            conn.close()

    def raw(data: bytes, timeout: float = 20) -> bytes:
        s = socket.create_connection((host, port), timeout=timeout)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            out = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    break
                out += chunk
            return out
        finally:
            s.close()

    def judge(status: int, body: bytes, want: str, needle: Any = None) -> tuple[str, str]:
        """``want``: 'error' (a 4xx JSON error naming the problem) or 'ok' (200)."""
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        text = payload.get("error", "") if isinstance(payload, dict) else body[:200].decode("latin-1")
        if want == "ok":
            return ("ok", f"200: {str(payload)[:120]}") if status == 200 else ("silent", f"valid request refused: {status} {text[:200]}")
        if status == 200:
            return "silent", f"200 for a bad request: {str(payload)[:200]}"
        if status >= 500 and status != 503:
            return "traceback", f"{status}: {text[:300]}"
        if payload is None:
            return "traceback", f"{status} with a non-JSON body: {body[:120]!r}"
        if "\n" in text:
            return "traceback", f"{status} multi-line error: {text[:200]}"
        return "ok", f"{status}: {text[:300]}"

    def measure_probe(pid: str, desc: str, header: str | None, body: bytes = good, want: str = "error",
                      needle: Any = None, extra_headers: dict | None = None) -> None:
        def fn() -> tuple[str, str]:
            hdr = {"Content-Type": "application/octet-stream", **(extra_headers or {})}
            if header is not None:
                hdr[MEASURE_HEADER] = header
            status, data, _ = request("POST", "/v1/measure", body, hdr)
            outcome, detail = judge(status, data, want, needle)
            if outcome == "ok" and want == "error" and needle and _unclear(detail, needle):
                detail += " [unclear]"
            return outcome, detail
        custom(pid, A, desc, fn)

    measure_probe("AG-01", "measure the ResNet artifact (valid, tiny protocol)", params(), want="ok")
    measure_probe("AG-02", "protocol with an unknown key", params(protocol={**tiny, "bogus": 1}), needle="bogus")
    measure_probe("AG-03", "protocol warmup_runs -1", params(protocol={**tiny, "warmup_runs": -1}), needle="-1")
    measure_probe("AG-04", "protocol min_runs_per_block above max", params(protocol={
        **tiny, "min_runs_per_block": 10, "max_runs_per_block": 2}), needle="runs_per_block")
    measure_probe("AG-05", "protocol blocks true", params(protocol={**tiny, "blocks": True}), needle="True")
    measure_probe("AG-06", "protocol warmup_s -1", params(protocol={**tiny, "warmup_s": -1}), needle="-1")
    measure_probe("AG-07", "protocol null", params(protocol=None), needle="protocol")
    measure_probe("AG-08", "input_shape with a float", params(input_shape=[1, 1, 28, 28.0]), needle="28.0")
    measure_probe("AG-09", "input_shape empty", params(input_shape=[]), needle="input_shape")
    measure_probe("AG-10", "input_shape of 3 channels for the 1-channel ResNet", params(input_shape=[1, 3, 28, 28]),
                  needle="shape")
    measure_probe("AG-11", "input_shape 2x2 for the ResNet", params(input_shape=[1, 1, 2, 2]), want="error")
    measure_probe("AG-12", "threads 10**30", params(threads=10 ** 30), needle="threads")
    measure_probe("AG-13", "threads 1.0", params(threads=1.0), needle="threads")
    measure_probe("AG-14", "precision null", params(precision=None), needle="precision")
    measure_probe("AG-15", "precision int8 on onnxruntime", params(precision="int8"), needle="int8")
    measure_probe("AG-16", "provider ''", params(provider=""), needle="provider")
    measure_probe("AG-17", "provider FooExecutionProvider", params(provider="FooExecutionProvider"),
                  needle="FooExecutionProvider")
    measure_probe("AG-18", "runtime a list", params(runtime=["onnxruntime"]), needle="runtime")
    measure_probe("AG-19", "format null", params(format=None), needle="format")
    measure_probe("AG-20", "header JSON nested 100k deep", "[" * 20000 + "]" * 20000, needle="JSON")
    measure_probe("AG-21", "header a JSON string", json.dumps("onnxruntime"), needle="object")
    measure_probe("AG-22", "input_shape 9-D", params(input_shape=[1] * 9), needle="input_shape")
    measure_probe("AG-23", "ONNX with an op of an unknown domain", params(), body=_onnx_custom_op(), needle="op")
    measure_probe("AG-24", "ONNX whose input is int64", params(), body=_onnx_int_input(), needle=["int64", "type"])
    measure_probe("AG-25", "ONNX with two inputs", params(), body=_onnx_two_inputs(), needle="input")
    measure_probe("AG-26", "ONNX initializer stored as external data outside the upload", params(),
                  body=_onnx_external(), needle=["external", "data"])
    measure_probe("AG-27", "ONNX of a ResNet with a truncated tail", params(), body=good[: len(good) - 200],
                  needle="ONNX")
    measure_probe("AG-28", "ONNX identity model (valid)", params(input_shape=[1, 4]), body=_onnx_identity(),
                  want="ok")
    measure_probe("AG-29", "runtime executorch with a fake program", json.dumps(
        {"runtime": "executorch", "format": "pte", "input_shape": [1, 1, 28, 28], "protocol": tiny}),
                  body=b"\x00\x00\x00\x00ET12" + b"\x00" * 64, needle=["program", "pte", "executorch"])
    measure_probe("AG-30", "openvino runtime on the ResNet ONNX (valid)", json.dumps(
        {"runtime": "openvino", "format": "onnx", "input_shape": [1, 1, 28, 28], "protocol": tiny}), want="ok")

    def status_probe(pid: str, desc: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                     want: str = "error", statuses: tuple = ()) -> None:
        def fn() -> tuple[str, str]:
            status, data, _ = request(method, path, body, headers)
            if statuses and status in statuses:
                return "ok", f"{status}: {data[:160]!r}"
            return judge(status, data, want)
        custom(pid, A, desc, fn)

    status_probe("AH-01", "GET /v1/info?x=1 (valid)", "GET", "/v1/info?x=1", want="ok")
    status_probe("AH-02", "GET /v1/info/ (trailing slash)", "GET", "/v1/info/")
    status_probe("AH-03", "HEAD /v1/info", "HEAD", "/v1/info", statuses=(405,))
    status_probe("AH-04", "TRACE /v1/info", "TRACE", "/v1/info", statuses=(405,))
    status_probe("AH-05", "GET with 'Authorization: bearer' lower-case and extra spaces", "GET", "/v1/info",
                 headers={"Authorization": f"bearer    {TOKEN}"}, want="ok")
    status_probe("AH-06", "GET with a latin-1 token", "GET", "/v1/info", headers={"Authorization": "Bearer t\xe9"},
                 statuses=(401,))
    status_probe("AH-07", "GET /v1/info with a body", "GET", "/v1/info", body=b"x" * 10,
                 headers={"Content-Length": "10"}, want="ok")
    status_probe("AH-08", "POST /v1/measure Content-Length '+5'", "POST", "/v1/measure", body=b"12345",
                 headers={"Content-Length": "+5", MEASURE_HEADER: params()})
    status_probe("AH-09", "POST /v1/measure Content-Length 0", "POST", "/v1/measure", body=b"",
                 headers={"Content-Length": "0", MEASURE_HEADER: params()})
    status_probe("AH-10", "POST /v1/measure Content-Length of 30 digits", "POST", "/v1/measure", body=b"x",
                 headers={"Content-Length": "9" * 30, MEASURE_HEADER: params()}, statuses=(413,))
    status_probe("AH-11", "POST /v1/measure/ (unknown path)", "POST", "/v1/measure/", body=good,
                 headers={MEASURE_HEADER: params()})

    def raw_probe(pid: str, desc: str, data: bytes, want_status: Iterable[int]) -> None:
        def fn() -> tuple[str, str]:
            reply = raw(data)
            line = reply.split(b"\r\n", 1)[0].decode("latin-1")
            try:
                status = int(line.split()[1])
            except (IndexError, ValueError):
                code = reply.split(b"Error code: ", 1)[1][:3] if b"Error code: " in reply else b""
                if code.isdigit() and 400 <= int(code) < 500 or code == b"505":
                    return "ok", f"http.server's HTML error page {code.decode()} without a status line (HTTP/0.9 reply)"
                return ("ok", f"connection closed without a reply ({reply[:60]!r})") if not reply else \
                    ("traceback", f"unparseable reply {reply[:120]!r}")
            if status in want_status:
                return "ok", line
            if status >= 500:
                return "traceback", f"{line}: {reply[-200:]!r}"
            return ("ok" if 400 <= status < 500 else "silent"), line
        custom(pid, A, desc, fn)

    hdr = (f"Authorization: Bearer {TOKEN}\r\n{MEASURE_HEADER}: {params()}\r\n").encode()
    raw_probe("AR-01", "two different Content-Length headers", b"POST /v1/measure HTTP/1.1\r\nHost: x\r\n" + hdr +
              b"Content-Length: 5\r\nContent-Length: 50\r\n\r\n" + b"x" * 50, range(400, 500))
    raw_probe("AR-02", "chunked transfer without Content-Length", b"POST /v1/measure HTTP/1.1\r\nHost: x\r\n" + hdr +
              b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", range(400, 500))
    raw_probe("AR-03", "request line of garbage", b"\x00\x01\x02 garbage\r\n\r\n", range(400, 500))
    raw_probe("AR-04", "HTTP/2.0 request version", b"GET /v1/info HTTP/2.0\r\n" + hdr + b"\r\n", (400, 505))
    raw_probe("AR-05", "header line of 70,000 bytes", b"GET /v1/info HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
              range(400, 500))
    raw_probe("AR-06", "body shorter than Content-Length, then half-close",
              b"POST /v1/measure HTTP/1.1\r\nHost: x\r\n" + hdr + b"Content-Length: 1000\r\n\r\n" + good[:100],
              range(400, 500))
    raw_probe("AR-07", "header value with bytes that are not UTF-8", b"POST /v1/measure HTTP/1.1\r\nHost: x\r\n"
              + f"Authorization: Bearer {TOKEN}\r\n".encode() + MEASURE_HEADER.encode() + b": {\"runtime\": \"\xff\xfe\"}"
              + b"\r\nContent-Length: 4\r\n\r\nabcd", range(400, 500))
    raw_probe("AR-08", "101 headers", b"GET /v1/info HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101))
              + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode(), range(400, 500))

    def build_probe(pid: str, desc: str, body: bytes, header: dict | None, needle: Any = None) -> None:
        def fn() -> tuple[str, str]:
            hdr = {"Content-Type": "application/octet-stream"}
            if header is not None:
                hdr[BUILD_HEADER] = json.dumps(header)
            status, data, _ = request("POST", "/v1/build", body, hdr)
            if status == 409:
                return "ok", f"409 (tensorrt unavailable): {data[:160]!r}"
            return judge(status, data, "error", needle)
        custom(pid, A, desc, fn)

    x = np.zeros((1, 1, 28, 28), np.float32)
    bh = {"target": "tensorrt", "precision": "fp32"}
    build_probe("AB-01", "build: inputs.npy as a pickled object array", _zip({"model.onnx": good, "inputs.npy": _npy(
        np.array([object()], dtype=object), allow_pickle=True)}), bh, needle="pickle")
    build_probe("AB-02", "build: inputs.npy float64", _zip({"model.onnx": good, "inputs.npy": _npy(x.astype(np.float64))}),
                bh, needle="float32")
    build_probe("AB-03", "build: max_batch 0", pack_build(good, x), {**bh, "max_batch": 0}, needle="max_batch")
    build_probe("AB-04", "build: model.onnx garbage", pack_build(b"not onnx", x), bh, needle="ONNX")
    build_probe("AB-05", "build: an extra zip member", _zip({"model.onnx": good, "inputs.npy": _npy(x),
                                                             "evil.txt": b"x"}), bh, needle="evil.txt")
    build_probe("AB-06", "build: a '../model.onnx' member", _zip({"../model.onnx": good, "inputs.npy": _npy(x)}), bh,
                needle="model.onnx")
    build_probe("AB-07", "build: precision int4", pack_build(good, x), {**bh, "precision": "int4"}, needle="int4")
    build_probe("AB-08", "build: workspace_mb 1e9", pack_build(good, x), {**bh, "workspace_mb": 10 ** 9},
                needle="workspace_mb")
    build_probe("AB-09", "build: .npy header claiming 10**12 elements", _zip({"model.onnx": good,
                                                                             "inputs.npy": _npy_lying_header()}), bh,
                needle=["inputs.npy", "corrupt"])
    build_probe("AB-10", "build: calibration.npy of rank 3", _zip({"model.onnx": good, "inputs.npy": _npy(x),
                                                                   "calibration.npy": _npy(np.zeros((1, 2, 3),
                                                                                                    np.float32))}),
                bh, needle="calibration")
    build_probe("AB-11", "build: header with an unknown key", pack_build(good, x), {**bh, "fast": True},
                needle="fast")
    build_probe("AB-12", "build: inputs.npy of rank 4 but 0 images", pack_build(good, np.zeros((0, 1, 28, 28),
                                                                                             np.float32)), bh,
                needle=["inputs", "0"])
    # the agent must still serve, and have logged each refusal in one line
    custom("AG-31", A, "agent still serves after the probes (valid measure)", lambda: judge(
        *request("POST", "/v1/measure", good, {MEASURE_HEADER: params(),
                                               "Content-Type": "application/octet-stream"})[:2], "ok"))

    def logs() -> tuple[str, str]:
        multi = [ln for ln in log_lines if "\n" in ln]
        if multi:
            first = multi[0].splitlines()
            return "traceback", f"{len(multi)} multi-line log records, e.g. {first[0][:200]!r} (+{len(first) - 1} lines)"
        return "ok", f"{len(log_lines)} log records, each one line"
    custom("AG-32", A, "the agent logged every refused or failed request in one line", logs)
    agent_log.removeHandler(grab)
    server.shutdown()
    server.server_close()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _npy(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def _npy_lying_header() -> bytes:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1, 1000, 1000), }"
    header = header + " " * (64 - (10 + len(header) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\x00" * 64


def _onnx_model(nodes, inputs, outputs, inits=(), domains=()) -> bytes:
    from onnx import helper
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    opsets = [helper.make_opsetid("", 17), *[helper.make_opsetid(d, 1) for d in domains]]
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = 8
    return m.SerializeToString()


def _onnx_custom_op() -> bytes:
    from onnx import TensorProto, helper
    return _onnx_model([helper.make_node("FooOp", ["x"], ["y"], domain="com.bogus")],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 28, 28])], domains=["com.bogus"])


def _onnx_int_input() -> bytes:
    from onnx import TensorProto, helper
    return _onnx_model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
                       [helper.make_tensor_value_info("x", TensorProto.INT64, [1, 1, 28, 28])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 28, 28])])


def _onnx_two_inputs() -> bytes:
    from onnx import TensorProto, helper
    return _onnx_model([helper.make_node("Add", ["x", "z"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28]),
                        helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 1, 28, 28])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 28, 28])])


def _onnx_identity() -> bytes:
    from onnx import TensorProto, helper
    return _onnx_model([helper.make_node("Identity", ["x"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])


def _onnx_external() -> bytes:
    from onnx import TensorProto, helper
    w = TensorProto()
    w.name, w.data_type = "w", TensorProto.FLOAT
    w.dims.extend([1, 1, 28, 28])
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../../../../../../etc/hostname"), ("offset", "0"), ("length", "3136")):
        e = w.external_data.add()
        e.key, e.value = k, v
    return _onnx_model([helper.make_node("Add", ["x", "w"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 28, 28])], inits=[w])


# ====================================================================================== main
def main() -> int:
    global ONLY
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/probe_faults.json", help="results JSON")
    ap.add_argument("--only", default=None, help="run only probes whose id starts with this")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    ONLY = args.only
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
