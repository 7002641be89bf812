"""Ward agglomerative clustering of k-means centroids without an N x N distance matrix.

The original calls ``sklearn.cluster.AgglomerativeClustering(n_clusters)`` (Ward, Euclidean) on
the 50,000 raw k-means centroids, unweighted (each centroid counts as one point, whatever its
cluster size). Without a connectivity matrix scikit-learn builds the full tree with
``scipy.cluster.hierarchy.ward``, whose condensed distance matrix alone is N(N-1)/2 float64
(10 GB for N = 50,000) before scipy's working copies.

Here the same tree is built from the centroids themselves (O(N D) memory): Ward's merge cost of
clusters A and B is ``|A||B| / (|A|+|B|) * ||mean_A - mean_B||^2``, computable from sizes and means.
Ward is a reducible linkage, so every pair of reciprocal nearest neighbours is a merge of the
greedy tree, and merging all of them at once only changes the nearest neighbour of clusters
whose nearest neighbour was merged. Each round merges every reciprocal pair and recomputes those
nearest neighbours with blocked matrix products. The merges, sorted by height (scipy's Ward height
``sqrt(2 * cost)``), are the greedy tree; applying the first N - n_clusters of them gives the
partition scikit-learn returns, up to the numbering of the groups (ties aside).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import numpy as np
import torch

from utils.errors import InputError

logger = logging.getLogger(__name__)

DEFAULT_BLOCK_BYTES = 256 << 20  # one block of the nearest-neighbour search, float64


class MemoryBudgetError(InputError):
    """The estimated memory of a step exceeds the allowed budget."""


@dataclass
class AHCResult:
    labels: torch.Tensor  # (N,) int64: group of each input row, groups numbered by first appearance
    heights: torch.Tensor  # (N-1,) float64: merge heights of the whole tree, increasing (scipy's Ward heights)


def condensed_matrix_bytes(n: int) -> int:
    """Bytes of the float64 condensed distance matrix that scipy / scikit-learn Ward start from."""
    return n * (n - 1) // 2 * 8


def ward_memory_bytes(n: int, dim: int, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """Estimated peak bytes of :func:`ward_ahc`: two float64 copies of the means, a few (N,)
    bookkeeping vectors and three temporaries of one block."""
    return 2 * n * dim * 8 + 12 * n * 8 + 3 * block_bytes


def check_ward_memory(n: int, dim: int, max_memory_gb: float, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """Return the estimate of :func:`ward_memory_bytes`, or raise if it exceeds ``max_memory_gb``."""
    needed = ward_memory_bytes(n, dim, block_bytes)
    if needed > max_memory_gb * 1e9:
        raise MemoryBudgetError(
            f"Ward AHC of {n} x {dim} centroids needs about {needed / 1e9:.2f} GB, more than "
            f"max_memory_gb={max_memory_gb}")
    return needed


def _nearest_neighbours(rows: torch.Tensor, means: torch.Tensor, sq: torch.Tensor, sizes: torch.Tensor,
                        active: torch.Tensor, block_bytes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """For each cluster in ``rows``: the active cluster of lowest Ward cost, and that cost."""
    cols = active.nonzero().flatten()
    position = torch.full((means.shape[0],), -1, dtype=torch.long, device=means.device)
    position[cols] = torch.arange(cols.numel(), device=means.device)
    col_means, col_sq, col_sizes = means[cols], sq[cols], sizes[cols]
    step = max(1, block_bytes // (8 * cols.numel()))
    neighbour = torch.empty(rows.numel(), dtype=torch.long, device=means.device)
    cost = torch.empty(rows.numel(), dtype=torch.float64, device=means.device)
    for start in range(0, rows.numel(), step):
        block_rows = rows[start:start + step]
        dist = torch.addmm(col_sq, means[block_rows], col_means.t(), alpha=-2.0)
        dist.add_(sq[block_rows, None]).clamp_(min=0.0)
        row_sizes = sizes[block_rows, None]
        factor = row_sizes * col_sizes
        dist.mul_(factor.div_(row_sizes + col_sizes))
        dist[torch.arange(block_rows.numel(), device=means.device), position[block_rows]] = float("inf")
        values, index = dist.min(dim=1)
        neighbour[start:start + step] = cols[index]
        cost[start:start + step] = values
    return neighbour, cost


def _build_tree(points: torch.Tensor, sizes: torch.Tensor, block_bytes: int
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All N-1 merges as (slot a, slot b, height), in the order they were made."""
    n = points.shape[0]
    means = points.clone()
    sizes = sizes.clone()
    sq = (means * means).sum(dim=1)
    active = torch.ones(n, dtype=torch.bool, device=points.device)
    last_height = torch.zeros(n, dtype=torch.float64, device=points.device)
    everyone = torch.arange(n, device=points.device)
    neighbour, cost = _nearest_neighbours(everyone, means, sq, sizes, active, block_bytes)
    firsts, seconds, heights = [], [], []
    n_active, n_rounds = n, 0
    while n_active > 1:
        n_rounds += 1
        alive = active.nonzero().flatten()
        partner = neighbour[alive]
        reciprocal = (neighbour[partner] == alive) & (alive < partner)
        if bool(reciprocal.any()):
            a, b = alive[reciprocal], partner[reciprocal]
        else:  # rounding broke every reciprocal pair: the globally cheapest merge is still greedy
            a = alive[cost[alive].argmin()].reshape(1)
            b = neighbour[a]
        height = torch.sqrt(2.0 * cost[a])
        height = torch.maximum(height, torch.maximum(last_height[a], last_height[b]))
        firsts.append(a)
        seconds.append(b)
        heights.append(height)
        total = sizes[a] + sizes[b]
        means[a] = (sizes[a, None] * means[a] + sizes[b, None] * means[b]) / total[:, None]
        sq[a] = (means[a] * means[a]).sum(dim=1)
        sizes[a] = total
        active[b] = False
        last_height[a] = height
        n_active -= a.numel()
        if n_active > 1:
            merged = torch.zeros(n, dtype=torch.bool, device=points.device)
            merged[a] = True
            merged[b] = True
            stale = (active & merged[neighbour]).nonzero().flatten()
            neighbour[stale], cost[stale] = _nearest_neighbours(stale, means, sq, sizes, active, block_bytes)
    logger.info("Ward AHC: %d merges in %d rounds of reciprocal nearest neighbours", n - 1, n_rounds)
    return torch.cat(firsts), torch.cat(seconds), torch.cat(heights)


