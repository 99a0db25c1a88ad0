"""Dataclasses built from plain mappings (JSON, TOML, request headers): a key the dataclass does not have,
or a required one that is missing, is an error naming it, never silently dropped or defaulted; and the numeric
settings every spec shares, checked one way."""

from __future__ import annotations

import math
from dataclasses import MISSING, fields
from typing import Any, Mapping


def dataclass_kwargs(cls: type, data: Any, what: str, key: str = "key") -> dict[str, Any]:
    """``data`` as keyword arguments of dataclass ``cls``; ``ValueError`` unless it is a mapping whose keys
    are fields of ``cls`` and that holds every field without a default.

    Args:
        cls: The dataclass.
        data: The mapping (anything else is refused).
        what: What ``data`` describes, in messages (e.g. ``"phase"``).
        key: What one key is called, in messages (e.g. ``"setting"``: "unknown train setting(s) ...").
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} must be a JSON object (a mapping of {key}s), got {str(data)[:80]!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known, key=str)
    if unknown:
        raise ValueError(f"unknown {what} {key}(s) {unknown}; allowed: {sorted(known)}")
    missing = [f.name for f in fields(cls) if f.name not in data and f.default is MISSING
               and f.default_factory is MISSING]
    if missing:
        raise ValueError(f"{what} {str(dict(data))[:80]!r} lacks {missing}")
    return dict(data)


def check_numerics(owner: str, bn_momentum: Any, bn_eps: Any, divisor: Any) -> None:
    """The BatchNorm and channel-rounding settings every spec has: momentum in (0, 1], eps > 0 and finite,
    divisor an integer >= 1 (``ValueError`` naming the field otherwise)."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not (number(bn_momentum) and 0 < bn_momentum <= 1):
        raise ValueError(f"{owner}.bn_momentum={bn_momentum!r}; allowed: a number in (0, 1]")
    if not (number(bn_eps) and 0 < bn_eps < 1):
        raise ValueError(f"{owner}.bn_eps={bn_eps!r}; allowed: a number in (0, 1)")
    if isinstance(divisor, bool) or not isinstance(divisor, int) or not 1 <= divisor <= 1024:
        raise ValueError(f"{owner}.divisor={divisor!r}; allowed: an integer from 1 to 1024")
