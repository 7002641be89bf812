"""k-means against scikit-learn's Lloyd from the same initial centroids, hand cases, invariants."""
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from clustering.kmeans import _nearest, _nearest_after_move, add_segment_sums, kmeans, sorted_segment_sums


def blobs(n_points, n_blobs, dim, spread, seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_blobs, dim, generator=g) * spread
    truth = torch.randint(n_blobs, (n_points,), generator=g)
    return centres[truth] + torch.randn(n_points, dim, generator=g), truth


@pytest.mark.parametrize("k, chunk_size", [(40, None), (40, 301), (7, 1000)])
def test_same_labels_and_inertia_as_sklearn_lloyd_from_the_same_init(k, chunk_size):
    x, _ = blobs(3000, 25, 16, 2.0, seed=0)
    init = x[torch.randperm(3000, generator=torch.Generator().manual_seed(1))[:k]].clone()
    ours = kmeans(x, k, init_centroids=init, max_iter=15, tol=0.0, chunk_size=chunk_size)
    ref = KMeans(k, init=init.numpy(), n_init=1, max_iter=15, tol=0.0, algorithm="lloyd").fit(x.numpy())
    assert (ours.labels.numpy() == ref.labels_).mean() >= 0.999
    assert abs(ours.inertia - ref.inertia_) <= 1e-4 * ref.inertia_
    assert ours.n_iter == ref.n_iter_
    np.testing.assert_allclose(ours.centroids.numpy(), ref.cluster_centers_, atol=1e-4)
    # the returned labels are the nearest returned centroid of every point
    nearest = torch.cdist(x.double(), ours.centroids.double()).argmin(dim=1)
    assert torch.equal(nearest, ours.labels)


def test_empty_cluster_takes_the_farthest_point_like_sklearn():
    x, _ = blobs(600, 6, 4, 3.0, seed=2)
    init = torch.cat([x[:5], torch.full((1, 4), 1e3)])  # the last centroid attracts no point
    for max_iter in (1, 2, 10):
        ours = kmeans(x, 6, init_centroids=init, max_iter=max_iter, tol=0.0)
        ref = KMeans(6, init=init.numpy(), n_init=1, max_iter=max_iter, tol=0.0, algorithm="lloyd").fit(x.numpy())
        assert adjusted_rand_score(ref.labels_, ours.labels.numpy()) == 1.0
        assert abs(ours.inertia - ref.inertia_) <= 1e-5 * ref.inertia_
        np.testing.assert_allclose(ours.centroids.numpy(), ref.cluster_centers_, atol=1e-4)


def test_empty_cluster_hand_case_donor_keeps_its_last_point():
    # point 0 is farthest from its centroid (3) but is that cluster's only point: the next farthest
    # point (10, owned by centroid 10.5 with two points) moves to the empty cluster instead
    x = torch.tensor([[0.0], [10.0], [11.0]])
    init = torch.tensor([[3.0], [10.5], [100.0]])
    one = kmeans(x, 3, init_centroids=init, max_iter=1, tol=0.0)
    assert one.centroids.flatten().tolist() == [0.0, 11.0, 10.0]
    assert one.labels.tolist() == [0, 2, 1] and one.inertia == 0.0


def test_deterministic_under_seed_for_both_initialisations():
    x, _ = blobs(2000, 30, 8, 1.5, seed=3)
    for init in ("k-means||", "k-means++-subsample"):
        a = kmeans(x, 50, seed=5, init=init, max_iter=5)
        b = kmeans(x, 50, seed=5, init=init, max_iter=5)
        c = kmeans(x, 50, seed=6, init=init, max_iter=5)
        assert torch.equal(a.labels, b.labels) and torch.equal(a.centroids, b.centroids)
        assert not torch.equal(a.centroids, c.centroids)


@pytest.mark.parametrize("init", ["k-means||", "k-means++-subsample"])
def test_initialisation_finds_every_well_separated_blob(init):
    # 40 uniformly drawn points would cover all 40 blobs with probability 40!/40**40 ~ 1e-16
    x, truth = blobs(3000, 40, 8, 50.0, seed=4)
    result = kmeans(x, 40, seed=0, init=init, max_iter=1)
    assert normalized_mutual_info_score(truth.numpy(), result.labels.numpy()) == pytest.approx(1.0)


@pytest.mark.parametrize("init", ["k-means||", "k-means++-subsample"])
def test_initialisation_beats_uniformly_drawn_points_on_blobs(init):
    x, _ = blobs(4000, 80, 8, 12.0, seed=7)
    result = kmeans(x, 80, seed=0, init=init, max_iter=1)
    uniform = x[torch.randperm(4000, generator=torch.Generator().manual_seed(0))[:80]]
    baseline = kmeans(x, 80, init_centroids=uniform, max_iter=1)
    assert result.inertia < 0.5 * baseline.inertia


