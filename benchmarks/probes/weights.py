"""Probes of checkpoints and of OFA weights imported and exported both ways."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch

import model_zoo
from model_zoo.checkpoint import checkpoint_paths, save_checkpoint
from probes.harness import copy_ckpt, edit_sidecar, probe, reweigh


# ====================================================================================== probes: checkpoints
def probes_checkpoints(F: SimpleNamespace) -> None:
    A = "checkpoint"
    C = F.root / "ck"
    rn, px = F.rn_ckpt, F.px_ckpt
    load = model_zoo.load_checkpoint

    def edited(name: str, src: Path, fn: Callable[[dict], Any]) -> Path:
        return edit_sidecar(src, C / name, fn)

    def setp(path: str, value: Any) -> Callable[[dict], None]:
        def f(meta: dict) -> None:
            obj = meta
            keys = path.split(".")
            for k in keys[:-1]:
                obj = obj[k]
            if value is _DEL:
                obj.pop(keys[-1], None)
            else:
                obj[keys[-1]] = value
        return f

    cases = [
        ("CK-01", "ResNet sidecar spec family -> mobilenetv3", rn, setp("spec.family", "mobilenetv3"), "spec"),
        ("CK-02", "ResNet sidecar recipe -> ofa_proxyless_tiny", rn, setp("recipe", "ofa_proxyless_tiny"),
         "ofa_proxyless_tiny"),
        ("CK-03", "ResNet sidecar recipe -> ofa_mbv3_tiny (another family)", rn, setp("recipe", "ofa_mbv3_tiny"),
         "ofa_mbv3_tiny"),
        ("CK-04", "ResNet sidecar recipe -> ofa_resnet50", rn, setp("recipe", "ofa_resnet50"), "ofa_resnet50"),
        ("CK-05", "ResNet sidecar three stages", rn, lambda m: m["spec"].update(
            stage_widths=[32, 64, 96], strides=[1, 2, 2], base_depth=[1, 1, 1]), "stage_widths"),
        ("CK-06", "ResNet sidecar depth choices 0/1", rn, setp("spec.d", [0, 1]), "d"),
        ("CK-07", "ResNet sidecar widths NaN", rn, setp("spec.widths", [math.nan]), "widths"),
        ("CK-08", "ResNet sidecar num_classes 11", rn, setp("spec.num_classes", 11), ["classifier", "num_classes"]),
        ("CK-09", "ResNet sidecar in_channels 3", rn, setp("spec.in_channels", 3), ["in_channels", "channel"]),
        ("CK-10", "ResNet sidecar stem stride 1", rn, setp("spec.stem_stride", 1), "stem_stride"),
        ("CK-11", "ResNet sidecar max_pool a string", rn, setp("spec.max_pool", "yes"), "max_pool"),
        ("CK-12", "ResNet sidecar spec without family", rn, setp("spec.family", _DEL), "spec"),
        ("CK-13", "ResNet sidecar recipe a number", rn, setp("recipe", 5), "recipe"),
        ("CK-14", "ResNet sidecar recipe null", rn, setp("recipe", None), "recipe"),
        ("CK-15", "ResNet sidecar preprocess mean of 3 channels", rn, setp("preprocess.mean", [0.1, 0.2, 0.3]),
         "mean"),
        ("CK-16", "ResNet sidecar preprocess std 0", rn, setp("preprocess.std", [0]), "std"),
        ("CK-17", "ResNet sidecar preprocess in_channels a string", rn, setp("preprocess.in_channels", "1"),
         "in_channels"),
        ("CK-18", "ResNet sidecar preprocess image_size 7", rn, setp("preprocess.image_size", 7), "image_size"),
        ("CK-19", "ResNet sidecar format missing", rn, setp("format", _DEL), "format"),
        ("CK-20", "ResNet sidecar spec a string", rn, setp("spec", "resnet"), "spec"),
        ("CK-21", "ProxylessNAS sidecar family -> resnet", px, setp("spec.family", "resnet"), "spec"),
        ("CK-22", "ProxylessNAS sidecar family -> mobilenetv3", px, setp("spec.family", "mobilenetv3"), "family"),
        ("CK-23", "ProxylessNAS sidecar recipe -> ofa_mbv3_tiny", px, setp("recipe", "ofa_mbv3_tiny"),
         "ofa_mbv3_tiny"),
        ("CK-24", "ProxylessNAS sidecar recipe -> ofa_resnet_tiny", px, setp("recipe", "ofa_resnet_tiny"),
         "ofa_resnet_tiny"),
        ("CK-25", "ProxylessNAS sidecar last-stage slots 2", px, lambda m: m["spec"]["stages"][-1].update(slots=2),
         ["slots", "stages"]),
        ("CK-26", "ProxylessNAS sidecar kernels 3/5/7", px, setp("spec.ks", [3, 5, 7]), "ks"),
        ("CK-27", "ProxylessNAS sidecar stem act relu", px, setp("spec.stem_act", "relu"), "stem_act"),
        ("CK-28", "ProxylessNAS sidecar bn_eps 1e-5 (the MBv3 default)", px, setp("spec.bn_eps", 1e-5), "bn_eps"),
        ("CK-29", "ProxylessNAS sidecar recipe with a trailing newline", px, setp("recipe", "ofa_proxyless_tiny\n"),
         "recipe"),
        ("CK-30", "ResNet sidecar spec dropout 2.0", rn, setp("spec.dropout", 2.0), "dropout"),
    ]
    for pid, desc, src, fn, needle in cases:
        path = edited(pid, src, fn)
        probe(pid, A, desc, lambda p=path: load(p), needle=needle)

    # consistent sidecars with edited weights
    rn_w = model_zoo.load_checkpoint(rn).state_dict()
    px_w = model_zoo.load_checkpoint(px).state_dict()

    def weights_case(pid: str, desc: str, src: Path, tensors: dict, needle: Any, expect: str = "error") -> None:
        path = copy_ckpt(src, C / pid)
        reweigh(path, {k: v.contiguous() for k, v in tensors.items()})
        probe(pid, A, desc, lambda: load(path), needle=needle, expect=expect)

    k0 = next(k for k in rn_w if k.endswith("weight") and rn_w[k].dim() == 4)
    weights_case("CW-01", "ResNet weights holding NaN (sha256 consistent)", rn,
                 {**rn_w, k0: torch.full_like(rn_w[k0], math.nan)}, ["NaN", "nan"])
    weights_case("CW-02", "ResNet weights with an extra tensor", rn, {**rn_w, "bogus": torch.zeros(1)}, "bogus")
    weights_case("CW-03", "ResNet weights lacking one tensor", rn, {k: v for k, v in rn_w.items() if k != k0}, k0)
    weights_case("CW-04", "ProxylessNAS weights under a ResNet sidecar", rn, px_w, ["fit", "architecture"])
    path5 = copy_ckpt(rn, C / "CW-05")
    reweigh(path5, {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in rn_w.items()})
    probe("CW-05", A, "ResNet weights stored as float16 load as float32 (valid)", lambda: load(path5), expect="accept",
          check=lambda n: (all(p.dtype == torch.float32 for p in n.parameters()), "float32 parameters"))
    weights_case("CW-06", "ResNet weights with a transposed tensor", rn,
                 {**rn_w, k0: rn_w[k0].transpose(0, 1).contiguous()}, k0)
    weights_case("CW-07", "ProxylessNAS weights holding infinity", px,
                 {**px_w, "classifier.weight": torch.full_like(px_w["classifier.weight"], math.inf)},
                 ["inf", "NaN"])
    tr = copy_ckpt(rn, C / "CW-08")
    w, _ = checkpoint_paths(tr)
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    meta = json.loads(checkpoint_paths(tr)[1].read_text())
    from elastic.fileio import sha256_file
    meta["sha256"] = sha256_file(w)
    checkpoint_paths(tr)[1].write_text(json.dumps(meta))
    probe("CW-08", A, "ResNet weights truncated (sha256 consistent)", lambda: load(tr), needle="safetensors")
    probe("CW-09", A, "load with map_location 'banana'", lambda: load(rn, map_location="banana"), needle="banana")
    probe("CW-10", A, "load with map_location cuda:7 (no such GPU)", lambda: load(rn, map_location="cuda:7"),
          needle="cuda")
    probe("CW-11", A, "load a checkpoint given as its folder", lambda: load(F.root / "rn"), needle="rn")

    # save_checkpoint and publish_checkpoint for the new families
    good = C / "good_rn"
    copy_ckpt(rn, good)
    gw, gs = checkpoint_paths(good)
    probe("SV-01", A, "save a ResNet supernet over a good checkpoint with a NaN preprocess", lambda: save_checkpoint(
        F.rn_net, good, extra={"preprocess": {"mean": [math.nan], "std": [1.0]}}), needle="JSON", guard=[gw, gs])
    probe("SV-02", A, "save a static extracted ResNet subnet", lambda: save_checkpoint(
        F.rn_net.extract(F.rn_small), C / "static"), needle="supernet",
          must_not_exist=[C / "static.safetensors"])
    probe("SV-03", A, "save a ResNet supernet whose recipe was cleared", lambda: save_checkpoint(
        _norecipe(F.rn_net), C / "norecipe"), needle="recipe", must_not_exist=[C / "norecipe.safetensors"])
    probe("SV-04", A, "save with extra 'spec' (reserved)", lambda: save_checkpoint(F.px_net, good, extra={"spec": 1}),
          needle="spec", guard=[gw, gs])
    probe("SV-05", A, "save with a metrics tensor over a good checkpoint", lambda: save_checkpoint(
        F.rn_net, good, metrics={"top1": torch.tensor(0.5)}), needle="JSON", guard=[gw, gs])
    zoo_dir = F.root / "zoo_dir"
    zoo_dir.mkdir()
    import model_zoo.checkpoint as mck
    real = mck.WEIGHTS_DIR

    def publish(src: Path, name: str, **kw: Any) -> Any:
        mck.WEIGHTS_DIR = zoo_dir
        try:
            return model_zoo.publish_checkpoint(src, name, **kw)
        finally:
            mck.WEIGHTS_DIR = real
    probe("PB-01", A, "publish a ResNet checkpoint under a ProxylessNAS name", lambda: publish(rn, "ofa_proxyless_tiny.x"),
          needle="ofa_resnet_tiny")
    probe("PB-02", A, "publish a ResNet checkpoint (valid)", lambda: publish(rn, "ofa_resnet_tiny.probe"),
          expect="accept", check=lambda p: (Path(p).is_file() and p.parent == zoo_dir, str(p)))
    zp = [zoo_dir / "ofa_resnet_tiny.probe.safetensors", zoo_dir / "ofa_resnet_tiny.probe.json"]
    probe("PB-03", A, "publish over a taken zoo name without overwrite", lambda: publish(rn, "ofa_resnet_tiny.probe"),
          needle="taken", guard=zp)
    probe("PB-04", A, "publish a broken sidecar over a taken name with overwrite", lambda: publish(
        C / "CK-02", "ofa_resnet_tiny.probe", overwrite=True), needle="recipe", guard=zp)
    probe("PB-05", A, "publish name with a path separator", lambda: publish(rn, "ofa_resnet_tiny/../x.y"),
          needle="ofa_resnet_tiny/../x.y")


class _Del:
    pass


_DEL = _Del()


def _norecipe(net: torch.nn.Module) -> torch.nn.Module:
    import copy
    n = copy.deepcopy(net)
    n.recipe = None
    return n


# ====================================================================================== probes: OFA weights
def probes_ofa(F: SimpleNamespace) -> None:
    A = "ofa-weights"
    from model_zoo.ofa_weights import ofa_key, to_ofa_state_dict
    O = F.root / "ofa"
    O.mkdir()
    rn_sd = to_ofa_state_dict(F.rn_net)
    px_sd = to_ofa_state_dict(F.px_net)
    mb_sd = to_ofa_state_dict(model_zoo.get_supernet("ofa_mbv3_tiny"))

    def save(name: str, obj: Any) -> Path:
        p = O / name
        torch.save(obj, p)
        return p

    good_rn = save("rn.pth", {"state_dict": rn_sd})
    good_px = save("px.pth", {"state_dict": px_sd})
    imp = model_zoo.import_ofa_checkpoint
    cls_key = next(k for k in rn_sd if k.startswith("classifier") and k.endswith("weight"))
    some = next(k for k in rn_sd if k.endswith("conv.weight"))
    probe("OW-01", A, "import the tiny ResNet's own OFA export (valid)", lambda: imp("ofa_resnet_tiny", good_rn),
          expect="accept", check=lambda n: (all(torch.equal(a, b) for a, b in zip(
              n.state_dict().values(), F.rn_net.state_dict().values())), "weights equal"))
    probe("OW-02", A, "import the tiny ProxylessNAS's own OFA export (valid)", lambda: imp("ofa_proxyless_tiny", good_px),
          expect="accept", check=lambda n: (all(torch.equal(a, b) for a, b in zip(
              n.state_dict().values(), F.px_net.state_dict().values())), "weights equal"))
    half = O / "trunc.pth"
    half.write_bytes(good_rn.read_bytes()[: good_rn.stat().st_size // 2])
    cases = [
        ("OW-03", "truncated ResNet OFA file", lambda: imp("ofa_resnet_tiny", half), "trunc.pth"),
        ("OW-04", "ResNet OFA file missing a tensor", lambda: imp("ofa_resnet_tiny", save(
            "miss.pth", {k: v for k, v in rn_sd.items() if k != some})), "missing"),
        ("OW-05", "ResNet OFA file with a wrong shape", lambda: imp("ofa_resnet_tiny", save(
            "shape.pth", {**rn_sd, some: torch.zeros(1)})), "shape"),
        ("OW-06", "MobileNetV3 OFA file into ofa_resnet_tiny", lambda: imp("ofa_resnet_tiny", save(
            "mb.pth", mb_sd)), "does not match"),
        ("OW-07", "ResNet OFA file into ofa_proxyless_tiny", lambda: imp("ofa_proxyless_tiny", good_rn),
         "does not match"),
        ("OW-08", "ProxylessNAS OFA file into ofa_mbv3_tiny", lambda: imp("ofa_mbv3_tiny", good_px), "does not match"),
        ("OW-09", "OFA file with a number among the tensors", lambda: imp("ofa_resnet_tiny", save(
            "num.pth", {**rn_sd, "x": 3})), "tensors"),
        ("OW-10", "OFA classifier weight a 0-d tensor", lambda: imp("ofa_resnet_tiny", save(
            "scalar.pth", {**rn_sd, cls_key: torch.tensor(1.0)})), cls_key),
        ("OW-11", "OFA classifier weight with 0 classes", lambda: imp("ofa_resnet_tiny", save(
            "zero.pth", {**rn_sd, cls_key: torch.zeros(0, rn_sd[cls_key].shape[1])})), ["num_classes", "0"]),
        ("OW-12", "OFA file with an integer key", lambda: imp("ofa_resnet_tiny", save(
            "intkey.pth", {**rn_sd, 7: torch.zeros(1)})), "7"),
        ("OW-13", "OFA file nested state_dict twice", lambda: imp("ofa_resnet_tiny", save(
            "nested.pth", {"state_dict": {"state_dict": rn_sd}})), "state dict"),
        ("OW-14", "OFA file holding NaN weights", lambda: imp("ofa_resnet_tiny", save(
            "nan.pth", {**rn_sd, some: torch.full_like(rn_sd[some], math.nan)})), ["NaN", "nan"]),
        ("OW-15", "OFA import into an unknown recipe", lambda: imp("ofa_resnet", good_rn), "ofa_resnet"),
        ("OW-16", "OFA import with resolutions '28'", lambda: imp("ofa_resnet_tiny", good_rn, resolutions="28"),
         "'28'"),
        ("OW-17", "OFA import with num_classes disagreeing with the file", lambda: imp(
            "ofa_resnet_tiny", good_rn, num_classes=5), "shape"),
        ("OW-18", "OFA import of a folder", lambda: imp("ofa_resnet_tiny", O), str(O)),
        ("OW-19", "OFA file that is a pickled object", lambda: imp("ofa_resnet_tiny", _pickled(O / "evil.pth")),
         "weights-only"),
        ("OW-20", "OFA file holding a list of tensors", lambda: imp("ofa_resnet_tiny", save(
            "list.pth", list(rn_sd.values()))), "state dict"),
        ("OW-21", "OFA classifier of 2,000,000 classes", lambda: imp("ofa_resnet_tiny", save(
            "huge.pth", {**rn_sd, cls_key: torch.zeros(2_000_000, 1)})), "2000000"),
        ("OW-22", "OFA int64 weight tensor", lambda: imp("ofa_resnet_tiny", save(
            "int.pth", {**rn_sd, some: rn_sd[some].long()})), ["int64", "dtype", "Long"]),
        ("OW-23", "ofa_key of an unknown family", lambda: ofa_key("blocks.0.conv1.weight", "vgg"), "vgg"),
        ("OW-24", "ofa_key of a foreign key", lambda: ofa_key("first_block.dw_conv.weight", "resnet"), "first_block"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)

    exp = model_zoo.export_ofa_checkpoint
    keep = O / "keep.pth"
    shutil.copy(good_rn, keep)
    probe("OE-01", A, "export_ofa_checkpoint of a plain Linear over a good file", lambda: exp(torch.nn.Linear(2, 2), keep),
          needle="supernet", guard=[keep])
    probe("OE-02", A, "export_ofa_checkpoint of None over a good file", lambda: exp(None, keep), needle="None",
          guard=[keep])
    probe("OE-03", A, "export_ofa_checkpoint of an extracted ResNet subnet", lambda: exp(
        F.rn_net.extract(F.rn_small), keep), needle="supernet", guard=[keep])
    probe("OE-04", A, "export_ofa_checkpoint onto a folder", lambda: exp(F.rn_net, O), needle=str(O))
    probe("OE-05", A, "export_ofa_checkpoint under a file", lambda: exp(F.rn_net, keep / "x.pth"), needle="keep.pth",
          guard=[keep])
    probe("OE-06", A, "export_ofa_checkpoint of a ResNet with NaN weights over a good file",
          lambda: exp(_nan_net(F.rn_net), keep), needle=["NaN", "nan"], guard=[keep])
    probe("OE-07", A, "export then import a ProxylessNAS supernet (valid)", lambda: imp(
        "ofa_proxyless_tiny", exp(F.px_net, O / "px2.pth")), expect="accept",
          check=lambda n: (torch.equal(n.classifier.weight, F.px_net.classifier.weight), "classifier equal"))


def _pickled(path: Path) -> Path:
    import pickle
    path.write_bytes(pickle.dumps({"state_dict": {"a": SimpleNamespace(x=1)}}))
    return path


def _nan_net(net: torch.nn.Module) -> torch.nn.Module:
    import copy
    n = copy.deepcopy(net)
    with torch.no_grad():
        next(iter(n.parameters())).fill_(math.nan)
    return n
