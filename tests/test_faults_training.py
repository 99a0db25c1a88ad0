"""Fault tables for training inputs (issue 13): recipe values, training-state files, divergence, own data.

Every bad input must end in one ``ValueError`` naming the bad value (the CLI prints it on one line), never a
traceback, a silent acceptance or a checkpoint presented as trained.
"""

from __future__ import annotations

import json
import math
import os
import stat

import pytest
import torch
from safetensors.torch import save_file

import model_zoo
from elastic.fileio import atomic_path
from elastic.training.data import DataSource, default_val_size, load_splits
from elastic.training.schedule import Phase
from elastic.training.train_state import TrainState, load_train_state, save_train_state
from elastic.training.trainer import TrainConfig, Trainer
from model_zoo.training_recipes import recipe_from_dict
from tests.fakedata import write_fmnist, write_imagefolder

BASE = {"supernet": "ofa_mbv3_tiny", "strategy": "sandwich", "schedule": {"epochs": 1}}


@pytest.mark.parametrize("patch, match", [
    ({"train": {"weight_decay": math.nan}}, r"weight_decay=nan: expected a finite float"),
    ({"train": {"momentum": math.inf}}, r"momentum=inf: expected a finite float"),
    ({"train": {"batch_size": -1}}, r"batch_size=-1 is out of range"),
    ({"train": {"batch_size": "64"}}, r"batch_size='64': expected a int"),
    ({"train": {"batch_size": 16.0}}, r"batch_size=16.0: expected a int"),
    ({"train": {"nesterov": 1}}, r"nesterov=1: expected a bool"),
    ({"train": {"label_smoothing": 1.5}}, r"label_smoothing=1.5 is out of range"),
    ({"train": {"eval_images": 0}}, r"eval_images=0 is out of range"),
    ({"train": 3}, r"train=3 must be a table"),
    ({"schedule": {"epochs": 1, "lr": math.inf}}, r"lr=inf: expected a finite float"),
    ({"schedule": {"epochs": 1, "lr": -0.1}}, r"lr=-0.1 is out of range"),
    ({"schedule": {"epochs": 1, "kd_weight": math.nan}}, r"kd_weight=nan: expected a finite float"),
    ({"schedule": {"epochs": 1, "random_subnets": -1}}, r"random_subnets=-1 is out of range"),
    ({"schedule": {"epochs": 0}}, r"epochs=0 is out of range"),
    ({"schedule": {"epochs": {"kernel": 1}}}, r"epochs=\{'kernel': 1\}: expected a int"),
    ({"schedule": {"epochs": 1, "resolution": "big"}}, r"resolution='big'; allowed"),
    ({"strategy": "progressive", "schedule": {"epochs": {"kernal": 1}}}, r"unknown phase name\(s\) \['kernal'\]"),
    ({"strategy": "progressive", "schedule": {"epochs": {"width1": 1}}},
     r"unknown phase name\(s\) \['width1'\] in epochs; allowed for this space: \['teacher', 'kernel', 'depth1'"),
    ({"supernet": "ofa_resnet_tiny", "strategy": "progressive", "schedule": {"epochs": {"kernel": 2}}},
     r"unknown phase name\(s\) \['kernel'\] in epochs; allowed for this space: \['teacher', 'depth1'.*'width2'\]"),
    ({"strategy": "progressive", "schedule": {"epochs": 3}}, r"epochs=3 must be a table of per-phase epochs"),
    ({"strategy": "progressive", "schedule": {"epochs": {"teacher": -2}}}, r"epochs=-2 is out of range"),
    ({"phase": [{"name": "a", "epochs": 1, "lr": 0.1, "ks": "357"}]}, r"ks='357' must be a non-empty list"),
    ({"phase": [{"name": "a", "epochs": 1, "lr": 0.1, "ks": []}]}, r"ks=\[\] must be a non-empty list"),
    ({"phase": [{"name": "a", "epochs": 1.5, "lr": 0.1}]}, r"epochs=1.5: expected a int"),
    ({"phase": [{"name": "a", "epochs": 2, "lr": 0.1, "warmup_epochs": 3}]}, r"warmup_epochs=3 exceeds epochs=2"),
    ({"phase": [{"name": "a", "epochs": 1, "lr": 0.1, "sort_channels": "yes"}]}, r"sort_channels='yes'"),
    ({"phase": [{"name": "a", "epochs": 1, "lr": 0.1, "kernal": 3}]}, r"unknown phase key\(s\) \['kernal'\]"),
    ({"phase": {"name": "a"}}, r"phase=\{'name': 'a'\} must be a list"),
    ({"phase": [{"name": "a\nb", "epochs": 1, "lr": 0.1}]}, r"Phase.name='a\\nb'; allowed: 1 to 100 printable"),
    ({"phase": [{"name": "a", "epochs": 1, "lr": 0.1}], "schedule": {"epochs": 3}},
     r"\[\[phase\]\] tables replace the preset schedule, so \[schedule\] would be ignored"),
    ({"phase": [3]}, r"phase 1 = 3 must be a table"),
    ({"data": {"val_size": 0}}, r"val_size=0 is out of range"),
    ({"data": {"val_size": "5000"}}, r"val_size='5000': expected a int"),
    ({"data": {"image_size": 100000}}, r"image_size=100000 is out of range"),
    ({"data": {"augment": 3}}, r"augment=3 must be a policy name"),
    ({"data": {"augment": "mixup"}}, r"recipe 'custom': \[data\] augment='mixup' is not an augmentation policy"),
    ({"supernet_options": []}, r"supernet_options=\[\] must be a table"),
    ({"supernet": 3}, r"supernet=3 must be a str"),
])
def test_bad_recipe_values_are_one_line_errors(patch, match):
    base = {k: v for k, v in BASE.items() if "phase" not in patch or k == "supernet"}  # phases replace a preset
    data = {**base, **patch}
    if match is None:
        recipe_from_dict(data)
        return
    with pytest.raises(ValueError, match=match) as err:
        recipe_from_dict(data)
    assert "\n" not in str(err.value)


