"""Dataclasses built from plain mappings (JSON, TOML, request headers): a key the dataclass does not have,
or a required one that is missing, is an error naming it, never silently dropped or defaulted."""

from __future__ import annotations

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
