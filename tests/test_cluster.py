"""Tests for solo_ncp.cluster: spherical k-means, seeding, cosine silhouette, K selection."""

import ast
import json
import sys
import types
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import adjusted_rand_score, silhouette_score

from solo_ncp.cluster import (
    afk_mc2,
    best_k,
    cosine_silhouette,
    kmeans_plus_plus,
    resolve_backend,
    spherical_kmeans,
    sweep_k,
    write_k_selection,
)
from solo_ncp.cluster import kmeans as kmeans_module

CLUSTER_DIR = Path(__file__).resolve().parents[1] / "solo_ncp" / "cluster"


def planted(n=400, dim=16, k=5, noise=0.2, seed=0):
    """(n, dim) float32 vectors (not normalised) around k random unit centres, their labels, centres."""
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(k, dim, generator=generator), dim=1)
    labels = torch.randint(k, (n,), generator=generator)
    scale = 0.5 + torch.rand(n, 1, generator=generator)
    x = scale * (centres[labels] + noise * torch.randn(n, dim, generator=generator) / dim**0.5)
    return x, labels, centres


def unit(x):
    return F.normalize(torch.as_tensor(x, dtype=torch.float64), dim=1)


def assert_consistent(x, result, k):
    """No empty cluster; centroids are the unit means of their members; objective matches them."""
    unit_x = F.normalize(x, dim=1)
    assert torch.bincount(result.labels, minlength=k).min() > 0
    sums = torch.zeros(k, x.shape[1]).index_add_(0, result.labels, unit_x)
    assert torch.allclose(result.centroids, F.normalize(sums, dim=1), atol=1e-5)
    cosines = (unit_x * result.centroids[result.labels]).sum(dim=1)
    assert result.objective == pytest.approx(float(cosines.mean()), abs=1e-5)


# ---------------------------------------------------------------- silhouette


def silhouette_cases():
    rng = np.random.default_rng(0)
    gaussian = rng.normal(size=(300, 8))
    clustered, truth, _ = planted(n=350, dim=12, k=6, noise=0.8, seed=1)
    tight, tight_truth, _ = planted(n=600, dim=12, k=3, noise=1e-3, seed=2)
    singletons = rng.integers(0, 4, size=120)
    singletons[[5, 77]] = [10, 11]
    return {
        "gaussian, random labels": (gaussian, rng.integers(0, 5, size=300)),
        "clustered, planted labels": (clustered.double().numpy(), truth.numpy()),
        "clustered float32, k-means labels": (
            clustered.numpy(),
            spherical_kmeans(clustered, 6, seed=3).labels.numpy(),
        ),
        "tight clusters, tiny distances": (tight.double().numpy(), tight_truth.numpy() % 2),
        "two singleton clusters": (rng.normal(size=(120, 5)), singletons),
        "non-contiguous labels": (
            rng.normal(size=(200, 6)),
            rng.choice([-3, 7, 100, 12345], size=200),
        ),
        "mostly singletons": (
            rng.normal(size=(40, 3)),
            np.r_[np.arange(30), np.zeros(10, dtype=int)],
        ),
    }


@pytest.mark.parametrize("case", list(silhouette_cases()))
def test_silhouette_equals_sklearn(case):
    features, labels = silhouette_cases()[case]
    expected = silhouette_score(features, labels, metric="cosine")
    assert cosine_silhouette(features, labels) == pytest.approx(expected, abs=1e-5)
    assert cosine_silhouette(
        torch.as_tensor(features), torch.as_tensor(labels), chunk_size=7
    ) == pytest.approx(expected, abs=1e-5)


def test_silhouette_of_singleton_members_is_zero():
    features = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, -1.0], [0.0, -3.0]])
    labels = np.array([0, 1, 1, 2, 2])
    # twins: a = 0, b = distance 1 to the singleton -> s = 1; the singleton scores 0
    assert cosine_silhouette(features, labels) == pytest.approx(4 / 5, abs=1e-12)


def test_silhouette_ignores_feature_scale():
    x, labels, _ = planted(seed=2)
    assert cosine_silhouette(x * 7.0, labels) == pytest.approx(
        cosine_silhouette(x, labels), abs=1e-7
    )


# ---------------------------------------------------------------- k-means


@pytest.mark.parametrize("init", ["afk-mc2", "k-means++"])
def test_kmeans_recovers_planted_clusters(init):
    x, truth, _ = planted(n=500, k=5, noise=0.2, seed=4)
    result = spherical_kmeans(x, 5, init=init, seed=0)
    assert adjusted_rand_score(truth.numpy(), result.labels.numpy()) > 0.99
    assert result.backend == "torch"
    assert result.labels.dtype == torch.int64 and result.labels.shape == (500,)
    assert result.centroids.shape == (5, 16)


