"""The supernet trainer: each phase kind, KD on/off, sandwich, resume equivalence, DDP, errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import model_zoo
from elastic.training.data import DataSource, load_splits
from elastic.training.schedule import Phase
from elastic.training.train_state import load_train_state
from elastic.training.trainer import TrainConfig, Trainer
from tests.fakedata import write_fmnist

ROOT = Path(__file__).resolve().parents[1]
CONFIG = TrainConfig(batch_size=16, seed=1, calib_images=32, epoch_calib_images=32, eval_images=32,
                     eval_random_subnets=1, eval_batch_size=32, log_every=0)
PHASES = [
    Phase("teacher", 1, 0.05),
    Phase("kernel", 1, 0.02, ks=(3, 5, 7), kd_weight=1.0),
    Phase("depth", 1, 0.02, ks=(3, 5, 7), d=(2, 3, 4), subnets_per_step=2, kd_weight=1.0),
    Phase("expand", 1, 0.02, ks=(3, 5, 7), d=(2, 3, 4), e=(3, 4, 6), subnets_per_step=2, kd_weight=1.0,
          sort_channels=True),
]


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("OFAKIT_CACHE", str(tmp_path / "cache"))
    return write_fmnist(tmp_path / "fmnist", n_train=96, n_test=32)


def splits_of(data_dir, limit=48):
    return load_splits(DataSource("fashion-mnist", data_dir), val_size=32, seed=0, train_limit=limit)


def fresh_net():
    torch.manual_seed(0)
    return model_zoo.get_supernet("ofa_mbv3_tiny", resolutions=(28, 32))


def test_each_phase_runs_and_records(data_dir, tmp_path):
    net = fresh_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    records = Trainer(net, splits_of(data_dir), PHASES, CONFIG, tmp_path / "run", progress=False).run()
    assert [r["phase"] for r in records] == ["teacher", "kernel", "depth", "expand"]
    assert all(set(r["val"]) == {"largest", "smallest", "random0"} for r in records)
    assert all(0 <= v <= 1 for r in records for v in r["val"].values())
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())
    # transform matrices only train once kernels are elastic
    assert not torch.equal(before["blocks.0.dw_conv.transforms.7to5"], net.blocks[0].dw_conv.transforms["7to5"])
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["global_epoch"] for x in lines] == [1, 2, 3, 4]
    assert (tmp_path / "run" / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    state = load_train_state(tmp_path / "run")
    assert (state.phase_index, state.epoch, state.global_epoch) == (3, 1, 4) and state.teacher
    assert len(list((tmp_path / "run").glob("state-*.safetensors"))) == 1


def test_training_learns_a_learnable_task(tmp_path, monkeypatch):
    """On data built to be learnable (class = the height of a bright band), a few teacher epochs take the
    largest subnet's validation top-1 far above chance (10%) and the loss down: the trainer really trains."""
    monkeypatch.setenv("OFAKIT_CACHE", str(tmp_path / "cache"))
    data = write_fmnist(tmp_path / "fmnist", n_train=320, n_test=32)
    splits = load_splits(DataSource("fashion-mnist", data), val_size=64, seed=0, augment="none")
    config = TrainConfig(batch_size=32, seed=1, calib_images=64, epoch_calib_images=64, eval_images=64,
                         eval_random_subnets=0, eval_batch_size=64, log_every=0)
    torch.manual_seed(0)
    net = model_zoo.get_supernet("ofa_mbv3_tiny", resolutions=(28,))
    records = Trainer(net, splits, [Phase("teacher", 4, 0.05)], config, tmp_path / "run", progress=False).run()
    assert records[-1]["val"]["largest"] >= 0.5, records[-1]
    assert records[-1]["loss"] < 0.7 * records[0]["loss"], [r["loss"] for r in records]


