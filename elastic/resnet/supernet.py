"""The elastic OFA-ResNet supernet: ``supernet(x, cfg)``, ``extract(cfg)``, ``flops``/``params``.

Widths are elastic at block *outputs* (every block of a stage has its stage's width), so each layer slices
its weights by the active width of its input, which the previous block decided; the leading channels are
always the ones used, so narrower subnets nest inside wider ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from elastic.ops import ElasticBatchNorm2d, ElasticConv2d, check_input, init_batchnorms, resize
from elastic.resnet.config import ResNetConfig
from elastic.resnet.space import ResNetSpace
from elastic.resnet.spec import ResNetSpec, costs, slot_layout
from elastic.resnet.static import Bottleneck, ResidualConv, StaticResNet
from elastic.static import conv_bn_act, make_bn, make_conv, make_linear

BNPairs = list[tuple[nn.BatchNorm2d, nn.BatchNorm2d]]


class ElasticBottleneck(nn.Module):
    """A bottleneck whose output width and expand ratio are chosen per call (input width from the input)."""

    def __init__(self, spec: ResNetSpec, max_in: int, max_out: int, stride: int, downsample: bool):
        super().__init__()
        self.spec, self.stride = spec, stride
        max_mid = spec.mid_channels(max_out, max(spec.e))
        self.conv1, self.bn1 = ElasticConv2d(max_in, max_mid), ElasticBatchNorm2d(max_mid)
        self.conv2, self.bn2 = ElasticConv2d(max_mid, max_mid, 3, stride), ElasticBatchNorm2d(max_mid)
        self.conv3, self.bn3 = ElasticConv2d(max_mid, max_out), ElasticBatchNorm2d(max_out)
        self.down_conv = ElasticConv2d(max_in, max_out) if downsample else None
        self.down_bn = ElasticBatchNorm2d(max_out) if downsample else None

    def forward(self, x: torch.Tensor, out_ch: int, e: float) -> torch.Tensor:
        mid = self.spec.mid_channels(out_ch, e)
        y = F.relu(self.bn1(self.conv1(x, mid)))
        y = F.relu(self.bn2(self.conv2(y, mid)))
        y = self.bn3(self.conv3(y, out_ch))
        if self.down_conv is None:
            return F.relu(y + x)
        s = x if self.stride == 1 else F.avg_pool2d(x, self.stride, self.stride, 0, ceil_mode=True)
        return F.relu(y + self.down_bn(self.down_conv(s, out_ch)))

    def extract(self, in_ch: int, out_ch: int, e: float) -> tuple[Bottleneck, BNPairs]:
        """Static copy for input ``in_ch``, output ``out_ch`` and expand ratio ``e``, with its BN pairs."""
        mid = self.spec.mid_channels(out_ch, e)
        pairs: BNPairs = []

        def layer(conv: ElasticConv2d, bn: ElasticBatchNorm2d, o: int, i: int,
                  stride: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
            pairs.append((make_bn(bn, o), bn))
            return make_conv(conv.active_weight(o, i), stride=stride), pairs[-1][0]

        convs = [layer(self.conv1, self.bn1, mid, in_ch), layer(self.conv2, self.bn2, mid, mid, self.stride),
                 layer(self.conv3, self.bn3, out_ch, mid)]
        down = None if self.down_conv is None else layer(self.down_conv, self.down_bn, out_ch, in_ch)
        return Bottleneck(convs, down, self.stride), pairs


class ElasticResNet(nn.Module):
    """OFA-ResNet supernet; every call names its subnet explicitly.

    Args:
        spec: The architecture and its elastic space.
        recipe: Registry name the supernet was built from (recorded in checkpoints).
    """

    def __init__(self, spec: ResNetSpec, recipe: str | None = None):
        super().__init__()
        self.spec, self.recipe = spec, recipe
        mid, stem = max(spec.stem_mid_channels), max(spec.stem_channels)
        self.stem0_conv, self.stem0_bn = ElasticConv2d(spec.in_channels, mid, 3, spec.stem_stride), \
            ElasticBatchNorm2d(mid)
        self.stem1_conv, self.stem1_bn = ElasticConv2d(mid, mid, 3), ElasticBatchNorm2d(mid)
        self.stem2_conv, self.stem2_bn = ElasticConv2d(mid, stem, 3), ElasticBatchNorm2d(stem)
        widths = [max(spec.scaled(b)) for b in spec.stage_widths]
        blocks, prev = [], stem
        for stage, stride, down in slot_layout(spec):
            blocks.append(ElasticBottleneck(spec, prev, widths[stage], stride, down))
            prev = widths[stage]
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Linear(widths[-1], spec.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        init_batchnorms(self, self.spec.bn_momentum, self.spec.bn_eps)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    @property
    def space(self) -> ResNetSpace:
        """The search space of this supernet."""
        return self.spec.space

    def _widths(self, cfg: ResNetConfig) -> tuple[int, int, list[int]]:
        spec = self.spec
        return (spec.stem_mid_channels[cfg.w[0]], spec.stem_channels[cfg.w[1]],
                [spec.scaled(b)[w] for b, w in zip(spec.stage_widths, cfg.w[2:])])

    def _active(self, cfg: ResNetConfig) -> list[tuple[ElasticBottleneck, int, float]]:
        layout = slot_layout(self.spec)
        outs = self._widths(cfg)[2]
        return [(self.blocks[i], outs[layout[i][0]], cfg.e[i]) for i in self.space.active_blocks(cfg)]

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, cfg: ResNetConfig) -> torch.Tensor:
        """Logits of subnet ``cfg``; ``x`` is resized (bilinear) to ``cfg.r`` when its size differs."""
        self.space.validate(cfg)
        check_input(x, self.spec.in_channels, self.stem0_conv.weight.dtype)
        mid, stem, _ = self._widths(cfg)
        x = F.relu(self.stem0_bn(self.stem0_conv(resize(x, cfg.r), mid)))
        if self.space.stem_residual(cfg):
            x = x + F.relu(self.stem1_bn(self.stem1_conv(x, mid)))
        x = F.relu(self.stem2_bn(self.stem2_conv(x, stem)))
        if self.spec.max_pool:
            x = F.max_pool2d(x, 3, 2, 1)
        for block, out_ch, e in self._active(cfg):
            x = block(x, out_ch, e)
        x = F.dropout(x.mean((2, 3)), self.spec.dropout, self.training)
        return F.linear(x, self.classifier.weight[:, :x.shape[1]], self.classifier.bias)

    # ------------------------------------------------------------- extraction
    def extract(self, cfg: ResNetConfig) -> StaticResNet:
        """A plain static network equal to ``self(x, cfg)`` in eval mode; weights are copied."""
        return self.extract_with_bn_pairs(cfg)[0]

    def extract_with_bn_pairs(self, cfg: ResNetConfig) -> tuple[StaticResNet, BNPairs]:
        """:meth:`extract`, plus ``(static_bn, supernet_bn)`` for every BatchNorm of the subnet."""
        self.space.validate(cfg)
        mid, stem_out, _ = self._widths(cfg)
        pairs: BNPairs = []

        def cba(conv: ElasticConv2d, bn: ElasticBatchNorm2d, o: int, i: int, stride: int = 1) -> nn.Sequential:
            pairs.append((make_bn(bn, o), bn))
            return conv_bn_act(make_conv(conv.active_weight(o, i), stride=stride), pairs[-1][0], "relu")

        with torch.no_grad():
            stem = nn.Sequential()
            stem.add_module("0", cba(self.stem0_conv, self.stem0_bn, mid, self.spec.in_channels, self.spec.stem_stride))
            if self.space.stem_residual(cfg):
                stem.add_module("1", ResidualConv(cba(self.stem1_conv, self.stem1_bn, mid, mid)))
            stem.add_module("2", cba(self.stem2_conv, self.stem2_bn, stem_out, mid))
            blocks, in_ch = nn.Sequential(), stem_out
            for j, (block, out_ch, e) in enumerate(self._active(cfg)):
                static, block_pairs = block.extract(in_ch, out_ch, e)
                blocks.add_module(str(j), static)
                pairs += block_pairs
                in_ch = out_ch
            classifier = nn.Sequential()
            classifier.add_module("dropout", nn.Dropout(self.spec.dropout))
            classifier.add_module("linear", make_linear(self.classifier.weight[:, :in_ch], self.classifier.bias))
        net = StaticResNet(stem, self.spec.max_pool, blocks, classifier, (self.spec.in_channels, cfg.r, cfg.r),
                           cfg.to_json())
        return net.train(self.training), pairs

    # ------------------------------------------------------------------ costs
    def flops(self, cfg: ResNetConfig) -> int:
        """Multiply-accumulates of subnet ``cfg``, computed analytically."""
        return costs(self.spec, cfg)[0]

    def params(self, cfg: ResNetConfig) -> int:
        """Parameter count of the extracted subnet ``cfg``, computed analytically."""
        return costs(self.spec, cfg)[1]