def test_kmeans_result_is_consistent():
    x, _, _ = planted(n=600, k=7, noise=1.0, seed=5)
    result = spherical_kmeans(x, 7, seed=1)
    norms = torch.linalg.vector_norm(result.centroids, dim=1)
    assert torch.allclose(norms, torch.ones(7), atol=1e-5)
    assert_consistent(x, result, 7)


def on_circle(degrees):
    """Unit vectors (len(degrees), 2) at the given angles."""
    radians = torch.tensor(degrees, dtype=torch.float64).deg2rad()
    return torch.stack([radians.cos(), radians.sin()], dim=1)


@pytest.mark.parametrize("init_degrees, iterations", [
    # 1: 20 is closer to 25 than to 0, so labels (0, 1, 1, 1) and centroids 0 and 56.7 degrees;
    # 2: 20 is now closer to 0, labels (0, 0, 1, 1), centroids 10 and 75; 3: the labels repeat.
    ((0.0, 25.0), 3),
    # the converged centroids: one iteration finds the objective unchanged
    ((10.0, 75.0), 1),
])
def test_lloyd_runs_the_iterations_counted_by_hand(init_degrees, iterations):
    x = on_circle([0.0, 20.0, 60.0, 90.0])
    result = spherical_kmeans(x, 2, init=on_circle(init_degrees))
    assert result.n_iter == iterations
    assert result.labels.tolist() == [0, 0, 1, 1]
    torch.testing.assert_close(result.centroids, on_circle([10.0, 75.0]))


def test_kmeans_labels_are_nearest_centroid_at_convergence():
    x, _, _ = planted(n=600, k=6, noise=1.0, seed=6)
    result = spherical_kmeans(x, 6, seed=0, tol=0.0, max_iter=300)
    nearest = (F.normalize(x, dim=1) @ result.centroids.T).argmax(dim=1)
    assert torch.equal(nearest, result.labels)


def test_kmeans_is_deterministic_under_seed():
    x, _, _ = planted(n=500, k=8, noise=1.5, seed=7)
    first = spherical_kmeans(x, 8, seed=11)
    second = spherical_kmeans(x, 8, seed=11)
    assert torch.equal(first.labels, second.labels)
    assert torch.equal(first.centroids, second.centroids)
    assert first.objective == second.objective


def test_kmeans_accepts_numpy_and_returns_cpu_tensors():
    x, _, _ = planted(seed=8)
    from_numpy = spherical_kmeans(x.numpy(), 5, seed=2)
    from_torch = spherical_kmeans(x, 5, seed=2)
    assert isinstance(from_numpy.labels, torch.Tensor) and from_numpy.labels.device.type == "cpu"
    assert torch.equal(from_numpy.labels, from_torch.labels)


def test_chunked_equals_unchunked():
    x, _, _ = planted(n=700, k=9, noise=1.0, seed=9)
    chunked = spherical_kmeans(x, 9, seed=3, chunk_size=64)
    whole = spherical_kmeans(x, 9, seed=3, chunk_size=10**6)
    assert torch.equal(chunked.labels, whole.labels)
    assert torch.allclose(chunked.centroids, whole.centroids, atol=1e-6)
    assert chunked.objective == pytest.approx(whole.objective, abs=1e-6)
    assert chunked.n_iter == whole.n_iter


def test_duplicated_init_centroid_leaves_no_empty_cluster():
    x, _, centres = planted(n=300, k=4, noise=0.3, seed=10)
    init = torch.cat([centres, centres[:1]])
    for max_iter in (1, 100):
        results = [spherical_kmeans(x, 5, init=init, max_iter=max_iter) for _ in range(2)]
        assert_consistent(x, results[0], 5)
        assert not torch.allclose(results[0].centroids[0], results[0].centroids[4], atol=1e-3)
        assert torch.equal(results[0].labels, results[1].labels)
        assert torch.equal(results[0].centroids, results[1].centroids)


def test_centroid_far_from_all_data_is_reseeded_from_worst_served_point():
    x = torch.rand(200, 6, generator=torch.Generator().manual_seed(11)) + 0.05
    far = -torch.ones(1, 6)
    init = torch.cat([x[:3], far])
    result = spherical_kmeans(x, 4, init=init, max_iter=1)
    unit_x = F.normalize(x, dim=1)
    worst = (unit_x @ F.normalize(x[:3], dim=1).T).amax(dim=1).argmin()
    assert result.labels[worst] == 3
    assert_consistent(x, result, 4)


