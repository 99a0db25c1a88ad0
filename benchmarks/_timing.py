"""An independent latency timing for benchmarks: plain onnxruntime and ``time.perf_counter``, written here
rather than taken from ofa-kit's profilers, so that a benchmark checks the kit's figures from outside."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def independent_medians(paths: list[Path], rounds: int = 15, runs: int = 60) -> list[float]:
    """Median ms per file: one onnxruntime session each (1 thread), rounds of ``runs`` calls interleaved."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    rng = np.random.default_rng(1)
    sessions = [ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for p in paths]
    feeds = [{s.get_inputs()[0].name: rng.standard_normal(s.get_inputs()[0].shape).astype(np.float32)}
             for s in sessions]
    for s, f in zip(sessions, feeds):
        for _ in range(30):
            s.run(None, f)
    times: list[list[float]] = [[] for _ in paths]
    for _ in range(rounds):
        for i, (s, f) in enumerate(zip(sessions, feeds)):
            s.run(None, f)  # untimed: the previous file evicted this one's weights
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, f)
                times[i].append(time.perf_counter() - t0)
    return [1e3 * float(np.median(t)) for t in times]