def test_kd_on_off_and_sandwich(data_dir, tmp_path):
    s = splits_of(data_dir)
    teacher_then = lambda kd: [Phase("teacher", 1, 0.05), Phase("kernel", 1, 0.02, ks=(3, 5, 7), kd_weight=kd)]
    with_kd = Trainer(fresh_net(), s, teacher_then(1.0), CONFIG, tmp_path / "kd", progress=False).run()
    no_kd = Trainer(fresh_net(), s, teacher_then(0.0), CONFIG, tmp_path / "nokd", progress=False).run()
    assert with_kd[0]["loss"] == no_kd[0]["loss"]  # identical teacher phase
    assert with_kd[1]["loss"] > no_kd[1]["loss"] + 0.1  # the KD term is added
    assert load_train_state(tmp_path / "kd").teacher and not load_train_state(tmp_path / "nokd").teacher
    sandwich = [Phase("sandwich", 1, 0.05, ks=(3, 5, 7), e=(3, 4, 6), d=(2, 3, 4), subnets_per_step=3,
                      sampler="sandwich", kd_weight=1.0, kd_source="inplace")]
    recs = Trainer(fresh_net(), s, sandwich, CONFIG, tmp_path / "sw", progress=False).run()
    assert recs[0]["phase"] == "sandwich" and not load_train_state(tmp_path / "sw").teacher


def test_sandwich_resolution_rule_feeds_each_subnet_its_resolution(data_dir, tmp_path):
    net, seen = fresh_net(), []
    net.register_forward_pre_hook(lambda m, args: seen.append((args[0].shape[-1], args[1])) if m.training else None)
    phases = [Phase("sandwich", 1, 0.05, ks=(3, 5, 7), e=(3, 4, 6), d=(2, 3, 4), subnets_per_step=3,
                    sampler="sandwich", resolution="sandwich", kd_weight=1.0, kd_source="inplace")]
    Trainer(net, splits_of(data_dir), phases, CONFIG, tmp_path / "sw", progress=False).run()
    space = net.space
    assert seen and all(size == cfg.r for size, cfg in seen)
    assert all(cfg == space.largest() for _, cfg in seen[0::3]) and all(cfg == space.smallest() for _, cfg in seen[1::3])
    assert {cfg.r for _, cfg in seen[2::3]} == set(space.r)