def test_empty_cluster_never_takes_the_only_member_of_another_cluster():
    angles = torch.tensor([0.0, 0.1, -0.1, 0.15, -0.05, 3.14159])
    x = torch.stack([angles.cos(), angles.sin(), torch.zeros(6)], dim=1)
    init = torch.tensor([[1.0, 0.0, 0.0], [-0.17, 0.98, 0.0], [0.0, 0.0, 1.0]])
    result = spherical_kmeans(x, 3, init=init, max_iter=1)
    assert result.labels[5] == 1
    assert_consistent(x, result, 3)


def test_given_centroids_init():
    x, truth, centres = planted(n=400, k=5, noise=0.3, seed=12)
    result = spherical_kmeans(x, 5, init=centres.numpy() * 3.0)
    assert torch.equal(result.labels, truth)
    assert result.n_iter <= 3
    with pytest.raises(ValueError, match=r"shape \(4, 16\), but K=5 .*need shape \(5, 16\)"):
        spherical_kmeans(x, 5, init=centres[:4])
    with pytest.raises(ValueError, match="init centroids"):
        spherical_kmeans(x, 5, init=torch.zeros(5, 16))


def test_unknown_init_name():
    x, _, _ = planted()
    with pytest.raises(ValueError, match="init='kmeans' is unknown"):
        spherical_kmeans(x, 5, init="kmeans")


# ---------------------------------------------------------------- seeding


@pytest.mark.parametrize("seeding", [afk_mc2, kmeans_plus_plus])
def test_seeding_returns_k_distinct_data_points(seeding):
    x = unit(planted(n=300, k=6, noise=1.0, seed=13)[0])
    indices = seeding(x, 40, torch.Generator().manual_seed(0))
    assert indices.dtype == torch.int64 and indices.shape == (40,)
    assert len(set(indices.tolist())) == 40
    assert 0 <= int(indices.min()) and int(indices.max()) < 300
    again = seeding(x, 40, torch.Generator().manual_seed(0))
    assert torch.equal(indices, again)


@pytest.mark.parametrize("seeding", [afk_mc2, kmeans_plus_plus])
def test_seeding_stays_distinct_when_data_has_fewer_distinct_points_than_k(seeding):
    directions = F.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    x = directions.repeat(4, 1)
    for seed in range(5):
        indices = seeding(x, 6, torch.Generator().manual_seed(seed))
        assert len(set(indices.tolist())) == 6
        assert len({tuple(row) for row in x[indices].tolist()}) == 3


@pytest.mark.parametrize(
    "seeding",
    [partial(afk_mc2, n_local_trials=1), partial(kmeans_plus_plus, n_local_trials=1)],
    ids=["afk_mc2", "kmeans_plus_plus"],
)
def test_third_centre_follows_cosine_cost(seeding):
    """Over many seeds, the third centre of the non-greedy seedings (one trial per centre) lands
    in each group with its D² (cosine cost) probability. The greedy default is checked against
    its own exact distribution in test_cluster_init.py.

    The groups' sizes are unequal, so AFK-MC²'s proposal is far from the target and a chain
    without the 1/q correction or without Metropolis acceptance misses by about 0.035 or more.
    """
    generator = torch.Generator().manual_seed(3)
    groups = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    membership = torch.tensor([0] * 30 + [1] * 3 + [2] * 3)
    x = F.normalize(groups[membership] + 0.05 * torch.randn(36, 2, generator=generator), dim=1)
    expected, observed = torch.zeros(3), torch.zeros(3)
    runs = 2000
    for seed in range(runs):
        first, second, third = seeding(x, 3, torch.Generator().manual_seed(seed)).tolist()
        cost = (1.0 - (x @ x[[first, second]].T).amax(dim=1)).clamp_min(0.0)
        expected += torch.zeros(3).index_add_(0, membership, cost / cost.sum())
        observed[membership[third]] += 1
    assert (expected - observed).abs().sum() / runs < 0.025


@pytest.mark.parametrize("seeding", [afk_mc2, kmeans_plus_plus])
def test_seeding_covers_well_separated_clusters(seeding):
    x, truth, _ = planted(n=400, k=5, noise=0.1, seed=14)
    indices = seeding(unit(x), 5, torch.Generator().manual_seed(2))
    assert sorted(truth[indices].tolist()) == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- backends


