"""The accuracy dataset for search: (subnet, validation accuracy) pairs measured on a trained supernet and
cached (the predictors that learn from it live in :mod:`ofakit.search.predictors`).

The dataset is measured, not modelled: each sampled subnet is extracted, its BatchNorm recalibrated, and
its top-1 taken on the held-out validation split (never the test split). It is written as JSON lines, one
subnet per line, flushed as it goes, so a killed build resumes where it stopped; the header line names
the checkpoint (sha256) and protocol, and a cache for another checkpoint or protocol is rebuilt.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from elastic.batch import ConfigBatch
from elastic.families import Config, Space
from elastic.fileio import atomic_write_text
from elastic.training.evaluate import correct_with, loader

log = logging.getLogger(__name__)

FORMAT = "ofa-kit-accuracy-data"
VERSION = 1


def materialize(ds: Dataset, batch_size: int = 1000) -> TensorDataset:
    """``ds`` decoded once into tensors (evaluating hundreds of subnets then costs only the forward passes)."""
    xs, ys = zip(*loader(ds, batch_size))
    return TensorDataset(torch.cat(xs), torch.cat(ys))


def ort_correct(net: torch.nn.Module, data: TensorDataset, r: int, batch_size: int = 200) -> np.ndarray:
    """Per-image correctness of ``net`` on ``data`` (resized to ``r``) run in onnxruntime on one thread
    (``net`` untouched)."""
    from deploy_targets import ExportSpec
    from deploy_targets.onnx_export import INPUT_NAME, onnx_bytes, ort_session

    images, labels = data.tensors
    if len(labels) == 0:
        raise ValueError("accuracy needs at least one labelled image")
    session = ort_session(onnx_bytes(ExportSpec(net, (1, images.shape[1], r, r), Path("unused.onnx"),
                                                dynamic_batch=True)))
    batches = ((images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(labels), batch_size))
    return correct_with(lambda x: session.run(None, {INPUT_NAME: x.contiguous().numpy()})[0], batches, r).numpy()


@dataclass(frozen=True)
class AccuracyData:
    """Measured subnets of one supernet: ``configs[i]`` reached top-1 ``acc[i]`` on the validation split.

    ``halves[i]`` (when measured) is its top-1 on each of two disjoint halves of the validation split: how
    far two equally good measurements disagree, the noise an accuracy predictor cannot beat.
    """

    space: Space
    configs: tuple[Config, ...]
    acc: np.ndarray
    header: dict[str, Any] = field(default_factory=dict)
    halves: np.ndarray | None = None

    def batch(self) -> ConfigBatch:
        """The configs as a :class:`ConfigBatch`."""
        return ConfigBatch.from_configs(self.space, list(self.configs))

    def halves_tau(self) -> float | None:
        """Kendall τ between the top-1 on the two validation halves: how well two independent measurements
        of half the size rank the subnets alike. ``None`` without per-half figures (an older cache)."""
        if self.halves is None or len(self.halves) < 2 or np.isnan(self.halves).any():
            return None
        return kendall_tau(self.halves[:, 0], self.halves[:, 1])

    def noise_ceiling(self) -> float | None:
        """The Kendall τ a perfect predictor would reach against these labels: the label noise's limit.

        With halves ``h1 = t + e1`` and ``h2 = t + e2`` (independent errors of variance σ²), the true spread is
        ``cov(h1, h2)`` and a full-split label ``(h1 + h2) / 2`` has noise variance ``var(h1 - h2) / 4``; for
        normal errors the τ between truth and label is ``(2/π)·asin(ρ)``, ``ρ² = spread / (spread + noise)``.
        (Applied to one half, the same formula reproduces :meth:`halves_tau`.) ``None`` without halves.
        """
        if self.halves_tau() is None:
            return None
        h1, h2 = self.halves[:, 0], self.halves[:, 1]
        spread, noise = float(np.cov(h1, h2)[0, 1]), float(np.var(h1 - h2, ddof=1)) / 4
        if spread <= 0:
            return 0.0
        return float(2 / np.pi * np.arcsin(np.sqrt(spread / (spread + noise))))


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's τ-b of two score vectors."""
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def score(result: float | np.ndarray) -> dict[str, Any]:
    """A cache record's figures from what ``evaluate`` returned: a top-1, or per-image correctness (then
    also the top-1 of each half of the images)."""
    if np.ndim(result) == 0:
        return {"val_top1": float(result)}
    hits = np.asarray(result, dtype=np.float64)
    half = len(hits) // 2
    if half == 0:
        raise ValueError("per-image results need at least two images")
    return {"val_top1": float(hits.mean()), "val_halves": [float(hits[:half].mean()), float(hits[half:].mean())]}


def sample_configs(space: Space, n: int, seed: int) -> list[Config]:
    """``n`` distinct subnets: the largest and smallest, then seeded random ones (distinct networks)."""
    if n < 2:
        raise ValueError(f"n={n} subnets is too few for an accuracy dataset; allowed: 2 or more")
    rng = np.random.default_rng(seed)
    out, seen = [], set()
    for cfg in [space.largest(), space.smallest()]:
        out.append(cfg)
        seen.add(space.canonical(cfg))
    while len(out) < n:
        cfg = space.sample(rng)
        if space.canonical(cfg) not in seen:
            seen.add(space.canonical(cfg))
            out.append(cfg)
    return out


