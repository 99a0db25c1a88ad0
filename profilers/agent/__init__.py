"""The remote profiling agent: measuring on another device (a phone, a Jetson, a server) over HTTP.

:mod:`~profilers.agent.server` runs on the device (``ofakit agent serve``) and times the artifacts it is
sent with its local runtimes; :mod:`~profilers.agent.client` is the host's side, a runtime used exactly like a
local one; :mod:`~profilers.agent.wire` is the request format both share (safe unpacking included) and
:mod:`~profilers.agent.build` the TensorRT engine builds done on the device's GPU.
"""
