"""Recipe registry behaviour."""

from __future__ import annotations

import pytest

import model_zoo
from elastic import Registry


def test_builtin_recipes():
    assert {"ofa_mbv3_d234_e346_k357_w1.0", "ofa_mbv3_d234_e346_k357_w1.2", "ofa_mbv3_tiny",
            "ofa_mbv3_tiny_d1234_e2346_k357"} <= set(
        model_zoo.list_supernets())
    tiny = model_zoo.get_supernet("ofa_mbv3_tiny")
    assert tiny.spec.num_classes == 10 and tiny.spec.in_channels == 1 and tiny.space.r == (28, 30, 32)
    assert tiny.recipe == "ofa_mbv3_tiny"
    assert model_zoo.get_supernet("ofa_mbv3_d234_e346_k357_w1.2", num_classes=5).classifier.out_features == 5
    assert model_zoo.get_spec("ofa_mbv3_d234_e346_k357_w1.2").stem_width == 24


def test_every_recipe_accepts_num_classes():
    for name in model_zoo.list_supernets():
        assert model_zoo.get_spec(name, num_classes=3).num_classes == 3


def test_errors():
    with pytest.raises(ValueError, match=r"unknown supernet recipe 'nope'; available: \["):
        model_zoo.get_supernet("nope")
    with pytest.raises(ValueError, match="already registered"):
        model_zoo.register_supernet("ofa_mbv3_tiny")(lambda **kw: None)
    with pytest.raises(ValueError, match="bad option for supernet recipe 'ofa_mbv3_tiny'"):
        model_zoo.get_supernet("ofa_mbv3_tiny", width=2)
    with pytest.raises(ValueError, match="num_classes=0"):
        model_zoo.get_supernet("ofa_mbv3_tiny", num_classes=0)


def test_generic_registry():
    reg: Registry[int] = Registry("thing")
    reg.register("a", 1)
    assert reg.get("a") == 1 and "a" in reg and list(reg) == ["a"] and len(reg) == 1
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        reg.register("a", 2)
