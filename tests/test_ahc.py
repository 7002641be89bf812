"""Ward AHC without the distance matrix, against scikit-learn's partition and scipy's tree heights."""
import numpy as np
import pytest
import torch
from scipy.cluster.hierarchy import ward
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import adjusted_rand_score

from clustering.ahc import MemoryBudgetError, check_ward_memory, condensed_matrix_bytes, ward_ahc, ward_memory_bytes


def points(n, dim, seed, n_blobs=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    if n_blobs:
        centres = 6.0 * torch.randn(n_blobs, dim, generator=g, dtype=torch.float64)
        x += centres[torch.randint(n_blobs, (n,), generator=g)]
    return x


@pytest.mark.parametrize("n, dim, n_blobs, n_clusters", [(300, 8, 0, 20), (400, 16, 12, 12), (250, 3, 5, 60),
                                                         (120, 4, 0, 1), (150, 5, 0, 149)])
def test_partition_equals_sklearn_and_heights_equal_scipy(n, dim, n_blobs, n_clusters):
    x = points(n, dim, seed=n, n_blobs=n_blobs)
    ours = ward_ahc(x.float(), n_clusters)
    ref = AgglomerativeClustering(n_clusters=n_clusters, linkage="ward").fit_predict(x.float().numpy())
    assert len(np.unique(ours.labels.numpy())) == n_clusters
    assert adjusted_rand_score(ref, ours.labels.numpy()) == 1.0
    np.testing.assert_allclose(ours.heights.numpy(), np.sort(ward(x.float().double().numpy())[:, 2]),
                               rtol=1e-9, atol=1e-9)


def test_small_blocks_give_the_same_tree():
    x = points(200, 6, seed=1, n_blobs=7)
    whole = ward_ahc(x, 15)
    blocked = ward_ahc(x, 15, block_bytes=8 * 200 * 3)  # 3 rows per block
    assert torch.equal(whole.labels, blocked.labels)
    torch.testing.assert_close(whole.heights, blocked.heights, rtol=1e-12, atol=1e-12)


def test_groups_are_numbered_by_first_appearance():
    labels = ward_ahc(points(100, 4, seed=2, n_blobs=6), 6).labels.tolist()
    seen = list(dict.fromkeys(labels))
    assert seen == list(range(6))
    assert ward_ahc(points(10, 2, seed=3), 10).labels.tolist() == list(range(10))


def test_sizes_act_as_that_many_identical_points():
    x = points(60, 5, seed=4, n_blobs=4)
    sizes = torch.randint(1, 5, (60,), generator=torch.Generator().manual_seed(5))
    ours = ward_ahc(x, 9, sizes=sizes)
    expanded = np.repeat(x.numpy(), sizes.numpy(), axis=0)
    ref = AgglomerativeClustering(n_clusters=9, linkage="ward").fit_predict(expanded)
    first_copy = np.concatenate([[0], np.cumsum(sizes.numpy())[:-1]])
    assert adjusted_rand_score(ref[first_copy], ours.labels.numpy()) == 1.0
    assert torch.equal(sizes, torch.randint(1, 5, (60,), generator=torch.Generator().manual_seed(5)))


def test_memory_estimate_fits_50000_centroids_in_24_gb_and_refuses_beyond_the_budget():
    needed = check_ward_memory(50000, 256, max_memory_gb=24.0)
    assert needed == ward_memory_bytes(50000, 256) and needed < 2e9
    assert condensed_matrix_bytes(50000) == 50000 * 49999 // 2 * 8  # ~10 GB for scipy / scikit-learn
    with pytest.raises(MemoryBudgetError, match=r"50000 x 256 centroids needs about 1\.\d+ GB"):
        check_ward_memory(50000, 256, max_memory_gb=1.0)
    with pytest.raises(MemoryBudgetError):
        ward_ahc(torch.randn(10, 3), 2, max_memory_gb=1e-6)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="n_clusters=11 must be between 1"):
        ward_ahc(torch.randn(10, 3), 11)
    with pytest.raises(ValueError, match="sizes must be"):
        ward_ahc(torch.randn(10, 3), 2, sizes=torch.zeros(10))
