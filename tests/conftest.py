"""Shared fixtures: tiny supernets with random, non-degenerate weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import model_zoo
from model_zoo.ofa_parity import randomize_
from tests import agentkit


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_settle_pauses(monkeypatch):
    """One measurement, no retries after disturbed moments: on a loaded CI machine every measurement would
    otherwise be taken up to four times, with ~17 s of pauses; tests of the settling pass their own pauses."""
    import profilers.drift

    monkeypatch.setattr(profilers.drift, "SETTLE_PAUSES_S", ())


@pytest.fixture
def tiny():
    """A randomised ``ofa_mbv3_tiny`` supernet in eval mode."""
    return randomize_(model_zoo.get_supernet("ofa_mbv3_tiny"), seed=1).eval()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def assert_extraction_exact(net: torch.nn.Module, rng: np.random.Generator, n: int = 8) -> None:
    """``net.extract(cfg)`` computes ``net(x, cfg)`` (within 1e-5) on ``n`` random subnets, with outputs far
    from zero (randomised weights), in eval mode."""
    with torch.no_grad():
        for _ in range(n):
            cfg = net.space.sample(rng)
            x = torch.randn(2, net.spec.in_channels, cfg.r, cfg.r)
            y = net(x, cfg)
            assert (net.extract(cfg)(x) - y).abs().max().item() <= 1e-5 and y.abs().mean() > 1e-2, cfg.to_json()


def ofa_available() -> bool:
    try:
        import ofa.imagenet_classification.elastic_nn.networks  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="session")
def shipyard(tmp_path_factory):
    """A tiny checkpoint over a toy Fashion-MNIST and its latency table (``tests/shipyard.py``), built once."""
    from tests.shipyard import build_shipyard

    return build_shipyard(tmp_path_factory.mktemp("ship"))


start_agent = pytest.fixture(agentkit.start_agent)  # agents on loopback ports, shut down after each test
onnx_file = pytest.fixture(scope="module")(agentkit.onnx_file)  # a tiny ONNX model for the agent tests
