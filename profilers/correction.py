"""The latency correction: a linear map from a subnet's layer-sum and shape features to its measured latency.

:func:`profilers.predictor.fit_correction` fits it from a table's calibration subnets; the table stores it
(:meth:`profilers.store.LatencyTable.put_correction`) and checks it on the way in and out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

FEATURES = ("layer_sum_ms", "weights_m", "blocks", "one")


@dataclass(frozen=True)
class Correction:
    """A fitted linear correction ``sum(coef[f] * feature[f])``; the identity when not calibrated.

    Attributes:
        features: Names of the features used (a subset of :data:`FEATURES`).
        coef: One coefficient per feature.
        samples: Whole-subnet measurements the fit used.
        fit_mape: Mean absolute percentage error on those samples.
        loo_mape: Leave-one-out MAPE (an honest estimate of the error on new subnets), when computable.
        floor: Predictions are at least ``floor`` times the raw layer sum: half the lowest ratio of measured
            latency to layer sum among the samples. A linear fit with an offset, extrapolated from a few
            noisy samples, may otherwise predict a tiny or negative latency for a subnet outside them.
    """

    features: tuple[str, ...] = ("layer_sum_ms",)
    coef: tuple[float, ...] = (1.0,)
    samples: int = 0
    fit_mape: float | None = None
    loo_mape: float | None = None
    floor: float = 0.0

    def apply(self, feats: Mapping[str, np.ndarray]) -> np.ndarray:
        """The corrected latency for feature arrays keyed by name."""
        out = sum(c * feats[f] for f, c in zip(self.features, self.coef))
        return np.maximum(out, self.floor * feats["layer_sum_ms"]) if self.floor else out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"features": list(self.features), "coef": list(self.coef), "samples": self.samples,
                "fit_mape": self.fit_mape, "loo_mape": self.loo_mape, "floor": self.floor}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Correction":
        """Inverse of :meth:`to_dict`; a malformed dict is a ``ValueError``."""
        try:
            bad = [f for f in data["features"] if f not in FEATURES]
            if bad or len(data["features"]) != len(data["coef"]):
                raise ValueError(f"stored correction has unknown features {bad} or mismatched coefficients")
            coef, floor = tuple(float(c) for c in data["coef"]), float(data.get("floor", 0.0))
            lay = dict(zip(data["features"], coef)).get("layer_sum_ms")
            if not all(math.isfinite(c) for c in coef) or not (lay is None or lay > 0) \
                    or not 0 <= floor < math.inf:
                raise ValueError(f"stored correction has coefficients {list(coef)} and floor {floor}; allowed: finite, "
                                 "a positive layer-sum coefficient and a floor >= 0 (refit it with `ofakit profile "
                                 "refresh`)")
            for key in ("fit_mape", "loo_mape"):
                v = data.get(key)
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0):
                    raise ValueError(f"stored correction has {key}={v!r}; allowed: a number >= 0 or null")
            return cls(tuple(data["features"]), coef, int(data["samples"]), data.get("fit_mape"), data.get("loo_mape"),
                       floor)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"stored correction {str(data)[:80]!r} is malformed ({type(exc).__name__}: {exc}); "
                             "refit it with `ofakit profile refresh`") from None
