"""Supernet training by progressive shrinking (or the sandwich rule): resumable, distributed-ready.

The schedule is a list of :class:`~elastic.training.schedule.Phase` records. Every optimizer step draws its subnets
from a generator seeded by ``(seed, phase, epoch, step)``, so all ranks train the same subnets and a
resumed run draws exactly what an uninterrupted one would. Rank 0 evaluates, logs metrics (JSON lines +
PNG) and checkpoints after every epoch; ``resume=True`` continues from the last checkpoint and reaches the
same weights as an uninterrupted run (one process, same seed).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from torch.utils.data.distributed import DistributedSampler

from elastic.config import SubnetConfig
from elastic.fileio import atomic_write_text
from elastic.ops import nonfinite, resize
from elastic.sorting import sort_channels
from elastic.space import SearchSpace
from elastic.strict import dataclass_kwargs
from elastic.supernet import ElasticMobileNetV3
from elastic.training import distributed
from elastic.training.curves import plot_accuracy_curves
from elastic.training.data import Splits
from elastic.training.evaluate import evaluate_subnets
from elastic.training.schedule import Phase, check_value, validate_schedule
from elastic.training.train_state import TrainState, load_train_state, save_train_state

log = logging.getLogger(__name__)

# Allowed ranges of the numeric TrainConfig fields (inclusive); absent fields only need their type.
_TRAIN_RANGES = {"batch_size": (1, 1 << 16), "momentum": (0.0, 1.0), "weight_decay": (0.0, 1.0),
                 "label_smoothing": (0.0, 0.99), "seed": (0, 2**63 - 1), "calib_images": (1, 10**7),
                 "epoch_calib_images": (1, 10**7), "eval_images": (1, 10**7), "eval_random_subnets": (0, 64),
                 "eval_batch_size": (1, 1 << 16), "num_workers": (0, 256), "log_every": (0, 10**9)}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and evaluation settings shared by all phases.

    ``channels_last`` trains in the NHWC memory format, which makes depthwise convolutions about twice as
    fast on CPUs (oneDNN); results match the default format up to float rounding.
    """

    batch_size: int = 128
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 3e-5
    label_smoothing: float = 0.1
    seed: int = 0
    calib_images: int = 2000
    epoch_calib_images: int = 1000
    eval_images: int = 1000
    eval_random_subnets: int = 2
    eval_batch_size: int = 500
    num_workers: int = 0
    log_every: int = 50
    channels_last: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            check_value(f"train setting {f.name}", getattr(self, f.name), f.type, _TRAIN_RANGES.get(f.name))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """Build from a mapping; unknown keys are an error naming them."""
        return cls(**dataclass_kwargs(cls, data, "train", key="setting"))


def eval_subnets(space: SearchSpace, seed: int, n_random: int) -> dict[str, SubnetConfig]:
    """The subnets tracked every epoch: largest, smallest and ``n_random`` fixed random ones."""
    rng = np.random.default_rng([seed, 12345])
    out = {"largest": space.largest(), "smallest": space.smallest()}
    out.update({f"random{i}": space.sample(rng) for i in range(n_random)})
    return out


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft targets (knowledge distillation)."""
    return torch.sum(-target_probs * F.log_softmax(logits, dim=1), dim=1).mean()


def draw_subnets(phase: Phase, space: SearchSpace, rng: np.random.Generator) -> list[SubnetConfig]:
    """The subnets of one step: with ``phase.resolution == "shared"`` all at one resolution, drawn first;
    with ``"sandwich"`` the largest at the largest resolution, the smallest at the smallest and each random
    one at its own."""
    if phase.subnet is not None:
        return [phase.subnet]
    r = space.r[int(rng.integers(len(space.r)))]
    if phase.sampler == "sandwich":
        if phase.resolution == "sandwich":
            extra = [space.sample(rng) for _ in range(phase.subnets_per_step - 2)]
            return [space.largest(), space.smallest(), *extra]
        extra = [space.sample(rng, r) for _ in range(phase.subnets_per_step - 2)]
        return [space.largest(r), space.smallest(r), *extra]
    return [space.sample(rng, r) for _ in range(phase.subnets_per_step)]


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at ``step`` (linear warm-up, then cosine or constant)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def make_optimizer(model: torch.nn.Module, phase: Phase, config: TrainConfig, steps_per_epoch: int):
    """SGD (no weight decay on biases, BN and kernel transforms) and its per-step warm-up/cosine schedule."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.dim() <= 1 or ".transforms." in name else decay).append(p)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": config.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=phase.lr, momentum=config.momentum, nesterov=config.nesterov)
    total, warm = phase.epochs * steps_per_epoch, int(phase.warmup_epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warm, phase.lr_schedule))
    return opt, sched


