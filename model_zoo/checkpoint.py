"""ofa-kit checkpoints: safetensors weights plus a JSON sidecar, written atomically and verified on load.

``save_checkpoint(net, "runs/x/supernet")`` writes ``supernet.safetensors`` and ``supernet.json``. The
sidecar records the recipe name, the full architecture spec (space, classes, input channels), the
weights' sha256 and optional metrics. Loading recomputes the sha256 and rebuilds the supernet from the
registered recipe, refusing a file whose hash or architecture does not match.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from elastic.families import SUPERNET_TYPES, Supernet, build_supernet, spec_from_dict
from elastic.fileio import atomic_path, sha256_file
from elastic.ops import nonfinite
from model_zoo.registry import get_spec

FORMAT = "ofa-kit-checkpoint"
VERSION = 1
WEIGHTS_DIR = Path(__file__).with_name("weights")


def list_checkpoints() -> list[str]:
    """Names of the checkpoints shipped in the zoo (``arch.tag``, e.g. ``ofa_mbv3_tiny.fmnist``): the weights
    files with their metadata sidecar (other files there, such as accuracy datasets, are not checkpoints)."""
    return sorted(p.name[: -len(".json")] for p in WEIGHTS_DIR.glob("*.json")
                  if p.with_suffix(".safetensors").is_file())


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A zoo checkpoint name or a checkpoint path (with or without suffix) -> the ``.safetensors`` path."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ValueError(f"checkpoint={name_or_path!r} must be a zoo name or a path; allowed: {list_checkpoints()} "
                         "or a checkpoint path")
    if not str(name_or_path).strip():
        raise ValueError(f"checkpoint name is empty; give a zoo name {list_checkpoints()} or a checkpoint path")
    weights, sidecar = checkpoint_paths(name_or_path)
    try:
        if sidecar.is_file() or weights.is_file():
            return weights
    except OSError as exc:  # e.g. a name too long for the file system
        raise ValueError(f"checkpoint {str(name_or_path)[:80]!r} cannot be looked up: {exc.strerror}") from None
    if str(name_or_path) in list_checkpoints():
        return WEIGHTS_DIR / f"{name_or_path}.safetensors"
    raise ValueError(f"checkpoint {str(name_or_path)!r} not found: not a file, and not a zoo checkpoint "
                     f"{list_checkpoints()}")


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights.safetensors, sidecar.json)`` for a checkpoint path given with or without a suffix."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


RESERVED_KEYS = frozenset({"format", "version", "recipe", "spec", "space", "num_classes", "in_channels", "weights",
                           "sha256", "metrics"})
"""Sidecar fields :func:`save_checkpoint` writes itself (``extra`` may not replace them)."""


def save_checkpoint(supernet: Supernet, path: str | os.PathLike, metrics: Mapping[str, Any] | None = None,
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Atomically write ``supernet``'s weights and sidecar; returns the ``.safetensors`` path.

    Args:
        supernet: The supernet; it must come from a registered recipe (``supernet.recipe``).
        path: Checkpoint path, with or without ``.safetensors``.
        metrics: Measured figures to record (accuracy, ...).
        extra: Further JSON-serialisable metadata (e.g. input preprocessing).
    """
    if not isinstance(supernet, SUPERNET_TYPES) or not supernet.recipe:
        raise ValueError(f"supernet={type(supernet).__name__} must be a supernet from a registered recipe "
                         "(model_zoo.get_supernet(name))")
    reserved = sorted(set(extra or {}) & RESERVED_KEYS)
    if reserved:
        raise ValueError(f"extra keys {reserved} are the checkpoint's own fields; allowed: other names "
                         "(e.g. preprocess, training)")
    weights, sidecar = checkpoint_paths(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in supernet.state_dict().items()}
    bad = nonfinite(tensors)
    if bad:
        raise ValueError(f"supernet weights hold NaN or infinity in {len(bad)} tensor(s) (first: {bad[0]}); a "
                         f"diverged model is not saved as a checkpoint ({weights} left as it was)")
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "recipe": supernet.recipe})
        meta = {
            "format": FORMAT, "version": VERSION, "recipe": supernet.recipe, "spec": supernet.spec.to_dict(),
            "space": supernet.space.to_dict(), "num_classes": supernet.spec.num_classes,
            "in_channels": supernet.spec.in_channels, "weights": weights.name, "sha256": sha256_file(tmp),
            "metrics": dict(metrics or {}), **dict(extra or {}),
        }
        try:  # before the new weights replace the old ones: a bad sidecar must not orphan them
            text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False) + "\n"
        except (TypeError, ValueError) as exc:
            raise ValueError(f"checkpoint metrics/extra for {weights} are not plain JSON ({exc}); allowed: "
                             "finite numbers, strings, bools, None, lists and dicts") from None
        # The sidecar is written in full (a full disk fails here) before either file replaces its old copy;
        # then the two renames, which need no space, put the new pair in place.
        with atomic_path(sidecar) as tmp_side:
            tmp_side.write_text(text, encoding="utf-8")
    return weights


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar JSON of a checkpoint path or zoo name (no hash check)."""
    _, sidecar = checkpoint_paths(resolve_checkpoint(path))
    if not sidecar.is_file():
        raise ValueError(f"checkpoint sidecar {sidecar} not found (expected next to the .safetensors file)")
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"checkpoint sidecar {sidecar} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{sidecar} is not an ofa-kit checkpoint sidecar (format must be {FORMAT!r})")
    return meta


def _check_preprocess(pre: Any, sidecar: Path, channels: int) -> None:
    """A sidecar's ``preprocess`` record (when there is one): a mean and a positive std per input channel."""
    if pre is None:
        return
    if not isinstance(pre, dict):
        raise ValueError(f"checkpoint sidecar {sidecar}: 'preprocess' must be an object, got {pre!r}")
    for key, low in (("mean", -math.inf), ("std", 0.0)):
        v = pre.get(key)
        ok = (isinstance(v, list) and len(v) == channels
              and all(isinstance(x, (int, float)) and not isinstance(x, bool) and low < x < math.inf for x in v))
        if not ok:
            raise ValueError(f"checkpoint sidecar {sidecar}: preprocess {key}={v!r} must be {channels} finite "
                             f"number(s){', each > 0' if key == 'std' else ''} (one per input channel)")
    if "in_channels" in pre and pre["in_channels"] != channels:
        raise ValueError(f"checkpoint sidecar {sidecar}: preprocess in_channels={pre['in_channels']!r} differs from "
                         f"the network's {channels}")
    size = pre.get("image_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 4096):
        raise ValueError(f"checkpoint sidecar {sidecar}: preprocess image_size={size!r}; allowed: an integer "
                         "from 8 to 4096 pixels, or null")


def load_checkpoint(name_or_path: str | os.PathLike, map_location: str = "cpu") -> Supernet:
    """Load a checkpoint (a path, or a zoo name like ``ofa_mbv3_tiny.fmnist``), verifying sha256 and recipe.

    The sidecar is available afterwards as ``supernet.checkpoint_meta``.
    """
    path = resolve_checkpoint(name_or_path)
    weights, _ = checkpoint_paths(path)
    meta = read_checkpoint_meta(path)
    if not weights.is_file():
        raise ValueError(f"checkpoint weights {weights} not found")
    digest = sha256_file(weights)
    if digest != meta.get("sha256"):
        raise ValueError(f"sha256 mismatch for {weights}: file has {digest}, sidecar says {meta.get('sha256')}; "
                         "the weights are corrupt or belong to another checkpoint")
    _, sidecar = checkpoint_paths(path)
    missing = [k for k in ("spec", "recipe") if k not in meta]
    if missing:
        raise ValueError(f"checkpoint sidecar {sidecar} lacks {missing} (edited or truncated?)")
    try:
        stored = spec_from_dict(meta["spec"])
        spec = get_spec(meta["recipe"], num_classes=stored.num_classes, in_channels=stored.in_channels,
                        dropout=stored.dropout, resolutions=stored.r)
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise ValueError(f"checkpoint sidecar {sidecar} has a bad 'spec' or 'recipe': {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if spec != stored:
        have, want = stored.to_dict(), spec.to_dict()
        diff = sorted(set(have) ^ set(want) | {k for k in set(have) & set(want) if have[k] != want[k]})
        raise ValueError(f"checkpoint {weights} was made with a different '{meta['recipe']}' architecture "
                         f"(fields {diff} differ from the registered recipe)")
    _check_preprocess(meta.get("preprocess"), sidecar, spec.in_channels)
    try:
        tensors = load_file(str(weights), device=map_location)
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"cannot read safetensors file {weights}: {exc}") from None
    except (RuntimeError, TypeError) as exc:  # a device that is not here (cuda:7 without a GPU), a bad name
        raise ValueError(f"map_location={map_location!r} cannot hold {weights}: {str(exc).splitlines()[0]}; "
                         "allowed: 'cpu' or a device present here") from None
    bad = nonfinite(tensors)
    if bad:
        raise ValueError(f"checkpoint {weights} holds NaN or infinity in {len(bad)} tensor(s) (first: {bad[0]}): "
                         "the weights of a diverged run; not loaded")
    supernet = build_supernet(spec, recipe=meta["recipe"])
    try:
        supernet.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]  # torch: a header, then the keys
        raise ValueError(f"checkpoint {weights} does not fit its '{meta['recipe']}' architecture: "
                         f"{' '.join(lines[1:3])[:300] or lines[0]}") from None
    supernet.checkpoint_meta = meta
    return supernet


