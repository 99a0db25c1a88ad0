"""ofa-kit checkpoints: round trip, integrity and recipe checks, atomic writes."""

from __future__ import annotations

import json

import pytest
import torch

import model_zoo
from model_zoo.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint


def test_round_trip(tiny, tmp_path):
    path = save_checkpoint(tiny, tmp_path / "sn", metrics={"top1": 0.5}, extra={"preprocess": {"mean": [0.3], "std": [0.2]}})
    assert path.name == "sn.safetensors" and (tmp_path / "sn.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sn.json", "sn.safetensors"]  # no temp files left
    meta = read_checkpoint_meta(path)
    assert meta["recipe"] == "ofa_mbv3_tiny" and meta["num_classes"] == 10 and meta["in_channels"] == 1
    assert meta["space"]["ks"] == [3, 5, 7] and meta["metrics"] == {"top1": 0.5}
    assert meta["preprocess"] == {"mean": [0.3], "std": [0.2]}
    loaded = load_checkpoint(tmp_path / "sn").eval()
    for k, v in tiny.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    cfg = tiny.space.largest()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x, cfg), tiny(x, cfg))
    assert loaded.checkpoint_meta["sha256"] == meta["sha256"]


def test_non_default_options_round_trip(tmp_path):
    net = model_zoo.get_supernet("ofa_mbv3_tiny", num_classes=4, in_channels=3, resolutions=(24, 32))
    save_checkpoint(net, tmp_path / "c.safetensors")
    loaded = load_checkpoint(tmp_path / "c.safetensors")
    assert loaded.spec == net.spec and loaded.space.r == (24, 32)


def test_sha256_mismatch(tiny, tmp_path):
    path = save_checkpoint(tiny, tmp_path / "sn")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_checkpoint(path)


def test_recipe_mismatch(tiny, tmp_path):
    path = save_checkpoint(tiny, tmp_path / "sn")
    sidecar = tmp_path / "sn.json"
    meta = json.loads(sidecar.read_text())
    meta["spec"]["stages"][1]["width"] = 48
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"different 'ofa_mbv3_tiny' architecture \(fields \['stages'\]"):
        load_checkpoint(path)
    meta["recipe"] = "no_such_recipe"
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unknown supernet recipe 'no_such_recipe'"):
        load_checkpoint(path)


@pytest.mark.parametrize("pre, bad", [({"mean": [0.3], "std": [0.0]}, "std"), ({"mean": [0.3], "std": [-1]}, "std"),
                                      ({"mean": [0.3, 0.1], "std": [0.2]}, "mean"), ({"std": [0.2]}, "mean"),
                                      ({"mean": [0.3], "std": ["x"]}, "std"), ("rgb", "preprocess")])
def test_bad_preprocess_record(tiny, tmp_path, pre, bad):
    path = save_checkpoint(tiny, tmp_path / "sn", extra={"preprocess": pre})
    with pytest.raises(ValueError, match=f"sn.json.*{bad}"):
        load_checkpoint(path)


def test_missing_or_bad_files(tiny, tmp_path):
    with pytest.raises(ValueError, match="checkpoint '.*nothing' not found: not a file, and not a zoo checkpoint"):
        load_checkpoint(tmp_path / "nothing")
    path = save_checkpoint(tiny, tmp_path / "sn")
    sidecar = (tmp_path / "sn.json").read_text()
    (tmp_path / "sn.json").unlink()
    with pytest.raises(ValueError, match="sidecar .*sn.json not found"):
        load_checkpoint(path)
    (tmp_path / "sn.json").write_text(sidecar)
    (tmp_path / "sn.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="from a registered recipe"):
        save_checkpoint(model_zoo.get_supernet("ofa_mbv3_tiny").__class__(tiny.spec), tmp_path / "x")
    with pytest.raises(ValueError, match="supernet=Linear must be"):
        save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "x")
    with pytest.raises(ValueError, match=r"extra keys \['metrics', 'sha256'\] are the checkpoint's own"):
        save_checkpoint(tiny, tmp_path / "x", extra={"sha256": "0" * 64, "metrics": 5})
    assert not (tmp_path / "x.json").exists()


def test_failed_write_keeps_old_checkpoint(tiny, tmp_path, monkeypatch):
    path = save_checkpoint(tiny, tmp_path / "sn")
    old = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("model_zoo.checkpoint.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tiny, tmp_path / "sn")
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sn.json", "sn.safetensors"]
    load_checkpoint(path)
