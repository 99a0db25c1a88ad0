"""`ResNetConfig`: one subnet of an elastic ResNet, as a frozen, validated, JSON-round-trippable value.

The genes are OFA's ``OFAResNets`` arch: ``d`` (the input stem's depth gene, then one per stage: the blocks
a stage runs beyond its base depth), ``e`` (expand ratio of every bottleneck slot), ``w`` (indices into the
width multipliers: the stem's first two convs, its last conv, then one per stage) and the resolution ``r``.
Structure only is checked here; membership of a space is :meth:`elastic.resnet.space.ResNetSpace.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from elastic.config import JsonValue, _as_int, _as_ratio, _as_seq, check_keys, ofa_resolution

_FIELDS = ("d", "e", "w", "r")
_OWNER = "ResNetConfig"


@dataclass(frozen=True)
class ResNetConfig(JsonValue):
    """A ResNet subnet.

    Attributes:
        d: ``1 + n_stages`` depth genes (the first: whether the stem's residual conv runs, at the largest
            depth only; then each stage's extra blocks, ``0`` to ``max(d)``).
        e: Expand ratio (bottleneck width / output width) of every block slot.
        w: ``2 + n_stages`` width-multiplier indices (stem convs 1-2, stem conv 3, then each stage).
        r: Input resolution in pixels.
    """

    d: tuple[int, ...]
    e: tuple[int | float, ...]
    w: tuple[int, ...]
    r: int

    def __post_init__(self) -> None:
        d = tuple(_as_int("d", i, v, _OWNER, 0) for i, v in enumerate(_as_seq("d", self.d, _OWNER)))
        e = tuple(_as_ratio(i, v, _OWNER) for i, v in enumerate(_as_seq("e", self.e, _OWNER)))
        w = tuple(_as_int("w", i, v, _OWNER, 0) for i, v in enumerate(_as_seq("w", self.w, _OWNER)))
        r = _as_int("r", None, self.r, _OWNER)
        if len(d) < 2 or len(w) != len(d) + 1:
            raise ValueError(f"{_OWNER} has {len(d)} depth genes and {len(w)} width genes; allowed: 1 + n_stages "
                             "depth genes and 2 + n_stages width genes (n_stages >= 1)")
        if len(e) < len(d) - 1:
            raise ValueError(f"{_OWNER}.e has {len(e)} entries, fewer than the {len(d) - 1} stages")
        for name, v in (("d", d), ("e", e), ("w", w), ("r", r)):
            object.__setattr__(self, name, v)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with lists, the JSON form (keys ``d``, ``e``, ``w``, ``r``)."""
        return {"d": list(self.d), "e": list(self.e), "w": list(self.w), "r": self.r}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ResNetConfig":
        """Build from a mapping with exactly the keys ``d``, ``e``, ``w``, ``r``."""
        check_keys(data, _FIELDS, _OWNER)
        return cls(d=data["d"], e=data["e"], w=data["w"], r=data["r"])

    def to_ofa(self) -> dict[str, list]:
        """OFA's ``{"d": [...], "e": [...], "w": [...]}`` for ``OFAResNets.set_active_subnet``."""
        return {"d": list(self.d), "e": list(self.e), "w": list(self.w)}

    @classmethod
    def from_ofa(cls, arch: Mapping[str, Any], r: int | None = None) -> "ResNetConfig":
        """Build from an OFA ResNet arch dict (``d``, ``e``, ``w``; optional ``r``)."""
        if not isinstance(arch, Mapping):
            raise ValueError(f"an OFA ResNet arch must be a dict with keys ['d', 'e', 'w'], got {arch!r}")
        unknown = sorted(set(arch) - {"d", "e", "w", "r"})
        if unknown:
            raise ValueError(f"unknown OFA ResNet arch key(s) {unknown}; allowed: ['d', 'e', 'w', 'r']")
        missing = [k for k in ("d", "e", "w") if k not in arch]
        if missing:
            raise ValueError(f"OFA ResNet arch is missing key(s) {missing}; required: ['d', 'e', 'w']")
        return cls(d=arch["d"], e=arch["e"], w=arch["w"], r=ofa_resolution(arch, r))
