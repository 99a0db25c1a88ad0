"""The probe harness: outcome classes (ok / traceback / silent / lost), the API, CLI and custom runners, the
record of results, and the fixtures every area shares (`setup`)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sqlite3
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

torch.set_num_threads(2)
import profilers.drift  # noqa: E402

profilers.drift.SETTLE_PAUSES_S = ()  # as the tests do: no pauses to re-take a disturbed measurement
logging.basicConfig(level=logging.ERROR)
import warnings  # noqa: E402

warnings.filterwarnings("ignore", message="Detected pickle protocol")

import model_zoo  # noqa: E402
from model_zoo.checkpoint import checkpoint_paths  # noqa: E402

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
