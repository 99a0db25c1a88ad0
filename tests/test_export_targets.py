"""CoreML and TensorRT exporters and runtimes: real conversions where this machine allows them, clear
``unavailable`` reasons where it does not (CoreML predicts only on macOS; TensorRT needs an NVIDIA GPU)."""

from __future__ import annotations

import importlib.util
import platform
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deploy_targets import ExporterUnavailable, ExportSpec, ParityError, get_exporter, list_exporters
from deploy_targets.coreml_export import FP16_REL_TOL, PRECISION_KEY, replace_dir
from deploy_targets.tensorrt_env import is_jetson
from deploy_targets.tensorrt_export import (build_engine, profile_max_batch, tensorrt_unavailable,
                                           write_checked_engine)
from profilers.record import Protocol
from profilers.runtimes import MeasureSpec, RuntimeUnavailable, get_runtime, runtime_status
from tests.tinynets import tiny_net

HAS_CT = importlib.util.find_spec("coremltools") is not None
if HAS_CT:
    import coremltools as ct
# Only the tests that convert need coremltools; the others (TensorRT, registries) never skip for it.
needs_ct = pytest.mark.skipif(not HAS_CT, reason="coremltools is not installed (pip install 'ofa-kit[coreml]')")

SHAPE = (1, 3, 16, 16)
MACOS = platform.system() == "Darwin"
HAS_TRT = importlib.util.find_spec("tensorrt") is not None
HAS_CUDA = torch.cuda.is_available()
QUICK = Protocol(warmup_s=0.0, warmup_runs=2, blocks=2, block_s=0.0, min_runs_per_block=2, max_runs_per_block=2)


def package_spec(path: Path):
    return ct.models.MLModel(str(path), skip_model_load=True).get_spec()


def op_types(spec) -> list[str]:
    blocks = [b for f in spec.mlProgram.functions.values() for b in f.block_specializations.values()]
    return [op.type for b in blocks for op in b.operations]


def test_registries_list_the_new_targets():
    assert {"onnx", "coreml", "tensorrt"} <= set(list_exporters())
    assert get_exporter("coreml").suffix == ".mlpackage" and get_exporter("tensorrt").suffix == ".engine"
    assert get_exporter("coreml").precisions == ("fp32", "fp16")
    assert get_exporter("tensorrt").precisions == ("fp32", "fp16", "int8")
    status = runtime_status()
    assert {"onnxruntime", "openvino", "torch", "tensorrt", "coreml"} <= set(status)
    for name, st in status.items():
        assert st["available"] == (st["reason"] is None), name
        assert st["available"] or len(st["reason"]) > 10, name
    assert status["coreml"]["format"] == "coreml" and status["tensorrt"]["format"] == "onnx"


# ---------------------------------------------------------------- CoreML export (real, on any OS)

@needs_ct
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_coreml_export_writes_a_valid_package(tmp_path, precision):
    net = tiny_net()
    meta = {"author": "ofa-kit tests", "short_description": "tiny net", "version": "7", "subnet": "k3e4d2"}
    res = get_exporter("coreml").export(ExportSpec(net, SHAPE, tmp_path / "m.mlpackage", precision=precision,
                                                   metadata=meta, options={"compute_units": "CPU_ONLY"}))
    assert res.path == tmp_path / "m.mlpackage" and res.path.is_dir()
    assert res.target == "coreml" and res.settings["precision"] == precision
    assert res.settings["compute_units"] == "CPU_ONLY" and "coremltools" in res.versions
    spec = package_spec(res.path)
    (inp,), (out,) = spec.description.input, spec.description.output
    assert (inp.name, tuple(inp.type.multiArrayType.shape)) == ("input", SHAPE)
    assert (out.name, tuple(out.type.multiArrayType.shape)) == ("output", (1, 10))
    float32 = ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    assert inp.type.multiArrayType.dataType == float32 and out.type.multiArrayType.dataType == float32
    md = spec.description.metadata
    assert (md.author, md.shortDescription, md.versionString) == ("ofa-kit tests", "tiny net", "7")
    assert md.userDefined["subnet"] == "k3e4d2" and md.userDefined[PRECISION_KEY] == precision
    casts = op_types(spec).count("cast")  # fp16 compute: float32 I/O cast to and from fp16
    assert (casts >= 2) if precision == "fp16" else (casts == 0)
    assert "conv" in op_types(spec)
    if MACOS:
        assert res.max_abs_diff is not None and res.notes == ()
    else:
        assert res.max_abs_diff is None
        assert any("macOS" in n and "parity" in n for n in res.notes)


