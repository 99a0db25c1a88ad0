"""The shipyard shared by the ship and closed-loop tests: a tiny checkpoint trained on nothing (random
weights) over a toy Fashion-MNIST, its latency table, and helpers that replay a device of known latency."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import model_zoo
from elastic import SubnetConfig
from elastic.batch import ConfigBatch, CostGrid
from model_zoo.checkpoint import save_checkpoint
from model_zoo.ofa_parity import randomize_
from ofakit.context import CheckpointContext
from ofakit.specialize import Budget, Specializer, latency_name, table_recipe
from profilers import LatencyPredictor, LatencyTable
from profilers.builder import BuildSettings, build_table, refit
from profilers.predictor import Correction
from profilers.record import Measurement, Protocol, Stats, local_device
from profilers.runtimes import get_runtime
from profilers.store import RuntimeKey, spec_id
from tests.fakedata import write_fmnist

# Few runs, but at least half the default protocol's nominal time (blocks x block_s): the demo keeps the table.
QUICK = Protocol(warmup_s=0, warmup_runs=2, blocks=10, block_s=0.01, min_runs_per_block=2, max_runs_per_block=4)
LAT = latency_name("local", "onnxruntime")


def build_shipyard(root: Path, recipe: str = "ofa_mbv3_tiny", calibration: int = 12, n_train: int = 160,
                   val_size: int = 48) -> tuple[CheckpointContext, Path]:
    """A tiny supernet checkpoint at 28 px whose training data is a toy Fashion-MNIST (``val_size`` of its
    ``n_train`` training images held out), plus its latency table (``calibration`` whole subnets timed; the
    default set is the one the demo reuses)."""
    data = write_fmnist(root / "fmnist", n_train=n_train, n_test=48)
    net = randomize_(model_zoo.get_supernet(recipe, num_classes=10, in_channels=1, resolutions=(28,)),
                     seed=2).eval()
    ckpt = save_checkpoint(net, root / "tiny", extra={
        "training": {"recipe": "test", "epochs": 0, "data": {"kind": "fashion-mnist", "path": str(data),
                                                              "val_size": val_size, "seed": 0, "train_limit": None}},
        "preprocess": {"mean": [0.2], "std": [0.3], "resolutions": [28]}})
    table = root / "lut.sqlite"
    with LatencyTable(table) as t:
        build_table(t, "tiny28", net.spec, get_runtime("onnxruntime"),  # the default calibration set: the demo
                    settings=BuildSettings(protocol=QUICK, calibration_subnets=calibration))  # reuses the table
    ctx = CheckpointContext(str(ckpt))  # the CLI's settings, so that both share the accuracy cache
    return ctx, table


class MacsObjective:
    """A known accuracy objective for search tests: more multiply-accumulates is better."""

    def __init__(self, grid: CostGrid) -> None:
        self.grid = grid

    def predict_batch(self, batch: ConfigBatch) -> np.ndarray:
        return self.grid.macs(batch) / 1e9


def recorded(ms: float, rk: RuntimeKey) -> Measurement:
    """A measurement replayed with given statistics (the loop's decisions must not depend on this machine)."""
    stats = Stats(ms, ms, ms, ms, 0.0, ms, 100, 10)
    return Measurement(stats, local_device(gpu=False), rk.name, "recorded", rk.provider, rk.threads, rk.precision,
                       rk.batch, (1, 1, 28, 28), QUICK, 0.0, time.time())


def known_device(ctx: CheckpointContext, good: Path, path: Path, scale: float):
    """A copy of ``good`` whose calibration describes a device with a known latency, ``truth(cfg)`` (a linear
    function of the table's layer sum), and whose stored correction predicts ``scale`` times that."""
    path.write_bytes(good.read_bytes())
    spec = ctx.supernet.spec
    sid = spec_id(spec.to_dict())
    with LatencyTable(path) as t:
        rk = next(iter({e.runtime for e in t.entries("local")}))
        raw = LatencyPredictor(spec, {e.key: e.median_ms for e in t.entries("local", rk)}, Correction(), "local", rk)

        def truth(cfg: SubnetConfig) -> float:
            return float(1.3 * raw.predict_raw([cfg])[0] + 0.05)

        for c in t.calibration("local", rk, sid):
            t.add_calibration("local", sid, c.subnet, recorded(truth(SubnetConfig.from_json(c.subnet)), rk))
        exact = refit(t, table_recipe(t, spec.to_dict()), "local", rk)
        t.put_correction("local", rk, sid, {**exact, "coef": [scale * c for c in exact["coef"]],
                                            "floor": scale * exact["floor"]})
    return truth, rk, sid


def replay(truth, calls: list, budget: Budget | None = None):
    """A meter that times a real exported artifact by replaying ``truth``; it records what it measured."""
    def meter(cfg, artifact, b):
        assert (budget is None or b == budget) and artifact.path.is_file() and artifact.target == "onnx"
        calls.append(cfg.to_json())
        return recorded(truth(cfg), RuntimeKey("onnxruntime", "CPUExecutionProvider"))
    return meter


def macs_specializer(ctx: CheckpointContext, table: Path) -> Specializer:
    return Specializer(ctx, table, [("local", "onnxruntime")], accuracy=MacsObjective(CostGrid.build(ctx.supernet.spec)))
