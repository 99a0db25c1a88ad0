"""Named supernet recipes: the official OFA-MobileNetV3 and OFA-ProxylessNAS spaces and tiny single-channel
variants for Fashion-MNIST-sized images.

Every recipe accepts ``num_classes``, ``in_channels``, ``dropout`` and ``resolutions`` (the elastic
resolutions; e.g. ``resolutions=(32,)`` to use an ImageNet layout on 32 px images).
"""

from __future__ import annotations

from typing import Sequence

from elastic import MobileNetV3Spec, StageSpec, make_divisible
from elastic.resnet import ResNetSpec
from model_zoo.registry import register_supernet

# OFA-MobileNetV3 layout: (base width, first stride, activation, squeeze-excite) per elastic stage.
_OFA_STAGES = ((24, 2, "relu", False), (40, 2, "relu", True), (80, 2, "h_swish", False),
               (112, 1, "h_swish", True), (160, 2, "h_swish", True))
_OFA_RESOLUTIONS = tuple(range(128, 225, 4))


def ofa_mbv3_spec(width_mult: float, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.1,
                  resolutions: Sequence[int] | None = None) -> MobileNetV3Spec:
    """The OFA-MobileNetV3 space ``d234_e346_k357`` at a width multiplier (ImageNet layout)."""
    def w(base: int) -> int:
        return make_divisible(base * width_mult, 8)

    return MobileNetV3Spec(
        in_channels=in_channels, num_classes=num_classes, stem_width=w(16), stem_stride=2,
        first_block=StageSpec(w(16), 1, "relu", False),
        stages=tuple(StageSpec(w(b), s, a, se) for b, s, a, se in _OFA_STAGES),
        final_expand_width=w(960), feature_mix_width=w(1280),
        ks=(3, 5, 7), e=(3, 4, 6), d=(2, 3, 4), r=tuple(resolutions or _OFA_RESOLUTIONS), dropout=dropout,
    )


@register_supernet("ofa_mbv3_d234_e346_k357_w1.0")
def ofa_mbv3_w10(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.1,
                 resolutions: Sequence[int] | None = None) -> MobileNetV3Spec:
    """Official OFA-MobileNetV3 space, width 1.0: 3x{128..224} px, 1000 classes."""
    return ofa_mbv3_spec(1.0, num_classes, in_channels, dropout, resolutions)


@register_supernet("ofa_mbv3_d234_e346_k357_w1.2")
def ofa_mbv3_w12(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.1,
                 resolutions: Sequence[int] | None = None) -> MobileNetV3Spec:
    """Official OFA-MobileNetV3 space, width 1.2: 3x{128..224} px, 1000 classes."""
    return ofa_mbv3_spec(1.2, num_classes, in_channels, dropout, resolutions)


@register_supernet("ofa_mbv3_grey_w1.0")
def ofa_mbv3_grey_w10(num_classes: int = 10, in_channels: int = 1, dropout: float = 0.1,
                      resolutions: Sequence[int] | None = None) -> MobileNetV3Spec:
    """OFA-MobileNetV3's width-1.0 space (MobileNetV3-large's widths: stages 24-160, head 960/1280) for small
    single-channel images: one-channel stem, 10 classes, 16-40 px in 4 px steps.

    The narrow ``ofa_mbv3_tiny_*`` spaces lose to MobileNetV3-small and -large trained alone at equal
    latency (benchmarks/RESULTS.md, bench_vs_peers): they spend their MACs on depth and kernel size where
    those models spend them on width. This space has the peers' widths and OFA's elastic dimensions.
    """
    return ofa_mbv3_spec(1.0, num_classes, in_channels, dropout, resolutions or range(16, 41, 4))


