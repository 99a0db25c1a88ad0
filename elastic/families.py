"""The supernet families: name -> spec class, config class and supernet class (``list_families``/``get_family``).

MobileNetV3 and ProxylessNAS share the MBConv engine (``MobileNetV3Spec``, ``SubnetConfig``,
``ElasticMobileNetV3``; the spec's ``family`` says which); ResNet has its own (``elastic.resnet``). A spec
dict without a ``family`` key is MobileNetV3's, so specs stored before families existed still load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from torch import nn

from elastic.config import SubnetConfig
from elastic.registry import Registry
from elastic.resnet import ElasticResNet, ResNetConfig, ResNetSpace, ResNetSpec
from elastic.space import SearchSpace
from elastic.spec import MobileNetV3Spec
from elastic.supernet import ElasticMobileNetV3

# Any family's value of each kind, for type hints of family-blind code (one member per engine).
Spec = MobileNetV3Spec | ResNetSpec
Config = SubnetConfig | ResNetConfig
Space = SearchSpace | ResNetSpace
Supernet = ElasticMobileNetV3 | ElasticResNet


@dataclass(frozen=True)
class Family:
    """One family: how to read its spec and configs and build its supernet."""

    name: str
    spec: type
    config: type
    supernet: type


FAMILIES: Registry[Family] = Registry("supernet family")
for _f in (Family("mobilenetv3", MobileNetV3Spec, SubnetConfig, ElasticMobileNetV3),
           Family("proxylessnas", MobileNetV3Spec, SubnetConfig, ElasticMobileNetV3),
           Family("resnet", ResNetSpec, ResNetConfig, ElasticResNet)):
    FAMILIES.register(_f.name, _f)
SUPERNET_TYPES: tuple[type, ...] = tuple(dict.fromkeys(FAMILIES.get(n).supernet for n in FAMILIES))


def list_families() -> list[str]:
    """Names of the registered families."""
    return FAMILIES.names()


def get_family(name: str) -> Family:
    """The family called ``name`` (``ValueError`` listing the known ones otherwise)."""
    return FAMILIES.get(name)


def spec_from_dict(data: Mapping[str, Any]) -> Any:
    """A spec from its ``to_dict()`` form, of the family it names (MobileNetV3 when it names none)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"architecture spec {str(data)[:80]!r} is malformed (not a JSON object); allowed: a "
                         "spec's to_dict() output")
    return get_family(data.get("family", "mobilenetv3")).spec.from_dict(data)


def build_supernet(spec: Any, recipe: str | None = None) -> nn.Module:
    """A freshly initialised supernet for ``spec``."""
    return get_family(spec.family).supernet(spec, recipe=recipe)


def config_from_dict(data: Mapping[str, Any]) -> Any:
    """A subnet config from its JSON object, of the family its keys name (``w``: ResNet; else MBConv)."""
    if isinstance(data, Mapping) and "w" in data and "ks" not in data:
        return ResNetConfig.from_dict(data)
    return SubnetConfig.from_dict(data)
