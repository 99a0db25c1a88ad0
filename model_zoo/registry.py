"""The supernet recipe registry: ``list_supernets()``, ``get_supernet(name, **kw)``."""

from __future__ import annotations

from numbers import Integral
from typing import Any, Callable

from elastic import Registry
from elastic.families import Spec, Supernet, build_supernet

SpecFactory = Callable[..., Spec]
MAX_RESOLUTION = 4096  # input pixels per side a recipe may be built for

SUPERNETS: Registry[SpecFactory] = Registry("supernet recipe")


def register_supernet(name: str) -> Callable[[SpecFactory], SpecFactory]:
    """Decorator registering a spec factory.

    The factory must accept ``num_classes``, ``in_channels``, ``dropout`` and ``resolutions``.
    """
    return SUPERNETS.register(name)  # type: ignore[return-value]


def list_supernets() -> list[str]:
    """Names of all registered supernet recipes."""
    return SUPERNETS.names()


def get_spec(name: str, **kwargs: Any) -> Spec:
    """The architecture spec of recipe ``name`` with overrides such as ``num_classes``."""
    factory = SUPERNETS.get(name)
    res = kwargs.get("resolutions")
    if res is not None and (isinstance(res, (str, bytes)) or not isinstance(res, (list, tuple)) or not res
                            or any(isinstance(r, bool) or not isinstance(r, Integral) or not 1 <= r <= MAX_RESOLUTION
                                   for r in res)):
        raise ValueError(f"resolutions={res!r} must be a non-empty list of integers; allowed: 1 to {MAX_RESOLUTION} "
                         "pixels")
    if res is not None:
        kwargs["resolutions"] = [int(r) for r in res]  # numpy integers become plain ones
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad option for supernet recipe {name!r}: {exc}") from None


def get_supernet(name: str, **kwargs: Any) -> Supernet:
    """A freshly initialised supernet of recipe ``name`` (e.g. ``num_classes=10``), of the recipe's family."""
    return build_supernet(get_spec(name, **kwargs), recipe=name)