def trained_widths(phases: Sequence[Phase], space: SearchSpace) -> tuple[float, ...]:
    """Expand ratios trained by ``phases`` (kept nested when channels are re-sorted)."""
    return tuple(sorted({e for p in phases for e in (p.e or (max(space.e),))}))


_STATE_ERRORS = (RuntimeError, TypeError, KeyError, IndexError, AttributeError)
"""What restoring a hand-edited or foreign training state raises besides a ``ValueError``."""


class Trainer:
    """Runs a schedule on a supernet and writes the run directory.

    Run directory: ``state.json`` + ``state-N.safetensors`` (latest training state), ``metrics.jsonl``
    (one record per epoch), ``accuracy.png`` (validation curves).

    Args:
        supernet: The supernet to train (modified in place).
        splits: Train/val data (``splits.train`` is augmented; BN calibration uses the plain val-split
            transform on training images).
        phases: The schedule.
        config: Optimisation/evaluation settings.
        out_dir: Run directory.
        progress: Show a progress bar on rank 0.
        track: Subnets evaluated after every epoch (default: largest, smallest and
            ``config.eval_random_subnets`` fixed random ones).
    """

    def __init__(self, supernet: ElasticMobileNetV3, splits: Splits, phases: Sequence[Phase], config: TrainConfig,
                 out_dir: str | Path, progress: bool = True, track: Mapping[str, SubnetConfig] | None = None):
        self.supernet, self.splits, self.config = supernet, splits, config
        self.phases = validate_schedule(phases, supernet.space)
        self.out_dir = Path(out_dir)
        self.progress = progress
        if splits.in_channels != supernet.spec.in_channels:
            raise ValueError(f"the data has {splits.in_channels} channel(s) but the supernet expects "
                             f"{supernet.spec.in_channels}; pick a recipe with in_channels={splits.in_channels}")
        if splits.num_classes != supernet.spec.num_classes:
            raise ValueError(f"the data has {splits.num_classes} classes but the supernet has "
                             f"{supernet.spec.num_classes} outputs")
        self.tracked = dict(track) if track else eval_subnets(supernet.space, config.seed, config.eval_random_subnets)
        self.metrics_path = self.out_dir / "metrics.jsonl"

    # ------------------------------------------------------------------ setup
    def calib_set(self, n: int | None = None) -> Subset:
        """Un-augmented training images for BatchNorm recalibration (``calib_images`` by default)."""
        return self.splits.calibration(n or self.config.calib_images)

    def _train_loader(self, rank: int, world: int) -> tuple[DataLoader, DistributedSampler]:
        if self.config.batch_size % world:
            raise ValueError(f"batch_size={self.config.batch_size} must be divisible by the {world} processes")
        sampler = DistributedSampler(self.splits.train, num_replicas=world, rank=rank, shuffle=True,
                                     seed=self.config.seed, drop_last=True)
        per_rank = self.config.batch_size // world
        if len(sampler) < per_rank:
            raise ValueError(f"only {len(sampler)} training images per process, fewer than a batch of {per_rank}")
        loader = DataLoader(self.splits.train, batch_size=per_rank, sampler=sampler, drop_last=True,
                            num_workers=self.config.num_workers)
        return loader, sampler

    def _optimizer(self, phase: Phase, steps_per_epoch: int):
        return make_optimizer(self.supernet, phase, self.config, steps_per_epoch)

    def _teacher(self, state: Mapping[str, torch.Tensor] | None = None) -> torch.nn.Module:
        teacher = self.supernet.extract(self.supernet.space.largest())
        if state is not None:
            teacher.load_state_dict(dict(state))
        return teacher.eval().requires_grad_(False)

    # ------------------------------------------------------------------ run
    def _bad_state(self, exc: BaseException) -> str:
        """The one-line error for a training state that does not fit this run (hand-edited or from another)."""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return (f"the training state in {self.out_dir} does not fit this run ({type(exc).__name__}: {first[:200]}); "
                "restore it, or start again in a new --out")

    def run(self, resume: bool = False) -> list[dict[str, Any]]:
        """Train through the whole schedule; returns the per-epoch metric records."""
        rank, world, device = distributed.setup()
        self.supernet.to(device)
        if self.config.channels_last:
            self.supernet.to(memory_format=torch.channels_last)
        try:
            state = load_train_state(self.out_dir) if resume else None
        except _STATE_ERRORS as exc:
            raise ValueError(self._bad_state(exc)) from None
        if not resume and (self.out_dir / "state.json").exists():
            raise ValueError(f"{self.out_dir} already holds a training run; pass --resume to continue it "
                             "or choose another output directory")
        teacher, pi0, epoch0, global_epoch, records = None, 0, 0, 0, []
        if state is not None:
            try:
                self.supernet.load_state_dict(state.model)
                teacher = self._teacher(state.teacher) if state.teacher else None
                pi0, epoch0, global_epoch = state.phase_index, state.epoch, state.global_epoch
                if not 0 <= pi0 < len(self.phases):
                    raise IndexError(f"phase_index {pi0} is not one of the schedule's {len(self.phases)} phases")
                torch.set_rng_state(state.rng["torch"])
                if state.rng.get("cuda") and torch.cuda.is_available():
                    torch.cuda.set_rng_state_all(state.rng["cuda"])
                records = self._read_records(global_epoch)
            except _STATE_ERRORS as exc:
                raise ValueError(self._bad_state(exc)) from None
            teacher = teacher.to(device) if teacher is not None else None  # outside: out of memory is not bad state
            log.info("resuming at phase %s, epoch %d (global epoch %d)", self.phases[pi0].name, epoch0, global_epoch)
        elif resume:
            log.warning("no checkpoint in %s: starting from scratch", self.out_dir)
        model = self.supernet
        if world > 1:
            model = DistributedDataParallel(self.supernet, find_unused_parameters=True,
                                            device_ids=[device.index] if device.type == "cuda" else None)
        loader, sampler = self._train_loader(rank, world)
        calib = self.calib_set(self.config.epoch_calib_images)
        val_subset = Subset(self.splits.val, range(min(self.config.eval_images, len(self.splits.val))))
        for pi in range(pi0, len(self.phases)):
            phase = self.phases[pi]
            space = phase.space(self.supernet.space)
            resuming = state is not None and pi == state.phase_index
            if resuming and epoch0 >= phase.epochs:
                continue
            if not resuming:
                if phase.sort_channels:
                    sort_channels(self.supernet, keep=trained_widths(self.phases[:pi], self.supernet.space))
                if phase.uses_teacher and teacher is None:
                    teacher = self._teacher().to(device)
            opt, sched = self._optimizer(phase, len(loader))
            if resuming:
                try:
                    opt.load_state_dict(state.optimizer)
                    sched.load_state_dict(state.scheduler)
                except _STATE_ERRORS as exc:
                    raise ValueError(self._bad_state(exc)) from None
            for epoch in range(epoch0 if resuming else 0, phase.epochs):
                sampler.set_epoch(global_epoch)
                t0 = time.perf_counter()
                loss = self._train_epoch(model, phase, pi, space, epoch, opt, sched, teacher, loader, device, rank)
                bad = nonfinite(self.supernet.state_dict())
                if bad:  # a finite loss can still end in a step that broke the weights: never save those
                    raise ValueError(f"training diverged: {len(bad)} weight tensor(s) hold NaN or infinity after "
                                     f"phase {phase.name!r} epoch {epoch + 1} (first: {bad[0]}); lower lr (now "
                                     f"{phase.lr}) or check the data; no checkpoint of this epoch was saved")
                global_epoch += 1
                if distributed.is_main():
                    rec = {"phase": phase.name, "phase_index": pi, "epoch": epoch + 1, "global_epoch": global_epoch,
                           "loss": loss, "lr": sched.get_last_lr()[0], "steps": len(loader),
                           "images": len(loader) * self.config.batch_size, "train_s": time.perf_counter() - t0}
                    rec["val"] = evaluate_subnets(self.supernet, self.tracked, calib, val_subset,
                                                  self.config.eval_batch_size)
                    rec["eval_s"] = time.perf_counter() - t0 - rec["train_s"]
                    records.append(rec)
                    self._write_records(records)
                    self._save(pi, epoch + 1, global_epoch, teacher, opt, sched)
                    log.info("phase %s epoch %d/%d: loss %.4f, val %s", phase.name, epoch + 1, phase.epochs, loss,
                             {k: round(v, 4) for k, v in rec["val"].items()})
                distributed.barrier()
        return records

    def _train_epoch(self, model, phase: Phase, pi: int, space: SearchSpace, epoch: int, opt, sched,
                     teacher, loader: DataLoader, device: torch.device, rank: int) -> float:
        model.train()
        total, count = 0.0, 0
        bar = _Progress(self.progress and rank == 0, f"{phase.name} {epoch + 1}/{phase.epochs}", len(loader))
        with bar:
            for step, (x, y) in enumerate(loader):
                cfgs = draw_subnets(phase, space, np.random.default_rng([self.config.seed, pi, epoch, step]))
                x, y = x.to(device), y.to(device)
                if self.config.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                sized = {cfgs[0].r: resize(x, cfgs[0].r)}
                soft = None
                if phase.uses_teacher:
                    with torch.no_grad():
                        soft = F.softmax(teacher(sized[cfgs[0].r]), dim=1)
                opt.zero_grad(set_to_none=True)
                for i, cfg in enumerate(cfgs):
                    if cfg.r not in sized:
                        sized[cfg.r] = resize(x, cfg.r)
                    out = model(sized[cfg.r], cfg)
                    loss = F.cross_entropy(out, y, label_smoothing=self.config.label_smoothing)
                    if soft is not None and phase.kd_weight > 0:
                        loss = loss + phase.kd_weight * soft_cross_entropy(out, soft)
                    if phase.kd_source == "inplace" and phase.kd_weight > 0 and i == 0:
                        soft = F.softmax(out.detach(), dim=1)
                    value = loss.item()
                    if not math.isfinite(value):
                        raise ValueError(f"training diverged: the loss of subnet {cfg.to_dict()} is {value} at "
                                         f"phase {phase.name!r} epoch {epoch + 1} step {step + 1}; lower lr "
                                         f"(now {phase.lr}) or check the data; no checkpoint of this epoch was saved")
                    loss.backward()
                    total += value
                    count += 1
                opt.step()
                sched.step()
                bar.advance(total / count)
                if rank == 0 and self.config.log_every and (step + 1) % self.config.log_every == 0:
                    log.info("%s epoch %d step %d/%d loss %.4f", phase.name, epoch + 1, step + 1, len(loader),
                             total / count)
        return total / max(count, 1)

    # -------------------------------------------------------------- records
    def _save(self, pi: int, epoch: int, global_epoch: int, teacher, opt, sched) -> None:
        rng = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
        meta = {"phase": self.phases[pi].name, "schedule": [p.to_dict() for p in self.phases],
                "config": self.config.to_dict(), "recipe": self.supernet.recipe}
        save_train_state(self.out_dir, TrainState(
            phase_index=pi, epoch=epoch, global_epoch=global_epoch, model=self.supernet.state_dict(),
            teacher=teacher.state_dict() if teacher is not None else {}, optimizer=opt.state_dict(),
            scheduler=sched.state_dict(), rng=rng, meta=meta))

    def _read_records(self, up_to_epoch: int) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        try:
            recs = [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]
            return [r for r in recs if r["global_epoch"] <= up_to_epoch]
        except (ValueError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{self.metrics_path} is not this run's per-epoch records ({type(exc).__name__}: "
                             f"{str(exc)[:100]}); restore it, or delete it to resume without the earlier records") \
                from None

    def _write_records(self, records: list[dict[str, Any]]) -> None:
        atomic_write_text(self.metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
        try:
            plot_accuracy_curves(records, self.out_dir / "accuracy.png",
                                 title=f"{self.supernet.recipe or 'supernet'}: validation accuracy per subnet")
        except Exception as exc:  # a plotting failure must never stop training
            log.warning("could not write accuracy.png: %s", exc)


class _Progress:
    """A rich progress bar for one epoch (does nothing when disabled)."""

    def __init__(self, enabled: bool, label: str, total: int):
        self.enabled, self.label, self.total = enabled, label, total
        self._progress = self._task = None

    def __enter__(self) -> "_Progress":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn())
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=self.total, loss=float("nan"))
        return self

    def advance(self, loss: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, loss=loss)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
