"""Runtimes that time artifacts on real inference engines; one registry (``list_runtimes``/``get_runtime``).

:func:`open_runtime` gives a runtime on the local machine (device ``"local"``) or, for a device URL such as
``http://HOST:8470``, the same runtime on a remote profiling agent (:mod:`profilers.agent`).
"""

from __future__ import annotations

from profilers.runtimes import coreml_rt as _coreml  # noqa: F401  (registration)
from profilers.runtimes import executorch_rt as _executorch  # noqa: F401
from profilers.runtimes import litert_rt as _litert  # noqa: F401
from profilers.runtimes import onnxruntime_rt as _ort  # noqa: F401
from profilers.runtimes import openvino_rt as _ov  # noqa: F401
from profilers.runtimes import tensorrt_rt as _tensorrt  # noqa: F401
from profilers.runtimes import torch_rt as _torch  # noqa: F401
from profilers.runtimes.base import (RUNTIMES, MeasureSpec, Runtime, RuntimeUnavailable, get_runtime, list_runtimes,
                                     register_runtime, runtime_status)

LOCAL = "local"


def open_runtime(name: str, device: str = LOCAL, token: str | None = None) -> Runtime:
    """Runtime ``name`` on ``device``: ``"local"`` (this machine) or an agent URL ``http://HOST:PORT``."""
    if device == LOCAL:
        return get_runtime(name)
    if device.startswith(("http://", "https://")):
        from profilers.agent.client import RemoteRuntime

        return RemoteRuntime(device, name, token=token)
    raise ValueError(f"device {device!r} is not supported; allowed: 'local' or an agent URL like http://HOST:8470")


__all__ = ["LOCAL", "RUNTIMES", "MeasureSpec", "Runtime", "RuntimeUnavailable", "get_runtime", "list_runtimes",
           "open_runtime", "register_runtime", "runtime_status"]
