"""Import official OFA-MobileNetV3, -ProxylessNAS and -ResNet50 supernet checkpoints; export ours in OFA's layout.

The ``ofa`` package names tensors after its module tree (``blocks.5.conv.depth_conv.conv.conv.weight``,
``...7to5_matrix``); our supernet uses flat names (``blocks.4.dw_conv.weight``). The mapping below is the
single source for both directions. Older OFA files (``mobile_inverted_conv``) and the static-layer
spellings that OFA's own loader accepts (``.bn.`` for ``.bn.bn.``, ``.conv.weight`` for
``.conv.conv.weight``) are accepted on import. Files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from elastic.families import SUPERNET_TYPES, Supernet
from elastic.fileio import atomic_path
from elastic.ops import nonfinite
from model_zoo.registry import get_supernet

_BLOCK_BODY = (  # (our suffix, OFA suffix) inside one elastic block
    (r"expand_conv\.weight", "conv.inverted_bottleneck.conv.conv.weight"),
    (r"expand_bn\.(\w+)", r"conv.inverted_bottleneck.bn.bn.\1"),
    (r"dw_conv\.weight", "conv.depth_conv.conv.conv.weight"),
    (r"dw_conv\.transforms\.(\d+to\d+)", r"conv.depth_conv.conv.\1_matrix"),
    (r"dw_bn\.(\w+)", r"conv.depth_conv.bn.bn.\1"),
    (r"se\.(reduce|expand)\.(\w+)", r"conv.depth_conv.se.fc.\1.\2"),
    (r"project_conv\.weight", "conv.point_linear.conv.conv.weight"),
    (r"project_bn\.(\w+)", r"conv.point_linear.bn.bn.\1"),
)
_FIXED = (
    (r"stem_conv\.weight", "first_conv.conv.weight"),
    (r"stem_bn\.(\w+)", r"first_conv.bn.\1"),
    (r"first_block\.dw_conv\.weight", "blocks.0.conv.depth_conv.conv.weight"),
    (r"first_block\.dw_bn\.(\w+)", r"blocks.0.conv.depth_conv.bn.\1"),
    (r"first_block\.project_conv\.weight", "blocks.0.conv.point_linear.conv.weight"),
    (r"first_block\.project_bn\.(\w+)", r"blocks.0.conv.point_linear.bn.\1"),
    (r"classifier\.(weight|bias)", r"classifier.linear.\1"),
)
_HEADS = {  # OFA-ProxylessNAS names its pre-pool head conv (our final_conv) feature_mix_layer
    "mobilenetv3": ((r"final_conv\.weight", "final_expand_layer.conv.weight"),
                    (r"final_bn\.(\w+)", r"final_expand_layer.bn.\1"),
                    (r"mix_conv\.weight", "feature_mix_layer.conv.weight")),
    "proxylessnas": ((r"final_conv\.weight", "feature_mix_layer.conv.weight"),
                     (r"final_bn\.(\w+)", r"feature_mix_layer.bn.\1")),
}
_RESNET = (  # OFAResNets: the whole key, no block offset
    (r"stem([02])_conv\.weight", r"input_stem.\1.conv.conv.weight"),
    (r"stem([02])_bn\.(\w+)", r"input_stem.\1.bn.bn.\2"),
    (r"stem1_conv\.weight", "input_stem.1.conv.conv.conv.weight"),
    (r"stem1_bn\.(\w+)", r"input_stem.1.conv.bn.bn.\1"),
    (r"blocks\.(\d+)\.conv([123])\.weight", r"blocks.\1.conv\2.conv.conv.weight"),
    (r"blocks\.(\d+)\.bn([123])\.(\w+)", r"blocks.\1.conv\2.bn.bn.\3"),
    (r"blocks\.(\d+)\.down_conv\.weight", r"blocks.\1.downsample.conv.conv.weight"),
    (r"blocks\.(\d+)\.down_bn\.(\w+)", r"blocks.\1.downsample.bn.bn.\2"),
    (r"classifier\.(weight|bias)", r"classifier.linear.linear.\1"),
)
_ALIASES = ((".bn.bn.", ".bn."), (".conv.conv.weight", ".conv.weight"), (".linear.linear.", ".linear."))


def ofa_key(key: str, family: str = "mobilenetv3") -> str:
    """OFA's name for one of our state-dict keys in ``family``'s layout (``OFAMobileNetV3``,
    ``OFAProxylessNASNets`` or ``OFAResNets``)."""
    if family not in (*_HEADS, "resnet"):
        raise ValueError(f"family {family!r} has no OFA layout; allowed: {sorted([*_HEADS, 'resnet'])}")
    for ours, theirs in (_RESNET if family == "resnet" else _FIXED + _HEADS[family]):
        if re.fullmatch(ours, key):
            return re.sub(ours, theirs, key)
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
    if m and family != "resnet":
        for ours, theirs in _BLOCK_BODY:
            if re.fullmatch(ours, m.group(2)):
                return f"blocks.{int(m.group(1)) + 1}." + re.sub(ours, theirs, m.group(2))
    raise ValueError(f"no OFA name for state-dict key {key!r}")


def to_ofa_state_dict(supernet: Supernet) -> dict[str, torch.Tensor]:
    """Our state dict renamed to OFA's layout (``OFAMobileNetV3``, ``OFAProxylessNASNets`` or ``OFAResNets``)."""
    if not isinstance(supernet, SUPERNET_TYPES):
        raise ValueError(f"supernet={type(supernet).__name__} is not a supernet; allowed: one of "
                         f"{[t.__name__ for t in SUPERNET_TYPES]} (an extracted subnet has no OFA supernet layout)")
    family = supernet.spec.family
    return {ofa_key(k, family): v.detach().cpu().clone() for k, v in supernet.state_dict().items()}


