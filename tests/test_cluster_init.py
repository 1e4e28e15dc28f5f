"""Tests for the greedy seedings, n_init and the warm start of the per-epoch clustering."""

import os
from functools import partial

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from solo_ncp.cluster import afk_mc2, kmeans_plus_plus, run_seeds, spherical_kmeans
from solo_ncp.ncp.clustering import cluster_epoch

# 8 unit vectors in 3-D (three loose groups) whose candidate potentials differ by >= 4e-4 for
# every set of one or two chosen centres, so the greedy choice has no ties.
POINTS = np.array([
    [-0.4721, -0.4119, -0.7794],
    [-0.7466, 0.5069, 0.4309],
    [-0.7550, -0.0390, -0.6546],
    [-0.7275, 0.6636, 0.1744],
    [0.3877, 0.4184, -0.8213],
    [-0.5107, -0.8580, 0.0553],
    [-0.1542, 0.8827, 0.4440],
    [-0.7204, 0.6130, 0.3243],
])
POINTS = POINTS / np.linalg.norm(POINTS, axis=1, keepdims=True)


def planted(n=900, dim=24, k=9, noise=1.6, seed=0):
    """(n, dim) float32 unit vectors around k random unit centres: noisy enough that seedings
    land in different local optima."""
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(k, dim, generator=generator), dim=1)
    labels = torch.randint(k, (n,), generator=generator)
    noisy = centres[labels] + noise * torch.randn(n, dim, generator=generator) / dim**0.5
    return F.normalize(noisy, dim=1)


def greedy_choice_distribution(x: np.ndarray, chosen, trials: int) -> np.ndarray:
    """Exact probability (N,) of each row being the next centre of greedy k-means++ given the
    chosen rows: the candidate with the smallest potential among `trials` i.i.d. draws with
    probability p ∝ cosine cost. With distinct potentials, sorted ascending, row j wins when no
    draw falls below it and one hits it: (1 - S_<j)^L - (1 - S_<j - p_j)^L."""
    cost = np.clip(1.0 - (x @ x[chosen].T).max(axis=1), 0.0, None)
    cost[chosen] = 0.0
    p = cost / cost.sum()
    potential = np.array([np.minimum(cost, np.clip(1.0 - x @ row, 0.0, None)).sum() for row in x])
    candidates = np.flatnonzero(p > 0)
    assert np.diff(np.sort(potential[candidates])).min() > 1e-4, "needs distinct potentials"
    distribution, below = np.zeros(len(x)), 0.0
    for j in candidates[np.argsort(potential[candidates])]:
        distribution[j] = (1.0 - below) ** trials - (1.0 - below - p[j]) ** trials
        below += p[j]
    return distribution


@pytest.mark.parametrize(
    "seeding, tolerance",
    [
        (partial(kmeans_plus_plus, n_local_trials=3), 0.06),
        (partial(afk_mc2, chain_length=300, n_local_trials=3), 0.07),
    ],
    ids=["kmeans_plus_plus", "afk_mc2"],
)
def test_greedy_seeding_follows_the_exact_best_of_trials_distribution(seeding, tolerance):
    """Second and third centres over 2,000 seeds vs the exact distribution of the greedy choice
    (order statistics of 3 D² draws ranked by the potential they leave, computed in numpy).
    Sampling noise gives a total variation of about 0.03; the non-greedy seedings (one trial)
    are about 0.45 away, and AFK-MC² ranking its candidates without the 1/q weights about 0.1."""
    x = torch.tensor(POINTS, dtype=torch.float32)
    expected, observed = np.zeros(len(POINTS)), np.zeros(len(POINTS))
    runs = 2000
    for seed in range(runs):
        indices = seeding(x, 3, torch.Generator().manual_seed(seed)).tolist()
        for step in (1, 2):
            expected += greedy_choice_distribution(POINTS, indices[:step], trials=3)
            observed[indices[step]] += 1
    assert np.abs(expected - observed).sum() / (2 * runs) < tolerance


@pytest.mark.parametrize("seeding", [kmeans_plus_plus, afk_mc2])
def test_default_greedy_seeding_avoids_the_outlier(seeding):
    """40 points around e1, 20 around e2 and one outlier at -e1 (cost 2 to e1, alone). With a
    first centre in the e1 group, D² sampling takes the outlier with probability 2/22 ≈ 0.09
    (cost 2 against 20 costs ≈ 1), but the cost it removes (2) is a tenth of what an e2 point
    removes (≈ 20): a greedy seeding with 2 + int(ln 2) = 2 trials takes it only when both draws
    are the outlier, (2/22)² ≈ 0.008."""
    generator = torch.Generator().manual_seed(0)
    directions = torch.tensor([[1.0, 0.0, 0.0]] * 40 + [[0.0, 1.0, 0.0]] * 20 + [[-1.0, 0.0, 0.0]])
    x = F.normalize(directions + 0.01 * torch.randn(61, 3, generator=generator), dim=1)
    outlier, plain, runs = 0, 0, 0
    for seed in range(600):
        greedy = seeding(x, 2, torch.Generator().manual_seed(seed)).tolist()
        one_trial = seeding(x, 2, torch.Generator().manual_seed(seed), n_local_trials=1).tolist()
        if greedy[0] < 40:
            runs += 1
            outlier += greedy[1] == 60
        if one_trial[0] < 40:
            plain += one_trial[1] == 60
    assert outlier / runs < 0.03
    assert plain / runs > 0.05