def test_resume_after_crash_equals_uninterrupted(data_dir, tmp_path, monkeypatch):
    s = splits_of(data_dir)
    ref = fresh_net()
    Trainer(ref, s, PHASES, CONFIG, tmp_path / "a", progress=False).run()

    net = fresh_net()
    calls = {"n": 0}
    original = torch.optim.SGD.step

    def crash_on_step(self, *a, **k):  # dies mid-epoch, in the middle of the sorted "expand" phase
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt("simulated kill")
        return original(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", crash_on_step)
    with pytest.raises(KeyboardInterrupt):
        Trainer(net, s, PHASES, CONFIG, tmp_path / "b", progress=False).run()
    monkeypatch.setattr(torch.optim.SGD, "step", original)
    assert load_train_state(tmp_path / "b").global_epoch == 3
    resumed = fresh_net()
    recs = Trainer(resumed, s, PHASES, CONFIG, tmp_path / "b", progress=False).run(resume=True)
    assert [r["global_epoch"] for r in recs] == [1, 2, 3, 4]
    for k, v in ref.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    with pytest.raises(ValueError, match="already holds a training run"):
        Trainer(fresh_net(), s, PHASES, CONFIG, tmp_path / "b", progress=False).run()


def test_kill_9_and_resume_via_cli(data_dir, tmp_path):
    recipe = tmp_path / "mini.toml"
    recipe.write_text(f"""
supernet = "ofa_mbv3_tiny"
supernet_options = {{ resolutions = [28] }}
[data]
source = "fashion-mnist:{data_dir}"
val_size = 32
train_limit = 64
[train]
batch_size = 16
calib_images = 100
epoch_calib_images = 16
eval_images = 16
eval_random_subnets = 1
eval_batch_size = 16
[[phase]]
name = "teacher"
epochs = 2
lr = 0.05
[[phase]]
name = "elastic"
epochs = 1
lr = 0.02
ks = [3, 5, 7]
d = [2, 3, 4]
kd_weight = 1.0
""")
    env = {**os.environ, "OFAKIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ofakit", "train", "--recipe", str(recipe), "--json"]
    subprocess.run(cmd + ["--out", str(tmp_path / "a")], check=True, env=env, capture_output=True, cwd=ROOT)
    proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "b")], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "b" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 1 <= load_train_state(tmp_path / "b").global_epoch < 3  # metrics are written just before the state
    subprocess.run([sys.executable, "-m", "ofakit", "train", "--out", str(tmp_path / "b"), "--resume", "--json"],
                   check=True, env=env, capture_output=True, cwd=ROOT)
    a = model_zoo.load_checkpoint(tmp_path / "a" / "supernet")
    b = model_zoo.load_checkpoint(tmp_path / "b" / "supernet")
    for k, v in a.state_dict().items():
        assert torch.equal(b.state_dict()[k], v), k
    assert a.checkpoint_meta["metrics"] == b.checkpoint_meta["metrics"]
    assert b.checkpoint_meta["preprocess"]["resolutions"] == [28]
    # calib_images = 100 asked, but only the 64 training images exist: the metadata states the real number
    assert "recalibration on 64 training images" in b.checkpoint_meta["metrics"]["protocol"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes(data_dir, tmp_path):
    import torch.multiprocessing as mp

    from tests import ddp_worker

    mp.spawn(ddp_worker.run, args=(2, str(data_dir), str(tmp_path / "run"), _free_port(), str(tmp_path)),
             nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["drawn"] == r1["drawn"] and len(r0["drawn"]) == 4 * 1 + 4 * 2  # 4 steps/epoch per rank (64 images, 8 per rank per step)
    assert r0["weights"] == r1["weights"]  # replicas stay identical
    assert r0["saves"] == [0, 0] and r1["saves"] == []  # only rank 0 writes
    assert load_train_state(tmp_path / "run").global_epoch == 2


def test_errors(data_dir, tmp_path):
    s = splits_of(data_dir)
    with pytest.raises(ValueError, match="data has 1 channel.*expects 3"):
        Trainer(model_zoo.get_supernet("ofa_mbv3_tiny", in_channels=3), s, PHASES, CONFIG, tmp_path)
    with pytest.raises(ValueError, match="10 classes but the supernet has 4"):
        Trainer(model_zoo.get_supernet("ofa_mbv3_tiny", num_classes=4), s, PHASES, CONFIG, tmp_path)
    big = TrainConfig(batch_size=64)
    with pytest.raises(ValueError, match="fewer than a batch of 64"):
        Trainer(fresh_net(), s, PHASES, big, tmp_path / "x", progress=False).run()
    with pytest.raises(ValueError, match=r"outside the space"):
        Trainer(fresh_net(), s, [Phase("k", 1, 0.1, ks=(9,))], CONFIG, tmp_path)


def test_channels_last_trains_the_same_network(data_dir, tmp_path):
    # No augmentation: the two runs then see identical inputs, and only the layouts' float rounding differs
    # (with random crops, a few near-constant channels amplify that rounding through BatchNorm).
    s = load_splits(DataSource("fashion-mnist", data_dir), val_size=32, seed=0, train_limit=48, augment="none")
    sandwich = [Phase("sandwich", 1, 0.05, ks=(3, 5, 7), e=(3, 4, 6), d=(2, 3, 4), subnets_per_step=3,
                      sampler="sandwich", resolution="sandwich", kd_weight=1.0, kd_source="inplace")]
    ref, nhwc = fresh_net(), fresh_net()
    torch.manual_seed(3)  # the same augmentation and dropout draws in both runs
    a = Trainer(ref, s, sandwich, CONFIG, tmp_path / "a", progress=False).run()
    cl = TrainConfig(**{**CONFIG.to_dict(), "channels_last": True})
    torch.manual_seed(3)
    b = Trainer(nhwc, s, sandwich, cl, tmp_path / "b", progress=False).run()
    assert nhwc.blocks[1].dw_conv.weight.is_contiguous(memory_format=torch.channels_last)
    init = fresh_net().state_dict()
    # Float rounding differs between the layouts (and BN biases followed by BN get pure-noise gradients), so
    # weights agree closely rather than exactly; their training moved them far more than that.
    # Parameters only: BN running statistics are re-estimated (recalibrated) before any subnet is evaluated.
    weights = {k: v.detach() for k, v in ref.named_parameters()}
    diff = max((nhwc.state_dict()[k] - v).abs().max().item() for k, v in weights.items())
    step = max((v - init[k]).abs().max().item() for k, v in weights.items())
    assert diff < 0.1 * step and abs(a[0]["loss"] - b[0]["loss"]) < 1e-4 * a[0]["loss"]  # measured: 4%, 1e-6
    saved = load_train_state(tmp_path / "b").model
    assert all(t.is_contiguous() for t in saved.values())
