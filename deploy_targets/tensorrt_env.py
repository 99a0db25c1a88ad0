"""Whether TensorRT can build and run engines here, and what to do when it cannot.

The advice depends on the platform. On a desktop or server GPU TensorRT is a pip wheel (the ``tensorrt``
extra: ``tensorrt>=10,<12``). On a Jetson it comes with JetPack (TensorRT 10.3 on JetPack 6, beside NVIDIA's
CUDA build of torch), not from PyPI, and a virtual environment sees it only when it was created with
``--system-site-packages`` (README, "Measuring on a Jetson"). The facts are gathered by :func:`probe` and
turned into a reason by :func:`unavailable_reason`, which takes them as arguments so that every branch can be
tested on any machine.
"""

from __future__ import annotations

import importlib.util
import platform
from dataclasses import dataclass
from pathlib import Path

#: TensorRT major versions this code is written and reviewed against (10: builder flags and the entropy
#: calibrator; 11: strongly typed networks with fp16 or Q/DQ ONNX graphs).
SUPPORTED_MAJORS = (10, 11)
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
PIP_HINT = "pip install 'ofa-kit[tensorrt]' on the target"
JETSON_HINT = ("on a Jetson TensorRT comes with JetPack (sudo apt-get install nvidia-jetpack), not from pip: run "
               "ofa-kit from a venv created with `python3 -m venv --system-site-packages` (`make agent-jetson`; "
               "README: Measuring on a Jetson)")
JETSON_TORCH_HINT = ("on a Jetson install NVIDIA's PyTorch wheel for your JetPack (docs.nvidia.com/deeplearning/"
                     "frameworks/install-pytorch-jetson-platform), not the PyPI torch")
NO_GPU = ("no NVIDIA GPU (CUDA) available: TensorRT engines are built on the GPU they run on — "
          "build on the target or through the profiling agent")


@dataclass(frozen=True)
class TensorRTFacts:
    """What decides whether TensorRT works here.

    Attributes:
        installed: Whether a ``tensorrt`` module is on the path.
        import_error: Why importing it failed (``None``: it imported, or is not installed).
        version: ``tensorrt.__version__`` when it imported.
        cuda: Whether torch sees a CUDA device.
        jetson: Whether this is an NVIDIA Jetson (see :func:`is_jetson`).
        missing: Python modules an engine build needs that are not installed (``onnx``; ``onnxruntime`` too
            for TensorRT 11, whose fp16 and int8 builds start from converted ONNX graphs).
        torch_version: ``torch.__version__``, named in the advice when torch has no CUDA.
    """

    installed: bool
    import_error: str | None = None
    version: str | None = None
    cuda: bool = False
    jetson: bool = False
    missing: tuple[str, ...] = ()
    torch_version: str = ""


def tensorrt_major(version: str) -> int:
    """The major version of TensorRT ``version``; raises ``ValueError`` for a major this code does not support."""
    head = str(version).split(".")[0]
    major = int(head) if head.isdigit() else -1
    if major not in SUPPORTED_MAJORS:
        raise ValueError(f"TensorRT {version} is not supported; allowed: "
                         f"{', '.join(f'{m}.x' for m in SUPPORTED_MAJORS)}")
    return major


def is_jetson(tegra_release: Path = TEGRA_RELEASE, model_file: Path = DEVICE_TREE_MODEL,
              machine: str | None = None) -> bool:
    """Whether this machine is an NVIDIA Jetson: L4T's release file, or an aarch64 device tree naming a Jetson."""
    if tegra_release.is_file():
        return True
    if (machine or platform.machine()) != "aarch64":
        return False
    try:
        model = model_file.read_bytes().decode("utf-8", "replace").lower()
    except OSError:
        return False
    return "jetson" in model or "tegra" in model


def unavailable_reason(facts: TensorRTFacts) -> str | None:
    """Why TensorRT cannot run with these facts, with the advice for the platform (``None``: it can)."""
    if not facts.installed:
        if facts.jetson:
            return f"tensorrt is not visible to this Python; {JETSON_HINT}"
        return f"tensorrt is not installed (it needs an NVIDIA GPU; {PIP_HINT})"
    if facts.import_error is not None:
        where = JETSON_HINT if facts.jetson else "it needs an NVIDIA GPU and the CUDA libraries it was built for"
        return f"tensorrt cannot be imported ({facts.import_error}); {where}"
    try:
        tensorrt_major(facts.version or "")
    except ValueError as exc:
        fix = "JetPack 6 ships TensorRT 10.3" if facts.jetson else PIP_HINT
        return f"{exc} ({fix})"
    if facts.missing:
        fix = f"pip install {' '.join(facts.missing)} (`make agent-jetson`)" if facts.jetson else PIP_HINT
        return f"{', '.join(facts.missing)} not installed (TensorRT builds start from the ONNX graph; {fix})"
    if not facts.cuda:
        if facts.jetson:
            return f"torch {facts.torch_version} has no CUDA, so TensorRT has no NVIDIA GPU to use; {JETSON_TORCH_HINT}"
        return NO_GPU
    return None


def probe() -> TensorRTFacts:
    """The facts of this machine (imports tensorrt and torch when they are installed)."""
    import torch

    jetson = is_jetson()
    if importlib.util.find_spec("tensorrt") is None:
        return TensorRTFacts(installed=False, jetson=jetson)
    try:
        import tensorrt
    except Exception as exc:  # noqa: BLE001 - a stub wheel or a missing CUDA library fails in many ways
        return TensorRTFacts(installed=True, import_error=str(exc).splitlines()[0] if str(exc) else repr(exc),
                             jetson=jetson)
    version = str(tensorrt.__version__)
    needed = ("onnx",) if version.startswith("10.") else ("onnx", "onnxruntime")
    missing = tuple(m for m in needed if importlib.util.find_spec(m) is None)
    return TensorRTFacts(installed=True, version=version, cuda=torch.cuda.is_available(), jetson=jetson,
                         missing=missing, torch_version=torch.__version__)


def tensorrt_unavailable() -> str | None:
    """Why TensorRT cannot build or run engines here (``None`` when it can)."""
    return unavailable_reason(probe())