def _read(path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]], int]:
    """Header, complete records, and the byte length of the complete part (a torn last line is dropped)."""
    if not path.is_file():
        return None, [], 0
    raw = path.read_bytes()
    lines, good, header, records = raw.split(b"\n"), 0, None, []
    for i, line in enumerate(lines[:-1]):  # the part after the last newline is incomplete by construction
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            if not any(rest.strip() for rest in lines[i + 1:]):
                break  # a torn last line (a torn header with nothing after it included): dropped
            raise ValueError(f"{path} line {i + 1} is not valid JSON but later lines follow (a hand edit?); fix "
                             f"or delete that line (or the file, to re-measure)") from None
        if i == 0:
            if not isinstance(obj, dict):
                raise ValueError(f"{path} line 1 is not an accuracy-dataset header (a JSON object), got "
                                 f"{type(obj).__name__}; delete the file to re-measure")
            header = obj
        else:
            if not (isinstance(obj, dict) and isinstance(obj.get("config"), str)
                    and isinstance(obj.get("val_top1"), (int, float)) and not isinstance(obj["val_top1"], bool)
                    and 0 <= obj["val_top1"] <= 1):
                raise ValueError(f"{path} line {i + 1} is not an accuracy record (a JSON object with a 'config' "
                                 f"string and a 'val_top1' from 0 to 1); fix or delete that line")
            halves = obj.get("val_halves")
            if halves is not None and not (isinstance(halves, list) and len(halves) == 2 and all(
                    isinstance(h, (int, float)) and not isinstance(h, bool) and 0 <= h <= 1 for h in halves)):
                raise ValueError(f"{path} line {i + 1}: val_halves={str(halves)[:60]} must be two top-1 values from "
                                 "0 to 1; fix or delete that line")
            obj["_line"] = i + 1
            records.append(obj)
        good += len(line) + 1
    return header, records, good


def _config(space: Space, record: dict[str, Any], path: Path) -> Config:
    """The subnet of an accuracy record, with the file and line named when it is not one of ``space``."""
    try:
        return space.validate(space.config_type.from_json(record["config"]))
    except ValueError as exc:
        raise ValueError(f"{path} line {record.get('_line', '?')}: {exc} (a record of another supernet? delete the "
                         "file to re-measure)") from None


