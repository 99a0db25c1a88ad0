"""The elastic engine: OFA-style elastic layers, the MobileNetV3 supernet, subnet configs and spaces,
extraction to static networks, channel sorting and BatchNorm recalibration.

This package imports none of ofa-kit's other packages.
"""

from elastic.bn import calibrated_subnet, recalibrate_bn
from elastic.config import SubnetConfig
from elastic.ops import make_divisible
from elastic.registry import Registry
from elastic.sorting import sort_channels
from elastic.space import SearchSpace
from elastic.spec import BlockPlan, MobileNetV3Spec, StageSpec, plan
from elastic.static import StaticMobileNetV3
from elastic.supernet import ElasticMobileNetV3

__all__ = [
    "BlockPlan", "ElasticMobileNetV3", "calibrated_subnet", "MobileNetV3Spec", "Registry", "SearchSpace", "StageSpec",
    "StaticMobileNetV3", "SubnetConfig", "make_divisible", "plan", "recalibrate_bn", "sort_channels",
]
