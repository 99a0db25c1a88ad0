"""Training recipes: TOML (or YAML) files naming a supernet, its data, settings and schedule.

Built-in recipes live in ``model_zoo/recipes/*.toml``; any file path works too. A recipe either lists
its phases explicitly (``[[phase]]`` tables) or asks for a preset (``strategy = "progressive"`` for OFA's
progressive shrinking, ``"sandwich"`` for the sandwich rule) tuned by a ``[schedule]`` table.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from elastic.training.data import augmentation_policy
from elastic.training.schedule import Phase, check_value, ofa_schedule, sandwich_schedule
from elastic.training.trainer import TrainConfig
from model_zoo.registry import get_spec

RECIPE_DIR = Path(__file__).with_name("recipes")
_TOP_KEYS = {"name", "description", "supernet", "supernet_options", "strategy", "data", "train", "schedule", "phase"}
_DATA_KEYS = {"source", "val_size", "train_limit", "test_limit", "image_size", "augment"}
STRATEGIES = ("progressive", "sandwich")
_TOP_TYPES = {"name": str, "description": str, "supernet": str, "supernet_options": dict, "strategy": str,
              "data": dict, "train": dict, "schedule": dict, "phase": list}
# [data] key -> (type name, inclusive range or None)
_DATA_TYPES = {"source": ("str", None), "val_size": ("int", (1, 10**8)), "train_limit": ("int", (1, 10**9)),
               "test_limit": ("int", (1, 10**9)), "image_size": ("int", (8, 4096))}


def _check_types(data: Mapping[str, Any], name: str) -> None:
    for key, kind in _TOP_TYPES.items():
        if key in data and not isinstance(data[key], kind):
            raise ValueError(f"recipe {name!r}: {key}={data[key]!r} must be a {'table' if kind is dict else kind.__name__}"
                             f"{' of [[phase]] tables' if kind is list else ''}")
    for i, p in enumerate(data.get("phase", [])):
        if not isinstance(p, dict):
            raise ValueError(f"recipe {name!r}: phase {i + 1} = {p!r} must be a table")
    for key, (kind, bounds) in _DATA_TYPES.items():
        if key in data.get("data", {}):
            check_value(f"recipe {name!r}: [data] {key}", data["data"][key], kind, bounds)
    augment = data.get("data", {}).get("augment")
    if augment is not None and not isinstance(augment, (str, bool)):
        raise ValueError(f"recipe {name!r}: [data] augment={augment!r} must be a policy name (a string)")


@dataclass(frozen=True)
class TrainingRecipe:
    """A fully resolved training recipe."""

    name: str
    supernet: str
    supernet_options: dict[str, Any]
    data: dict[str, Any]
    train: TrainConfig
    phases: list[Phase]
    strategy: str = "progressive"
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The resolved settings (saved beside each run)."""
        return {"name": self.name, "description": self.description, "supernet": self.supernet,
                "supernet_options": self.supernet_options, "strategy": self.strategy, "data": self.data,
                "train": self.train.to_dict(), "phase": [p.to_dict() for p in self.phases]}


