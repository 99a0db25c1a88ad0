"""One conformance suite over every registered exporter: export -> validate -> run where this machine can.

Each target either works here or is skipped with the exporter's own ``unavailable`` reason; what cannot
run here (CoreML predictions off macOS) is skipped with that reason too, never silently passed.
"""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch

from deploy_targets import ExporterUnavailable, ExportResult, ExportSpec, get_exporter, list_exporters
from tests.tinynets import tiny_net

SHAPE = (1, 3, 16, 16)


def _runnable(name: str) -> str | None:
    """Why an artifact of exporter ``name`` cannot be executed on this machine (None: it can)."""
    if name == "coreml" and platform.system() != "Darwin":
        return "CoreML predicts only on macOS (the package spec was validated on Linux)"
    return None


@pytest.fixture(params=list_exporters())
def exporter(request):
    exp = get_exporter(request.param)
    reason = exp.unavailable()
    if reason is not None:
        pytest.skip(f"{request.param}: unavailable: {reason}")
    return exp


def test_export_validate_run(exporter, tmp_path):
    net = tiny_net().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    out = tmp_path / f"model{exporter.suffix}"
    res = exporter.export(ExportSpec(net, SHAPE, out, inputs=x))
    assert isinstance(res, ExportResult) and res.path == out and out.exists() and res.target == exporter.name
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items()) and not net.training
    assert res.versions and res.settings["precision"] == "fp32"
    if res.max_abs_diff is not None:  # parity checked at export: within the fp32 tolerance
        assert res.max_abs_diff <= 1e-4
    else:  # not checked: a note must say so and why (any other note, e.g. TensorRT's GPU class, does not count)
        assert any("parity" in n and "not checked" in n for n in res.notes), res.notes
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    why = _runnable(exporter.name)
    if why:
        pytest.skip(why)
    with torch.no_grad():
        ref = net(x).numpy()
    got = exporter.bind(out, x.numpy())()  # the target's one way to run its artifacts
    assert np.abs(np.asarray(got).reshape(ref.shape) - ref).max() <= 1e-4


def test_rejects_unsupported_precision_and_shape(exporter, tmp_path):
    bad = next((p for p in ("fp16", "int8") if p not in exporter.precisions), None)
    if bad is not None:
        with pytest.raises(ValueError, match=rf"{exporter.name} does not support precision='{bad}'"):
            exporter.export(ExportSpec(tiny_net(), SHAPE, tmp_path / f"m{exporter.suffix}", precision=bad))
    with pytest.raises(ValueError, match="must be four positive integers"):
        ExportSpec(tiny_net(), (1, 3, 16), tmp_path / f"m{exporter.suffix}")
    assert not (tmp_path / f"m{exporter.suffix}").exists()


@pytest.mark.parametrize("name", list_exporters())
def test_unavailable_targets_say_what_they_need(name, tmp_path):
    exp = get_exporter(name)
    reason = exp.unavailable()
    if reason is None:
        pytest.skip(f"{name} is available here; test_export_validate_run covers it")
    with pytest.raises(ExporterUnavailable, match=rf"^{name} export is unavailable: "):
        exp.export(ExportSpec(tiny_net(), SHAPE, tmp_path / f"m{exp.suffix}"))


BAD_SPECS = [  # (what is wrong, ExportSpec keyword arguments, error) -- checked before any target runs
    ("1-channel input for a 3-channel stem", {"input_shape": (1, 1, 16, 16)}, r"input_shape=\(1, 1, 16, 16\) does not fit the module"),
    ("input too small for the network", {"input_shape": (1, 3, 1, 1)}, None),
    ("a huge input", {"input_shape": (1, 3, 100_000, 100_000)}, r"holds 30,000,000,000 values; allowed: at most"),
    ("NaN example inputs", {"inputs": torch.full(SHAPE, float("nan"))}, r"inputs hold NaN or infinite values"),
    ("an option no target reads", {"options": {"colour": "blue"}}, r"unknown \w+ option\(s\) \['colour'\]; allowed"),
    ("options that are not a dict", {"options": ["fast"]}, r"options=\['fast'\] must be a dict"),
]


@pytest.mark.parametrize("what, kwargs, match", BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
def test_bad_specs_are_one_line_value_errors(exporter, tmp_path, what, kwargs, match):
    """Malformed specs end in a ValueError naming the bad value (never a target's traceback), no file written."""
    out = tmp_path / f"m{exporter.suffix}"
    args = {"module": tiny_net(), "input_shape": SHAPE, "out": out, **kwargs}
    try:
        exporter.export(ExportSpec(**args))
    except ValueError as exc:
        assert "\n" not in str(exc) and (match is None or __import__("re").search(match, str(exc))), str(exc)
    else:
        assert match is None, f"{what}: accepted"  # a tiny input may still be valid for this network
    assert not out.exists()


def test_bad_artifact_paths_are_refused(exporter, tmp_path):
    """Another suffix (a user's typo) or an existing directory for a file artifact: a one-line error naming
    the path, nothing written."""
    with pytest.raises(ValueError, match=rf"out='.*m\.txt': a {exporter.name} artifact's name must end with "):
        exporter.export(ExportSpec(tiny_net(), SHAPE, tmp_path / "m.txt"))
    if not exporter.artifact_is_dir:
        (tmp_path / f"d{exporter.suffix}").mkdir()
        with pytest.raises(ValueError, match=r"is a directory; give the"):
            exporter.export(ExportSpec(tiny_net(), SHAPE, tmp_path / f"d{exporter.suffix}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if exporter.artifact_is_dir else [f"d{exporter.suffix}"])
