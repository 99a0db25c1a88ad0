"""Fault table for the command line (issue 13): hand-edited checkpoints, bad paths, corrupt tables.

Every case must exit with status 2 and one ``error:`` line naming the problem: no traceback, no silent
success, nothing written where it should not be.
"""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

import model_zoo
from model_zoo.checkpoint import checkpoint_paths
from ofakit.cli import app

ZOO = "ofa_mbv3_tiny.fmnist"


def _edit(meta: dict, **changes) -> dict:
    out = {**meta, **changes}
    return {k: v for k, v in out.items() if v is not _DROP}


_DROP = object()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    weights, sidecar = checkpoint_paths(model_zoo.resolve_checkpoint(ZOO))
    meta = json.loads(sidecar.read_text())
    variants = {"no_json": "{not json", "no_spec": _edit(meta, spec=_DROP), "bad_spec": _edit(meta, spec=3),
                "bad_recipe": _edit(meta, recipe="resnet9"), "list": [1, 2],
                "bad_sha": _edit(meta, sha256="0" * 64)}
    for name, content in variants.items():
        shutil.copy(weights, root / f"{name}.safetensors")
        (root / f"{name}.json").write_text(content if isinstance(content, str) else json.dumps(content))
    net = model_zoo.load_checkpoint(ZOO)
    (root / "subnet.json").write_text(net.space.smallest().to_json())
    (root / "garbage.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x13" * 200)
    (root / "a_file").write_text("x")
    return root


CASES = [  # (id, argv with {w} for the work folder, expected message)
    ("sidecar not JSON", ["export", "--checkpoint", "{w}/no_json", "--subnet", "{w}/subnet.json", "--out", "{w}/o.onnx"],
     "is not valid JSON"),
    ("sidecar without spec", ["export", "--checkpoint", "{w}/no_spec", "--subnet", "{w}/subnet.json", "--out",
                              "{w}/o.onnx"], "lacks ['spec']"),
    ("sidecar spec not a table", ["export", "--checkpoint", "{w}/bad_spec", "--subnet", "{w}/subnet.json", "--out",
                                  "{w}/o.onnx"], "has a bad 'spec' or 'recipe'"),
    ("sidecar unknown recipe", ["export", "--checkpoint", "{w}/bad_recipe", "--subnet", "{w}/subnet.json", "--out",
                                "{w}/o.onnx"], "has a bad 'spec' or 'recipe'"),
    ("sidecar a list", ["export", "--checkpoint", "{w}/list", "--subnet", "{w}/subnet.json", "--out", "{w}/o.onnx"],
     "is not an ofa-kit checkpoint sidecar"),
    ("weights do not match", ["export", "--checkpoint", "{w}/bad_sha", "--subnet", "{w}/subnet.json", "--out",
                              "{w}/o.onnx"], "sha256 mismatch"),
    ("export into a file's folder", ["export", "--checkpoint", ZOO, "--subnet", "{w}/subnet.json", "--out",
                                     "{w}/a_file/o.onnx"], "a_file"),
    ("subnet file is a folder", ["export", "--checkpoint", ZOO, "--subnet", "{w}", "--out", "{w}/o.onnx"],
     "--subnet"),
    ("table is garbage", ["profile", "show", "--table", "{w}/garbage.sqlite"], "is not a latency table"),
    ("table is a folder", ["search", "--checkpoint", ZOO, "--table", "{w}", "--latency-ms", "1"], "is a directory"),
    ("train into a file", ["train", "--recipe", "fmnist_tiny", "--out", "{w}/a_file"], "a_file"),
    ("train: unknown recipe", ["train", "--recipe", "{w}/none.toml", "--out", "{w}/run"], "unknown training recipe"),
]


@pytest.mark.parametrize("argv, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_error(work, argv, message):
    res = CliRunner().invoke(app, [a.format(w=work) for a in argv])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
    assert not (work / "o.onnx").exists() and not (work / "run").exists()
