"""The ExecuTorch target beyond the conformance suite: int8 through PT2E, dynamic batches, checks that fail.

Skipped with the exporter's own reason where ExecuTorch is not installed (``pip install 'ofa-kit[executorch]'``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deploy_targets import ExportSpec, ParityError, get_exporter
from tests.tinynets import CLASSIFIER_SHAPE, images, tiny_classifier, tiny_net

EXPORTER = get_exporter("executorch")
pytestmark = pytest.mark.skipif(EXPORTER.unavailable() is not None,
                                reason=f"executorch: unavailable: {EXPORTER.unavailable()}")
SHAPE = CLASSIFIER_SHAPE


def test_int8_program_is_quantized_within_the_logit_bound(tmp_path):
    """With fewer than 100 example images the int8 check is the logit bound (10% of the largest fp32 logit):
    the program really is quantized (not bit-equal to fp32) and within it."""
    net = tiny_classifier()
    fp32 = EXPORTER.export(ExportSpec(net, SHAPE, tmp_path / "fp32.pte", inputs=images(4, 0)))
    spec = ExportSpec(net, SHAPE, tmp_path / "int8.pte", precision="int8", inputs=images(8, 1),
                      calibration=tuple(images(128, 2).split(32)))
    res = EXPORTER.export(spec)
    s = res.settings
    assert s["precision"] == "int8" and s["calibration_images"] == 128 and s["quantization"]["scheme"] == "pt2e-xnnpack"
    assert s["top1_agreement"] is None and 1e-4 < res.max_abs_diff <= s["parity_tolerance"]
    assert res.path.read_bytes()[4:6] == b"ET" and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    x = images(1, 3)
    with torch.no_grad():
        ref = net(x).numpy()
    got_fp32, got_int8 = EXPORTER.bind(fp32.path, x.numpy())(), EXPORTER.bind(res.path, x.numpy())()
    assert abs(got_fp32 - ref).max() <= 1e-4 < abs(got_int8 - ref).max() <= 0.1 * abs(ref).max()
    assert res.path.stat().st_size < 0.6 * fp32.path.stat().st_size  # int8 weights: a smaller program


def test_int8_export_of_a_channels_last_module(tmp_path):
    """A module whose 3x3 conv weights are channels-last (as after a channels-last evaluation) lowers in int8:
    XNNPACK's layout pass refuses such a weight ("The same constant data tensor can't be used in NHWC format in
    one place and NCHW in another"), so the exporter works on a contiguous copy; the caller's module is left
    channels-last."""
    net = tiny_classifier().to(memory_format=torch.channels_last)
    assert not net[2].weight.is_contiguous()
    res = EXPORTER.export(ExportSpec(net, SHAPE, tmp_path / "cl.pte", precision="int8", inputs=images(8, 1),
                                     calibration=tuple(images(64, 2).split(32))))
    assert res.path.is_file() and res.max_abs_diff <= res.settings["parity_tolerance"]
    assert not net[2].weight.is_contiguous()


def test_top1_agreement_is_checked_and_recorded_and_bad_calibration_fails_it(tmp_path):
    """With 100+ example images int8 is checked on top-1 agreement. Well calibrated, the program passes and
    records its agreement and the bar (lowered here by option, since 200 random images leave near-ties).
    Calibrated on images 1000x dimmer than the checked ones, the int8 input is clipped: top-1 agrees on about
    half, the check refuses the program and nothing is written."""
    x, good = images(200, 1), tuple(images(128, 2).split(32))
    ok = EXPORTER.export(ExportSpec(tiny_classifier(), SHAPE, tmp_path / "ok.pte", precision="int8", inputs=x,
                                    calibration=good, options={"min_top1_agreement": 0.95}))
    assert ok.settings["min_top1_agreement"] == 0.95 <= ok.settings["top1_agreement"] <= 1
    bad = ExportSpec(tiny_classifier(), SHAPE, tmp_path / "bad.pte", precision="int8", inputs=x,
                     calibration=(images(32, 2) * 1e-3,))
    with pytest.raises(ParityError, match=r"top-1 agrees with torch on .* of 200 images < 99.0% \(options "
                                          r"min_top1_agreement; `ofakit export --min-agreement`\); .*bad.pte was not written"):
        EXPORTER.export(bad)
    assert [p.name for p in tmp_path.iterdir()] == ["ok.pte"]


def test_cli_int8_export_of_a_zoo_subnet_with_a_stated_agreement_bar(tmp_path):
    """`ofakit export --target executorch --precision int8 --min-agreement 0.9` of a trained zoo subnet:
    calibrated on 256 validation images, checked on the next 256. Plain PT2E quantization of the zoo's subnets
    agrees with fp32 on 97-99% of images (docs/phones.md), under the default 99% bar (whose refusal is tested on
    the exporter above), so the bar is stated: the export succeeds and its sidecar records the quantization,
    the bar and the agreement reached. The flag is refused, in one line and before any work, where it means
    nothing (fp32)."""
    import json

    from typer.testing import CliRunner

    import model_zoo
    from ofakit.artifact import sidecar_path
    from ofakit.cli import app

    zoo = "ofa_mbv3_tiny_d1234_e2346_k357.fmnist_v2"  # its smallest subnet (4 blocks, 16 px) lowers fastest
    cfg = model_zoo.load_checkpoint(zoo).space.smallest()
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    base = ["export", "--checkpoint", zoo, "--subnet", str(tmp_path / "cfg.json"), "--target", "executorch",
            "--out", str(tmp_path / "m.pte"), "--json", "--min-agreement", "0.9"]
    res = CliRunner().invoke(app, [*base, "--precision", "fp32"])
    assert res.exit_code == 2 and "--min-agreement 0.9 applies to --precision int8" in res.stderr, res.output
    res = CliRunner().invoke(app, [*base, "--precision", "int8"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    side = json.loads(sidecar_path(rec["artifact"]).read_text())
    assert side["target"] == "executorch" and side["config"] == cfg.to_dict()
    exp = side["export"]
    assert exp["precision"] == "int8" and exp["calibration_images"] == 256 and exp["min_top1_agreement"] == 0.9
    assert 0.9 <= exp["top1_agreement"] <= 1 and exp["quantization"]["weights"] == "int8 symmetric per-channel"
    assert side["versions"]["executorch"] and Path(rec["artifact"]).read_bytes()[4:6] == b"ET"


def test_dynamic_batch_runs_every_batch_up_to_its_bound(tmp_path):
    net = tiny_net().eval()
    res = EXPORTER.export(ExportSpec(net, SHAPE, tmp_path / "dyn.pte", dynamic_batch=True, options={"max_batch": 8}))
    assert res.settings["dynamic_batch"] is True and res.settings["max_batch"] == 8
    for n in (1, 5, 8):
        x = images(n, n)
        with torch.no_grad():
            ref = net(x).numpy()
        assert abs(EXPORTER.bind(res.path, x.numpy())() - ref).max() <= 1e-4, n
    with pytest.raises(RuntimeError):
        EXPORTER.bind(res.path, images(9, 9).numpy())()


@pytest.mark.parametrize("kwargs, match", [
    ({"precision": "int8"}, r"precision='int8' needs calibration batches"),
    ({"options": {"max_batch": 8}}, r"max_batch=8 needs dynamic_batch=True"),
    ({"options": {"max_batch": 1}, "dynamic_batch": True}, r"max_batch=1 is not supported; allowed: an integer from 2"),
    ({"precision": "fp16"}, r"executorch does not support precision='fp16'; allowed: \['fp32', 'int8'\]"),
])
def test_bad_settings_are_one_line_errors(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        EXPORTER.export(ExportSpec(tiny_net(), SHAPE, tmp_path / "m.pte", **kwargs))
    assert "\n" not in str(err.value) and list(tmp_path.iterdir()) == []


def test_dynamic_batch_records_the_bound_the_program_accepts(tmp_path):
    """ExecuTorch's XNNPACK lowering may bound a dynamic batch below ``max_batch`` (15 for the default 32 here):
    the export records the bound the program really accepts, with a note, and a batch of that size runs (an
    int8 parity check in chunks of 32 crashed on it); an explicit ``max_batch`` above it is refused."""
    net = tiny_classifier()
    res = EXPORTER.export(ExportSpec(net, SHAPE, tmp_path / "dyn.pte", dynamic_batch=True))
    bound = res.settings["max_batch"]
    assert 2 <= bound <= 32 and bool(res.notes) == (bound < 32)
    x = images(bound, 1)
    with torch.no_grad():
        assert abs(EXPORTER.bind(res.path, x.numpy())() - net(x).numpy()).max() <= 1e-4
    if bound < 32:
        with pytest.raises(ValueError, match=f"bounds this program's batch at {bound}; allowed here"):
            EXPORTER.export(ExportSpec(net, SHAPE, tmp_path / "m.pte", dynamic_batch=True, options={"max_batch": 32}))
        assert not (tmp_path / "m.pte").exists()
