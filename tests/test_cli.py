"""The ofakit command line."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from ofakit.cli import app


def test_zoo_list_json():
    result = CliRunner().invoke(app, ["zoo", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["recipe"]: r for r in json.loads(result.output)}
    w10 = rows["ofa_mbv3_d234_e346_k357_w1.0"]
    assert w10["subnets"] == (81 + 729 + 6561) ** 5 * 25
    assert w10["smallest"]["macs"] < w10["largest"]["macs"]


def test_zoo_list_table():
    result = CliRunner().invoke(app, ["zoo", "list"])
    assert result.exit_code == 0 and "ofa_mbv3_tiny" in result.output


def test_zoo_recipes_json():
    result = CliRunner().invoke(app, ["zoo", "recipes", "--json"])
    assert result.exit_code == 0, result.output
    names = {r["name"] for r in json.loads(result.output)}
    assert {"fmnist_tiny", "fmnist_tiny_sandwich"} <= names


def test_train_bad_inputs_are_one_line_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--recipe", "fmnist_tiny", "--data", str(tmp_path / "none"),
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "is neither a dataset name" in result.output
    result = runner.invoke(app, ["train", "--recipe", "no_such_recipe", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "unknown training recipe 'no_such_recipe'" in result.output
    result = runner.invoke(app, ["train", "--recipe", "fmnist_tiny", "--data", f"fashion-mnist:{tmp_path}",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "apt-get install dataset-fashion-mnist" in result.output


def test_train_on_an_imagefolder(tmp_path, monkeypatch):
    """`ofakit train --data imagefolder:DIR --limit --val-size` on a tiny generated ImageFolder (RGB, 24 px):
    a loadable checkpoint whose metadata records the ImageFolder source, its limits and its preprocessing."""
    import model_zoo
    from tests.fakedata import write_imagefolder

    monkeypatch.setenv("OFAKIT_CACHE", str(tmp_path / "cache"))
    root = write_imagefolder(tmp_path / "if", n_train=60, n_test=20, size=24)
    recipe = tmp_path / "mini.toml"  # one short epoch: the CLI has no epochs option, a recipe file sets them
    recipe.write_text("""
supernet = "ofa_mbv3_tiny"
supernet_options = { resolutions = [24] }
[train]
batch_size = 16
calib_images = 32
epoch_calib_images = 16
eval_images = 16
eval_random_subnets = 1
eval_batch_size = 16
log_every = 0
[[phase]]
name = "teacher"
epochs = 1
lr = 0.05
""")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--recipe", str(recipe), "--data", f"imagefolder:{root}",
                                      "--limit", "40", "--val-size", "10", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout)
    assert (out / "supernet.safetensors").is_file() and (out / "supernet.json").is_file()
    data = meta["training"]["data"]
    assert data["kind"] == "imagefolder" and data["path"] == str(root)
    assert data["train_limit"] == 40 and data["val_size"] == 10 and meta["training"]["epochs"] == 1
    pre = meta["preprocess"]
    assert pre["in_channels"] == 3 and pre["image_size"] == 24 and pre["resolutions"] == [24]
    assert pre["classes"] == [f"class{k}" for k in range(10)]
    m = meta["metrics"]
    assert set(m["val_top1"]) == set(m["test_top1"]) == set(m["subnets"]) and "largest" in m["subnets"]
    net = model_zoo.load_checkpoint(out / "supernet")  # sha256 verified against its metadata
    assert net.checkpoint_meta["training"]["data"] == data and net.checkpoint_meta["sha256"] == meta["sha256"]
    with torch.no_grad():
        logits = net.eval()(torch.zeros(2, 3, 24, 24), net.space.largest())
    assert logits.shape == (2, 10) and bool(torch.isfinite(logits).all())