def test_chunked_equals_unchunked():
    x, _ = blobs(1500, 20, 12, 2.0, seed=8)
    whole = kmeans(x, 30, seed=1, max_iter=8, tol=0.0)
    chunked = kmeans(x, 30, seed=1, max_iter=8, tol=0.0, chunk_size=11)
    assert torch.equal(whole.labels, chunked.labels)
    torch.testing.assert_close(whole.centroids, chunked.centroids, rtol=0, atol=1e-5)
    assert whole.inertia == pytest.approx(chunked.inertia, rel=1e-6)


def test_relative_inertia_tolerance_stops_after_two_iterations_when_tol_is_one():
    x, _ = blobs(1000, 10, 4, 1.0, seed=9)
    result = kmeans(x, 10, seed=0, tol=1.0, max_iter=50)
    assert result.n_iter == 2 and result.converged


def test_stops_when_no_label_changes_and_logs_each_iteration(caplog):
    x, _ = blobs(500, 5, 4, 10.0, seed=10)
    with caplog.at_level(logging.INFO, logger="clustering.kmeans"):
        result = kmeans(x, 5, seed=0, tol=0.0, max_iter=100)
    assert result.converged and result.n_iter < 100
    lines = [r.getMessage() for r in caplog.records if "k-means iteration" in r.getMessage()]
    assert len(lines) == result.n_iter and "no label changed" in lines[-1]


def test_normalize_clusters_the_unit_vectors():
    x, _ = blobs(800, 8, 6, 3.0, seed=11)
    a = kmeans(x * 7.0, 8, seed=2, normalize=True, max_iter=10)
    b = kmeans(F.normalize(x, dim=1), 8, seed=2, max_iter=10)
    assert torch.equal(a.labels, b.labels)
    torch.testing.assert_close(a.centroids, b.centroids)


def test_degenerate_data_with_fewer_distinct_points_than_clusters():
    x = torch.arange(5, dtype=torch.float32).repeat(10)[:, None]
    for init in ("k-means||", "k-means++-subsample"):
        result = kmeans(x, 8, seed=0, init=init, max_iter=5)
        assert result.inertia == 0.0
        assert set(result.centroids[result.labels].flatten().tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0}


def test_n_init_keeps_the_lowest_inertia():
    x, _ = blobs(1000, 12, 4, 2.0, seed=12)
    runs = [kmeans(x, 12, seed=s, max_iter=3, init="k-means++-subsample").inertia for s in (3, 4, 5)]
    best = kmeans(x, 12, seed=3, n_init=3, max_iter=3, init="k-means++-subsample")
    assert best.inertia == min(runs)


@pytest.mark.parametrize("fraction_moved", [0.0, 0.1, 0.5])
def test_scoring_only_the_moved_centroids_equals_a_full_assignment(fraction_moved):
    g = torch.Generator().manual_seed(14)
    x, centroids = torch.randn(3000, 8, generator=g), torch.randn(60, 8, generator=g)
    x_sq = (x * x).sum(dim=1)
    previous, previous_d2 = _nearest(x, x_sq, centroids, 1 << 20)
    moved = torch.rand(60, generator=g) < fraction_moved
    shifted = centroids + moved[:, None] * 0.7 * torch.randn(60, 8, generator=g)
    expected_labels, expected_d2 = _nearest(x, x_sq, shifted, 1 << 20)
    labels, d2 = _nearest_after_move(x, x_sq, shifted, 23 * 60, previous, previous_d2, moved)
    assert torch.equal(labels, expected_labels)
    torch.testing.assert_close(d2, expected_d2, rtol=1e-5, atol=1e-5)
    assert fraction_moved == 0.0 or not torch.equal(labels, previous)


@pytest.mark.parametrize("reduce", [add_segment_sums, sorted_segment_sums])
def test_segment_sums_equal_a_python_loop(reduce):
    g = torch.Generator().manual_seed(13)
    rows, index = torch.randn(500, 7, generator=g), torch.randint(25, (500,), generator=g)
    sums = torch.ones(25, 7, dtype=torch.float64)
    reduce(sums, rows, index)
    expected = torch.ones(25, 7, dtype=torch.float64)
    for row, i in zip(rows.double(), index.tolist()):
        expected[i] += row
    torch.testing.assert_close(sums, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_clusters=11), "between 1 and the number of points"),
    (dict(n_clusters=0), "between 1 and the number of points"),
    (dict(n_clusters=3, init="random"), "init='random'"),
    (dict(n_clusters=3, init_centroids=torch.zeros(2, 2)), "init_centroids must have shape"),
    (dict(n_clusters=3, chunk_size=0), "chunk_size=0"),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kmeans(torch.randn(10, 2), **kwargs)