@register_supernet("ofa_mbv3_tiny")
def ofa_mbv3_tiny(num_classes: int = 10, in_channels: int = 1, dropout: float = 0.1,
                  resolutions: Sequence[int] | None = None) -> MobileNetV3Spec:
    """A small OFA-MobileNetV3 family for 28-32 px single-channel images (Fashion-MNIST).

    Same elastic dimensions as OFA (kernel 3/5/7, expand 3/4/6, depth 2/3/4) over four stages, a
    stride-2 stem and a narrow head, so a full-width training step of batch 128 at 32 px costs a
    fraction of a second on two CPU cores.
    """
    return _small_grey_spec((48, 64), (384, 512), (3, 4, 6), (2, 3, 4), resolutions or (28, 30, 32),
                            num_classes, in_channels, dropout)


@register_supernet("ofa_mbv3_tiny_d1234_e2346_k357")
def ofa_mbv3_tiny_wide_space(num_classes: int = 10, in_channels: int = 1, dropout: float = 0.1,
                             resolutions: Sequence[int] | None = None) -> MobileNetV3Spec:
    """A wider *space* for 28 px single-channel images: depth 1-4, expand 2-6, kernel 3/5/7, 16-40 px.

    ``ofa_mbv3_tiny``'s subnets all land within 0.7 pp of each other. This family spans much more: its
    smallest subnet (one block per stage, expand 2, kernel 3, 16 px) costs a fraction of its largest
    (four blocks, expand 6, kernel 7, the 28 px images upsampled to 40 px so that the stride-2 stem and
    stages downsample less), and the last two stages are wider (56 and 80 channels) at a small cost, since
    they run on 5x5 and 3x3 maps. Resolutions step by 4 px.
    """
    return _small_grey_spec((56, 80), (480, 640), (2, 3, 4, 6), (1, 2, 3, 4), resolutions or range(16, 41, 4),
                            num_classes, in_channels, dropout)


def _small_grey_spec(last_widths: tuple[int, int], head: tuple[int, int], e: Sequence[float], d: Sequence[int],
                     resolutions: Sequence[int], num_classes: int, in_channels: int, dropout: float) -> MobileNetV3Spec:
    """The small single-channel layout: stride-2 stem, widths 16/24/32 then ``last_widths``, kernels 3/5/7."""
    return MobileNetV3Spec(
        in_channels=in_channels, num_classes=num_classes, stem_width=16, stem_stride=2,
        first_block=StageSpec(16, 1, "relu", False),
        stages=(StageSpec(24, 2, "relu", False), StageSpec(32, 2, "h_swish", True),
                StageSpec(last_widths[0], 1, "h_swish", True), StageSpec(last_widths[1], 2, "h_swish", True)),
        final_expand_width=head[0], feature_mix_width=head[1],
        ks=(3, 5, 7), e=tuple(e), d=tuple(d), r=tuple(resolutions), dropout=dropout,
    )


# OFA-ProxylessNAS layout: (base width, first stride) per block group; the last group has one block slot.
_PROXYLESS_STAGES = ((24, 2), (40, 2), (80, 2), (96, 1), (192, 2), (320, 1))


def ofa_proxyless_spec(width_mult: float, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.1,
                       resolutions: Sequence[int] | None = None) -> MobileNetV3Spec:
    """The OFA-ProxylessNAS space ``d234_e346_k357`` at a width multiplier (ImageNet layout, as the ``ofa``
    package's ``OFAProxylessNASNets``: ReLU6, no squeeze-excite, a 1x1 head conv before pooling, BN eps 1e-3)."""
    def w(base: int) -> int:
        return make_divisible(base * width_mult, 8)

    last = len(_PROXYLESS_STAGES) - 1
    return MobileNetV3Spec(
        in_channels=in_channels, num_classes=num_classes, stem_width=w(32), stem_stride=2,
        first_block=StageSpec(w(16), 1, "relu6", False),
        stages=tuple(StageSpec(w(b), s, "relu6", False, 1 if i == last else None)
                     for i, (b, s) in enumerate(_PROXYLESS_STAGES)),
        final_expand_width=w(1280), feature_mix_width=0,
        ks=(3, 5, 7), e=(3, 4, 6), d=(2, 3, 4), r=tuple(resolutions or _OFA_RESOLUTIONS), dropout=dropout,
        bn_eps=1e-3, stem_act="relu6", head_act="relu6", family="proxylessnas",
    )


