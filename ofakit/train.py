"""`ofakit train`: compose a recipe, a dataset, a supernet and the elastic trainer into one run.

The run directory gets ``settings.json`` (the resolved recipe and data), the trainer's state, metrics and
plots, and at the end ``supernet.safetensors`` + ``supernet.json`` (a zoo checkpoint whose metadata holds
test-set accuracies and the input preprocessing).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

import model_zoo
from elastic.fileio import atomic_write_text
from elastic.training import distributed
from elastic.training.data import DEFAULT_AUGMENT, DataSource, load_splits
from elastic.training.evaluate import evaluate_subnets
from elastic.training.trainer import Trainer, eval_subnets
from model_zoo.training_recipes import TrainingRecipe, load_training_recipe, recipe_from_dict

log = logging.getLogger(__name__)


def resolve_recipe(recipe: str | None, out: Path, resume: bool) -> tuple[TrainingRecipe, dict[str, Any] | None]:
    """The recipe to run and, when resuming, the data settings the run was started with (else ``None``)."""
    saved = out / "settings.json"
    if resume and saved.is_file():
        try:
            settings = json.loads(saved.read_text())
            stored = recipe_from_dict(settings["recipe"], name=settings["recipe"].get("name", "saved"))
            data_cfg = dict(settings["data"])
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{saved} is not a readable run settings file ({type(exc).__name__}: {exc}); "
                             "cannot resume") from None
        except ValueError as exc:  # the recipe stored there no longer validates (a hand edit?)
            raise ValueError(f"{saved}: the run's recipe does not load ({exc}); cannot resume") from None
        if recipe is not None and load_training_recipe(recipe).to_dict() != stored.to_dict():
            raise ValueError(f"--recipe {recipe} differs from the recipe this run was started with "
                             f"({saved}); resume without --recipe or use a new --out")
        # runs started before the default changed recorded the policy only in "source"
        data_cfg.setdefault("augment", settings.get("source", {}).get("augment", "crop_flip"))
        return stored, data_cfg
    if recipe is None:
        raise ValueError("--recipe is required (a built-in name or a .toml/.yaml file)")
    return load_training_recipe(recipe), None


def run_training(recipe: str | None, out: str | Path, data: str | None = None, resume: bool = False,
                 train_limit: int | None = None, progress: bool = True,
                 val_size: int | None = None) -> dict[str, Any]:
    """Train per ``recipe`` into ``out``; returns the final checkpoint's metadata (rank 0) or ``{}``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a run directory (new, or an earlier run's with --resume)")
    distributed.setup()  # join the process group first, so that only rank 0 writes anything
    rec, data_cfg = resolve_recipe(recipe, out, resume)
    if data_cfg is None:
        data_cfg = dict(rec.data)
        if data is not None:
            data_cfg["source"] = data
        if train_limit is not None:
            data_cfg["train_limit"] = train_limit
        if val_size is not None:
            data_cfg["val_size"] = val_size
    elif val_size is not None and val_size != data_cfg.get("val_size"):
        raise ValueError(f"--val-size {val_size} differs from the run's val_size {data_cfg.get('val_size')}; "
                         "a resumed run keeps its validation split")
    settings_path = out / "settings.json"
    source = DataSource.parse(str(data_cfg.get("source", "fashion-mnist")))
    splits = load_splits(source, val_size=data_cfg.get("val_size"), seed=rec.train.seed,
                         train_limit=data_cfg.get("train_limit"), test_limit=data_cfg.get("test_limit"),
                         image_size=data_cfg.get("image_size"), augment=data_cfg.get("augment", DEFAULT_AUGMENT))
    torch.manual_seed(rec.train.seed)
    supernet = model_zoo.get_supernet(rec.supernet, num_classes=splits.num_classes, in_channels=splits.in_channels,
                                      **rec.supernet_options)
    if source.kind == "imagefolder" and max(supernet.space.r) > splits.image_size:  # own images: say it
        log.warning("the images are %d px and the space's resolutions %s: batches are upscaled for the larger "
                    "ones; set supernet_options resolutions (e.g. [%d]) to train at the images' own size",
                    splits.image_size, list(supernet.space.r), splits.image_size)
    if distributed.is_main() and not settings_path.is_file():
        if not resume and (out / "state.json").exists():
            raise ValueError(f"{out} already holds a training run; pass --resume or choose another --out")
        atomic_write_text(settings_path, json.dumps({"recipe": rec.to_dict(), "data": data_cfg,
                                                     "source": splits.source}, indent=2) + "\n")
    trainer = Trainer(supernet, splits, rec.phases, rec.train, out, progress=progress)
    trainer.run(resume=resume)
    meta: dict[str, Any] = {}
    if distributed.is_main():
        tracked = eval_subnets(supernet.space, rec.train.seed, rec.train.eval_random_subnets)
        metrics: dict[str, Any] = {"val_top1": evaluate_subnets(supernet, tracked, trainer.calib_set(), splits.val,
                                                                rec.train.eval_batch_size)}
        if splits.test is not None:
            metrics["test_top1"] = evaluate_subnets(supernet, tracked, trainer.calib_set(), splits.test,
                                                    rec.train.eval_batch_size)
        metrics["subnets"] = {k: {"config": json.loads(c.to_json()), "macs": supernet.flops(c),
                                  "params": supernet.params(c)} for k, c in tracked.items()}
        metrics["protocol"] = (f"top-1 after BatchNorm recalibration on {len(trainer.calib_set())} training "
                               "images, no fine-tuning")
        extra = {"preprocess": {**splits.preprocessing(), "resolutions": list(supernet.space.r)},
                 "training": {"recipe": rec.name, "epochs": sum(p.epochs for p in rec.phases),
                              "data": splits.source}}
        path = model_zoo.save_checkpoint(supernet, out / "supernet", metrics=metrics, extra=extra)
        meta = model_zoo.read_checkpoint_meta(path)
    distributed.barrier()
    distributed.cleanup()
    return meta
