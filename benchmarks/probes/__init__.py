"""The fault probe of `benchmarks/probe_faults.py`, by area: the harness (outcome classes, CLI and API
runners, the shared fixtures) and one module of probes per area."""
