"""Model zoo: named supernet recipes, ofa-kit checkpoints, and import/export of official OFA weights."""

from model_zoo import recipes as _recipes  # noqa: F401  (registers the built-in recipes)
from model_zoo.registry import get_spec, get_supernet, list_supernets, register_supernet

__all__ = ["get_spec", "get_supernet", "list_supernets", "register_supernet"]
