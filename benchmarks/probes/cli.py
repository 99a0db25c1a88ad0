"""Probes of the search, export and ship command line, and of the caches."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from elastic.resnet import ResNetConfig
from model_zoo.checkpoint import checkpoint_paths
from probes.harness import (
    TOKEN,
    ZOO,
    _record,
    _skip,
    _unclear,
    _where,
    cli,
    copy_ckpt,
    custom,
    edit_sidecar,
    write_json,
)
from probes.tables import _rows


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
