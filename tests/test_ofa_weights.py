"""Official OFA weights: import with parity against the `ofa` package, export back, bad files."""

from __future__ import annotations

import pickle

import pytest
import torch

import model_zoo
from model_zoo.ofa_parity import check_parity, randomize_, reference_supernet
from model_zoo.ofa_weights import export_ofa_checkpoint, import_ofa_checkpoint, ofa_key, to_ofa_state_dict
from tests.conftest import ofa_available

W10 = "ofa_mbv3_d234_e346_k357_w1.0"
W12 = "ofa_mbv3_d234_e346_k357_w1.2"
needs_ofa = pytest.mark.skipif(not ofa_available(), reason="the reference 'ofa' package is not installed")


@needs_ofa
def test_parity_with_ofa_20_configs_several_resolutions():
    report = check_parity(W10, n_configs=20, resolutions=(128, 160, 192, 224))
    assert report.configs == 20
    assert report.logit_scale > 0.05
    assert report.ok(1e-5), report


@needs_ofa
def test_parity_with_ofa_w12():
    assert check_parity(W12, n_configs=4, resolutions=(128, 176)).ok(1e-5)


@needs_ofa
def test_state_dict_keys_match_ofa_exactly():
    for name in (W10, W12):
        ours = model_zoo.get_supernet(name)
        ref = reference_supernet(name)
        assert set(to_ofa_state_dict(ours)) == set(ref.state_dict())


@needs_ofa
def test_export_is_readable_by_ofa(tmp_path):
    ours = randomize_(model_zoo.get_supernet(W10, num_classes=10), seed=4).eval()
    path = export_ofa_checkpoint(ours, tmp_path / "ofa_layout.pth")
    ref = reference_supernet(W10, num_classes=10)
    ref.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    ref.eval()
    cfg = ours.space.sample(__import__("numpy").random.default_rng(3))
    ref.set_active_subnet(**cfg.to_ofa())
    x = torch.randn(2, 3, cfg.r, cfg.r)
    with torch.no_grad():
        assert (ref(x) - ours(x, cfg)).abs().max() <= 1e-5
    again = import_ofa_checkpoint(W10, path)
    for k, v in ours.state_dict().items():
        assert torch.equal(again.state_dict()[k], v)


def test_import_accepts_aliases_and_bare_state_dicts(tmp_path):
    ours = randomize_(model_zoo.get_supernet(W10, num_classes=7), seed=2)
    legacy = {k.replace(".bn.bn.", ".bn.").replace("blocks.3.conv.", "blocks.3.mobile_inverted_conv."): v
              for k, v in to_ofa_state_dict(ours).items() if not k.endswith("num_batches_tracked")}
    torch.save(legacy, tmp_path / "legacy.pth")
    again = import_ofa_checkpoint(W10, tmp_path / "legacy.pth")
    assert again.spec.num_classes == 7
    assert torch.equal(again.blocks[2].dw_bn.weight, ours.blocks[2].dw_bn.weight)


def test_import_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        import_ofa_checkpoint(W10, tmp_path / "missing.pth")
    (tmp_path / "corrupt.pth").write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    with pytest.raises(ValueError, match="cannot read OFA checkpoint .*corrupt.pth"):
        import_ofa_checkpoint(W10, tmp_path / "corrupt.pth")
    with open(tmp_path / "evil.pth", "wb") as fh:
        pickle.dump({"state_dict": {"x": object()}}, fh)
    with pytest.raises(ValueError, match="weights-only"):
        import_ofa_checkpoint(W10, tmp_path / "evil.pth")
    torch.save({"epoch": 3}, tmp_path / "nostate.pth")
    with pytest.raises(ValueError, match=r"entry 'epoch' \(str key, int value\) is not a named tensor; allowed: a state dict of named tensors"):
        import_ofa_checkpoint(W10, tmp_path / "nostate.pth")
    w12 = to_ofa_state_dict(model_zoo.get_supernet(W12))
    torch.save({"state_dict": w12}, tmp_path / "w12.pth")
    with pytest.raises(ValueError, match=r"does not match recipe 'ofa_mbv3_d234_e346_k357_w1.0': \d+ shape mismatch"):
        import_ofa_checkpoint(W10, tmp_path / "w12.pth")
    partial = dict(list(to_ofa_state_dict(model_zoo.get_supernet(W10)).items())[:-10])
    partial["blocks.99.conv.foo"] = torch.zeros(1)
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"unexpected key\(s\).*missing tensor\(s\)"):
        import_ofa_checkpoint(W10, tmp_path / "partial.pth")


def test_key_mapping_is_total_and_injective():
    keys = list(model_zoo.get_supernet(W10).state_dict())
    mapped = [ofa_key(k) for k in keys]
    assert len(set(mapped)) == len(keys)
    assert ofa_key("blocks.0.dw_conv.transforms.7to5") == "blocks.1.conv.depth_conv.conv.7to5_matrix"
    with pytest.raises(ValueError, match="no OFA name"):
        ofa_key("blocks.0.unknown")
