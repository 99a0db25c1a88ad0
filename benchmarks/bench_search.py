"""Constrained evolutionary search: ofa-kit's vectorised evolution vs the `ofa` package's EvolutionFinder.

Same space (OFA-MobileNetV3 w1.0: kernel 3/5/7, expand 3/4/6, depth 2/3/4, five resolutions), same budget
(a MACs cap), same hyper-parameters (population 100, 500 generations, OFA's ratios and mutation
probabilities) and the same stand-in predictors on both sides, checked equal before timing:
- accuracy, two stand-ins: ``linear`` (seeded random weights over OFA's architecture encoding; the search
  machinery is what is timed — the goal figure) and ``mlp`` (OFA's own ``AccuracyPredictor``, 3 x 400, seeded
  random weights; its matrix products then dominate both sides). `ofa` evaluates them in torch on
  ``arch2feature`` encodings, ofa-kit on its own encoding in numpy with the identical weights;
- efficiency: exact MACs from one per-block cost table — `ofa` gets a pure-Python lookup per subnet,
  ofa-kit the vectorised lookup.
Both run on one thread, interleaved run by run (seed i of `ofa`, then seed i of ofa-kit), so drift of the
machine's speed hits both alike. Prints wall time of each, the ratio of medians with the range of the
per-pair ratios, and the best predicted accuracy each found.

Run: ``.venv/bin/python benchmarks/bench_search.py [--repeats 5] [--json F]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import statistics
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import model_zoo
from elastic.batch import ConfigBatch, CostGrid
from ofakit.search.evolution import Constraint, EvolutionSettings, Metric, evolve
from ofakit.search.predictors import MLPPredictor

RESOLUTIONS = (160, 176, 192, 208, 224)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="ofa-kit runs (seeds 0..N-1)")
    ap.add_argument("--ofa-repeats", type=int, default=3, help="ofa runs (seeds 0..N-1; ~3 s each)")
    ap.add_argument("--budget-m", type=float, default=300.0, help="MACs cap in millions")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    threadpool_limits(1)  # numpy's BLAS too: both sides on one thread
    from ofa.nas.accuracy_predictor import AccuracyPredictor, MobileNetArchEncoder
    from ofa.nas.search_algorithm import EvolutionFinder

    spec = model_zoo.get_spec("ofa_mbv3_d234_e346_k357_w1.0", resolutions=RESOLUTIONS)
    space, grid = spec.space, CostGrid.build(spec)
    encoder = MobileNetArchEncoder(image_size_list=list(RESOLUTIONS), ks_list=list(space.ks),
                                   expand_list=list(space.e), depth_list=list(space.d), n_stage=space.n_stages)
    probe = ConfigBatch.random(space, 32, np.random.default_rng(0))
    arches = [{**c.to_ofa(), "image_size": c.r} for c in probe.configs()]
    assert np.allclose(np.array([encoder.arch2feature(a) for a in arches]), probe.onehot())
    macs_l = grid.block_macs.reshape(space.n_blocks, len(space.r), len(space.ks), len(space.e)).tolist()
    fixed = grid.fixed_macs[:, 0].tolist()
    r_index = {r: i for i, r in enumerate(space.r)}
    k_index = {k: i for i, k in enumerate(space.ks)}
    e_index = {e: i for i, e in enumerate(space.e)}
    per_stage = space.max_depth

    class MacsEfficiency:  # OFA's efficiency-predictor interface, the fastest plain-Python lookup
        def get_efficiency(self, arch: dict) -> float:
            ri = r_index[arch["image_size"]]
            total = fixed[ri]
            for s, depth in enumerate(arch["d"]):
                for j in range(s * per_stage, s * per_stage + depth):
                    total += macs_l[j][ri][k_index[arch["ks"][j]]][e_index[arch["e"][j]]]
            return total / 1e6

    assert np.allclose([MacsEfficiency().get_efficiency(a) for a in arches], grid.macs(probe) / 1e6)

    res = {"space": "ofa_mbv3_d234_e346_k357_w1.0", "resolutions": list(RESOLUTIONS), "budget_macs_m": args.budget_m,
           "population": 100, "generations": 500, "threads": 1, "predictors": {}}
    metric = Metric("macs", grid.macs, "M", 1e6)
    for kind in ("linear", "mlp"):
        ofa_pred, accuracy = stand_in(kind, encoder, AccuracyPredictor)
        with torch.no_grad():  # both sides must see the same predictor
            assert np.allclose(ofa_pred.predict_acc(arches).numpy(), accuracy(probe), atol=1e-5)
        finder = EvolutionFinder(MacsEfficiency(), ofa_pred, population_size=100, max_time_budget=500)
        ofa_runs, runs = [], []
        for seed in range(max(args.ofa_repeats, args.repeats)):  # interleaved: both sides see the same drift
            if seed < args.ofa_repeats:
                random.seed(seed)
                np.random.seed(seed)
                t0 = time.perf_counter()
                with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
                    _, (ofa_acc, _, ofa_macs) = finder.run_evolution_search(args.budget_m, verbose=False)
                ofa_runs.append((time.perf_counter() - t0, float(ofa_acc), float(ofa_macs)))
            if seed < args.repeats:
                runs.append(evolve(space, accuracy, [Constraint(metric, args.budget_m * 1e6)], seed=seed,
                                   settings=EvolutionSettings(population=100, generations=500)))
        ofa_s = statistics.median(r[0] for r in ofa_runs)
        ofa_acc = statistics.median(r[1] for r in ofa_runs)
        ours_s = [r.seconds for r in runs]
        med = statistics.median(ours_s)
        accs = [r.best.accuracy for r in runs]
        pairs = [o[0] / r.seconds for o, r in zip(ofa_runs, runs)]  # the same seed, taken back to back
        res["predictors"][kind] = {
            "ofa": {"seconds_median": ofa_s, "seconds": [r[0] for r in ofa_runs],
                    "best_predicted_accuracy": [r[1] for r in ofa_runs], "macs_m": [r[2] for r in ofa_runs]},
            "ofakit": {"seconds_median": med, "seconds": ours_s, "best_predicted_accuracy": accs,
                       "macs_m": [r.best.metrics["macs"] / 1e6 for r in runs],
                       "subnets_evaluated": [r.evaluations for r in runs]},
            "speedup": ofa_s / med, "speedup_per_pair": pairs}
        print(f"[{kind} accuracy stand-in] ofa EvolutionFinder: {ofa_s:.2f} s median of {args.ofa_repeats}, "
              f"best {ofa_acc:.4f} (median over seeds); ofa-kit: {med:.3f} s median of {args.repeats} (min {min(ours_s):.3f}), "
              f"best {statistics.median(accs):.4f} (median over seeds) -> speed-up {ofa_s / med:.1f}x "
              f"(per interleaved pair: {min(pairs):.1f}-{max(pairs):.1f}x)")
    print(f"speed-up with the linear stand-in (the goal figure, >= 20x): {res['predictors']['linear']['speedup']:.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


def stand_in(kind: str, encoder, accuracy_predictor_cls):  # noqa: ANN001, ANN201 - ofa's classes
    """``(ofa-side predictor, ofa-kit-side function)`` sharing seeded random weights."""
    torch.manual_seed(0)
    if kind == "mlp":
        ofa_pred = accuracy_predictor_cls(encoder, device="cpu").eval()
        weights = [(m.weight.detach().numpy().T.copy(), None if m.bias is None else m.bias.detach().numpy().copy())
                   for m in ofa_pred.layers.modules() if isinstance(m, torch.nn.Linear)]
        return ofa_pred, MLPPredictor.from_weights(weights, float(ofa_pred.base_acc.item())).predict_batch
    w = torch.randn(encoder.n_dim) * 0.01

    class Linear:  # the interface EvolutionFinder uses: arch_encoder + predict_acc
        arch_encoder = encoder

        def predict_acc(self, arch_dict_list):  # noqa: ANN001, ANN201
            x = torch.tensor(np.array([encoder.arch2feature(a) for a in arch_dict_list])).float()
            return x @ w + 0.7

    w_np = w.numpy().copy()
    return Linear(), lambda batch: batch.onehot_dot(w_np) + 0.7  # the same function, by gathering active weights


if __name__ == "__main__":
    main()
