"""Exporters of extracted subnets to deployable artifacts (ONNX, TensorRT, CoreML, OpenVINO IR, ExecuTorch,
LiteRT).

One registry (:func:`list_exporters`, :func:`get_exporter`), one contract (:class:`Exporter`:
:class:`ExportSpec` in, :class:`ExportResult` out). Exporters import only ``elastic``; they never import
``profilers``. Heavy SDKs are imported inside the exporter that needs them.
"""

from deploy_targets import onnx_export as _onnx  # noqa: F401  (registers the exporter)
from deploy_targets import coreml_export as _coreml  # noqa: F401
from deploy_targets import tensorrt_export as _tensorrt  # noqa: F401
from deploy_targets import openvino_export as _openvino  # noqa: F401
from deploy_targets import executorch_export as _executorch  # noqa: F401
from deploy_targets import litert_export as _litert  # noqa: F401
from deploy_targets.base import (EXPORTERS, Exporter, ExporterUnavailable, ExportResult, ExportSpec, ParityError,
                                 get_exporter, list_exporters, register_exporter)

__all__ = ["EXPORTERS", "ExportResult", "ExportSpec", "Exporter", "ExporterUnavailable", "ParityError", "get_exporter",
           "list_exporters", "register_exporter"]
