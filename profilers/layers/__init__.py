"""The distinct layers of a supernet's space as tiny standalone models, and their latency-table keys.

Each family has a layer set (``LAYER_SETS``: MBConv for MobileNetV3 and ProxylessNAS, ResNet): its
``space_layers(spec)`` enumerates every distinct layer any subnet runs (what a table times),
``subnet_layers(spec, cfg)`` lists the keys one subnet uses, and ``slot_grid(spec)`` lays the keys out
for the vectorised predictor. The functions here pick the set by ``spec.family``.
"""

from __future__ import annotations

from typing import Any

from elastic import Registry
from profilers.layers import mbconv, resnet
from profilers.layers.common import LAYOUT_VERSION, Layer, LayerGrid

__all__ = ["LAYER_SETS", "LAYOUT_VERSION", "Layer", "LayerGrid", "slot_grid", "space_layers", "subnet_layers"]

LAYER_SETS: Registry[Any] = Registry("layer set")
for _family, _module in (("mobilenetv3", mbconv), ("proxylessnas", mbconv), ("resnet", resnet)):
    LAYER_SETS.register(_family, _module)


def space_layers(spec: Any) -> list[Layer]:
    """Every distinct layer any subnet of ``spec``'s space runs, at every resolution (deduplicated)."""
    return LAYER_SETS.get(spec.family).space_layers(spec)


def subnet_layers(spec: Any, cfg: Any) -> list[str]:
    """Table keys of the layers subnet ``cfg`` runs, in order."""
    return LAYER_SETS.get(spec.family).subnet_layers(spec, cfg)


def slot_grid(spec: Any) -> LayerGrid:
    """The :class:`LayerGrid` of ``spec``'s space."""
    return LAYER_SETS.get(spec.family).slot_grid(spec)