def _state(tmp_path):
    state = TrainState(phase_index=0, epoch=1, global_epoch=1, model={"w": torch.arange(6.0)}, teacher={},
                       optimizer={"state": {}, "param_groups": []}, scheduler={}, rng={"torch": torch.get_rng_state()})
    save_train_state(tmp_path, state)
    return tmp_path / "state.json", tmp_path / json.loads((tmp_path / "state.json").read_text())["tensors"]


def _flip_byte(path):
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x10
    path.write_bytes(bytes(raw))


def _drop(js, key):
    meta = json.loads(js.read_text())
    del meta[key]
    js.write_text(json.dumps(meta))


def _edit_json(**changes):
    def edit(js, _):
        meta = json.loads(js.read_text())
        meta.update(changes)
        js.write_text(json.dumps(meta))
    return edit


@pytest.mark.parametrize("fault, match", [
    (lambda js, t: _flip_byte(t), "does not match the sha256"),
    (lambda js, t: t.write_bytes(t.read_bytes()[:40]), "does not match the sha256"),
    (lambda js, t: t.unlink(), "which is missing"),
    (lambda js, t: js.write_text(js.read_text()[:30]), "is not valid JSON"),
    (lambda js, t: js.write_text("[1, 2]"), "is not an ofa-kit training state"),
    (_edit_json(epoch="2"), "epoch='2' must be a non-negative integer"),
    (_edit_json(global_epoch=-1), "global_epoch=-1 must be a non-negative integer"),
    (_edit_json(tensors="../elsewhere.safetensors"), "which is missing"),
    (_edit_json(sha256="0" * 64), "does not match the sha256"),
    (lambda js, t: _drop(js, "optimizer"), r"lacks \[.optimizer.\]"),
])
def test_corrupt_training_state_is_refused(tmp_path, fault, match):
    js, tensors = _state(tmp_path)
    assert load_train_state(tmp_path).model["w"].tolist() == list(range(6))
    fault(js, tensors)
    with pytest.raises(ValueError, match=match) as err:
        load_train_state(tmp_path)
    assert "\n" not in str(err.value)


def test_unverifiable_legacy_state_still_resumes_and_truncated_legacy_is_an_error(tmp_path, caplog):
    js, tensors = _state(tmp_path)
    meta = json.loads(js.read_text())
    del meta["sha256"]  # written by an older ofa-kit
    js.write_text(json.dumps(meta))
    assert load_train_state(tmp_path).global_epoch == 1
    assert "records no sha256" in caplog.text
    tensors.write_bytes(tensors.read_bytes()[:40])
    with pytest.raises(ValueError, match="cannot be read"):
        load_train_state(tmp_path)
    save_file({"junk": torch.zeros(1)}, str(tensors))
    with pytest.raises(ValueError, match="holds no RNG state"):
        load_train_state(tmp_path)


def test_diverging_loss_stops_training_without_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("OFAKIT_CACHE", str(tmp_path / "cache"))
    splits = load_splits(DataSource("fashion-mnist", write_fmnist(tmp_path / "fm", 64, 16)), val_size=16,
                         train_limit=32)
    net = model_zoo.get_supernet("ofa_mbv3_tiny", resolutions=(28,))
    with torch.no_grad():
        net.classifier.weight.fill_(math.inf)  # a run that has already blown up
    config = TrainConfig(batch_size=16, calib_images=16, epoch_calib_images=16, eval_images=16, log_every=0)
    trainer = Trainer(net, splits, [Phase("teacher", 1, 0.05)], config, tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=r"training diverged: the loss of subnet .* is nan at phase 'teacher' "
                                         r"epoch 1 step 1; lower lr"):
        trainer.run()
    assert not (tmp_path / "run" / "state.json").exists()


