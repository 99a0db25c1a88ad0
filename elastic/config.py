"""`SubnetConfig`: one subnet of an elastic supernet, as a frozen, validated, JSON-round-trippable value.

A config names per-block kernel sizes ``ks`` and expand ratios ``e`` (one entry for every block slot of
every stage, OFA's layout), per-stage depths ``d`` and the input resolution ``r``. This module checks
only structure (types, signs, lengths that agree with each other); whether the values belong to a given
supernet's space is checked by :meth:`elastic.space.SearchSpace.validate`.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

_FIELDS = ("ks", "e", "d", "r")
_OFA_FIELDS = ("ks", "e", "d")


def _as_int(name: str, i: int | None, v: Any, owner: str = "SubnetConfig", minimum: int = 1) -> int:
    where = f"{owner}.{name}[{i}]" if i is not None else f"{owner}.{name}"
    kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        if not isinstance(v, bool) and isinstance(v, numbers.Real) and math.isfinite(v) and float(v).is_integer():
            v = int(v)
        else:
            raise ValueError(f"{where}={v!r} must be {kind}")
    if v < minimum:
        raise ValueError(f"{where}={v!r} must be {kind}")
    return int(v)


def _as_ratio(i: int, v: Any, owner: str = "SubnetConfig") -> int | float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 < v < math.inf:
        raise ValueError(f"{owner}.e[{i}]={v!r} must be a positive finite number")
    return int(v) if float(v).is_integer() else float(v)


def _as_seq(name: str, v: Any, owner: str = "SubnetConfig") -> Sequence[Any]:
    if isinstance(v, (str, bytes)) or not isinstance(v, Sequence):
        raise ValueError(f"{owner}.{name}={v!r} must be a list of numbers")
    return v


def parse_json_object(text: str, owner: str) -> Any:
    """``json.loads`` with one-line ``ValueError``s naming ``owner`` (bad JSON, nesting too deep)."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{owner} JSON is not valid JSON: {exc}") from None
    except ValueError as exc:  # e.g. Python's limit on the digits of an integer
        raise ValueError(f"{owner} JSON holds a value Python refuses: {exc}") from None
    except RecursionError:
        raise ValueError(f"{owner} JSON is nested too deeply (not a {owner})") from None