def _cut(n: int, firsts: np.ndarray, seconds: np.ndarray, n_merges: int) -> np.ndarray:
    """Groups after the first ``n_merges`` merges (union-find), numbered by first appearance."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(firsts[:n_merges].tolist(), seconds[:n_merges].tolist()):
        parent[root(b)] = root(a)
    roots = np.array([root(i) for i in range(n)])
    _, first_seen, inverse = np.unique(roots, return_index=True, return_inverse=True)
    rank = np.empty_like(first_seen)
    rank[np.argsort(first_seen)] = np.arange(first_seen.size)
    return rank[inverse]


def ward_ahc(points: torch.Tensor, n_clusters: int, sizes: Optional[torch.Tensor] = None,
             max_memory_gb: float = 24.0, device: Union[str, torch.device] = "cpu",
             block_bytes: int = DEFAULT_BLOCK_BYTES) -> AHCResult:
    """Ward clustering of the rows of ``points`` (N, D) into ``n_clusters`` groups.

    ``sizes`` (N,) gives each row the weight of that many identical points (the original uses
    none: every centroid weighs 1). Raises MemoryBudgetError before starting when the estimate
    exceeds ``max_memory_gb``.
    """
    if points.dim() != 2:
        raise ValueError(f"ward_ahc: points must be 2-D, got shape {tuple(points.shape)}")
    n, dim = points.shape
    if not 1 <= n_clusters <= n:
        raise ValueError(f"ward_ahc: n_clusters={n_clusters} must be between 1 and the number of points ({n})")
    if sizes is not None and (tuple(sizes.shape) != (n,) or bool((sizes <= 0).any())):
        raise ValueError(f"ward_ahc: sizes must be ({n},) and positive, got shape {tuple(sizes.shape)}")
    needed = check_ward_memory(n, dim, max_memory_gb, block_bytes)
    logger.info("Ward AHC: %d x %d -> %d groups, about %.2f GB (scipy/scikit-learn's distance matrix "
                "alone: %.2f GB)", n, dim, n_clusters, needed / 1e9, condensed_matrix_bytes(n) / 1e9)
    device = torch.device(device)
    if n == 1:
        return AHCResult(torch.zeros(1, dtype=torch.long), torch.zeros(0, dtype=torch.float64))
    weights = torch.ones(n, dtype=torch.float64) if sizes is None else sizes.to(torch.float64)
    firsts, seconds, heights = _build_tree(points.to(device, torch.float64), weights.to(device), block_bytes)
    order = torch.argsort(heights, stable=True).cpu()
    firsts, seconds, heights = firsts.cpu()[order], seconds.cpu()[order], heights.cpu()[order]
    labels = _cut(n, firsts.numpy(), seconds.numpy(), n - n_clusters)
    if n_clusters < n:
        logger.info("Ward AHC: cut between heights %.6g and %.6g", float(heights[n - n_clusters - 1]),
                    float(heights[n - n_clusters]) if n_clusters > 1 else float("inf"))
    return AHCResult(torch.from_numpy(labels).long(), heights)