def test_n_init_keeps_the_best_of_the_single_runs():
    """n_init=3 gives exactly the single run, among those with run_seeds' seeds, of highest
    objective; here the best run is not always the first, and the runs differ."""
    x = planted()
    not_first = 0
    for seed in (0, 1, 2, 3):
        seeds = run_seeds(seed, 3)
        assert seeds[0] == seed and len(set(seeds)) == 3
        singles = [spherical_kmeans(x, 9, seed=s) for s in seeds]
        objectives = [r.objective for r in singles]
        assert len(set(objectives)) > 1
        best = singles[int(np.argmax(objectives))]
        not_first += int(np.argmax(objectives)) != 0
        result = spherical_kmeans(x, 9, seed=seed, n_init=3)
        assert result.objective == best.objective
        assert torch.equal(result.labels, best.labels)
        assert torch.equal(result.centroids, best.centroids)
        assert result.n_iter == best.n_iter
        assert torch.equal(spherical_kmeans(x, 9, seed=seed, n_init=3).labels, result.labels)
    assert not_first > 0


def converged(x, k):
    """A fixed point of spherical Lloyd, checked in the test itself: labels are the most similar
    centroid and centroids the unit mean of their members."""
    result = spherical_kmeans(x, k, seed=0, tol=0.0, max_iter=500)
    nearest = (x @ result.centroids.T).argmax(dim=1)
    sums = torch.zeros(k, x.shape[1]).index_add_(0, result.labels, x)
    assert torch.equal(nearest, result.labels)
    assert torch.allclose(F.normalize(sums, dim=1), result.centroids, atol=1e-6)
    return result


def test_warm_start_from_the_optimum_converges_at_once():
    """At a fixed point one Lloyd step reproduces the centroids, so the objective gains nothing
    over the starting centroids' and the first iteration is the last."""
    x = planted()
    optimum = converged(x, 9)
    warm = spherical_kmeans(x, 9, init=optimum.centroids)
    assert warm.n_iter == 1
    assert torch.equal(warm.labels, optimum.labels)
    assert warm.objective == pytest.approx(optimum.objective, abs=1e-6)

    # n_init counts seedings only: a warm start is one run
    clusters = cluster_epoch(x, 9, seed=5, init="warm", previous_centroids=optimum.centroids,
                             n_init=3)
    assert clusters.stats["cluster_warm_start"] == 1.0
    assert clusters.stats["cluster_iterations"] == 1
    assert clusters.stats["cluster_objective"] == pytest.approx(optimum.objective, abs=1e-6)
    assert torch.equal(clusters.labels, optimum.labels)


def test_warm_start_stays_in_the_previous_optimum():
    """Two different local optima A and B of the same data: warm from A ends in A, warm from B
    in B, whatever the seed, so the previous centroids are what it starts from."""
    x = planted()
    optima = {}
    for seed in range(20):
        result = spherical_kmeans(x, 9, seed=seed, tol=0.0, max_iter=500)
        optima.setdefault(round(result.objective, 5), result)
    assert len(optima) >= 2
    for optimum in list(optima.values())[:2]:
        for seed in (0, 7):
            clusters = cluster_epoch(x, 9, seed=seed, init="warm",
                                     previous_centroids=optimum.centroids)
            assert torch.equal(clusters.labels, optimum.labels)


@pytest.mark.parametrize("previous", [None, "wrong K", "wrong D"])
def test_warm_without_usable_previous_centroids_seeds_with_afk_mc2(previous):
    x = planted()
    shapes = {"wrong K": (8, 24), "wrong D": (9, 12)}
    given = None if previous is None else torch.randn(*shapes[previous])
    warm = cluster_epoch(x, 9, seed=3, init="warm", previous_centroids=given, n_init=2)
    cold = spherical_kmeans(x, 9, seed=3, init="afk-mc2", n_init=2)
    assert warm.stats["cluster_warm_start"] == 0.0
    assert torch.equal(warm.labels, cold.labels)
    assert warm.stats["cluster_objective"] == pytest.approx(cold.objective, abs=1e-12)
    assert warm.stats["cluster_iterations"] == cold.n_iter


def test_seeded_inits_ignore_previous_centroids():
    x = planted()
    optimum = converged(x, 9)
    for init in ("afk-mc2", "k-means++"):
        clusters = cluster_epoch(x, 9, seed=4, init=init, previous_centroids=optimum.centroids)
        assert clusters.stats["cluster_warm_start"] == 0.0
        assert torch.equal(clusters.labels, spherical_kmeans(x, 9, seed=4, init=init).labels)


