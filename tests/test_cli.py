"""The ofakit command line."""

from __future__ import annotations

import json

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
