"""Exporters of extracted subnets to deployable artifacts (ONNX, TensorRT, CoreML, ...).

Exporters import only ``elastic``; they never import ``profilers``. (Filled in by the export issue.)
"""