@needs_ct
def test_coreml_export_leaves_the_module_untouched(tmp_path):
    net = tiny_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    get_exporter("coreml").export(ExportSpec(net, SHAPE, tmp_path / "m.mlpackage"))
    after = net.state_dict()
    assert net.training and before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


@needs_ct
def test_coreml_export_replaces_an_existing_package(tmp_path):
    target = tmp_path / "m.mlpackage"
    target.mkdir()
    (target / "stale.txt").write_text("old package")
    get_exporter("coreml").export(ExportSpec(tiny_net(), SHAPE, target, precision="fp16"))
    assert not (target / "stale.txt").exists() and (target / "Manifest.json").is_file()
    assert package_spec(target).description.metadata.userDefined[PRECISION_KEY] == "fp16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage"]  # no temporary leftovers
    get_exporter("coreml").export(ExportSpec(tiny_net(seed=4), SHAPE, target, precision="fp32"))
    assert package_spec(target).description.metadata.userDefined[PRECISION_KEY] == "fp32"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage"]


class MatrixInverse(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.inv(x)  # coremltools cannot lower linalg_inv of a non-constant input


class TwoOutputs(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.relu(), x.sigmoid()


@needs_ct
def test_a_failed_coreml_export_keeps_the_previous_package(tmp_path):
    target = tmp_path / "m.mlpackage"
    get_exporter("coreml").export(ExportSpec(tiny_net(), SHAPE, target))
    manifest = (target / "Manifest.json").read_bytes()
    with pytest.raises(NotImplementedError, match="linalg_inv"):
        get_exporter("coreml").export(ExportSpec(MatrixInverse(), SHAPE, target))
    with pytest.raises(ValueError, match=r"the module returns tuple; allowed: one output tensor"):
        get_exporter("coreml").export(ExportSpec(TwoOutputs(), SHAPE, target))
    assert (target / "Manifest.json").read_bytes() == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage"]


def test_replace_dir_restores_the_old_directory_when_the_move_fails(tmp_path):
    dst = tmp_path / "pkg"
    dst.mkdir()
    (dst / "keep.txt").write_text("previous")
    (tmp_path / "staging").mkdir()
    with pytest.raises(FileNotFoundError):
        replace_dir(tmp_path / "staging" / "missing", dst)
    assert (dst / "keep.txt").read_text() == "previous"


@needs_ct
def test_coreml_export_dynamic_batch_records_the_range(tmp_path):
    res = get_exporter("coreml").export(ExportSpec(tiny_net(), SHAPE, tmp_path / "d.mlpackage", dynamic_batch=True,
                                                   options={"max_batch": 4}))
    arr = package_spec(res.path).description.input[0].type.multiArrayType
    batch = arr.shapeRange.sizeRanges[0]
    assert (batch.lowerBound, batch.upperBound) == (1, 4) and tuple(arr.shape) == SHAPE


@pytest.mark.parametrize("options, match", [
    ({"compute_units": "GPU_ONLY"}, r"compute_units='GPU_ONLY'.*allowed: .*CPU_ONLY"),
    ({"units": "ALL"}, r"unknown coreml option\(s\) \['units'\]; allowed"),
])
@needs_ct
def test_coreml_export_rejects_bad_options(tmp_path, options, match):
    with pytest.raises(ValueError, match=match):
        get_exporter("coreml").export(ExportSpec(tiny_net(), SHAPE, tmp_path / "m.mlpackage", options=options))
    assert not (tmp_path / "m.mlpackage").exists()


@needs_ct
def test_coreml_export_rejects_inputs_of_another_shape(tmp_path):
    spec = ExportSpec(tiny_net(), SHAPE, tmp_path / "m.mlpackage", inputs=torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"inputs shape \(2, 3, 16, 16\) is not supported; allowed: \(1, 3, 16, 16\)"):
        get_exporter("coreml").export(spec)


@needs_ct
def test_coreml_export_rejects_int8(tmp_path):
    with pytest.raises(ValueError, match=r"precision='int8'.*allowed: \['fp32', 'fp16'\]"):
        get_exporter("coreml").export(ExportSpec(tiny_net(), SHAPE, tmp_path / "m.mlpackage", precision="int8"))


# ---------------------------------------------------------------- CoreML runtime

@pytest.mark.skipif(MACOS, reason="checks the non-macOS behaviour")
def test_coreml_runtime_is_unavailable_off_macos(tmp_path):
    rt = get_runtime("coreml")
    assert "needs macOS" in rt.unavailable()
    path = rt.prepare(tiny_net(), SHAPE, tmp_path / "m")  # exporting works here; predicting does not
    assert path == tmp_path / "m.mlpackage" and path.is_dir()
    with pytest.raises(RuntimeUnavailable, match=r"^unavailable: coreml: needs macOS"):
        rt.measure(MeasureSpec(path, SHAPE, protocol=QUICK))


@needs_ct
@pytest.mark.skipif(not MACOS, reason="CoreML predicts only on macOS (coremltools converts but cannot run on Linux)")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_coreml_parity_and_timing_on_macos(tmp_path, precision):
    net = tiny_net()
    spec = ExportSpec(net, SHAPE, tmp_path / "m.mlpackage", precision=precision, options={"compute_units": "CPU_ONLY"})
    res = get_exporter("coreml").export(spec)
    with torch.no_grad():
        scale = float(net.eval()(spec.example()).abs().max())
    assert res.max_abs_diff <= (spec.atol if precision == "fp32" else max(spec.atol, FP16_REL_TOL * scale))
    m = get_runtime("coreml").measure(MeasureSpec(res.path, SHAPE, precision=precision, provider="CPU_ONLY",
                                                  protocol=QUICK))
    assert m.provider == "CPU_ONLY" and m.stats.median_ms > 0
    with pytest.raises(ValueError, match="does not match the package"):
        get_runtime("coreml").measure(MeasureSpec(res.path, SHAPE, precision="fp16" if precision == "fp32" else "fp32"))


# ---------------------------------------------------------------- TensorRT

@pytest.mark.skipif(HAS_TRT and HAS_CUDA, reason="TensorRT and a GPU are present: the GPU test covers them")
def test_tensorrt_reports_what_it_needs(tmp_path):
    reason = tensorrt_unavailable()
    assert reason is not None and "NVIDIA GPU" in reason
    if not HAS_TRT and not is_jetson():
        assert reason == ("tensorrt is not installed (it needs an NVIDIA GPU; pip install 'ofa-kit[tensorrt]' on the "
                          "target)")
    assert get_exporter("tensorrt").unavailable() == reason
    with pytest.raises(ExporterUnavailable, match=r"^tensorrt export is unavailable: .*NVIDIA GPU"):
        get_exporter("tensorrt").export(ExportSpec(tiny_net(), SHAPE, tmp_path / "m.engine", precision="fp16"))
    assert not (tmp_path / "m.engine").exists()
    rt = get_runtime("tensorrt")
    assert rt.unavailable() == reason and runtime_status()["tensorrt"]["reason"] == reason
    onnx_path = rt.prepare(tiny_net(), SHAPE, tmp_path / "m")  # the ONNX artifact is made anywhere
    assert onnx_path.suffix == ".onnx" and onnx_path.is_file()
    with pytest.raises(RuntimeUnavailable, match=r"^unavailable: tensorrt: "):
        rt.measure(MeasureSpec(onnx_path, SHAPE, protocol=QUICK))


@pytest.mark.parametrize("kwargs, match", [
    ({"precision": "int8"}, r"precision='int8' needs calibration batches"),
    ({"precision": "bf16"}, r"precision='bf16' is not supported; allowed: \['fp32', 'fp16', 'int8'\]"),
    ({"precision": "int8", "calibration": [np.zeros(SHAPE), np.zeros((2, 3, 16, 16))]}, "must share one shape"),
    ({"precision": "fp16", "workspace_mb": 0}, r"workspace_mb=0 must be a positive integer"),
])
def test_build_engine_rejects_bad_arguments_before_touching_tensorrt(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_engine(b"not parsed", **kwargs)



@pytest.mark.parametrize("precision, offset, ok", [("fp32", 5e-5, True), ("fp32", 1e-3, False),
                                                   ("fp16", 5e-3, True), ("fp16", 0.5, False)])
def test_engine_parity_gate_and_atomic_write(tmp_path, precision, offset, ok):
    """What runs after an engine is built (locally or on an agent's GPU): the output is compared with the
    PyTorch reference at the precision's documented tolerance; only a passing engine is written."""
    spec = ExportSpec(tiny_net(), SHAPE, tmp_path / "m.engine", precision=precision)
    ref = np.linspace(-1, 1, 10, dtype=np.float32)[None]
    out = tmp_path / "m.engine"
    if not ok:
        with pytest.raises(RuntimeError, match=rf"parity check failed: .*\({precision}, built on http://jetson:8470\); "
                                               ".*m.engine was not written"):
            write_checked_engine(spec, b"engine", ref + offset, ref, 0.0, {"gpu": "Orin"}, {}, "note",
                                 built_on="http://jetson:8470")
        assert not out.exists() and not list(tmp_path.iterdir())
        return
    res = write_checked_engine(spec, b"engine", ref + offset, ref, 0.0, {"gpu": "Orin", "max_batch": None},
                               {"tensorrt": "10.9"}, "runs only on Orin", built_on="http://jetson:8470")
    assert out.read_bytes() == b"engine" and res.max_abs_diff == pytest.approx(offset, rel=1e-3)
    assert res.settings["built_on"] == "http://jetson:8470" and res.settings["gpu"] == "Orin"
    assert res.settings["parity_tolerance"] == (1e-4 if precision == "fp32" else 1e-2)
    assert res.versions["tensorrt"] == "10.9" and res.notes == ("runs only on Orin",)

class _RemoteGPU:
    """Stands in for a profiling agent's GPU (none here): it runs the ONNX graph it is sent in onnxruntime,
    which is what a correct engine outputs, plus ``error``, and returns opaque engine bytes."""

    url = "http://jetson:8470"

    def __init__(self, error: float = 0.0):
        self.error, self.sent = error, []

    def build_engine(self, onnx_model, inputs, precision, calibration, max_batch):
        from deploy_targets.onnx_export import INPUT_NAME, ort_session
        self.sent.append((precision, None if calibration is None else calibration.shape, max_batch))
        out = ort_session(onnx_model).run(None, {INPUT_NAME: inputs})[0] + self.error
        return {"engine": b"ENGINE", "outputs": out, "versions": {"tensorrt": "10.3"}, "gpu": "Orin"}


@pytest.mark.parametrize("error, ok", [(0.0, True), (10.0, False)])
def test_tensorrt_export_through_a_remote_builder(tmp_path, error, ok):
    """``options["builder"]``: the engine is built on the remote device (no TensorRT needed here), its output
    checked here against PyTorch, and only a passing engine written, with where it was built."""
    gpu = _RemoteGPU(error)
    calib = tuple(torch.randn(SHAPE, generator=torch.Generator().manual_seed(i)) for i in range(3))
    spec = ExportSpec(tiny_net(), SHAPE, tmp_path / "m.engine", precision="int8", calibration=calib,
                      options={"builder": gpu})
    if not ok:
        with pytest.raises(ParityError, match=r"built on http://jetson:8470\); .*m.engine was not written"):
            get_exporter("tensorrt").export(spec)
        assert not list(tmp_path.iterdir())
        return
    res = get_exporter("tensorrt").export(spec)
    assert res.path.read_bytes() == b"ENGINE" and res.max_abs_diff <= 1e-4
    assert res.settings["built_on"] == gpu.url and res.settings["gpu"] == "Orin"
    assert res.settings["calibration_batches"] == 3 and res.versions["tensorrt"] == "10.3"
    assert gpu.sent == [("int8", (3, *SHAPE), None)] and "Orin-class GPUs" in res.notes[0]
    with pytest.raises(ValueError, match=r"options\['builder'\]=.* must have build_engine"):
        get_exporter("tensorrt").export(replace(spec, options={"builder": "jetson"}))


def test_a_dynamic_engine_profile_takes_the_parity_inputs():
    """`ofakit export --dynamic-batch` checks parity on 8 real images: the profile must reach batch 8, or the
    build on an agent is refused (max_batch < input batch) and a local engine cannot run them."""
    spec = ExportSpec(tiny_net(), SHAPE, Path("m.engine"), dynamic_batch=True, inputs=torch.zeros(8, 3, 16, 16))
    assert profile_max_batch(spec, 8) == 8
    assert profile_max_batch(replace(spec, inputs=None), 1) == 2  # twice the export batch
    assert profile_max_batch(replace(spec, options={"max_batch": 32}), 8) == 32
    assert profile_max_batch(replace(spec, dynamic_batch=False), 8) is None


def _trt_skip_reason() -> str:
    return tensorrt_unavailable() or ""


@pytest.mark.skipif(not (HAS_TRT and HAS_CUDA), reason=f"TensorRT GPU test: {_trt_skip_reason()}")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("dynamic", [False, True])
def test_tensorrt_build_parity_and_timing_on_gpu(tmp_path, precision, dynamic):
    net = tiny_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    calib = tuple(torch.randn(SHAPE, generator=gen) for _ in range(8)) if precision == "int8" else ()
    spec = ExportSpec(net, SHAPE, tmp_path / "m.engine", precision=precision, dynamic_batch=dynamic,
                      calibration=calib)
    res = get_exporter("tensorrt").export(spec)
    assert res.path.is_file() and res.max_abs_diff <= res.settings["parity_tolerance"]
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    rt = get_runtime("tensorrt")
    m = rt.measure(MeasureSpec(res.path, SHAPE, precision=precision, protocol=QUICK))
    assert m.runtime == "tensorrt" and m.provider == "cuda:0" and 0 < m.stats.median_ms < 1e3
    onnx_path = rt.prepare(net, SHAPE, tmp_path / "m")
    if precision == "int8":
        with pytest.raises(ValueError, match="needs calibration data"):
            rt.measure(MeasureSpec(onnx_path, SHAPE, precision="int8", protocol=QUICK))
    else:
        assert rt.measure(MeasureSpec(onnx_path, SHAPE, precision=precision, protocol=QUICK)).stats.median_ms > 0


def test_metadata_is_recorded_where_the_format_has_room(tmp_path):
    """``ExportSpec.metadata`` goes into the ONNX file's metadata_props and the OpenVINO IR's rt_info (CoreML:
    see the CoreML test); a key that no format could hold is refused before anything is written."""
    import onnx
    import openvino as ov

    from deploy_targets.openvino_export import RT_INFO_KEY
    meta = {"com.ofakit.config": '{"ks":[3]}', "short_description": "tiny"}
    onnx_res = get_exporter("onnx").export(ExportSpec(tiny_net(), SHAPE, tmp_path / "m.onnx", metadata=meta))
    assert {p.key: p.value for p in onnx.load(str(onnx_res.path)).metadata_props} == meta
    ov_res = get_exporter("openvino").export(ExportSpec(tiny_net(), SHAPE, tmp_path / "m.xml", metadata=meta))
    model = ov.Core().read_model(str(ov_res.path))
    assert {k: model.get_rt_info([RT_INFO_KEY, k]).astype(str) for k in meta} == meta
    for bad in ({"a b": "x"}, {"k": 3}, {"": "x"}):
        with pytest.raises(ValueError, match="metadata entry .* is not supported"):
            ExportSpec(tiny_net(), SHAPE, tmp_path / "n.onnx", metadata=bad)
    assert not (tmp_path / "n.onnx").exists()


def test_openvino_never_leaves_an_old_xml_beside_new_weights(tmp_path, monkeypatch):
    """A crash between moving the new `.bin` and the new `.xml` into place (the two files cannot be renamed at
    once): the old `.xml` is gone, never left to load the new weights as its own; the next export repairs it."""
    from deploy_targets import openvino_export

    ov = get_exporter("openvino")
    if ov.unavailable() is not None:
        pytest.skip(f"openvino: {ov.unavailable()}")
    out = tmp_path / "m.xml"
    ov.export(ExportSpec(tiny_net(1), SHAPE, out))
    real = openvino_export.os.replace

    def crash_before_the_xml(src, dst):
        if str(dst).endswith(".xml"):
            raise KeyboardInterrupt  # the process dies here
        return real(src, dst)

    monkeypatch.setattr(openvino_export.os, "replace", crash_before_the_xml)
    with pytest.raises(KeyboardInterrupt):
        ov.export(ExportSpec(tiny_net(2), SHAPE, out))
    assert not out.exists() and out.with_suffix(".bin").exists()
    monkeypatch.setattr(openvino_export.os, "replace", real)
    res = ov.export(ExportSpec(tiny_net(2), SHAPE, out))
    x = torch.randn(SHAPE)
    with torch.no_grad():
        assert np.abs(ov.bind(res.path, x.numpy())() - tiny_net(2).eval()(x).numpy()).max() < 1e-4
