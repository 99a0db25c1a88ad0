"""What ofa-kit says when TensorRT cannot run, per platform: the facts are arguments, so the Jetson advice
(JetPack's TensorRT through a --system-site-packages venv, NVIDIA's torch) is tested on any machine."""

from __future__ import annotations

import re

import pytest

from deploy_targets.tensorrt_env import (NO_GPU, TensorRTFacts, is_jetson, probe, tensorrt_major,
                                         tensorrt_unavailable, unavailable_reason)


def test_a_jetson_is_known_by_its_l4t_release_or_its_device_tree(tmp_path):
    absent = tmp_path / "absent"
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    orin = tmp_path / "model_orin"
    orin.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    pi = tmp_path / "model_pi"
    pi.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    assert is_jetson(release, absent, "aarch64")
    assert is_jetson(absent, orin, "aarch64")
    assert not is_jetson(absent, orin, "x86_64")  # a device tree copied onto a PC proves nothing
    assert not is_jetson(absent, pi, "aarch64")
    assert not is_jetson(absent, absent, "aarch64")


@pytest.mark.parametrize("version, major", [("10.3.0.30", 10), ("10.16.0", 10), ("11.1.0.2", 11)])
def test_supported_tensorrt_majors(version, major):
    assert tensorrt_major(version) == major


@pytest.mark.parametrize("version", ["8.5.2.2", "12.0.0", "", "dev"])
def test_other_tensorrt_majors_are_refused_with_the_allowed_ones(version):
    with pytest.raises(ValueError, match=rf"^TensorRT {re.escape(version)} is not supported; allowed: 10\.x, 11\.x$"):
        tensorrt_major(version)


PIP = "pip install 'ofa-kit[tensorrt]' on the target"
VENV = "python3 -m venv --system-site-packages"


@pytest.mark.parametrize("facts, expected, absent", [
    (TensorRTFacts(installed=False), [f"tensorrt is not installed (it needs an NVIDIA GPU; {PIP})"], [VENV]),
    (TensorRTFacts(installed=False, jetson=True),
     ["tensorrt is not visible to this Python; on a Jetson TensorRT comes with JetPack", VENV, "make agent-jetson"],
     [PIP]),
    (TensorRTFacts(installed=True, import_error="libnvinfer.so.10: cannot open shared object file"),
     ["tensorrt cannot be imported (libnvinfer.so.10: cannot open shared object file); it needs an NVIDIA GPU"],
     [VENV]),
    (TensorRTFacts(installed=True, import_error="libcudart.so.12: cannot open", jetson=True),
     ["tensorrt cannot be imported (libcudart.so.12: cannot open); on a Jetson", VENV], [PIP]),
    (TensorRTFacts(installed=True, version="12.0.1", cuda=True),
     [f"TensorRT 12.0.1 is not supported; allowed: 10.x, 11.x ({PIP})"], []),
    (TensorRTFacts(installed=True, version="8.5.2.2", cuda=True, jetson=True),
     ["TensorRT 8.5.2.2 is not supported; allowed: 10.x, 11.x (JetPack 6 ships TensorRT 10.3)"], [PIP]),
    (TensorRTFacts(installed=True, version="11.1.0", cuda=True, missing=("onnxruntime",)),
     [f"onnxruntime not installed (TensorRT builds start from the ONNX graph; {PIP})"], []),
    (TensorRTFacts(installed=True, version="10.3.0", cuda=True, jetson=True, missing=("onnx",)),
     ["onnx not installed (TensorRT builds start from the ONNX graph; pip install onnx (`make agent-jetson`))"],
     [PIP]),
    (TensorRTFacts(installed=True, version="10.3.0", cuda=False), [NO_GPU], []),
    (TensorRTFacts(installed=True, version="10.3.0", cuda=False, jetson=True, torch_version="2.14.1+cpu"),
     ["torch 2.14.1+cpu has no CUDA", "NVIDIA's PyTorch wheel for your JetPack", "not the PyPI torch"], [PIP]),
])
def test_the_reason_gives_the_advice_of_the_platform(facts, expected, absent):
    reason = unavailable_reason(facts)
    assert reason is not None and "\n" not in reason
    assert all(part in reason for part in expected), reason
    assert not any(part in reason for part in absent), reason


@pytest.mark.parametrize("version", ["10.3.0.30", "11.1.0"])
@pytest.mark.parametrize("jetson", [False, True])
def test_nothing_is_missing_with_a_supported_tensorrt_and_a_gpu(version, jetson):
    assert unavailable_reason(TensorRTFacts(installed=True, version=version, cuda=True, jetson=jetson)) is None


def test_this_machine_is_judged_from_its_own_facts():
    facts = probe()
    assert tensorrt_unavailable() == unavailable_reason(facts)
    assert facts.jetson == is_jetson()
