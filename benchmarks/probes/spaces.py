"""Probes of subnet configs and architecture specs, all three families."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import torch

import model_zoo
from elastic import SubnetConfig
from elastic.families import config_from_dict, get_family, spec_from_dict
from elastic.resnet import ResNetConfig, ResNetSpace, ResNetSpec
from probes.harness import probe


# ====================================================================================== probes: configs
def probes_configs(F: SimpleNamespace) -> None:
    A = "config"
    good = F.rn_small.to_dict()
    rc = lambda **ch: ResNetConfig.from_dict({**good, **ch})  # noqa: E731
    cases = [  # (id, description, call, needle)
        ("RC-01", "ResNetConfig d as a string", lambda: rc(d="02222"), "d="),
        ("RC-02", "ResNetConfig d None", lambda: rc(d=None), "d=None"),
        ("RC-03", "ResNetConfig d of fractions", lambda: rc(d=[0.5] * 5), "0.5"),
        ("RC-04", "ResNetConfig d negative", lambda: rc(d=[0, -1, 0, 0, 0]), "-1"),
        ("RC-05", "ResNetConfig d of bools", lambda: rc(d=[True] * 5), "True"),
        ("RC-06", "ResNetConfig d a dict", lambda: rc(d={"0": 0}), "d="),
        ("RC-07", "ResNetConfig d nested lists", lambda: rc(d=[[0]] * 5), "[0]"),
        ("RC-08", "ResNetConfig one depth gene", lambda: rc(d=[0]), "depth genes"),
        ("RC-09", "ResNetConfig w one short", lambda: rc(w=good["w"][:-1]), "width genes"),
        ("RC-10", "ResNetConfig e empty", lambda: rc(e=[]), "e has 0"),
        ("RC-11", "ResNetConfig e zero", lambda: rc(e=[0] * len(good["e"])), "e[0]=0"),
        ("RC-12", "ResNetConfig e negative", lambda: rc(e=[-0.2] * len(good["e"])), "-0.2"),
        ("RC-13", "ResNetConfig e a numeric string", lambda: rc(e=["0.2"] * len(good["e"])), "'0.2'"),
        ("RC-14", "ResNetConfig e NaN", lambda: rc(e=[math.nan] * len(good["e"])), "nan"),
        ("RC-15", "ResNetConfig e infinite", lambda: rc(e=[math.inf] * len(good["e"])), "inf"),
        ("RC-16", "ResNetConfig w negative", lambda: rc(w=[-1] * len(good["w"])), "-1"),
        ("RC-17", "ResNetConfig w fractional", lambda: rc(w=[0.5] * len(good["w"])), "0.5"),
        ("RC-18", "ResNetConfig r zero", lambda: rc(r=0), "r=0"),
        ("RC-19", "ResNetConfig r text", lambda: rc(r="28"), "'28'"),
        ("RC-20", "ResNetConfig r fractional", lambda: rc(r=28.5), "28.5"),
        ("RC-21", "ResNetConfig r a list", lambda: rc(r=[28]), "[28]"),
        ("RC-22", "ResNetConfig r True", lambda: rc(r=True), "True"),
        ("RC-23", "ResNetConfig r NaN", lambda: rc(r=math.nan), "nan"),
        ("RC-24", "ResNetConfig MBConv key ks added", lambda: ResNetConfig.from_dict({**good, "ks": [3]}), "ks"),
        ("RC-25", "ResNetConfig family key added", lambda: ResNetConfig.from_dict({**good, "family": "resnet"}),
         "family"),
        ("RC-26", "ResNetConfig lacks w", lambda: ResNetConfig.from_dict({k: v for k, v in good.items() if k != "w"}),
         "w"),
        ("RC-27", "ResNetConfig from a list", lambda: ResNetConfig.from_dict([1, 2]), "[1, 2]"),
        ("RC-28", "ResNetConfig from None", lambda: ResNetConfig.from_dict(None), "None"),
        ("RC-29", "ResNetConfig JSON truncated", lambda: ResNetConfig.from_json(F.rn_small.to_json()[:-5]), "JSON"),
        ("RC-30", "ResNetConfig JSON nested 100k deep", lambda: ResNetConfig.from_json("[" * 100000 + "]" * 100000),
         "nested"),
        ("RC-31", "ResNetConfig JSON with a 5000-digit int", lambda: ResNetConfig.from_json(
            json.dumps({**good, "r": 0}).replace('"r": 0', '"r": ' + "9" * 5000)), ["ResNetConfig", "r"]),
        ("RC-32", "ResNetConfig JSON a number", lambda: ResNetConfig.from_json("28"), "28"),
        ("RC-33", "ResNetConfig JSON bytes not UTF-8", lambda: ResNetConfig.from_json(b"\xff\xfe{"), "JSON"),
        ("RC-34", "ResNetConfig.from_ofa r as two resolutions",
         lambda: ResNetConfig.from_ofa({"d": good["d"], "e": good["e"], "w": good["w"], "r": [28, 32]}), "r"),
        ("RC-35", "ResNetConfig.from_ofa with MBConv 'wid'",
         lambda: ResNetConfig.from_ofa({"d": good["d"], "e": good["e"], "w": good["w"], "wid": None}, r=28), "wid"),
        ("RC-36", "ResNetConfig.from_ofa r disagrees",
         lambda: ResNetConfig.from_ofa({"d": good["d"], "e": good["e"], "w": good["w"], "r": 32}, r=28), "32"),
        ("RC-37", "ResNetConfig.from_ofa without a resolution",
         lambda: ResNetConfig.from_ofa({"d": good["d"], "e": good["e"], "w": good["w"]}), "resolution"),
        ("RC-38", "ResNetConfig.from_ofa a string", lambda: ResNetConfig.from_ofa("d2e35w1"), "d2e35w1"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)

    # membership of the tiny ResNet's space
    sp = F.rn_space
    rv = lambda **ch: sp.validate(ResNetConfig(**{**good, **ch}))  # noqa: E731
    n = len(good["e"])
    cases = [
        ("RS-01", "stem depth gene 1 (only 0 or 2)", lambda: rv(d=[1] + good["d"][1:]), "d[0]=1"),
        ("RS-02", "stage depth 3 (space 0-2)", lambda: rv(d=good["d"][:-1] + [3]), "3"),
        ("RS-03", "depth 10**30", lambda: rv(d=good["d"][:-1] + [10 ** 30]), "1000000000000000000000000000000"),
        ("RS-04", "width index 3 (three widths)", lambda: rv(w=[3] * len(good["w"])), "w[0]=3"),
        ("RS-05", "expand 0.3 (not a choice)", lambda: rv(e=[0.3] * n), "0.3"),
        ("RS-06", "resolution 30 (space 28)", lambda: rv(r=30), "r=30"),
        ("RS-07", "six depth genes (five stages)", lambda: rv(d=good["d"] + [0], w=good["w"] + [0]), "d has"),
        ("RS-08", "e one slot short", lambda: rv(e=good["e"][:-1]), "e has"),
        ("RS-09", "an MBConv config given to the ResNet space", lambda: sp.validate(F.mb_small), "ResNetConfig"),
        ("RS-10", "a ResNet config given to the ProxylessNAS space", lambda: F.px_space.validate(F.rn_small),
         "SubnetConfig"),
        ("RS-11", "a ResNet config given to the MobileNetV3 space", lambda: F.mb_space.validate(F.rn_small),
         "SubnetConfig"),
        ("RS-12", "a dict given to validate", lambda: sp.validate(good), "ResNetConfig"),
        ("RS-13", "sample with r off the space", lambda: sp.sample(np.random.default_rng(0), r=32), "r=32"),
        ("RS-14", "largest with r a string", lambda: sp.largest(r="28"), "'28'"),
        ("RS-15", "restrict d without the largest depth", lambda: sp.restrict(d=[0]), "largest depth"),
        ("RS-16", "restrict w to an index the space lacks", lambda: sp.restrict(w=[5]), "5"),
        ("RS-17", "restrict an MBConv dimension ks", lambda: sp.restrict(ks=[3]), "ks"),
        ("RS-18", "restrict a typo dimension", lambda: sp.restrict(depth=[2]), "depth"),
        ("RS-19", "around an off-space config", lambda: sp.around(ResNetConfig(**{**good, "r": 64})), "r=64"),
        ("RS-20", "canonical of an MBConv config", lambda: sp.canonical(F.mb_small), "ResNetConfig"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)
    probe("RS-21", A, "numpy integers in a ResNet config stay plain ints", lambda: ResNetConfig(
        d=tuple(np.array(good["d"], np.int64)), e=tuple(np.array(good["e"], np.float64)),
        w=tuple(np.array(good["w"], np.int8)), r=np.int32(28)), expect="accept",
        check=lambda c: (json.loads(c.to_json())["r"] == 28 and all(type(v) is int for v in c.w)
                         and sp.validate(c) is c, c.to_json()))
    probe("RS-22", A, "ResNet config JSON round trip of a sample", lambda: ResNetConfig.from_json(
        sp.sample(np.random.default_rng(1)).to_json()), expect="accept",
        check=lambda c: (c == sp.sample(np.random.default_rng(1)), c.to_json()))

    # ProxylessNAS configs (one-slot last group)
    pg = F.px_small.to_dict()
    pv = lambda **ch: F.px_space.validate(SubnetConfig(**{**pg, **ch}))  # noqa: E731
    cases = [
        ("PX-01", "ProxylessNAS kernel 7 (space 3/5)", lambda: pv(ks=[7] * len(pg["ks"])), "7"),
        ("PX-02", "ProxylessNAS expand 4 (space 3/6)", lambda: pv(e=[4] * len(pg["e"])), "4"),
        ("PX-03", "ProxylessNAS depth 3 (space 1/2)", lambda: pv(d=[3] * len(pg["d"])), "3"),
        ("PX-04", "ProxylessNAS last group depth 2 (one slot)", lambda: pv(d=pg["d"][:-1] + [2]), "d["),
        ("PX-05", "ProxylessNAS slots as if every group had two", lambda: pv(
            ks=[3] * (2 * len(pg["d"])), e=[3] * (2 * len(pg["d"]))), "ks"),
        ("PX-06", "ProxylessNAS resolution 30 (space 28)", lambda: pv(r=30), "r=30"),
        ("PX-07", "MobileNetV3 tiny config on the ProxylessNAS space", lambda: F.px_space.validate(F.mb_small),
         ["ks", "entries", "slots"]),
        ("PX-08", "ProxylessNAS config on the MobileNetV3 space", lambda: F.mb_space.validate(F.px_small),
         ["ks", "entries", "slots"]),
        ("PX-09", "ProxylessNAS restrict w (no width dimension)", lambda: F.px_space.restrict(w=[0]), "w"),
        ("PX-10", "ProxylessNAS OFA arch with a width list", lambda: SubnetConfig.from_ofa(
            {**F.px_small.to_ofa(), "wid": [1]}, r=28), "wid"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)

    # config_from_dict: the family is told by the keys
    cases = [
        ("CF-01", "config_from_dict of None", lambda: config_from_dict(None), "None"),
        ("CF-02", "config_from_dict of a list", lambda: config_from_dict([1]), "[1]"),
        ("CF-03", "config_from_dict with both w and ks", lambda: config_from_dict({**good, "ks": [3]}), ["w", "ks"]),
        ("CF-04", "config_from_dict of w only", lambda: config_from_dict({"w": [0]}), ["missing", "d"]),
        ("CF-05", "config_from_dict of an empty object", lambda: config_from_dict({}), "missing"),
        ("CF-06", "config_from_dict with w null and MBConv keys", lambda: config_from_dict(
            {**F.mb_small.to_dict(), "w": None}), "w"),
        ("CF-07", "config_from_dict string keys of numbers", lambda: config_from_dict({"1": 2}), "1"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)


# ====================================================================================== probes: specs
def probes_specs(F: SimpleNamespace) -> None:
    A = "spec"
    base = F.rn_spec.to_dict()
    rs = lambda **ch: ResNetSpec.from_dict({**base, **ch})  # noqa: E731
    cases = [
        ("SP-01", "ResNetSpec in_channels 0", lambda: rs(in_channels=0), "in_channels=0"),
        ("SP-02", "ResNetSpec num_classes a string", lambda: rs(num_classes="10"), "'10'"),
        ("SP-03", "ResNetSpec stem_width True", lambda: rs(stem_width=True), "True"),
        ("SP-04", "ResNetSpec no stages", lambda: rs(stage_widths=[], strides=[], base_depth=[]), "stage"),
        ("SP-05", "ResNetSpec stride 3", lambda: rs(strides=[1, 3, 2, 1]), "3"),
        ("SP-06", "ResNetSpec stem_stride a string", lambda: rs(stem_stride="2"), "'2'"),
        ("SP-07", "ResNetSpec max_pool a string", lambda: rs(max_pool="yes"), "max_pool"),
        ("SP-08", "ResNetSpec dropout NaN", lambda: rs(dropout=math.nan), "nan"),
        ("SP-09", "ResNetSpec bn_momentum NaN", lambda: rs(bn_momentum=math.nan), "bn_momentum"),
        ("SP-10", "ResNetSpec bn_eps negative", lambda: rs(bn_eps=-1.0), "bn_eps"),
        ("SP-11", "ResNetSpec divisor 0", lambda: rs(divisor=0), "divisor"),
        ("SP-12", "ResNetSpec divisor negative", lambda: rs(divisor=-8), "divisor"),
        ("SP-13", "ResNetSpec family mobilenetv3", lambda: rs(family="mobilenetv3"), "mobilenetv3"),
        ("SP-14", "ResNetSpec stage width 0", lambda: rs(stage_widths=[0, 64, 96, 128]), "stage_widths"),
        ("SP-15", "ResNetSpec stage width a string", lambda: rs(stage_widths=["a", 64, 96, 128]), "'a'"),
        ("SP-16", "ResNetSpec widths NaN", lambda: rs(widths=[math.nan]), "nan"),
        ("SP-17", "ResNetSpec width multiplier 0", lambda: rs(widths=[0.0, 1.0]), "widths"),
        ("SP-18", "ResNetSpec base depth 0", lambda: rs(base_depth=[0, 1, 1, 1]), "base_depth"),
        ("SP-19", "ResNetSpec negative depth choice", lambda: rs(d=[-1, 0]), "-1"),
        ("SP-20", "ResNetSpec unknown key", lambda: rs(stem_depth=2), "stem_depth"),
        ("SP-21", "ResNetSpec with its derived 'space' key", lambda: rs(space={}), "space"),
        ("SP-22", "ResNetSpec strides longer than stages", lambda: rs(strides=[1, 2, 2, 1, 1]), "strides"),
        ("SP-23", "ResNetSpec from a list", lambda: ResNetSpec.from_dict([1]), "malformed"),
        ("SP-24", "ResNetSpec resolutions empty", lambda: rs(r=[]), "r"),
        ("SP-25", "ResNetSpec a huge stem (2**40)", lambda: rs(stem_width=2 ** 40), "stem_width"),
        ("SP-26", "ResNetSpec widths a string", lambda: rs(widths="1.0"), "widths"),
        ("SP-27", "ResNetSpec divisor a float", lambda: rs(divisor=8.5), "divisor"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)
    from elastic.families import build_supernet
    probe("SP-28", A, "build_supernet of a ResNetSpec with divisor 0", lambda: build_supernet(rs(divisor=0)),
          needle="divisor")
    probe("SP-29", A, "build_supernet of a ResNetSpec with a stage width 'a'", lambda: build_supernet(
        rs(stage_widths=["a", 64, 96, 128])), needle="stage_widths")
    probe("SP-30", A, "build_supernet of a ResNetSpec with max_pool 'no' (truthy string)", lambda: build_supernet(
        rs(max_pool="no")), needle="max_pool")

    mb = model_zoo.get_spec("ofa_mbv3_tiny").to_dict()
    px = F.px_spec.to_dict()
    cases = [
        ("SF-01", "spec_from_dict family 'vgg'", lambda: spec_from_dict({**base, "family": "vgg"}), "vgg"),
        ("SF-02", "spec_from_dict family a number", lambda: spec_from_dict({**base, "family": 5}), "5"),
        ("SF-03", "spec_from_dict family a list (unhashable)", lambda: spec_from_dict({**base, "family": ["resnet"]}),
         "resnet"),
        ("SF-04", "spec_from_dict family null", lambda: spec_from_dict({**base, "family": None}), "None"),
        ("SF-05", "spec_from_dict ResNet spec without family", lambda: spec_from_dict(
            {k: v for k, v in base.items() if k != "family"}), ["malformed", "stage_widths"]),
        ("SF-06", "spec_from_dict MobileNetV3 spec labelled resnet", lambda: spec_from_dict({**mb, "family": "resnet"}),
         "malformed"),
        ("SF-07", "spec_from_dict ProxylessNAS spec labelled resnet", lambda: spec_from_dict(
            {**px, "family": "resnet"}), "malformed"),
        ("SF-08", "spec_from_dict only a family", lambda: spec_from_dict({"family": "resnet"}), "malformed"),
        ("SF-09", "spec_from_dict of a string", lambda: spec_from_dict("resnet"), "malformed"),
        ("SF-10", "spec_from_dict ProxylessNAS with an unknown stage key", lambda: spec_from_dict(
            {**px, "stages": [{**px["stages"][0], "slotz": 1}] + px["stages"][1:]}), "slotz"),
        ("SF-11", "spec_from_dict ProxylessNAS with stage slots 0", lambda: spec_from_dict(
            {**px, "stages": px["stages"][:-1] + [{**px["stages"][-1], "slots": 0}]}), "slots"),
        ("SF-12", "spec_from_dict ProxylessNAS family typo", lambda: spec_from_dict({**px, "family": "proxyless"}),
         "proxyless"),
        ("SF-13", "get_family of a dict", lambda: get_family({"name": "resnet"}), "resnet"),
        ("SF-14", "spec_from_dict ProxylessNAS stages not a list", lambda: spec_from_dict({**px, "stages": 5}),
         "stages"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)
    probe("SF-15", A, "spec_from_dict round trip of the ProxylessNAS spec", lambda: spec_from_dict(px),
          expect="accept", check=lambda s: (s == F.px_spec and s.family == "proxylessnas", s.family))
    probe("SF-16", A, "spec_from_dict round trip of the ResNet spec", lambda: spec_from_dict(base), expect="accept",
          check=lambda s: (s == F.rn_spec, s.family))

    # get_spec / get_supernet options of the new recipes
    cases = [
        ("GS-01", "ofa_resnet_tiny resolution 0", lambda: model_zoo.get_spec("ofa_resnet_tiny", resolutions=[0]),
         "resolutions=[0]"),
        ("GS-02", "ofa_resnet_tiny resolution 28.0", lambda: model_zoo.get_spec("ofa_resnet_tiny", resolutions=[28.0]),
         "28.0"),
        ("GS-03", "ofa_resnet_tiny num_classes 0", lambda: model_zoo.get_spec("ofa_resnet_tiny", num_classes=0),
         "num_classes=0"),
        ("GS-04", "ofa_resnet_tiny num_classes 2.5", lambda: model_zoo.get_spec("ofa_resnet_tiny", num_classes=2.5),
         "2.5"),
        ("GS-05", "ofa_resnet_tiny in_channels None", lambda: model_zoo.get_spec("ofa_resnet_tiny", in_channels=None),
         "None"),
        ("GS-06", "ofa_resnet_tiny dropout 1.0", lambda: model_zoo.get_spec("ofa_resnet_tiny", dropout=1.0), "1.0"),
        ("GS-07", "ofa_resnet_tiny dropout a string", lambda: model_zoo.get_spec("ofa_resnet_tiny", dropout="0"),
         "'0'"),
        ("GS-08", "ofa_resnet_tiny unknown option width_mult",
         lambda: model_zoo.get_spec("ofa_resnet_tiny", width_mult=2), "width_mult"),
        ("GS-09", "ofa_resnet50 resolutions a tuple of strings",
         lambda: model_zoo.get_spec("ofa_resnet50", resolutions=("224",)), "'224'"),
        ("GS-10", "ofa_resnet50 num_classes 10**7", lambda: model_zoo.get_spec("ofa_resnet50", num_classes=10 ** 7),
         "10000000"),
        ("GS-11", "ofa_proxyless_d234_e346_k357_w1.3 in_channels 0",
         lambda: model_zoo.get_spec("ofa_proxyless_d234_e346_k357_w1.3", in_channels=0), "in_channels"),
        ("GS-12", "ofa_proxyless_tiny dropout -0.1", lambda: model_zoo.get_spec("ofa_proxyless_tiny", dropout=-0.1),
         "-0.1"),
        ("GS-13", "ofa_proxyless_tiny num_classes True", lambda: model_zoo.get_spec("ofa_proxyless_tiny",
                                                                                   num_classes=True), "True"),
        ("GS-14", "ofa_proxyless_tiny resolutions a set", lambda: model_zoo.get_spec("ofa_proxyless_tiny",
                                                                                    resolutions={28, 32}), "resolutions"),
        ("GS-15", "get_supernet name None", lambda: model_zoo.get_supernet(None), "None"),
        ("GS-16", "get_supernet name with a trailing space", lambda: model_zoo.get_supernet("ofa_resnet_tiny "),
         "ofa_resnet_tiny "),
        ("GS-17", "get_supernet recipe of a checkpoint name", lambda: model_zoo.get_supernet("ofa_mbv3_tiny.fmnist"),
         "ofa_mbv3_tiny.fmnist"),
        ("GS-18", "ofa_resnet_tiny resolutions a numpy array",
         lambda: model_zoo.get_spec("ofa_resnet_tiny", resolutions=np.array([28, 32])), "resolutions"),
        ("GS-19", "ofa_resnet_tiny dropout NaN", lambda: model_zoo.get_spec("ofa_resnet_tiny", dropout=math.nan),
         "nan"),
        ("GS-20", "ofa_proxyless_tiny num_classes -1", lambda: model_zoo.get_spec("ofa_proxyless_tiny",
                                                                                 num_classes=-1), "-1"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)
    probe("GS-21", A, "ofa_resnet_tiny at 64 px with numpy resolutions", lambda: model_zoo.get_spec(
        "ofa_resnet_tiny", resolutions=[np.int64(64)]), expect="accept",
        check=lambda s: (s.r == (64,) and type(s.r[0]) is int, str(s.r)))
    probe("GS-22", A, "ofa_resnet50 spec at 3 classes", lambda: model_zoo.get_spec("ofa_resnet50", num_classes=3),
          expect="accept", check=lambda s: (s.num_classes == 3 and s.family == "resnet", s.family))

    # supernets of the new families used with the wrong inputs
    x = torch.zeros(1, 1, 28, 28)
    cases = [
        ("NT-01", "ResNet forward with an MBConv config", lambda: F.rn_net(x, F.mb_small), "ResNetConfig"),
        ("NT-02", "ResNet forward with 3 channels", lambda: F.rn_net(torch.zeros(1, 3, 28, 28), F.rn_small),
         "input shape"),
        ("NT-03", "ResNet forward float64", lambda: F.rn_net(x.double(), F.rn_small), "float64"),
        ("NT-04", "ResNet forward 3-D input", lambda: F.rn_net(torch.zeros(1, 28, 28), F.rn_small), "input shape"),
        ("NT-05", "ResNet extract of a ProxylessNAS config", lambda: F.rn_net.extract(F.px_small), "ResNetConfig"),
        ("NT-06", "ProxylessNAS forward with a ResNet config", lambda: F.px_net(x, F.rn_small), "SubnetConfig"),
        ("NT-07", "ProxylessNAS extract of a ResNet config", lambda: F.px_net.extract(F.rn_small), "SubnetConfig"),
        ("NT-08", "ResNet flops of an MBConv config", lambda: F.rn_net.flops(F.mb_small), "ResNetConfig"),
        ("NT-09", "ResNet params of an off-space config", lambda: F.rn_net.params(
            ResNetConfig(**{**F.rn_small.to_dict(), "r": 64})), "r=64"),
        ("NT-10", "ResNet forward with a config dict", lambda: F.rn_net(x, F.rn_small.to_dict()), "ResNetConfig"),
        ("NT-11", "ResNet forward on an integer tensor", lambda: F.rn_net(torch.zeros(1, 1, 28, 28, dtype=torch.long),
                                                                         F.rn_small), "int64"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)

    from elastic.batch import ConfigBatch, CostGrid, genome_length
    from elastic.resnet.spec import costs as rn_costs
    cases = [
        ("CB-01", "ConfigBatch of an MBConv config in the ResNet space",
         lambda: ConfigBatch.from_configs(F.rn_space, [F.rn_small, F.mb_small]), "SubnetConfig"),
        ("CB-02", "ConfigBatch of a ResNet config in the ProxylessNAS space",
         lambda: ConfigBatch.from_configs(F.px_space, [F.rn_small]), "ResNetConfig"),
        ("CB-03", "ResNet genome of the wrong length",
         lambda: ConfigBatch.from_genome(F.rn_space, np.zeros((1, 3), np.int8)), "genome"),
        ("CB-04", "ResNet genome with gene 50",
         lambda: ConfigBatch.from_genome(F.rn_space, np.full((1, genome_length(F.rn_space)), 50, np.int8)), "gene"),
        ("CB-05", "ResNet costs of an MBConv config", lambda: rn_costs(F.rn_spec, F.mb_small), "ResNetConfig"),
        ("CB-06", "CostGrid of a ResNet spec used for a ProxylessNAS batch",
         lambda: CostGrid.build(F.rn_spec).macs(ConfigBatch.from_configs(F.px_space, [F.px_small])), "space"),
        ("CB-07", "random ResNet batch of -1", lambda: ConfigBatch.random(F.rn_space, -1, np.random.default_rng(0)),
         "-1"),
        ("CB-08", "ResNet genome of floats", lambda: ConfigBatch.from_genome(F.rn_space, np.zeros((1, 30))), "genome"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)

    # spaces built directly
    cases = [
        ("SS-01", "ResNetSpace stem_d 1 (not min/max)", lambda: ResNetSpace([0, 1, 2], [0.2], [1.0], [28], [1], stem_d=[1]),
         "stem_d"),
        ("SS-02", "ResNetSpace w index 3 of 1 width", lambda: ResNetSpace([0, 1], [0.2], [1.0], [28], [1], w=[3]), "w"),
        ("SS-03", "ResNetSpace empty depths", lambda: ResNetSpace([], [0.2], [1.0], [28], [1]), "d"),
        ("SS-04", "ResNetSpace base depth a string", lambda: ResNetSpace([0], [0.2], [1.0], [28], "11"),
         "base_depth"),
        ("SS-05", "ResNetSpace.from_dict with a typo key stem_depth", lambda: ResNetSpace.from_dict(
            {**F.rn_space.to_dict(), "stem_depth": [0]}), "stem_depth"),
        ("SS-06", "ResNetSpace.from_dict of None", lambda: ResNetSpace.from_dict(None), "missing"),
        ("SS-07", "ResNetSpace resolution a float", lambda: ResNetSpace([0], [0.2], [1.0], [28.5], [1]), "28.5"),
        ("SS-08", "ResNetSpace depths as a string", lambda: ResNetSpace("012", [0.2], [1.0], [28], [1]), "'012'"),
        ("SS-09", "ResNetSpace depth True", lambda: ResNetSpace([True], [0.2], [1.0], [28], [1]), "True"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)
