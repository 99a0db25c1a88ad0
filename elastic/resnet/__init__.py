"""The OFA-ResNet50 family: elastic depth, expand ratio and width multiplier over bottleneck blocks.

A subnet is a :class:`ResNetConfig` (OFA's ``d``/``e``/``w`` arch and a resolution), its space a
:class:`ResNetSpace`, the architecture a :class:`ResNetSpec`; :class:`ElasticResNet` runs and extracts
subnets like the MBConv supernet does.
"""

from elastic.resnet.config import ResNetConfig
from elastic.resnet.space import ResNetSpace
from elastic.resnet.spec import ResNetSpec
from elastic.resnet.supernet import ElasticResNet

__all__ = ["ElasticResNet", "ResNetConfig", "ResNetSpace", "ResNetSpec"]
