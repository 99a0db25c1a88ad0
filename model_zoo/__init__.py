"""Model zoo: named supernet recipes, ofa-kit checkpoints, and import/export of official OFA weights."""

from model_zoo import supernets as _supernets  # noqa: F401  (registers the built-in recipes)
from model_zoo.checkpoint import (list_checkpoints, load_checkpoint, publish_checkpoint, read_checkpoint_meta,
                                  resolve_checkpoint, save_checkpoint)
from model_zoo.ofa_weights import export_ofa_checkpoint, import_ofa_checkpoint
from model_zoo.registry import get_spec, get_supernet, list_supernets, register_supernet

__all__ = [
    "export_ofa_checkpoint", "get_spec", "get_supernet", "import_ofa_checkpoint", "list_checkpoints",
    "list_supernets", "load_checkpoint", "publish_checkpoint", "read_checkpoint_meta", "register_supernet", "resolve_checkpoint",
    "save_checkpoint",
]
