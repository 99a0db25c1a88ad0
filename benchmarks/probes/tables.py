"""Probes of latency tables (build, refresh, show, share) and their helpers."""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable

import numpy as np

import model_zoo
from elastic.resnet import ResNetConfig
from probes.harness import cli, probe


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