@register_supernet("ofa_proxyless_d234_e346_k357_w1.3")
def ofa_proxyless_w13(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.1,
                      resolutions: Sequence[int] | None = None) -> MobileNetV3Spec:
    """Official OFA-ProxylessNAS space, width 1.3: 3x{128..224} px, 1000 classes."""
    return ofa_proxyless_spec(1.3, num_classes, in_channels, dropout, resolutions)


@register_supernet("ofa_proxyless_tiny")
def ofa_proxyless_tiny(num_classes: int = 10, in_channels: int = 1, dropout: float = 0.1,
                       resolutions: Sequence[int] | None = None) -> MobileNetV3Spec:
    """A small OFA-ProxylessNAS variant for 28-32 px single-channel images (tests and the demo's machinery).

    ProxylessNAS's structure (ReLU6, no squeeze-excite, a one-slot last group, a pre-pool head conv) over
    five groups of widths 16-64, with a small space (kernel 3/5, expand 3/6, depth 1/2) so that its latency
    table has a few dozen layers.
    """
    return MobileNetV3Spec(
        in_channels=in_channels, num_classes=num_classes, stem_width=16, stem_stride=2,
        first_block=StageSpec(8, 1, "relu6", False),
        stages=(StageSpec(16, 2, "relu6", False), StageSpec(24, 2, "relu6", False), StageSpec(32, 1, "relu6", False),
                StageSpec(48, 2, "relu6", False), StageSpec(64, 1, "relu6", False, 1)),
        final_expand_width=256, feature_mix_width=0,
        ks=(3, 5), e=(3, 6), d=(1, 2), r=tuple(resolutions or (28, 32)), dropout=dropout,
        bn_eps=1e-3, stem_act="relu6", head_act="relu6", family="proxylessnas",
    )


def ofa_resnet_spec(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.0,
                    resolutions: Sequence[int] | None = None) -> ResNetSpec:
    """OFA-ResNet50's space (the ``ofa`` package's ``OFAResNets``): depth 0/1/2 beyond the base depths
    2/2/4/2, expand 0.2/0.25/0.35, width multipliers 0.65/0.8/1.0 (ImageNet layout)."""
    return ResNetSpec(in_channels=in_channels, num_classes=num_classes, stem_width=64,
                      stage_widths=(256, 512, 1024, 2048), strides=(1, 2, 2, 2), base_depth=(2, 2, 4, 2),
                      d=(0, 1, 2), e=(0.2, 0.25, 0.35), widths=(0.65, 0.8, 1.0),
                      r=tuple(resolutions or _OFA_RESOLUTIONS), dropout=dropout)


@register_supernet("ofa_resnet50")
def ofa_resnet50(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.0,
                 resolutions: Sequence[int] | None = None) -> ResNetSpec:
    """Official OFA-ResNet50 space: 3x{128..224} px, 1000 classes."""
    return ofa_resnet_spec(num_classes, in_channels, dropout, resolutions)


@register_supernet("ofa_resnet_tiny")
def ofa_resnet_tiny(num_classes: int = 10, in_channels: int = 1, dropout: float = 0.0,
                    resolutions: Sequence[int] | None = None) -> ResNetSpec:
    """A small OFA-ResNet for 28-32 px single-channel images (tests and the demo's machinery): OFA-ResNet50's
    elastic dimensions (depth 0/1/2 beyond one base block per stage, expand 0.2/0.25/0.35, widths
    0.65/0.8/1.0) over stages of 32-128 channels, a stride-2 stem and no max-pool."""
    return ResNetSpec(in_channels=in_channels, num_classes=num_classes, stem_width=16,
                      stage_widths=(32, 64, 96, 128), strides=(1, 2, 2, 1), base_depth=(1, 1, 1, 1),
                      d=(0, 1, 2), e=(0.2, 0.25, 0.35), widths=(0.65, 0.8, 1.0),
                      r=tuple(resolutions or (28, 32)), dropout=dropout, max_pool=False)
