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
