"""Latency measurement on real runtimes, the lookup-table store and the latency predictor.

Imports flow ``ofakit -> profilers -> deploy_targets -> elastic``. (Filled in by the latency-table issue.)
"""
