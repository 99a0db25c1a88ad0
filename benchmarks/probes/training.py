"""Probes of training runs and training recipes."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from probes.harness import REPO, cli, probe


# ====================================================================================== probes: training recipes
def probes_training(F: SimpleNamespace) -> None:
    A = "training"
    from elastic.training.schedule import Phase
    from model_zoo.training_recipes import recipe_from_dict
    RN = {"supernet": "ofa_resnet_tiny", "strategy": "progressive",
          "schedule": {"epochs": {"teacher": 1, "depth1": 1, "depth2": 1, "expand1": 1, "expand2": 1, "width1": 1,
                                  "width2": 1}}}
    PX = {"supernet": "ofa_proxyless_tiny", "strategy": "progressive",
          "schedule": {"epochs": {"teacher": 1, "kernel": 1, "depth1": 1, "expand1": 1}}}
    ph = lambda sup, **kw: recipe_from_dict({"supernet": sup, "phase": [{"name": "a", "epochs": 1, "lr": 0.1, **kw}]})  # noqa: E731
    cases = [
        ("TR-01", "ResNet progressive epochs width3", lambda: recipe_from_dict(
            {**RN, "schedule": {"epochs": {"width3": 1}}}), "width3"),
        ("TR-02", "ResNet progressive epochs expand3", lambda: recipe_from_dict(
            {**RN, "schedule": {"epochs": {"expand3": 1}}}), "expand3"),
        ("TR-03", "ProxylessNAS progressive epochs width1 (no width)", lambda: recipe_from_dict(
            {**PX, "schedule": {"epochs": {"width1": 1}}}), "width1"),
        ("TR-05", "ResNet phase with kernels", lambda: ph("ofa_resnet_tiny", ks=[3]), "ks"),
        ("TR-06", "ResNet phase width index 5", lambda: ph("ofa_resnet_tiny", w=[5]), "5"),
        ("TR-07", "ResNet phase width index a string", lambda: ph("ofa_resnet_tiny", w=["0"]), "w="),
        ("TR-08", "ResNet phase depth without the largest", lambda: ph("ofa_resnet_tiny", d=[0]), "largest"),
        ("TR-09", "ResNet phase expand 0.3", lambda: ph("ofa_resnet_tiny", e=[0.3]), "0.3"),
        ("TR-10", "ProxylessNAS phase expand 4", lambda: ph("ofa_proxyless_tiny", e=[4]), "4"),
        ("TR-11", "ProxylessNAS phase kernel 7", lambda: ph("ofa_proxyless_tiny", ks=[7]), "7"),
        ("TR-12", "ProxylessNAS phase width", lambda: ph("ofa_proxyless_tiny", w=[0]), "w"),
        ("TR-13", "ProxylessNAS phase resolution 30", lambda: ph("ofa_proxyless_tiny", r=[30]), "30"),
        ("TR-14", "ResNet phase fixed subnet of ProxylessNAS", lambda: ph(
            "ofa_resnet_tiny", subnet=F.px_small.to_dict()), "SubnetConfig"),
        ("TR-15", "ProxylessNAS phase fixed subnet of ResNet", lambda: ph(
            "ofa_proxyless_tiny", subnet=F.rn_small.to_dict()), "ResNetConfig"),
        ("TR-16", "ResNet phase fixed subnet off the space", lambda: ph(
            "ofa_resnet_tiny", subnet={**F.rn_small.to_dict(), "r": 64}), "64"),
        ("TR-17", "ResNet phase fixed subnet with NaN ratio", lambda: ph(
            "ofa_resnet_tiny", subnet={**F.rn_small.to_dict(), "e": [math.nan] * len(F.rn_small.e)}), "nan"),
        ("TR-18", "ResNet phase fixed subnet a string", lambda: ph("ofa_resnet_tiny", subnet="smallest"),
         "subnet"),
        ("TR-19", "ResNet supernet_options widths (not an option)", lambda: recipe_from_dict(
            {**RN, "supernet_options": {"widths": [1.0]}}), "widths"),
        ("TR-20", "ResNet supernet_options dropout 1.5", lambda: recipe_from_dict(
            {**RN, "supernet_options": {"dropout": 1.5}}), "1.5"),
        ("TR-21", "supernet name typo ofa_resnet", lambda: recipe_from_dict({**RN, "supernet": "ofa_resnet"}),
         "ofa_resnet"),
        ("TR-22", "ResNet sandwich with per-phase epochs", lambda: recipe_from_dict(
            {"supernet": "ofa_resnet_tiny", "strategy": "sandwich", "schedule": {"epochs": {"teacher": 1}}}),
         "epochs"),
        ("TR-23", "ResNet schedule subnets_per_step 0", lambda: recipe_from_dict(
            {**RN, "schedule": {**RN["schedule"], "subnets_per_step": 0}}), "subnets_per_step"),
        ("TR-24", "ResNet schedule subnets_per_step 10**9", lambda: recipe_from_dict(
            {**RN, "schedule": {**RN["schedule"], "subnets_per_step": 10 ** 9}}), "subnets_per_step"),
        ("TR-25", "ResNet schedule unknown key widths", lambda: recipe_from_dict(
            {**RN, "schedule": {**RN["schedule"], "widths": [0]}}), "widths"),
        ("TR-26", "ResNet schedule lr 1e10", lambda: recipe_from_dict(
            {**RN, "schedule": {**RN["schedule"], "lr": 1e10}}), "lr"),
        ("TR-27", "ResNet schedule kd_weight -1", lambda: recipe_from_dict(
            {**RN, "schedule": {**RN["schedule"], "kd_weight": -1.0}}), "kd_weight"),
        ("TR-28", "phase name empty", lambda: ph("ofa_resnet_tiny", name=""), "name"),
        ("TR-29", "phase name with a newline", lambda: recipe_from_dict({"supernet": "ofa_resnet_tiny", "phase": [
            {"name": "a\nb", "epochs": 1, "lr": 0.1}]}), "name"),
        ("TR-30", "ResNet train eval_random_subnets -1", lambda: recipe_from_dict(
            {**RN, "train": {"eval_random_subnets": -1}}), "eval_random_subnets"),
        ("TR-31", "ResNet train seed 2**70", lambda: recipe_from_dict({**RN, "train": {"seed": 2 ** 70}}), "seed"),
        ("TR-32", "ResNet phase sampler sandwich with one subnet", lambda: ph(
            "ofa_resnet_tiny", sampler="sandwich"), "subnets_per_step"),
        ("TR-33", "ResNet phase w as a dict", lambda: ph("ofa_resnet_tiny", w={"0": 1}), "w="),
        ("TR-34", "ResNet data image_size 7", lambda: recipe_from_dict({**RN, "data": {"image_size": 7}}),
         "image_size"),
        ("TR-35", "ResNet phase kd_source 'teacher2'", lambda: ph("ofa_resnet_tiny", kd_source="teacher2"),
         "teacher2"),
        ("TR-36", "Phase w of bools", lambda: Phase("a", 1, 0.1, w=[True]).space(F.rn_space), "True"),
        ("TR-37", "Phase restricting w on the MobileNetV3 space", lambda: Phase("a", 1, 0.1, w=[0]).space(F.mb_space),
         "w"),
        ("TR-38", "ResNet phase resolution rule sandwich with random sampler", lambda: ph(
            "ofa_resnet_tiny", resolution="sandwich"), "sandwich"),
        ("TR-39", "ProxylessNAS schedule epochs as a list", lambda: recipe_from_dict(
            {**PX, "schedule": {"epochs": [1, 2]}}), "epochs"),
    ]
    for pid, desc, call, needle in cases:
        probe(pid, A, desc, call, needle=needle)
    probe("TR-04", A, "ProxylessNAS progressive epochs depth2 (a phase of a two-depth space; valid)",
          lambda: recipe_from_dict({**PX, "schedule": {"epochs": {"depth2": 1}}}), expect="accept",
          check=lambda r: ("depth2" in [p.name for p in r.phases], [p.name for p in r.phases]))
    probe("TR-40", A, "the built-in fmnist_resnet_tiny recipe loads", lambda: _load_recipe("fmnist_resnet_tiny"),
          expect="accept", check=lambda r: (r.supernet == "ofa_resnet_tiny" and len(r.phases) == 7,
                                            [p.name for p in r.phases]))
    probe("TR-41", A, "the built-in fmnist_proxyless_tiny recipe loads", lambda: _load_recipe("fmnist_proxyless_tiny"),
          expect="accept", check=lambda r: (r.supernet == "ofa_proxyless_tiny", [p.name for p in r.phases]))

    # the built-in recipe files edited (copies)
    T = F.root / "toml"
    T.mkdir()
    src = (REPO / "model_zoo" / "recipes" / "fmnist_resnet_tiny.toml").read_text()
    srcp = (REPO / "model_zoo" / "recipes" / "fmnist_proxyless_tiny.toml").read_text()
    from model_zoo.training_recipes import load_training_recipe

    def tom(name: str, text: str) -> Path:
        p = T / name
        p.write_text(text)
        return p
    cases = [
        ("TT-01", "fmnist_resnet_tiny with epochs kernel added",
         tom("a.toml", src.replace("teacher = 4", "teacher = 4, kernel = 1")), "kernel"),
        ("TT-02", "fmnist_resnet_tiny with lr = inf", tom("b.toml", src.replace("lr = 0.1", "lr = inf")), "inf"),
        ("TT-03", "fmnist_resnet_tiny with batch_size = 0", tom("c.toml", src.replace("batch_size = 128",
                                                                                     "batch_size = 0")), "batch_size"),
        ("TT-04", "fmnist_resnet_tiny with [data] val_size = -5", tom("d.toml", src.replace("val_size = 5000",
                                                                                           "val_size = -5")), "-5"),
        ("TT-05", "fmnist_resnet_tiny with a [train] typo momentun",
         tom("e.toml", src.replace("momentum = 0.9", "momentun = 0.9")), "momentun"),
        ("TT-06", "fmnist_resnet_tiny with strategy = 'once'", tom("f.toml", src.replace('"progressive"', '"once"')),
         "once"),
        ("TT-07", "fmnist_proxyless_tiny with epochs width2 added",
         tom("g.toml", srcp.replace("teacher = 4", "teacher = 4, width2 = 1")), "width2"),
        ("TT-08", "fmnist_proxyless_tiny with supernet ofa_resnet_tiny (kernel phase)",
         tom("h.toml", srcp.replace('supernet = "ofa_proxyless_tiny"', 'supernet = "ofa_resnet_tiny"')), "kernel"),
        ("TT-09", "fmnist_resnet_tiny with supernet = 1", tom("i.toml", src.replace('supernet = "ofa_resnet_tiny"',
                                                                                   "supernet = 1")), "supernet"),
        ("TT-10", "fmnist_resnet_tiny with nested epochs table typo",
         tom("j.toml", src.replace("width2 = 2 }", "width2 = { epochs = 2 } }")), "width2"),
        ("TT-11", "fmnist_resnet_tiny with [data] augment = 'flip'",
         tom("k.toml", src.replace('augment = "crop"', 'augment = "flip"')), "flip"),
        ("TT-12", "fmnist_resnet_tiny with a [[phase]] and a [schedule]",
         tom("l.toml", src + '\n[[phase]]\nname = "x"\nepochs = 1\nlr = 0.1\n'), ["phase", "schedule"]),
    ]
    for pid, desc, path, needle in cases:
        probe(pid, A, desc, lambda p=path: load_training_recipe(p), needle=needle)

    # the command line: resuming and runs of the new families
    rn_run, px_run = F.rn_run, F.px_run
    cli("TC-01", A, "train --resume a ResNet run with the ProxylessNAS recipe",
        ["train", "--recipe", F.px_recipe, "--out", rn_run, "--resume"], needle="differs", guard=[rn_run])
    swapped = F.root / "runs" / "swap"
    shutil.copytree(px_run, swapped)
    for f in swapped.glob("state*"):
        f.unlink()
    for f in rn_run.glob("state*"):
        shutil.copy(f, swapped / f.name)
    keep = [swapped / "supernet.safetensors", swapped / "supernet.json", swapped / "settings.json"]
    cli("TC-02", A, "train --resume a ProxylessNAS run whose state files are a ResNet run's",
        ["train", "--out", swapped, "--resume"], needle=["state", "supernet", "architecture"], guard=keep)
    edited_run = F.root / "runs" / "edited"
    shutil.copytree(rn_run, edited_run)
    settings = json.loads((edited_run / "settings.json").read_text())
    settings["recipe"]["supernet"] = "ofa_proxyless_tiny"
    settings["recipe"]["phase"] = [p for p in settings["recipe"]["phase"] if p.get("w") is None]
    (edited_run / "settings.json").write_text(json.dumps(settings))
    cli("TC-03", A, "train --resume a ResNet run whose settings.json names ofa_proxyless_tiny",
        ["train", "--out", edited_run, "--resume"], needle=["state", "supernet", "architecture", "settings"],
        guard=[edited_run / "supernet.safetensors", edited_run / "supernet.json"])
    cli("TC-04", A, "train ResNet recipe with --val-size as large as the training set",
        ["train", "--recipe", F.rn_recipe, "--data", f"fashion-mnist:{F.fm}", "--out", F.root / "runs" / "v64",
         "--val-size", "64", "--limit", "64"], needle=["val", "64"],
        must_not_exist=[F.root / "runs" / "v64" / "supernet.safetensors"])
    tiny = F.recipes / "tiny_limit.toml"
    tiny.write_text(F.rn_recipe.read_text().replace("train_limit = 32", "train_limit = 2").replace(
        "val_size = 16", "val_size = 1"))
    cli("TC-05", A, "train ResNet on 1 training image with batch_size 16 (no full batch)",
        ["train", "--recipe", tiny, "--data", f"fashion-mnist:{F.fm}", "--out", F.root / "runs" / "one"],
        needle=["batch", "image"], must_not_exist=[F.root / "runs" / "one" / "supernet.safetensors"])
    cli("TC-06", A, "train ProxylessNAS recipe with --data a ResNet checkpoint folder",
        ["train", "--recipe", F.px_recipe, "--data", str(F.root / "rn"), "--out", F.root / "runs" / "d"],
        needle=str(F.root / "rn"), must_not_exist=[F.root / "runs" / "d" / "supernet.safetensors"])
    bad_run = F.root / "runs" / "badstate"
    shutil.copytree(rn_run, bad_run)
    st = json.loads((bad_run / "state.json").read_text())
    st["phase_index"] = -1
    (bad_run / "state.json").write_text(json.dumps(st))
    cli("TC-07", A, "train --resume a ResNet run with phase_index -1",
        ["train", "--out", bad_run, "--resume"], needle="phase_index",
        guard=[bad_run / "supernet.safetensors", bad_run / "supernet.json"])
    cli("TC-08", A, "train --resume an empty folder", ["train", "--out", F.root / "runs" / "empty_resume",
                                                       "--resume"], needle=["resume", "recipe", "state"],
        must_not_exist=[F.root / "runs" / "empty_resume" / "supernet.safetensors"])
    cli("TC-09", A, "train --resume a ResNet run with --val-size changed",
        ["train", "--out", rn_run, "--resume", "--val-size", "8"], needle="val", guard=[rn_run])


def _load_recipe(name: str) -> Any:
    from model_zoo.training_recipes import load_training_recipe
    return load_training_recipe(name)
