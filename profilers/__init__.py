"""Latency measurement on real runtimes, the lookup-table store and the latency predictor.

Imports flow ``ofakit -> profilers -> deploy_targets -> elastic``. Public entry points:
:class:`LatencyPredictor` (``LatencyPredictor.load(table, device, runtime, recipe).predict(cfgs)``),
:class:`LatencyTable` (the SQLite store), :func:`build_table` and the runtime registry
(:func:`list_runtimes`, :func:`get_runtime`, :func:`open_runtime`, :func:`runtime_status`).
"""

from profilers.builder import BuildReport, BuildSettings, build_table
from profilers.predictor import Correction, LatencyPredictor
from profilers.record import DeviceInfo, Measurement, Protocol, Stats
from profilers.runtimes import LOCAL, MeasureSpec, get_runtime, list_runtimes, open_runtime, runtime_status
from profilers.store import DEFAULT_TABLE, LatencyTable, RuntimeKey

__all__ = ["BuildReport", "BuildSettings", "Correction", "DEFAULT_TABLE", "DeviceInfo", "LOCAL", "LatencyPredictor",
           "LatencyTable", "MeasureSpec", "Measurement", "Protocol", "RuntimeKey", "Stats", "build_table",
           "get_runtime", "list_runtimes", "open_runtime", "runtime_status"]