def test_auto_backend_uses_torch_on_cpu():
    x, _, _ = planted()
    assert resolve_backend(x, "auto") == "torch"
    assert spherical_kmeans(x, 5, backend="auto").backend == "torch"


def test_explicit_kmcuda_on_cpu_raises_with_install_hint():
    x, _, _ = planted()
    with pytest.raises(ValueError) as error:
        spherical_kmeans(x, 5, backend="kmcuda")
    message = str(error.value)
    for needed in (
        "not on a CUDA device",
        "pip install libKMCUDA",
        "CUDA_ARCH=90",
        "CUDA_TOOLKIT_ROOT_DIR",
    ):
        assert needed in message


def test_explicit_kmcuda_on_cpu_raises_even_when_libkmcuda_imports(monkeypatch):
    monkeypatch.setitem(sys.modules, "libKMCUDA", types.ModuleType("libKMCUDA"))
    x, _, _ = planted()
    assert resolve_backend(x, "auto") == "torch"
    with pytest.raises(ValueError, match="not on a CUDA device") as error:
        resolve_backend(x, "kmcuda")
    assert "not importable" not in str(error.value)


def test_unknown_backend():
    x, _, _ = planted()
    with pytest.raises(ValueError, match="backend='faiss' is unknown"):
        spherical_kmeans(x, 5, backend="faiss")


def test_kmcuda_labels_become_a_consistent_result(monkeypatch):
    x, truth, _ = planted(n=300, k=4, noise=0.3, seed=15)
    calls = []

    def kmeans_cuda(samples, clusters, **kwargs):
        calls.append((samples, clusters, kwargs))
        labels = truth.numpy().astype(np.uint32)
        return np.full((clusters, samples.shape[1]), np.nan, dtype=np.float32), labels

    fake = types.ModuleType("libKMCUDA")
    fake.kmeans_cuda = kmeans_cuda
    monkeypatch.setitem(sys.modules, "libKMCUDA", fake)
    monkeypatch.setattr(kmeans_module, "resolve_backend", lambda features, backend: "kmcuda")
    result = spherical_kmeans(x, 5, seed=9, tol=1e-3)

    samples, clusters, kwargs = calls[0]
    assert clusters == 5 and samples.dtype == np.float32
    assert np.allclose(np.linalg.norm(samples, axis=1), 1.0, atol=1e-6)
    assert kwargs == dict(
        tolerance=1e-3, init="afk-mc2", yinyang_t=0.0, metric="cos", seed=9, device=1, verbosity=0
    )
    assert result.backend == "kmcuda"
    assert_consistent(x, result, 5)


# ---------------------------------------------------------------- bad input


def bad_kmeans_inputs():
    x, _, _ = planted(n=300)
    nan = x.clone()
    nan[3, 2] = float("nan")
    inf = x.clone()
    inf[9, 0] = float("inf")
    zero = x.clone()
    zero[17] = 0.0
    return {
        "K < 2": ((x, 1), "K=1 is too small: choose K >= 2"),
        "K > N": ((x, 500), r"K=500 is larger than the number of samples N=300: choose K <= N"),
        "NaN": ((nan, 5), "row 3 contains NaN or inf"),
        "inf": ((inf, 5), "row 9 contains NaN or inf"),
        "zero-norm row": ((zero, 5), "row 17 has zero L2 norm"),
        "1-D features": ((x[:, 0], 5), r"features must be 2-D .*got shape \(300,\)"),
        "3-D features": ((x.view(300, 4, 4), 5), r"features must be 2-D .*got shape \(300, 4, 4\)"),
    }


@pytest.mark.parametrize("case", list(bad_kmeans_inputs()))
def test_kmeans_bad_input(case):
    (features, k), message = bad_kmeans_inputs()[case]
    with pytest.raises(ValueError, match=message):
        spherical_kmeans(features, k)


def bad_silhouette_inputs():
    x, labels, _ = planted(n=300)
    nan = x.clone()
    nan[4, 1] = float("nan")
    zero = x.clone()
    zero[8] = 0.0
    return {
        "length mismatch": (
            (x, labels[:299]),
            "labels has 299 entries but features has N=300 rows",
        ),
        "2-D labels": ((x, labels.view(300, 1)), r"labels must be 1-D .*got shape \(300, 1\)"),
        "float labels": ((x, labels.double()), "labels must be integers"),
        "one label": ((x, torch.zeros(300, dtype=torch.int64)), "got 1 labels for N=300"),
        "every sample alone": ((x, torch.arange(300)), "got 300 labels for N=300"),
        "NaN": ((nan, labels), "row 4 contains NaN or inf"),
        "zero-norm row": ((zero, labels), "row 8 has zero L2 norm"),
        "1-D features": ((x[:, 0], labels), "features must be 2-D"),
    }


