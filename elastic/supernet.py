"""The elastic MBConv supernet (OFA-MobileNetV3, OFA-ProxylessNAS): ``supernet(x, cfg)``, ``extract(cfg)``,
``flops``/``params``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from elastic.blocks import ElasticMBConv
from elastic.config import SubnetConfig
from elastic.ops import apply_act, check_input, init_batchnorms, resize
from elastic.space import SearchSpace
from elastic.spec import MobileNetV3Spec, costs, slot_layout
from elastic.static import StaticMobileNetV3, conv_bn_act, make_bn, make_conv, make_linear

BNPairs = list[tuple[nn.BatchNorm2d, nn.BatchNorm2d]]


class ElasticMobileNetV3(nn.Module):
    """OFA-MobileNetV3 supernet; every call names its subnet explicitly.

    Args:
        spec: The architecture and its elastic space.
        recipe: Registry name the supernet was built from (recorded in checkpoints).

    Attributes:
        spec: The architecture.
        space: The :class:`SearchSpace` of subnets.
    """

    def __init__(self, spec: MobileNetV3Spec, recipe: str | None = None):
        super().__init__()
        self.spec, self.recipe = spec, recipe
        self.stem_conv = nn.Conv2d(spec.in_channels, spec.stem_width, 3, spec.stem_stride, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(spec.stem_width)
        fb = spec.first_block
        self.first_block = ElasticMBConv(spec.stem_width, fb.width, fb.stride, fb.act, fb.se, (3,), (1,),
                                         spec.divisor, spec.se_reduction)
        self.blocks = nn.ModuleList(
            ElasticMBConv(i, o, s, st.act, st.se, spec.ks, spec.e, spec.divisor, spec.se_reduction)
            for i, o, st, s in slot_layout(spec)
        )
        last, fe, fm = spec.stages[-1].width, spec.final_expand_width, spec.feature_mix_width
        self.final_conv = nn.Conv2d(last, fe, 1, bias=False)
        self.final_bn = nn.BatchNorm2d(fe)
        self.mix_conv = nn.Conv2d(fe, fm, 1, bias=False) if fm else None
        self.classifier = nn.Linear(fm or fe, spec.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        init_batchnorms(self, self.spec.bn_momentum, self.spec.bn_eps)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    @property
    def space(self) -> SearchSpace:
        """The search space of this supernet."""
        return self.spec.space

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, cfg: SubnetConfig) -> torch.Tensor:
        """Logits of subnet ``cfg``; ``x`` is resized (bilinear) to ``cfg.r`` when its size differs."""
        self.space.validate(cfg)
        check_input(x, self.spec.in_channels, self.stem_conv.weight.dtype)
        spec = self.spec
        x = apply_act(self.stem_bn(self.stem_conv(resize(x, cfg.r))), spec.stem_act)
        x = self.first_block(x, 3, 1)
        for i in self.space.active_blocks(cfg):
            x = self.blocks[i](x, cfg.ks[i], cfg.e[i])
        x = apply_act(self.final_bn(self.final_conv(x)), spec.head_act).mean((2, 3), keepdim=True)
        if self.mix_conv is not None:
            x = apply_act(self.mix_conv(x), spec.head_act)
        x = x.flatten(1)
        x = F.dropout(x, self.spec.dropout, self.training)
        return self.classifier(x)

    # ------------------------------------------------------------- extraction
    def extract(self, cfg: SubnetConfig) -> StaticMobileNetV3:
        """A plain static network equal to ``self(x, cfg)`` in eval mode; weights are copied.

        The result keeps the supernet's device, dtype and train/eval mode.
        """
        return self.extract_with_bn_pairs(cfg)[0]

    def extract_with_bn_pairs(self, cfg: SubnetConfig) -> tuple[StaticMobileNetV3, BNPairs]:
        """:meth:`extract`, plus ``(static_bn, supernet_bn)`` for every BatchNorm of the subnet."""
        self.space.validate(cfg)
        pairs: BNPairs = []
        with torch.no_grad():
            stem_bn = make_bn(self.stem_bn, self.spec.stem_width)
            pairs.append((stem_bn, self.stem_bn))
            stem = conv_bn_act(make_conv(self.stem_conv.weight, stride=self.spec.stem_stride), stem_bn,
                               self.spec.stem_act)
            blocks = nn.Sequential()
            for i, (block, k, e) in enumerate(self._active(cfg)):
                static, block_pairs = block.extract(k, e)
                blocks.add_module(str(i), static)
                pairs += block_pairs
            final_bn = make_bn(self.final_bn, self.spec.final_expand_width)
            pairs.append((final_bn, self.final_bn))
            final = conv_bn_act(make_conv(self.final_conv.weight), final_bn, self.spec.head_act)
            mix = (nn.Identity() if self.mix_conv is None
                   else conv_bn_act(make_conv(self.mix_conv.weight), None, self.spec.head_act))
            classifier = nn.Sequential()
            classifier.add_module("dropout", nn.Dropout(self.spec.dropout))
            classifier.add_module("linear", make_linear(self.classifier.weight, self.classifier.bias))
        net = StaticMobileNetV3(stem, blocks, final, mix, classifier, (self.spec.in_channels, cfg.r, cfg.r),
                                cfg.to_json())
        return net.train(self.training), pairs

    def _active(self, cfg: SubnetConfig) -> list[tuple[ElasticMBConv, int, float]]:
        active = self.space.active_blocks(cfg)
        return [(self.first_block, 3, 1)] + [(self.blocks[i], cfg.ks[i], cfg.e[i]) for i in active]

    # ------------------------------------------------------------------ costs
    def flops(self, cfg: SubnetConfig) -> int:
        """Multiply-accumulates of subnet ``cfg`` (OFA's "FLOPs"), computed analytically."""
        return costs(self.spec, cfg)[0]

    def params(self, cfg: SubnetConfig) -> int:
        """Parameter count of the extracted subnet ``cfg``, computed analytically."""
        return costs(self.spec, cfg)[1]