def build_accuracy_data(space: Space, evaluate: Callable[[Config], float | np.ndarray], path: str | Path,
                        n: int,
                        header: dict[str, Any], seed: int = 0,
                        progress: Callable[[int, int], None] | None = None,
                        extra: Sequence[Config] = (), workers: int = 1) -> AccuracyData:
    """Measure (or resume measuring) ``n`` subnets of ``space``, then ``extra`` ones, into the JSON-lines
    cache ``path``.

    Args:
        space: The supernet's space.
        evaluate: Validation top-1 of one subnet (extraction, BatchNorm recalibration, evaluation), or its
            per-image correctness on the validation split (then the cache also holds each half's top-1).
        path: The cache; resumed when its header equals ``header`` (plus format fields), rebuilt otherwise.
            Subnets are drawn in a fixed seeded order, so a cache of more subnets serves fewer.
        n: Number of sampled subnets (largest, smallest and seeded random ones), or 0 for ``extra`` only.
        header: What identifies the measurement (checkpoint sha256, split, calibration size ...).
        seed: Seed of the sampled subnets.
        progress: Called with ``(done, total)`` after every subnet.
        extra: Chosen subnets measured after the sampled ones (e.g. :mod:`ofakit.search.front_sampling`'s), marked
            ``"origin": "front"`` in the cache (see :func:`cached_front`) and returned after them.
        workers: Processes evaluating subnets side by side, one thread each (forked, so ``evaluate`` and what
            it holds are shared, not copied or pickled; POSIX only, else one). Records are written by this
            process in the sampled order (a result that is ready early waits for the ones before it).
    """
    path = Path(path)
    want = _want(header, seed)
    have, records, good = _read(path)
    if have != want:
        if have is not None:
            log.warning("accuracy cache %s was measured for another checkpoint or protocol; rebuilding it", path)
        atomic_write_text(path, json.dumps(want, sort_keys=True) + "\n")
        records, good = [], len(json.dumps(want, sort_keys=True)) + 1
    with open(path, "r+b") as f:
        f.truncate(good)  # drop a line torn by a kill
    cfgs = sample_configs(space, n, seed) if n else []  # 0: only ``extra``
    chosen = {c.to_json() for c in extra} - {c.to_json() for c in cfgs}
    cfgs += [c for c in dict.fromkeys(space.validate(c) for c in extra) if c.to_json() in chosen]
    done = {r["config"]: r for r in records}
    todo = [c for c in cfgs if c.to_json() not in done]
    if todo:
        par = workers if isinstance(workers, int) and not isinstance(workers, bool) and workers > 1 else 1
        log.info("accuracy dataset: %d of %d subnets to evaluate on the validation split (each: extraction, "
                 "BatchNorm recalibration, evaluation; typically 1-5 s each on a CPU, so ~%.0f-%.0f min%s), cached "
                 "in %s and resumed after an interruption", len(todo), len(cfgs), len(todo) / 60 / par,
                 5 * len(todo) / 60 / par, f" with {par} workers" if par > 1 else "", path)
    t0, step = time.perf_counter(), max(1, len(todo) // 10)
    with open(path, "a", encoding="utf-8") as f, _evaluations(evaluate, todo, workers) as results:
        for i, (cfg, result) in enumerate(results):
            rec = {"config": cfg.to_json(), **score(result)}
            if cfg.to_json() in chosen:
                rec["origin"] = "front"
            if i == 0 or (i + 1) % step == 0 or i + 1 == len(todo):
                per = (time.perf_counter() - t0) / (i + 1)
                log.info("accuracy dataset: %d/%d subnets evaluated (%.2f s each, ~%.0f min left)", i + 1,
                         len(todo), per, per * (len(todo) - i - 1) / 60)
            done[cfg.to_json()] = rec
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
            if progress:
                progress(len(cfgs) - len(todo) + i + 1, len(cfgs))
    return _data(space, [done[c.to_json()] for c in cfgs], want, path)


_WORKER_EVALUATE: Callable[[Config], Any] | None = None


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` serve large blocks from memory it keeps, instead of mapping fresh pages for each
    one and returning them on ``free`` (whether it could: ``False`` off glibc).

    Eager PyTorch allocates a new output tensor for nearly every op; on CPU each activation above glibc's mmap
    threshold (at most 32 MiB; a batch of 500 small images at 18x18 with 96 channels is 62 MiB) is then freshly
    mapped and page-faulted in, which made a 1x1 convolution 2x and an out-of-place ReLU 8x slower than their
    arithmetic here. Process-wide and irreversible, so only for processes of ours (the accuracy workers): the
    process keeps its peak heap until it exits.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h
    no_mmap = bool(mallopt(M_MMAP_MAX, 0))  # no block is mapped on its own: all come from the heap it keeps
    no_trim = bool(mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1))  # (fits a C int) freed heap is not given back
    return no_mmap and no_trim


def _worker_init(evaluate: Callable[[Config], Any]) -> None:
    global _WORKER_EVALUATE
    _WORKER_EVALUATE = evaluate
    keep_freed_memory()
    torch.set_num_threads(1)  # the processes share the cores; also what makes OpenMP safe after a fork
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops the pool (one message, not three)


def _worker_run(cfg: Config) -> tuple[Config, Any]:
    return cfg, _WORKER_EVALUATE(cfg)


@contextmanager
def _evaluations(evaluate: Callable[[Config], Any], todo: list[Config],
                 workers: int) -> Iterator[Iterator[tuple[Config, Any]]]:
    """``(cfg, evaluate(cfg))`` for every ``cfg`` of ``todo``, in order: in this process, or computed by
    ``workers`` forked processes (stopped, not waited for, when the caller stops early or fails)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} must be a positive integer")
    workers = min(workers, len(todo))
    if workers <= 1 or "fork" not in mp.get_all_start_methods():
        yield ((cfg, evaluate(cfg)) for cfg in todo)
        return
    pool = mp.get_context("fork").Pool(workers, initializer=_worker_init, initargs=(evaluate,))
    try:
        yield pool.imap(_worker_run, todo)  # in order: the cache lists subnets as sampled, whoever finishes first
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _want(header: dict[str, Any], seed: int) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "seed": seed, **header}


def cached_front(path: str | Path, space: Space, header: dict[str, Any], seed: int = 0) -> list[Config]:
    """The ``extra`` subnets already measured in the cache ``path`` for ``header``, in the order measured."""
    have, records, _ = _read(Path(path))
    if have != _want(header, seed):
        return []
    return [_config(space, r, Path(path)) for r in records if r.get("origin") == "front"]


def cached_samples(path: str | Path, header: dict[str, Any], seed: int = 0) -> int:
    """How many sampled (not ``extra``) subnets the cache ``path`` holds for ``header`` (0 for another one)."""
    have, records, _ = _read(Path(path))
    if have != _want(header, seed):
        return 0
    return sum(r.get("origin") != "front" for r in records)


def _data(space: Space, records: list[dict[str, Any]], header: dict[str, Any], path: Path) -> AccuracyData:
    cfgs = tuple(_config(space, r, path) for r in records)
    halves = np.array([r.get("val_halves", [np.nan, np.nan]) for r in records], dtype=np.float64).reshape(-1, 2)
    return AccuracyData(space, cfgs, np.array([r["val_top1"] for r in records], dtype=np.float64), header,
                        None if np.isnan(halves).all() else halves)


def load_accuracy_data(path: str | Path, space: Space) -> AccuracyData:
    """Read a cache written by :func:`build_accuracy_data` (all its complete records)."""
    header, records, _ = _read(Path(path))
    if header is None or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not an ofa-kit accuracy dataset")
    return _data(space, records, header, Path(path))
