"""Training-state checkpoints: safetensors for every tensor, JSON for everything else, written atomically.

Each save writes ``state-<N>.safetensors`` under a new name, then atomically replaces ``state.json``
(which names that file and its sha256), then removes older tensor files. A reader, or a run resumed after
``kill -9`` at any moment, always finds a JSON that points at a complete tensor file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from elastic.fileio import atomic_path, atomic_write_text, sha256_file

FORMAT = "ofa-kit-train-state"
log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Everything needed to continue training exactly where it stopped.

    Attributes:
        phase_index: Index of the phase in the schedule.
        epoch: Epochs of that phase already completed.
        global_epoch: Epochs completed over the whole schedule.
        model: Supernet state dict.
        teacher: State dict of the frozen full network used for distillation (empty if none yet).
        optimizer: ``optimizer.state_dict()``.
        scheduler: ``lr_scheduler.state_dict()``.
        rng: ``{"torch": ByteTensor, "cuda": [ByteTensor, ...]}``.
        meta: JSON extras (schedule, settings, wall time, ...).
    """

    phase_index: int
    epoch: int
    global_epoch: int
    model: dict[str, torch.Tensor]
    teacher: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


def _split_optimizer(opt: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, state = {}, {}
    for pid, entries in opt["state"].items():
        state[str(pid)] = {}
        for k, v in entries.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                state[str(pid)][k] = v
    return tensors, {"state": state, "param_groups": opt["param_groups"]}


def _join_optimizer(tensors: dict[str, torch.Tensor], data: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(pid): dict(v) for pid, v in data["state"].items()}
    for key, t in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = t
    return {"state": state, "param_groups": data["param_groups"]}


def save_train_state(out_dir: str | Path, state: TrainState) -> Path:
    """Atomically write ``state`` under ``out_dir``; returns the path of ``state.json``."""
    out_dir = Path(out_dir)
    tensors = {f"model.{k}": v for k, v in state.model.items()}
    tensors.update({f"teacher.{k}": v for k, v in state.teacher.items()})
    opt_tensors, opt_json = _split_optimizer(state.optimizer)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = state.rng["torch"]
    for i, t in enumerate(state.rng.get("cuda", [])):
        tensors[f"rng.cuda.{i}"] = t
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    name = f"state-{state.global_epoch:04d}.safetensors"
    with atomic_path(out_dir / name) as tmp:
        save_file(tensors, str(tmp))
    meta = {"format": FORMAT, "tensors": name, "sha256": sha256_file(out_dir / name), "phase_index": state.phase_index, "epoch": state.epoch,
            "global_epoch": state.global_epoch, "optimizer": opt_json, "scheduler": state.scheduler,
            "meta": state.meta}
    json_path = out_dir / "state.json"
    atomic_write_text(json_path, json.dumps(meta, indent=1, sort_keys=True) + "\n")
    for old in out_dir.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return json_path


def load_train_state(out_dir: str | Path) -> TrainState | None:
    """The latest state saved under ``out_dir``, or ``None`` when there is none."""
    json_path = Path(out_dir) / "state.json"
    if not json_path.is_file():
        return None
    try:
        meta = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"{json_path} is not valid JSON ({exc}); cannot resume") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{json_path} is not an ofa-kit training state")
    missing = sorted({"tensors", "phase_index", "epoch", "global_epoch", "optimizer", "scheduler", "meta"} - set(meta))
    if missing:
        raise ValueError(f"{json_path} lacks {missing}; cannot resume (the file was edited or truncated)")
    for key in ("phase_index", "epoch", "global_epoch"):
        if not isinstance(meta[key], int) or isinstance(meta[key], bool) or meta[key] < 0:
            raise ValueError(f"{json_path}: {key}={meta[key]!r} must be a non-negative integer; cannot resume")
    tensor_path = Path(out_dir) / str(meta["tensors"])
    if tensor_path.parent != Path(out_dir) or not tensor_path.is_file():
        raise ValueError(f"{json_path} names the tensor file {meta['tensors']!r}, which is missing from {out_dir}; "
                         "cannot resume")
    if "sha256" in meta and sha256_file(tensor_path) != meta["sha256"]:
        raise ValueError(f"{tensor_path} does not match the sha256 recorded in {json_path} (corrupted or "
                         "replaced); cannot resume")
    if "sha256" not in meta:
        log.warning("%s records no sha256 (saved by an older ofa-kit): resuming unverified", json_path)
    try:
        tensors = load_file(str(tensor_path))
    except Exception as exc:  # safetensors raises its own error types for truncated/corrupt files
        raise ValueError(f"{tensor_path} cannot be read ({exc}); cannot resume") from None
    if "rng.torch" not in tensors:
        raise ValueError(f"{tensor_path} holds no RNG state: not an ofa-kit training state")
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "teacher": {}, "optim": {}}
    rng: dict[str, Any] = {"torch": tensors.pop("rng.torch"), "cuda": []}
    for key in sorted(k for k in tensors if k.startswith("rng.cuda.")):
        rng["cuda"].append(tensors.pop(key))
    for key, t in tensors.items():
        head, _, rest = key.partition(".")
        if head not in groups:
            raise ValueError(f"{tensor_path}: unexpected tensor {key!r}; not an ofa-kit training state")
        groups[head][rest if head != "optim" else key] = t
    try:
        optimizer = _join_optimizer(groups["optim"], meta["optimizer"])
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ValueError(f"{json_path}: the optimizer state does not parse ({type(exc).__name__}: {str(exc)[:80]}); "
                         "cannot resume (the file was edited?)") from None
    return TrainState(phase_index=meta["phase_index"], epoch=meta["epoch"], global_epoch=meta["global_epoch"],
                      model=groups["model"], teacher=groups["teacher"], optimizer=optimizer,
                      scheduler=meta["scheduler"], rng=rng, meta=meta["meta"])