def _ddp_warm_worker(rank: int, world: int, port: str, x: torch.Tensor, previous, out: str):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # only rank 0's previous centroids and seed may count: rank 1 passes other ones
        mine = previous if rank == 0 else torch.randn_like(previous)
        clusters = cluster_epoch(x, 9, seed=rank, init="warm", previous_centroids=mine)
        torch.save({"centroids": clusters.centroids, "labels": clusters.labels,
                    "stats": clusters.stats}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_warm_start_is_rank_zeros_and_broadcast(tmp_path):
    x = planted()
    previous = spherical_kmeans(x, 9, seed=11, max_iter=1).centroids
    port = str(29700 + os.getpid() % 1000)
    mp.spawn(_ddp_warm_worker, args=(2, port, x, previous, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    single = spherical_kmeans(x, 9, init=previous)
    for rank in (r0, r1):
        assert torch.equal(rank["centroids"], single.centroids)
        assert torch.equal(rank["labels"], single.labels)
        assert rank["stats"]["cluster_iterations"] == single.n_iter
        assert rank["stats"]["cluster_objective"] == pytest.approx(single.objective, abs=1e-12)


def bad_inputs():
    x = planted(n=100)
    centroids = x[:9]
    return {
        "unknown kmeans init": (
            lambda: cluster_epoch(x, 9, seed=0, init="previous"),
            "kmeans init='previous' is unknown: set method_kwargs.kmeans_init to one of warm, "
            "afk-mc2, k-means++",
        ),
        "n_init 0": (
            lambda: spherical_kmeans(x, 9, n_init=0),
            r"n_init=0 must be an integer >= 1: the number of seedings to run",
        ),
        "n_init 0 in cluster_epoch": (
            lambda: cluster_epoch(x, 9, seed=0, init="warm", previous_centroids=centroids,
                                  n_init=0),
            r"n_init=0 must be an integer >= 1",
        ),
        "n_init with given centroids": (
            lambda: spherical_kmeans(x, 9, init=centroids, n_init=2),
            r"n_init=2 would repeat one run: .* pass n_init=1",
        ),
        "n_local_trials 0": (
            lambda: spherical_kmeans(x, 9, n_local_trials=0),
            r"n_local_trials=0 must be >= 1: use 1 for the original, non-greedy seeding or None",
        ),
        "chain_length 0": (
            lambda: spherical_kmeans(x, 9, chain_length=0),
            r"chain_length=0 must be >= 1",
        ),
    }


@pytest.mark.parametrize("case", list(bad_inputs()))
def test_bad_input(case):
    call, message = bad_inputs()[case]
    with pytest.raises(ValueError, match=message):
        call()


def test_stage2_starts_each_epochs_clustering_from_the_last_epochs_centroids(
        tmp_path, digits_small_simclr_ckpt, monkeypatch):
    from solo_ncp.methods import stage2_hooks
    from tests.conftest import SMALL_BACKBONE, train_stage2

    calls = []

    def recorded(features, k, **kwargs):
        clusters = cluster_epoch(features, k, **kwargs)
        previous = kwargs["previous_centroids"]
        calls.append({**kwargs, "previous_centroids": None if previous is None else previous.clone(),
                      "centroids": clusters.centroids.clone(), "stats": clusters.stats})
        return clusters

    monkeypatch.setattr(stage2_hooks, "cluster_epoch", recorded)
    assert train_stage2(tmp_path, digits_small_simclr_ckpt, "name=warm", "max_epochs=3", *SMALL_BACKBONE,
                        "+method_kwargs.kmeans_init=warm", "+method_kwargs.kmeans_n_init=2") == 0
    assert [(c["init"], c["n_init"]) for c in calls] == [("warm", 2)] * 3
    assert calls[0]["previous_centroids"] is None
    for before, after in zip(calls, calls[1:]):
        assert torch.equal(after["previous_centroids"], before["centroids"])
    assert [c["stats"]["cluster_warm_start"] for c in calls] == [0.0, 1.0, 1.0]
    rows = (tmp_path / "warm/logs/version_0/metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    logged = [dict(zip(header, row.split(","))) for row in rows[1:]]
    warm = [float(r["cluster_warm_start"]) for r in logged if r.get("cluster_warm_start")]
    iterations = [float(r["cluster_iterations"]) for r in logged if r.get("cluster_iterations")]
    assert warm == [0.0, 1.0, 1.0]
    assert iterations == [c["stats"]["cluster_iterations"] for c in calls]


@pytest.mark.parametrize("option, named", [("kmeans_init=previous", "kmeans_init='previous'"),
                                           ("kmeans_n_init=0", "kmeans_n_init=0")])
def test_bad_stage2_kmeans_option_is_one_error_line(tmp_path, digits_simclr_ckpt, capsys, option,
                                                    named):
    from tests.conftest import train_stage2

    assert train_stage2(tmp_path, digits_simclr_ckpt, "name=bad", "max_epochs=1",
                        f"+method_kwargs.{option}") == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and named in last_line