def export_ofa_checkpoint(supernet: Supernet, path: str | os.PathLike) -> Path:
    """Atomically save ``{"state_dict": ...}`` in OFA's layout, loadable by ``OFAMobileNetV3.load_state_dict``
    (``OFAProxylessNASNets`` for a ProxylessNAS recipe)."""
    path = Path(path)
    state = to_ofa_state_dict(supernet)
    bad = nonfinite(state)
    if bad:
        raise ValueError(f"supernet weights hold NaN or infinity in {len(bad)} tensor(s) (first: {bad[0]}); "
                         f"not exported ({path} left as it was)")
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state}, tmp)
    return path


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    if not path.is_file():
        raise ValueError(f"OFA checkpoint {path} not found")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt/pickled files
        raise ValueError(f"cannot read OFA checkpoint {path} as a weights-only PyTorch file: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"OFA checkpoint {path} holds a {type(obj).__name__}, not a state dict of named tensors "
                         "(top level or under 'state_dict')")
    odd = next(((k, v) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if odd is not None:
        raise ValueError(f"OFA checkpoint {path}: entry {odd[0]!r} ({type(odd[0]).__name__} key, "
                         f"{type(odd[1]).__name__} value) is not a named tensor; allowed: a state dict of "
                         "named tensors, str -> tensor (top level or under 'state_dict')")
    wrong = [k for k, v in obj.items() if not (v.is_floating_point() or k.endswith("num_batches_tracked"))]
    if wrong:
        raise ValueError(f"OFA checkpoint {path}: tensor {wrong[0]!r} is {obj[wrong[0]].dtype}, not floating point "
                         f"({len(wrong)} such); not OFA weights")
    bad = nonfinite(obj)
    if bad:
        raise ValueError(f"OFA checkpoint {path} holds NaN or infinity in {len(bad)} tensor(s) (first: {bad[0]})")
    return obj


def import_ofa_checkpoint(name: str, path: str | os.PathLike, **kwargs: Any) -> Supernet:
    """Load an official OFA supernet checkpoint into our supernet of recipe ``name``.

    ``num_classes`` is taken from the file's classifier unless given. A missing, unexpected or
    wrongly shaped tensor is an error naming it.
    """
    path = Path(path)
    state = _read_state_dict(path)
    cls_key = next((k for k in state if re.search(r"classifier\.linear(\.linear)?\.weight$", k)), None)
    cls_w = None if cls_key is None else state[cls_key]
    if cls_w is not None and cls_w.dim() != 2:
        raise ValueError(f"OFA checkpoint {path}: the classifier weight {cls_key!r} has shape {tuple(cls_w.shape)}; "
                         "expected (classes, features)")
    if cls_w is not None and "num_classes" not in kwargs:
        kwargs["num_classes"] = int(cls_w.shape[0])
    supernet = get_supernet(name, **kwargs)
    ours = supernet.state_dict()
    lookup: dict[str, str] = {}
    family = supernet.spec.family
    for k in ours:
        canonical = ofa_key(k, family)
        lookup[canonical] = k
        alias = canonical
        for long, short in _ALIASES:
            alias = alias.replace(long, short)
        lookup.setdefault(alias, k)
    loaded: dict[str, torch.Tensor] = {}
    unexpected, mismatched = [], []
    for key, value in state.items():
        target = lookup.get(key.replace(".mobile_inverted_conv.", ".conv."))
        if target is None:
            unexpected.append(key)
        elif tuple(value.shape) != tuple(ours[target].shape):
            mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(ours[target].shape)}")
        else:
            loaded[target] = value
    missing = [k for k in ours if k not in loaded and not k.endswith("num_batches_tracked")]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es), e.g. {mismatched[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
    if missing:
        problems.append(f"{len(missing)} missing tensor(s), e.g. {[ofa_key(k, family) for k in missing[:3]]}")
    if problems:
        raise ValueError(f"OFA checkpoint {path} does not match recipe {name!r}: " + "; ".join(problems))
    for k, v in ours.items():
        loaded.setdefault(k, v)
    supernet.load_state_dict({k: v.to(ours[k].dtype) for k, v in loaded.items()}, strict=True)
    return supernet