def publish_checkpoint(src: str | os.PathLike, name: str, overwrite: bool = False) -> Path:
    """Copy a verified checkpoint into the zoo as ``name`` (``arch.tag``, e.g. ``ofa_mbv3_tiny.fmnist``); an
    existing zoo entry of that name is replaced only with ``overwrite``."""
    import re
    import shutil

    if (not isinstance(name, str) or len(name) > 200
            or not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)+", name)):
        raise ValueError(f"zoo name {name!r} must look like arch.tag (letters, digits, underscores, dots; at most 200)")
    net = load_checkpoint(src)  # verifies sha256 and recipe
    if not name.startswith(net.recipe + "."):
        raise ValueError(f"zoo name {name!r} must start with the checkpoint's recipe {net.recipe!r} + '.'")
    if not overwrite and name in list_checkpoints():
        raise ValueError(f"zoo name {name!r} is taken; choose another tag, or pass overwrite=True to replace it")
    weights, _ = checkpoint_paths(resolve_checkpoint(src))
    meta = {**net.checkpoint_meta, "name": name, "weights": f"{name}.safetensors"}
    with atomic_path(WEIGHTS_DIR / f"{name}.safetensors") as tmp:
        shutil.copyfile(weights, tmp)
        with atomic_path(WEIGHTS_DIR / f"{name}.json") as tmp_side:  # both written before either is replaced
            tmp_side.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return WEIGHTS_DIR / f"{name}.safetensors"