def test_a_step_that_breaks_the_weights_saves_nothing(tmp_path, monkeypatch):
    """The loss of every step was finite, but the run's last step left NaN weights: the run stops with the
    same one-line error kind and saves no training state; `save_checkpoint` refuses such weights too."""
    monkeypatch.setenv("OFAKIT_CACHE", str(tmp_path / "cache"))
    splits = load_splits(DataSource("fashion-mnist", write_fmnist(tmp_path / "fm", 64, 16)), val_size=16,
                         train_limit=32)
    net = model_zoo.get_supernet("ofa_mbv3_tiny", resolutions=(28,))
    real, steps = torch.optim.SGD.step, []

    def step(self, *args, **kwargs):  # the second (last) step of the epoch overflows the classifier
        out = real(self, *args, **kwargs)
        steps.append(1)
        if len(steps) == 2:
            with torch.no_grad():
                net.classifier.bias.fill_(math.nan)
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    config = TrainConfig(batch_size=16, calib_images=16, epoch_calib_images=16, eval_images=16, log_every=0)
    trainer = Trainer(net, splits, [Phase("teacher", 1, 0.05)], config, tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=r"training diverged: 1 weight tensor\(s\) hold NaN or infinity after "
                                         r"phase 'teacher' epoch 1 \(first: classifier.bias\); lower lr"):
        trainer.run()
    assert len(steps) == 2 and not (tmp_path / "run" / "state.json").exists()
    assert not list((tmp_path / "run").glob("state-*"))
    with pytest.raises(ValueError, match=r"weights hold NaN or infinity in 1 tensor\(s\) \(first: classifier.bias\)"):
        model_zoo.save_checkpoint(net, tmp_path / "ck")
    assert not list(tmp_path.glob("ck*"))


def test_atomic_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "w.safetensors") as tmp:
            save_file({"x": torch.zeros(2)}, str(tmp))  # safetensors replaces the temp file it is given
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "w.safetensors").stat().st_mode) == 0o644


def test_own_grey_imagefolder_keeps_its_channels_size_and_statistics(tmp_path):
    root = write_imagefolder(tmp_path / "if", n_train=40, n_test=10, size=20, grey=True)
    s = load_splits(DataSource("imagefolder", root))
    assert s.in_channels == 1 and s.image_size == 20 and s.train[0][0].shape == (1, 20, 20)
    assert len(s.val) == default_val_size(40) == 4  # 10% of a small set, not a fixed 5,000
    assert s.source["augment"] == "crop" and s.source["image_size"] == 20
    pixels = torch.stack([s.val.dataset[i][0] for i in s.train.indices])  # normalised by its own statistics
    assert abs(pixels.mean().item()) < 0.05 and abs(pixels.std().item() - 1) < 0.05
    kinds = [type(t).__name__ for t in s.train.dataset.transform.transforms]
    assert "RandomCrop" in kinds and "RandomHorizontalFlip" not in kinds  # flips only when asked for
    again = load_splits(DataSource("imagefolder", root), preprocess=s.preprocessing())
    assert again.mean == s.mean and again.in_channels == 1
    rgb = load_splits(DataSource("imagefolder", write_imagefolder(tmp_path / "rgb", 40, 10, size=20)), image_size=16)
    assert rgb.in_channels == 3 and rgb.train[0][0].shape == (3, 16, 16)
    from PIL import Image  # grey saved with alpha, or as a grey palette, is still grey; a colour palette is not

    for mode, want in (("LA", 1), ("P", 1), ("RGBP", 3)):
        folder = write_imagefolder(tmp_path / mode, n_train=20, n_test=10, size=12, grey=True)
        for png in folder.rglob("*.png"):
            im = Image.open(png).convert("L")
            im = im.convert("RGB").convert("P", palette=Image.ADAPTIVE) if mode == "RGBP" else im.convert(mode)
            if mode == "RGBP":
                pal = im.getpalette()
                pal[0:3] = [255, 0, 0]  # one colour in the palette
                im.putpalette(pal)
            im.save(png)
        assert load_splits(DataSource("imagefolder", folder)).in_channels == want, mode


def test_corrupt_image_names_the_file(tmp_path):
    root = write_imagefolder(tmp_path / "if", n_train=80, n_test=10, size=20, grey=True)
    bad = sorted((root / "train" / "class9").iterdir())[0]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match=f"cannot read image {bad}"):  # at the statistics pass or at use
        s = load_splits(DataSource("imagefolder", root), val_size=4)
        for i in range(len(s.val.dataset)):
            s.val.dataset[i]
    (root / "train" / "class0" / "0.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image .*0.png"):
        load_splits(DataSource("imagefolder", root))
