"""Faults injected at the worst moment: a full disk, a runtime that dies, a kill."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

import model_zoo
from model_zoo.checkpoint import save_checkpoint
from probes.harness import copy_ckpt, custom
from probes.tables import _onnx_config, _rows


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
