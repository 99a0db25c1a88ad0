"""One conformance suite over every registered runtime: prepare an artifact, measure it, check the record.

A runtime that cannot run here is skipped with its own reason (``runtime_status()``); the record checks
are the same for all: statistics, environment, JSON round trip, and the measured model left untouched.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from profilers.record import Measurement, Protocol
from profilers.runtimes import MeasureSpec, get_runtime, list_runtimes, runtime_status

QUICK = Protocol(warmup_s=0, warmup_runs=2, blocks=3, block_s=0.001, min_runs_per_block=2, max_runs_per_block=4)
SHAPE = (1, 3, 16, 16)


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardswish(), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(8, 4))
    with torch.no_grad():
        m[1].running_var.uniform_(0.5, 1.5)
    return m.eval()


def test_every_runtime_reports_its_status():
    status = runtime_status()
    assert set(status) == set(list_runtimes()) >= {"onnxruntime", "torch", "openvino", "tensorrt", "coreml"}
    for name, s in status.items():
        assert s["available"] == (s["reason"] is None), name
        assert s["available"] or s["reason"], f"{name} is unavailable without a reason"


@pytest.mark.parametrize("name", list_runtimes())
def test_runtime_conformance(name, tmp_path):
    rt = get_runtime(name)
    reason = rt.unavailable()
    if reason is not None:
        pytest.skip(f"unavailable: {name}: {reason}")
    model = _model()
    before = copy.deepcopy(model.state_dict())
    artifact = rt.prepare(model, SHAPE, tmp_path / "model")
    spec = MeasureSpec(artifact, SHAPE, threads=1, protocol=QUICK)
    m = rt.measure(spec)
    assert (m.runtime, m.runtime_version, m.provider) == (name, rt.version(), rt.default_provider)
    assert (m.threads, m.precision, m.batch, m.input_shape, m.protocol) == (1, "fp32", 1, SHAPE, QUICK)
    assert 0 < m.stats.min_ms <= m.stats.p10_ms <= m.stats.median_ms <= m.stats.p90_ms
    assert m.stats.runs >= QUICK.blocks * QUICK.min_runs_per_block and m.stats.blocks == QUICK.blocks
    assert m.device.cores >= 1 and m.measured_at > 0
    assert Measurement.from_dict(m.to_dict()) == m
    for k, v in model.state_dict().items():  # the caller's model is never modified
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="precision='int4' is not supported"):
        MeasureSpec(artifact, SHAPE, precision="int4")
    with pytest.raises(ValueError, match="input_shape"):
        MeasureSpec(artifact, (1, 0, 16, 16))


INT8 = [n for n in list_runtimes() if "int8" in get_runtime(n).precisions]


@pytest.mark.parametrize("name", INT8)
def test_int8_runtime_prepares_and_times_a_quantized_artifact(name, tmp_path):
    """A runtime listing int8 prepares a really quantized artifact (its outputs differ from the fp32 one's by
    quantization noise, within the int8 logit bound) and records the precision with the figure; a precision it
    lacks is refused before any export."""
    rt = get_runtime(name)
    reason = rt.unavailable()
    if reason is not None:
        pytest.skip(f"unavailable: {name}: {reason}")
    from deploy_targets import get_exporter

    model = _model()
    fp32, int8 = (rt.prepare(model, SHAPE, tmp_path / p, p) for p in ("fp32", "int8"))
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1)).numpy()
    bind = get_exporter(rt.artifact_format).bind
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    a, b = bind(fp32, x)(), bind(int8, x)()
    assert abs(a - ref).max() <= 1e-4 < abs(b - ref).max() <= 0.1 * abs(ref).max() + 1e-3
    m = rt.measure(MeasureSpec(int8, SHAPE, precision="int8", protocol=QUICK))
    assert m.precision == "int8" and m.stats.median_ms > 0
    if "fp16" not in rt.precisions:
        with pytest.raises(ValueError, match=f"runtime {name} does not support precision='fp16'"):
            rt.prepare(model, SHAPE, tmp_path / "x", "fp16")
