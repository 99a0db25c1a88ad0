"""Vectorised populations and costs, accuracy predictors, constrained evolution and NSGA-II fronts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import model_zoo
from elastic.batch import ConfigBatch, CostGrid, genome_length, space_cardinalities
from elastic.spec import costs
from ofakit.search.accuracy import AccuracyData, build_accuracy_data, cached_front, load_accuracy_data, sample_configs
from ofakit.search.evolution import BudgetError, Constraint, EvolutionSettings, Metric, evolve, fastest_candidate
from ofakit.search.front_sampling import front_picks
from ofakit.search.genetic import crossover, mutate, offspring
from ofakit.search.pareto import pareto_front
from ofakit.search.predictors import Encoder, kendall_tau, select_predictor

SPEC = model_zoo.get_spec("ofa_mbv3_tiny")
SPACE = SPEC.space
GRID = CostGrid.build(SPEC)
MACS = Metric("macs", GRID.macs, "M", 1e6)
PARAMS = Metric("params", GRID.params, "M", 1e6)


def synthetic_accuracy(batch: ConfigBatch) -> np.ndarray:
    """A known, smooth 'accuracy': grows with log-MACs, with a kernel-size bonus (search needs a trade-off)."""
    return 0.5 + 0.04 * np.log(GRID.macs(batch)) + 0.002 * (batch.ks * batch.active).sum(1)


# ------------------------------------------------------------------ ConfigBatch
def test_batch_roundtrips_costs_and_encoding(rng):
    batch = ConfigBatch.random(SPACE, 64, rng)
    cfgs = batch.configs()
    assert np.array_equal(ConfigBatch.from_configs(SPACE, cfgs).genome(), batch.genome())
    assert np.array_equal(ConfigBatch.from_values(SPACE, **batch.values()).genome(), batch.genome())
    want = np.array([costs(SPEC, c) for c in cfgs])
    assert np.array_equal(GRID.macs(batch), want[:, 0]) and np.array_equal(GRID.params(batch), want[:, 1])
    enc = batch.onehot()
    n_active = batch.active.sum(1)
    assert np.array_equal(enc.sum(1), 1 + 2 * n_active)  # one resolution + a kernel and a ratio per active block
    canon = ConfigBatch.from_configs(SPACE, [SPACE.canonical(c) for c in cfgs])
    assert np.array_equal(canon.genome(), batch.canonical_genome())
    assert np.array_equal(canon.onehot(), enc)  # inactive slots do not show in the encoding
    w = np.random.default_rng(1).standard_normal(enc.shape[1]).astype(np.float32)
    assert np.allclose(batch.onehot_dot(w), enc @ w, atol=1e-5)
    with pytest.raises(ValueError, match=r"ks=4 is outside the space; allowed: \[3, 5, 7\]"):
        ConfigBatch.from_values(SPACE, **{**batch.values(), "ks": np.full_like(batch.values()["ks"], 4)})


def test_mutation_and_crossover_stay_in_space(rng):
    g = ConfigBatch.random(SPACE, 200, rng).genome()
    for child in (mutate(SPACE, g, rng, 0.3), crossover(g, g[::-1], rng)):
        for cfg in ConfigBatch.from_genome(SPACE, child).configs()[:50]:
            SPACE.validate(cfg)
    assert (mutate(SPACE, g, rng, 0.0, 0.0) == g).all()
    frac = (mutate(SPACE, g, rng, 0.5, 0.5) != g).mean()
    assert 0.2 < frac < 0.5  # resampled half the time, and a resample may draw the same value



def test_offspring_follows_ofa_mutation_and_crossover_laws():
    """Mutant genes are resampled with the gene's probability, uniformly over its choices; crossover genes
    come from either parent with equal probability; rows after ``n_mut`` are crossovers only."""
    rng = np.random.default_rng(3)
    n = 20000
    a = np.zeros((n, genome_length(SPACE)), dtype=np.int8)
    b = np.full_like(a, 1)
    kids = offspring(SPACE, a, b, n // 2, rng, prob=0.1, r_prob=0.5)
    mut, cross = kids[: n // 2], kids[n // 2:]
    card = np.array(space_cardinalities(SPACE))
    assert ((kids >= 0) & (kids < card)).all()
    # a gene differs from its parent (0) when resampled (p) and the draw is not 0: p * (1 - 1/card)
    body = (mut[:, :-1] != 0).mean()
    assert abs(body - 0.1 * (1 - 1 / card[:-1]).mean()) < 0.004
    assert abs((mut[:, -1] != 0).mean() - 0.5 * (1 - 1 / card[-1])) < 0.02
    resampled = mut[:, -1][mut[:, -1] != 0]
    counts = np.bincount(resampled, minlength=card[-1])[1:]
    assert counts.min() > 0.9 * counts.mean()  # the new resolution is uniform over the choices
    assert set(np.unique(cross)) == {0, 1} and abs(cross.mean() - 0.5) < 0.01
    with pytest.raises(ValueError, match=r"mutation prob=1.5 must be within \[0, 1\]"):
        offspring(SPACE, a[:2], b[:2], 1, rng, prob=1.5)


# ------------------------------------------------------------------ accuracy data and predictors
def test_accuracy_dataset_resumes_and_survives_a_torn_line(tmp_path):
    calls = []

    def evaluate(cfg):
        calls.append(cfg)
        return float(synthetic_accuracy(ConfigBatch.from_configs(SPACE, [cfg]))[0]) - 0.5  # a top-1 in [0, 1]

    path = tmp_path / "acc.jsonl"
    header = {"checkpoint_sha256": "abc"}
    first = build_accuracy_data(SPACE, evaluate, path, 6, header)
    assert len(calls) == 6 and first.configs[0] == SPACE.largest() and first.configs[1] == SPACE.smallest()
    with open(path, "ab") as f:
        f.write(b'{"config": "{\\"ks\\"')  # a kill in the middle of a line
    more = build_accuracy_data(SPACE, evaluate, path, 9, header)
    assert len(calls) == 9  # only the three new subnets were measured
    assert more.configs[:6] == first.configs and np.allclose(more.acc[:6], first.acc)
    assert len(load_accuracy_data(path, SPACE).acc) == 9
    build_accuracy_data(SPACE, evaluate, path, 3, {"checkpoint_sha256": "other"})  # another checkpoint: rebuilt
    assert len(calls) == 12 and len(load_accuracy_data(path, SPACE).acc) == 3
    assert len({c.to_json() for c in sample_configs(SPACE, 50, 0)}) == 50


def test_accuracy_dataset_in_worker_processes_equals_one_process(tmp_path):
    """Two forked workers measure the same records as one process, written in the same (sampled) order; a
    failing evaluation stops the build with its error and keeps what was written."""
    pids = tmp_path / "pids"

    def evaluate(cfg):
        with open(pids, "a") as f:
            f.write(f"{os.getpid()}\n")
        return float(synthetic_accuracy(ConfigBatch.from_configs(SPACE, [cfg]))[0]) - 0.5  # a top-1 in [0, 1]

    header = {"checkpoint_sha256": "abc"}
    one = build_accuracy_data(SPACE, evaluate, tmp_path / "one.jsonl", 12, header)
    two = build_accuracy_data(SPACE, evaluate, tmp_path / "two.jsonl", 12, header, workers=2)
    assert two.configs == one.configs and np.array_equal(two.acc, one.acc)
    seen = set(pids.read_text().split())
    assert str(os.getpid()) in seen and len(seen) >= 2  # the second build ran in other processes
    assert (tmp_path / "two.jsonl").read_text() == (tmp_path / "one.jsonl").read_text()

    def fails_on_the_smallest(cfg):
        if cfg == SPACE.smallest():
            raise RuntimeError("evaluation failed")
        return evaluate(cfg)

    with pytest.raises(RuntimeError, match="evaluation failed"):
        build_accuracy_data(SPACE, fails_on_the_smallest, tmp_path / "three.jsonl", 6, header, workers=2)
    kept = load_accuracy_data(tmp_path / "three.jsonl", SPACE)
    assert SPACE.smallest() not in kept.configs and len(kept.acc) <= 5
    with pytest.raises(ValueError, match="workers=0 must be a positive integer"):
        build_accuracy_data(SPACE, evaluate, tmp_path / "four.jsonl", 6, header, workers=0)


def test_predictors_learn_a_known_accuracy_and_the_better_one_is_chosen():
    cfgs = sample_configs(SPACE, 120, seed=1)
    batch = ConfigBatch.from_configs(SPACE, cfgs)
    noise = np.random.default_rng(0).normal(0, 0.001, len(cfgs))
    data = AccuracyData(SPACE, tuple(cfgs), synthetic_accuracy(batch) + noise)
    pred, report = select_predictor(data, seed=0, folds=3)  # 3 folds: the suite's slowest test at 5
    assert set(report["candidates"]) == {"gbt", "mlp"} and report["chosen"] in report["candidates"]
    best = report["candidates"][report["chosen"]]
    assert best["kendall_tau"] == max(c["kendall_tau"] for c in report["candidates"].values()) or \
        abs(best["kendall_tau"] - max(c["kendall_tau"] for c in report["candidates"].values())) < 1e-3
    assert best["kendall_tau"] > 0.7 and best["rmse_pp"] < 1.5
    fresh = ConfigBatch.from_configs(SPACE, sample_configs(SPACE, 300, seed=7)[120:])
    assert kendall_tau(pred.predict_batch(fresh), synthetic_accuracy(fresh)) > 0.7
    assert report["poor"] is False
    with pytest.raises(ValueError, match="too few"):
        select_predictor(AccuracyData(SPACE, tuple(cfgs[:8]), data.acc[:8]))



def test_the_selection_report_is_cached_for_the_same_data_only(tmp_path, monkeypatch, caplog):
    import ofakit.search.predictors as predictors

    runs = []
    real = predictors._cross_validate
    monkeypatch.setattr(predictors, "_cross_validate", lambda *a, **k: runs.append(1) or real(*a, **k))
    cfgs = sample_configs(SPACE, 40, seed=1)
    data = AccuracyData(SPACE, tuple(cfgs), synthetic_accuracy(ConfigBatch.from_configs(SPACE, cfgs)))
    cache = tmp_path / "acc.predictor.json"
    gbt = ("gbt",)  # one kind: the cache is what is tested (the MLP's cross-validation took ~20 s here)
    first = select_predictor(data, cache=cache, names=gbt)
    again = select_predictor(data, cache=cache, names=gbt)
    assert len(runs) == 1 and again[1] == first[1]
    assert np.allclose(again[0].predict_batch(data.batch()), first[0].predict_batch(data.batch()))
    select_predictor(AccuracyData(SPACE, data.configs, data.acc + 0.001), cache=cache, names=gbt)  # other data
    select_predictor(data, cache=cache, encoder=Encoder(GRID), names=gbt)  # other encoding: redone
    select_predictor(data, cache=cache, names=gbt, folds=3)  # other folds: redone
    assert len(runs) == 4
    cache.write_text("{not json")
    select_predictor(data, cache=cache, names=gbt)
    assert len(runs) == 5 and "unreadable predictor report" in caplog.text

def test_a_predictor_that_ranks_noise_is_flagged(caplog):
    """Accuracies unrelated to the configs (a checkpoint whose subnets do not differ): τ ~ 0, said aloud."""
    cfgs = sample_configs(SPACE, 80, seed=1)
    data = AccuracyData(SPACE, tuple(cfgs), np.random.default_rng(0).normal(0.9, 0.003, len(cfgs)))
    _, report = select_predictor(data, seed=0)
    assert report["poor"] is True and "ranks poorly" in caplog.text
    caplog.clear()  # every subnet measured alike (constant labels): τ is undefined (NaN), and that is poor too
    flat = AccuracyData(SPACE, tuple(cfgs), np.full(len(cfgs), 0.9))
    _, report = select_predictor(flat, seed=0)
    assert report["poor"] is True and "ranks poorly" in caplog.text


def test_per_image_results_give_each_validation_half_and_the_label_noise_ceiling(tmp_path):
    rng = np.random.default_rng(0)

    def build(images, path):  # each image is right with the subnet's true accuracy (synthetic, ~0.80-0.93)
        def evaluate(cfg):
            return rng.random(images) < float(synthetic_accuracy(ConfigBatch.from_configs(SPACE, [cfg]))[0]) - 0.28
        return build_accuracy_data(SPACE, evaluate, path, 40, {"checkpoint_sha256": "abc"})

    few, many = build(200, tmp_path / "few.jsonl"), build(20000, tmp_path / "many.jsonl")
    assert few.halves.shape == (40, 2) and np.allclose(few.halves.mean(1), few.acc)
    assert np.array_equal(load_accuracy_data(tmp_path / "few.jsonl", SPACE).halves, few.halves)
    # two independent halves agree less when each has fewer images: the ceiling measures label noise
    assert 0 < few.halves_tau() < many.halves_tau() < 1
    assert 0 < few.noise_ceiling() < many.noise_ceiling() < 1
    # a full-split label is less noisy than a half: a perfect predictor ranks better than two halves agree
    assert few.noise_ceiling() > few.halves_tau()
    _, report = select_predictor(many, seed=0)
    assert report["noise_ceiling_tau"] == pytest.approx(many.noise_ceiling())
    assert report["halves_tau"] == pytest.approx(many.halves_tau())
    floats = build_accuracy_data(SPACE, lambda c: 0.5, tmp_path / "old.jsonl", 20, {"checkpoint_sha256": "abc"})
    assert floats.halves is None and floats.noise_ceiling() is None and floats.halves_tau() is None
    assert select_predictor(floats)[1]["noise_ceiling_tau"] is None


def test_the_noise_ceiling_is_the_tau_a_perfect_predictor_reaches():
    """Simulated: true accuracies, two noisy halves; the ceiling estimated from the halves alone matches the
    τ of the truth against the full-split label, and a formula that ignored the halving would not."""
    rng = np.random.default_rng(3)
    truth = rng.normal(0.9, 0.01, 400)
    h = truth[:, None] + rng.normal(0, 0.006, (400, 2))
    data = AccuracyData(SPACE, tuple(sample_configs(SPACE, 400, 0)), h.mean(1), halves=h)
    perfect = kendall_tau(truth, h.mean(1))
    assert data.noise_ceiling() == pytest.approx(perfect, abs=0.03)
    assert data.halves_tau() < perfect - 0.05



def test_the_cost_feature_is_log_macs_scaled_over_the_space():
    batch = ConfigBatch.from_configs(SPACE, [SPACE.smallest(), SPACE.largest()] + sample_configs(SPACE, 10, 2)[2:])
    x = Encoder(GRID)(batch)
    assert np.array_equal(x[:, :-1], batch.onehot()) and np.array_equal(Encoder()(batch), batch.onehot())
    assert x[0, -1] == pytest.approx(0.0) and x[1, -1] == pytest.approx(1.0)
    assert kendall_tau(x[:, -1], GRID.macs(batch)) == pytest.approx(1.0)


def test_front_sampling_measures_where_the_search_looks(tmp_path):
    """Picks are new, distinct, spread from cheap to costly, and closer to the true front than random
    subnets; they are measured after the sampled ones, marked, and reused from the cache."""
    truth = lambda cfg: float(synthetic_accuracy(ConfigBatch.from_configs(SPACE, [cfg]))[0]) - 0.5  # noqa: E731
    path, header = tmp_path / "acc.jsonl", {"checkpoint_sha256": "abc"}
    data = build_accuracy_data(SPACE, truth, path, 60, header)
    picks = front_picks(data, GRID, 8, seed=0)
    assert len(picks) == 8 and len({SPACE.canonical(c) for c in picks}) == 8
    assert not {SPACE.canonical(c) for c in picks} & {SPACE.canonical(c) for c in data.configs}
    macs = GRID.macs(ConfigBatch.from_configs(SPACE, picks))
    assert np.all(np.diff(macs) > 0) and macs[-1] > 4 * macs[0]
    # excess accuracy over a log-MACs fit of the random subnets: the front sits above the cloud
    rand = data.batch()
    slope, icpt = np.polyfit(np.log(GRID.macs(rand)), data.acc, 1)
    excess = synthetic_accuracy(ConfigBatch.from_configs(SPACE, picks)) - 0.5 - (slope * np.log(macs) + icpt)
    rand_excess = data.acc - (slope * np.log(GRID.macs(rand)) + icpt)
    assert np.median(excess) > np.percentile(rand_excess, 75)
    calls = []
    more = build_accuracy_data(SPACE, lambda c: calls.append(c) or truth(c), path, 60, header, extra=picks)
    assert len(calls) == 8 and more.configs[60:] == tuple(picks) and len(more.acc) == 68
    assert cached_front(path, SPACE, header) == picks and cached_front(path, SPACE, {"checkpoint_sha256": "x"}) == []
    assert len(build_accuracy_data(SPACE, truth, path, 60, header).acc) == 60  # sampled ones only, by default
    with pytest.raises(ValueError, match="k=0 must be a positive integer"):
        front_picks(data, GRID, 0)

# ------------------------------------------------------------------ search
def test_evolution_meets_the_budget_and_beats_random_search():
    lo, hi = GRID.macs(ConfigBatch.from_configs(SPACE, [SPACE.smallest(), SPACE.largest()]))
    budget = lo + 0.4 * (hi - lo)
    res = evolve(SPACE, synthetic_accuracy, [Constraint(MACS, budget)], seed=0)  # its speed: benchmarks/
    assert res.best.metrics["macs"] <= budget and len(res.history) == 500
    assert all(a <= b for a, b in zip(res.history, res.history[1:]))  # elitist: never gets worse
    rand = ConfigBatch.random(SPACE, 5000, np.random.default_rng(3))
    ok = GRID.macs(rand) <= budget
    assert res.best.accuracy >= synthetic_accuracy(rand)[ok].max()
    again = evolve(SPACE, synthetic_accuracy, [Constraint(MACS, budget)], seed=0)
    assert again.best == res.best  # seeded
    assert SPACE.canonical(res.best.config) == res.best.config
    json.dumps(res.best.to_dict())
    free = evolve(SPACE, lambda b: -GRID.macs(b).astype(float), [], settings=EvolutionSettings(generations=60))
    assert -free.best.accuracy == lo  # no constraint: the objective alone decides (here: the fewest MACs)


def test_impossible_budget_names_the_cheapest_subnet():
    lo = GRID.macs(ConfigBatch.from_configs(SPACE, [SPACE.smallest()]))[0]
    with pytest.raises(BudgetError, match=rf"macs <= .*the cheapest subnet predicted is {lo / 1e6:.4g} M"):
        evolve(SPACE, synthetic_accuracy, [Constraint(MACS, 0.9 * lo)])
    assert fastest_candidate(SPACE, MACS).metrics["macs"] == lo
    with pytest.raises(ValueError, match="must be a positive number"):
        Constraint(MACS, -1.0)
    with pytest.raises(ValueError, match="population=2"):
        EvolutionSettings(population=2)


def test_joint_constraints_all_hold():
    """Two 'devices' with different cost models: the pick satisfies both, and each alone allows more."""
    lat_a = Metric("latency_ms[a]", lambda b: GRID.macs(b) / 1e6 * 0.05)
    lat_b = Metric("latency_ms[b]", lambda b: GRID.params(b) / 1e6 * 2.0 + 0.01 * b.active.sum(1))
    big = ConfigBatch.from_configs(SPACE, [SPACE.largest()])
    ca, cb = Constraint(lat_a, 0.5 * lat_a.fn(big)[0]), Constraint(lat_b, 0.6 * lat_b.fn(big)[0])
    both = evolve(SPACE, synthetic_accuracy, [ca, cb], settings=EvolutionSettings(generations=150))
    assert both.best.metrics[lat_a.name] <= ca.limit and both.best.metrics[lat_b.name] <= cb.limit
    only_a = evolve(SPACE, synthetic_accuracy, [ca], settings=EvolutionSettings(generations=150))
    assert only_a.best.accuracy >= both.best.accuracy - 1e-3  # a looser budget never does worse (up to search noise)
    with pytest.raises(BudgetError, match="joint budget"):
        evolve(SPACE, synthetic_accuracy, [Constraint(lat_a, 1e-9), cb])


def test_pareto_front_is_non_dominated_and_respects_constraints():
    big = PARAMS.fn(ConfigBatch.from_configs(SPACE, [SPACE.largest()]))[0]
    cap = Constraint(PARAMS, 0.7 * big)
    front, seconds = pareto_front(SPACE, synthetic_accuracy, MACS, [cap], seed=0, generations=40)
    assert len(front) >= 5 and seconds > 0  # how fast: benchmarks/, never a timed test
    m = np.array([c.metrics["macs"] for c in front])
    a = np.array([c.accuracy for c in front])
    assert np.all(np.diff(m) >= 0)
    for i in range(len(front)):  # nothing on the front is dominated by another front member
        assert not np.any((m <= m[i]) & (a >= a[i]) & ((m < m[i]) | (a > a[i])))
    assert all(c.metrics["params"] <= cap.limit for c in front)
    assert len({c.config for c in front}) == len(front)


def test_the_accuracy_dataset_says_what_it_costs_and_how_far_it_got(tmp_path, caplog):
    """In a run without a terminal (no progress bar), the log says before it starts how many subnets and about
    how many minutes, then the progress with the time left, every tenth subnet and at the end (issue 13)."""
    import logging

    caplog.set_level(logging.INFO, logger="ofakit.search.accuracy")
    build_accuracy_data(SPACE, lambda cfg: 0.5, tmp_path / "acc.jsonl", 20, {"checkpoint_sha256": "abc"})
    text = caplog.text
    assert "20 of 20 subnets to evaluate on the validation split" in text and "~0-2 min" in text, text
    done = [line for line in text.splitlines() if "subnets evaluated" in line]
    assert "1/20 subnets evaluated" in done[0] and "20/20 subnets evaluated" in done[-1] and len(done) == 11
    assert all("min left" in line for line in done)
    caplog.clear()
    build_accuracy_data(SPACE, lambda cfg: 0.5, tmp_path / "acc.jsonl", 20, {"checkpoint_sha256": "abc"})
    assert "to evaluate" not in caplog.text  # all cached: nothing announced


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident size from Linux's /proc")
def test_accuracy_workers_keep_freed_memory():
    """In a process that called ``keep_freed_memory`` (every accuracy worker does), a freed 64 MiB activation
    stays mapped for the next one instead of going back to the kernel (and being page-faulted in again)."""
    probe = ("import sys, torch\n"
             "from ofakit.search.accuracy import keep_freed_memory\n"
             "if sys.argv[1] == 'keep' and not keep_freed_memory(): sys.exit(3)\n"
             "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * 4096\n"
             "x = torch.ones(16 << 20); held = rss(); del x\n"
             "print(held - rss())\n")
    freed = {mode: int(subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True,
                                      check=True).stdout) for mode in ("default", "keep")}
    assert freed["default"] > 48 << 20  # glibc's default: a block this large is unmapped on free
    assert freed["keep"] < 8 << 20