def list_training_recipes() -> list[str]:
    """Names of the built-in recipes."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a text recipe (not UTF-8: {exc.reason} at byte {exc.start})") from None
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{path}: YAML recipes need PyYAML (pip install pyyaml); TOML needs nothing") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
        except RecursionError:
            raise ValueError(f"{path} is nested too deeply to be a recipe") from None
    else:
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            import tomli as tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path} is not valid TOML: {exc}") from None
        except RecursionError:
            raise ValueError(f"{path} is nested too deeply to be a recipe") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a table of settings")
    _string_keys(data, str(path))
    return data


def _string_keys(obj: Any, where: str, depth: int = 0) -> None:
    """Every key of every table a string (YAML allows numbers, ``null`` ...; recipe keys are names)."""
    if depth > 20:
        raise ValueError(f"{where} is nested too deeply to be a recipe")
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        if isinstance(obj, dict) and not isinstance(k, str):
            raise ValueError(f"{where}: key {k!r} is not a name; recipe keys are strings")
        _string_keys(v, where, depth + 1)


def recipe_from_dict(data: Mapping[str, Any], name: str = "custom") -> TrainingRecipe:
    """Validate and resolve a recipe mapping (as read from TOML/YAML or from a run's settings)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"recipe {name!r} is {str(data)[:80]!r}; allowed: a table of recipe keys "
                         f"{sorted(_TOP_KEYS)}")
    _string_keys(dict(data), f"recipe {name!r}")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ValueError(f"recipe {name!r}: unknown key(s) {unknown}; allowed: {sorted(_TOP_KEYS)}")
    _check_types(data, name)
    if "supernet" not in data:
        raise ValueError(f"recipe {name!r} must name a supernet (e.g. supernet = \"ofa_mbv3_tiny\")")
    options = dict(data.get("supernet_options", {}))
    keys = [k for k in options if not isinstance(k, str)]
    fixed = sorted(k for k in options if k in ("in_channels", "num_classes"))
    if keys or fixed:
        raise ValueError(f"recipe {name!r}: [supernet_options] key(s) {keys or fixed} are not allowed"
                         + ("; the training data sets in_channels and num_classes" if fixed else "")
                         + "; allowed: the supernet recipe's other options, e.g. resolutions, dropout")
    spec = get_spec(data["supernet"], **options)
    data_cfg = dict(data.get("data", {}))
    bad = sorted(set(data_cfg) - _DATA_KEYS)
    if bad:
        raise ValueError(f"recipe {name!r}: unknown [data] key(s) {bad}; allowed: {sorted(_DATA_KEYS)}")
    if "augment" in data_cfg:  # checked with the recipe, not minutes later when the data loads
        try:
            augmentation_policy(data_cfg["augment"])
        except ValueError as exc:
            raise ValueError(f"recipe {name!r}: [data] {exc}") from None
    train = TrainConfig.from_dict(data.get("train", {}))
    strategy = data.get("strategy", "progressive")
    if strategy not in STRATEGIES:
        raise ValueError(f"recipe {name!r}: strategy={strategy!r}; allowed: {list(STRATEGIES)}")
    source = data_cfg.get("source")
    if source is not None and (not isinstance(source, str) or not source.strip()):
        raise ValueError(f"recipe {name!r}: [data] source={source!r} must be a dataset such as fashion-mnist, "
                         "imagefolder:DIR or cifar10:DIR")
    if "phase" in data:
        if "schedule" in data:  # a preset's settings next to explicit phases would be silently ignored
            raise ValueError(f"recipe {name!r}: [[phase]] tables replace the preset schedule, so [schedule] would be "
                             "ignored; give either [[phase]] tables or [schedule]")
        phases = [Phase.from_dict(p) for p in data["phase"]]
        names = [p.name for p in phases]
        if not phases or len(set(names)) != len(names):
            raise ValueError(f"recipe {name!r}: [[phase]] names {names} must be distinct, and at least one phase "
                             "is required")
    else:
        sched = dict(data.get("schedule", {}))
        try:
            if strategy == "progressive":
                phases = ofa_schedule(space=spec.space, **sched)
            else:
                phases = sandwich_schedule(space=spec.space, **sched)
        except TypeError as exc:
            raise ValueError(f"recipe {name!r}: bad [schedule] for strategy {strategy!r}: {exc}") from None
    for p in phases:
        p.space(spec.space)
    return TrainingRecipe(name=data.get("name", name), supernet=data["supernet"], supernet_options=options,
                          data=data_cfg, train=train, phases=phases, strategy=strategy,
                          description=data.get("description", ""))


def load_training_recipe(name_or_path: str | Path) -> TrainingRecipe:
    """A built-in recipe by name, or a recipe file (``.toml``, ``.yaml``, ``.yml``)."""
    path = Path(name_or_path)
    if not path.is_file():
        builtin = RECIPE_DIR / f"{name_or_path}.toml"
        if not builtin.is_file():
            raise ValueError(f"unknown training recipe {str(name_or_path)!r}: not a file, and not one of the "
                             f"built-in recipes {list_training_recipes()}")
        path = builtin
    return recipe_from_dict(_read(path), name=path.stem)