@pytest.mark.parametrize("case", list(bad_silhouette_inputs()))
def test_silhouette_bad_input(case):
    (features, labels), message = bad_silhouette_inputs()[case]
    with pytest.raises(ValueError, match=message):
        cosine_silhouette(features, labels)


# ---------------------------------------------------------------- K selection


def test_sweep_k_finds_planted_k_and_writes_outputs(tmp_path):
    x, _, _ = planted(n=400, dim=16, k=4, noise=0.3, seed=16)
    scores = sweep_k(x, [2, 3, 4, 5, 6], seed=0, backend="torch", progress=False)
    assert list(scores) == [2, 3, 4, 5, 6]
    assert best_k(scores) == 4
    labels = spherical_kmeans(x, 4, seed=0).labels
    assert scores[4] == pytest.approx(
        silhouette_score(x.numpy(), labels.numpy(), metric="cosine"), abs=1e-5
    )

    selection = write_k_selection(scores, tmp_path / "select")
    assert selection == {"k": 4, "scores": {str(k): scores[k] for k in scores}}
    out = tmp_path / "select"
    assert json.loads((out / "k.json").read_text()) == selection
    lines = (out / "silhouette.csv").read_text().splitlines()
    assert lines[0] == "k,silhouette"
    assert [int(line.split(",")[0]) for line in lines[1:]] == [2, 3, 4, 5, 6]
    assert float(lines[3].split(",")[1]) == pytest.approx(scores[4], abs=1e-8)
    assert (out / "silhouette.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(path.name for path in out.iterdir()) == [
        "k.json",
        "silhouette.csv",
        "silhouette.png",
    ]


def test_a_sweep_failing_mid_write_leaves_the_earlier_sweep_whole(tmp_path, monkeypatch):
    """Before, the earlier sweep's files were removed first, and a failing write left the new csv
    alone beside no k.json; now the new files are staged in .unfinished, removed with it on the
    failure, and the earlier ones stay."""
    from solo_ncp.cluster import select_k
    from solo_ncp.io import UNFINISHED

    out = tmp_path / "select"
    write_k_selection({2: 0.1, 3: 0.5}, out)
    (out / "notes.txt").write_text("my notes\n")
    earlier = {p.name: p.read_bytes() for p in out.iterdir()}

    def no_plot(*args):
        raise OSError("disk full")

    monkeypatch.setattr(select_k, "plot_scores", no_plot)
    with pytest.raises(OSError, match="disk full"):
        write_k_selection({2: 0.9, 3: 0.2}, out)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == earlier
    assert json.loads((out / "k.json").read_text())["k"] == 3
    assert not (out / UNFINISHED).exists()


def test_best_k_prefers_smallest_on_ties_and_rejects_empty():
    assert best_k({30: 0.2, 10: 0.5, 20: 0.5}) == 10
    with pytest.raises(ValueError, match="scores is empty"):
        best_k({})
    with pytest.raises(ValueError, match="ks is empty"):
        sweep_k(planted()[0], [], progress=False)


# ---------------------------------------------------------------- imports


def module_level_imports(path):
    """Root names of modules imported outside functions and classes (relative imports -> '.')."""
    roots = set()
    pending = list(ast.parse(path.read_text()).body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            roots.add("." if node.level else node.module.split(".")[0])
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            pending.extend(ast.iter_child_nodes(node))
    return roots


@pytest.mark.parametrize("path", sorted(CLUSTER_DIR.glob("*.py")), ids=lambda path: path.name)
def test_cluster_modules_import_only_torch_numpy_and_stdlib(path):
    roots = module_level_imports(path)
    assert not roots & {
        "lightning",
        "pytorch_lightning",
        "solo",
        "sklearn",
        "matplotlib",
        "libKMCUDA",
        "faiss",
    }
    allowed = set(sys.stdlib_module_names) | {"torch", "numpy", ".", "solo_ncp"}
    assert roots <= allowed, roots - allowed


def test_import_check_sees_nested_module_level_imports(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text(
        "try:\n    import lightning\nexcept ImportError:\n    pass\ndef f():\n    import solo\n"
    )
    assert module_level_imports(source) == {"lightning"}