def check_keys(data: Any, fields: Sequence[str], owner: str) -> None:
    """``ValueError`` unless ``data`` is a mapping with exactly the keys ``fields``."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a {owner} must be a JSON object with keys {list(fields)}, got {data!r}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown {owner} key(s) {unknown}; allowed: {list(fields)}")
    missing = [k for k in fields if k not in data]
    if missing:
        raise ValueError(f"{owner} is missing key(s) {missing}; required: {list(fields)}")


class JsonValue:
    """``to_json``/``from_json`` for a frozen config value with ``to_dict``/``from_dict``."""

    def to_json(self) -> str:
        """Compact JSON string; ``from_json(cfg.to_json()) == cfg``."""
        return json.dumps(self.to_dict(), separators=(",", ":"))  # type: ignore[attr-defined]

    @classmethod
    def from_json(cls, text: str) -> Any:
        """Parse the output of :meth:`to_json` (or any JSON object with the same keys)."""
        return cls.from_dict(parse_json_object(text, cls.__name__))  # type: ignore[attr-defined]


def ofa_resolution(arch: Mapping[str, Any], r: int | None) -> Any:
    """The resolution of an OFA arch dict (``r`` as an int or a one-element list) reconciled with ``r``."""
    arch_r = arch.get("r")
    if isinstance(arch_r, (list, tuple)):
        if len(arch_r) != 1:
            raise ValueError(f"OFA arch 'r'={arch_r!r} must hold exactly one resolution")
        arch_r = arch_r[0]
    if r is None and arch_r is None:
        raise ValueError("a resolution is required: pass r=... or include 'r' in the OFA arch")
    if r is not None and arch_r is not None and r != arch_r:
        raise ValueError(f"resolution r={r!r} disagrees with the OFA arch's r={arch_r!r}")
    return r if r is not None else arch_r


@dataclass(frozen=True)
class SubnetConfig(JsonValue):
    """A subnet: kernel size and expand ratio per block slot, depth per stage, input resolution.

    Attributes:
        ks: Depthwise kernel size of every block slot (``n_stages * max_depth`` entries, or the space's
            ``n_blocks`` when its stages differ in slots).
        e: Expand ratio of every block slot (same length as ``ks``).
        d: Number of active blocks per stage (the first ``d[i]`` blocks of stage ``i`` run).
        r: Input resolution in pixels (square inputs).
    """

    ks: tuple[int, ...]
    e: tuple[int | float, ...]
    d: tuple[int, ...]
    r: int

    def __post_init__(self) -> None:
        ks = tuple(_as_int("ks", i, v) for i, v in enumerate(_as_seq("ks", self.ks)))
        e = tuple(_as_ratio(i, v) for i, v in enumerate(_as_seq("e", self.e)))
        d = tuple(_as_int("d", i, v) for i, v in enumerate(_as_seq("d", self.d)))
        r = _as_int("r", None, self.r)
        if not ks or not d:
            raise ValueError("SubnetConfig.ks and SubnetConfig.d must not be empty")
        if len(ks) != len(e):
            raise ValueError(f"SubnetConfig.ks has {len(ks)} entries but e has {len(e)}; they must match")
        if len(ks) < len(d):
            raise ValueError(f"SubnetConfig.ks has {len(ks)} entries, fewer than the {len(d)} stages in d")
        object.__setattr__(self, "ks", ks)
        object.__setattr__(self, "e", e)
        object.__setattr__(self, "d", d)
        object.__setattr__(self, "r", r)

    @property
    def slots_per_stage(self) -> int:
        """Block slots per stage when every stage has the same number (``ValueError`` otherwise)."""
        if len(self.ks) % len(self.d):
            raise ValueError(f"SubnetConfig.ks has {len(self.ks)} entries, not a multiple of the {len(self.d)} "
                             "stages in d: its stages differ in slots; ask its space (space.active_blocks(cfg))")
        return len(self.ks) // len(self.d)

    def active_blocks(self) -> list[int]:
        """Indices (into ``ks``/``e``) of the blocks that run, in order, when every stage has the same number
        of slots (the engine asks the space instead: :meth:`elastic.space.SearchSpace.active_blocks`)."""
        n = self.slots_per_stage
        return [s * n + i for s, depth in enumerate(self.d) for i in range(min(depth, n))]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with lists, the JSON form."""
        return {"ks": list(self.ks), "e": list(self.e), "d": list(self.d), "r": self.r}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SubnetConfig":
        """Build from a mapping with exactly the keys ``ks``, ``e``, ``d``, ``r``."""
        check_keys(data, _FIELDS, "SubnetConfig")
        return cls(ks=data["ks"], e=data["e"], d=data["d"], r=data["r"])

    def to_ofa(self) -> dict[str, list]:
        """OFA's ``{"ks": [...], "e": [...], "d": [...]}`` (resolution is kept separately by OFA)."""
        return {"ks": list(self.ks), "e": list(self.e), "d": list(self.d)}

    @classmethod
    def from_ofa(cls, arch: Mapping[str, Any], r: int | None = None) -> "SubnetConfig":
        """Build from an OFA arch dict (``ks``, ``e``, ``d``; optional ``r`` and ``wid`` as OFA writes them).

        Args:
            arch: OFA's dict. ``r`` may be an int or a one-element list, as OFA's search emits it;
                ``wid`` is accepted only when ``None`` (width multipliers are not elastic here).
            r: Resolution; required unless ``arch`` carries ``r``; must agree with it when both are given.
        """
        if not isinstance(arch, Mapping):
            raise ValueError(f"an OFA arch must be a dict with keys {list(_OFA_FIELDS)}, got {arch!r}")
        unknown = sorted(set(arch) - {*_OFA_FIELDS, "r", "wid"})
        if unknown:
            raise ValueError(f"unknown OFA arch key(s) {unknown}; allowed: ['ks', 'e', 'd', 'r', 'wid']")
        if arch.get("wid") is not None:
            raise ValueError(f"OFA arch 'wid'={arch['wid']!r} is not supported; only None is allowed")
        missing = [k for k in _OFA_FIELDS if k not in arch]
        if missing:
            raise ValueError(f"OFA arch is missing key(s) {missing}; required: {list(_OFA_FIELDS)}")
        return cls(ks=arch["ks"], e=arch["e"], d=arch["d"], r=ofa_resolution(arch, r))
