"""Training-state checkpoints: safetensors for every tensor, JSON for everything else, written atomically.

Each save writes ``state-<N>.safetensors`` under a new name, then atomically replaces ``state.json``
(which names that file and its sha256), then removes older tensor files. A reader, or a run resumed after
``kill -9`` at any moment, always finds a JSON that points at a complete tensor file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from elastic.fileio import atomic_path, atomic_write_text

FORMAT = "ofa-kit-train-state"


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
    meta = {"format": FORMAT, "tensors": name, "phase_index": state.phase_index, "epoch": state.epoch,
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
    except json.JSONDecodeError as exc:
        raise ValueError(f"{json_path} is not valid JSON ({exc}); cannot resume") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{json_path} is not an ofa-kit training state")
    tensors = load_file(str(Path(out_dir) / meta["tensors"]))
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "teacher": {}, "optim": {}}
    rng: dict[str, Any] = {"torch": tensors.pop("rng.torch"), "cuda": []}
    for key in sorted(k for k in tensors if k.startswith("rng.cuda.")):
        rng["cuda"].append(tensors.pop(key))
    for key, t in tensors.items():
        head, _, rest = key.partition(".")
        groups[head][rest if head != "optim" else key] = t
    return TrainState(phase_index=meta["phase_index"], epoch=meta["epoch"], global_epoch=meta["global_epoch"],
                      model=groups["model"], teacher=groups["teacher"],
                      optimizer=_join_optimizer(groups["optim"], meta["optimizer"]), scheduler=meta["scheduler"],
                      rng=rng, meta=meta["meta"])
