"""k-means (Lloyd) in torch on CPU or GPU, sized for VoxCeleb2: N = 1.1M points, K = 50,000.

Distances: ``||x||^2 - 2 x.c + ||c||^2`` computed block by block with one ``addmm`` per block of
rows, so memory holds at most ``block_elements`` distances at a time (``chunk_size`` rows of K).
Each iteration after the first scores only the centroids that moved in the last update when that
saves work (a point whose own centroid stayed put can only be taken by a moved one; the points of
moved clusters are scored against all): exact Lloyd, and late iterations cost a small fraction of
a pass. Centroid sums are float64, updated with the points that changed cluster
only, in an order that gives the same bits on every run (see :func:`add_segment_sums`). The
result is deterministic for a seed on a given device and thread count.

Empty clusters are re-seeded like scikit-learn's Lloyd: each empty cluster takes, in order, the
points farthest from their own centroid, the point is removed from its donor's sums, and a donor
never gives its last point.

Initialisation (all random draws come from one CPU ``torch.Generator`` seeded with ``seed``):

- ``'k-means||'`` (default; the original's cuML default ``scalable-k-means++``, oversampling 2.0):
  Bahmani et al. 2012. ``init_rounds`` passes over the data each keep every point independently
  with probability ``min(1, oversampling_factor * K * d^2(x) / sum d^2)``; each candidate is
  weighted by the number of points nearest to it, and weighted k-means++ reduces the ~``1 +
  init_rounds * oversampling_factor * K`` candidates to K. Cost: about
  ``init_rounds * oversampling_factor`` Lloyd passes (10 with the defaults) plus the reduction
  (``C * K * D`` multiply-adds for C candidates) -- seconds on a GPU, ~40 min on 2 CPU cores at
  VoxCeleb2 scale.
- ``'k-means++-subsample'``: k-means++ on ``S = min(N, init_subsample_factor * K)`` points drawn
  uniformly without replacement. Cost ``S * K * D`` multiply-adds (~0.4 Lloyd pass at VoxCeleb2
  scale with the default factor 8): the choice for CPU runs.

Both run k-means++ in steps of ``init_batch`` picks (default ``ceil(K / 256)``): each step draws
that many distinct points from the current ``weight * d^2`` distribution and then updates d^2 with
one matrix product. ``init_batch=1`` is exact sequential k-means++ (K steps, K full passes over the
candidates: too slow for K = 50,000); with batches, picks inside one step do not repel each other.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

INIT_METHODS = ("k-means||", "k-means++-subsample")
DEFAULT_BLOCK_ELEMENTS = 1 << 26  # distances held at once: 256 MiB of float32
PP_STEPS = 256  # k-means++ steps when init_batch is not given


@dataclass
class KMeansResult:
    labels: torch.Tensor  # (N,) int64, CPU: index of each point's centroid
    centroids: torch.Tensor  # (K, D) float32, CPU
    inertia: float  # sum of squared distances from each point to its centroid
    n_iter: int  # Lloyd iterations run
    converged: bool  # labels stopped changing, or the relative inertia change fell to <= tol
    init_seconds: float
    seconds: float  # initialisation + iterations


def _nearest(x: torch.Tensor, x_sq: torch.Tensor, centres: torch.Tensor,
             block_elements: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Index of and squared distance to the nearest of ``centres`` for every row of ``x``."""
    n, k = x.shape[0], centres.shape[0]
    rows = max(1, min(n, block_elements // k))
    c_sq = (centres * centres).sum(dim=1)
    c_t = centres.t()
    labels = torch.empty(n, dtype=torch.long, device=x.device)
    d2 = torch.empty(n, dtype=x.dtype, device=x.device)
    block = torch.empty(rows, k, dtype=x.dtype, device=x.device)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        scores = torch.addmm(c_sq, x[start:stop], c_t, alpha=-2.0, out=block[: stop - start])
        torch.min(scores, dim=1, out=(d2[start:stop], labels[start:stop]))
    d2.add_(x_sq).clamp_(min=0.0)
    return labels, d2


def _nearest_after_move(x: torch.Tensor, x_sq: torch.Tensor, centroids: torch.Tensor, block_elements: int,
                        previous: torch.Tensor, previous_d2: torch.Tensor,
                        moved: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`_nearest` when only the ``moved`` centroids changed since ``previous`` (with squared
    distances ``previous_d2``) were the exact nearest ones.

    A point whose centroid did not move is still at ``previous_d2`` from it and closer to it than
    to any other unmoved centroid, so only the moved centroids can take it; a point whose centroid
    moved is scored against all. Same result as :func:`_nearest` (ties aside) for a cost of about
    ``moved / K`` of it, plus the points of moved clusters.
    """
    n = x.shape[0]
    moved_index = moved.nonzero().flatten()
    rows = max(1, min(n, block_elements // max(1, moved_index.numel())))
    c_sq = (centroids * centroids).sum(dim=1)
    labels, d2 = previous.clone(), previous_d2.clone()
    rescore = moved[previous].nonzero().flatten()
    if moved_index.numel() > 0:
        moved_t, moved_sq = centroids[moved_index].t(), c_sq[moved_index]
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            other, index = torch.addmm(moved_sq, x[start:stop], moved_t, alpha=-2.0).min(dim=1)
            other = other.add_(x_sq[start:stop]).clamp_(min=0.0)
            own, other_label = previous[start:stop], moved_index[index]
            take = (other < d2[start:stop]) | ((other == d2[start:stop]) & (other_label < own))
            labels[start:stop] = torch.where(take, other_label, own)
            d2[start:stop] = torch.where(take, other, d2[start:stop])
    if rescore.numel() > 0:
        labels[rescore], d2[rescore] = _nearest(x[rescore], x_sq[rescore], centroids, block_elements)
    return labels, d2


def _assign(x: torch.Tensor, x_sq: torch.Tensor, centroids: torch.Tensor, block_elements: int,
            previous: Optional[Tuple[torch.Tensor, torch.Tensor]],
            moved: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroids; only the moved centroids are scored when that saves a fifth of the work
    (``N * moved + rescored points * K`` multiply-adds against ``N * K``)."""
    if previous is None or moved is None:
        return _nearest(x, x_sq, centroids, block_elements)
    n, k = x.shape[0], centroids.shape[0]
    work = n * int(moved.sum()) + int(moved[previous[0]].sum()) * k
    if work > 0.8 * n * k:
        return _nearest(x, x_sq, centroids, block_elements)
    return _nearest_after_move(x, x_sq, centroids, block_elements, previous[0], previous[1], moved)


def _move_points(x: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor, points: torch.Tensor,
                 source: Optional[torch.Tensor], target: torch.Tensor, block_rows: int) -> None:
    """Move rows ``points`` of ``x`` from clusters ``source`` (None: from nowhere) to ``target``
    in the float64 cluster sums and counts."""
    k = counts.numel()
    for start in range(0, points.numel(), block_rows):
        index = points[start:start + block_rows]
        rows = x[index]
        add_segment_sums(sums, rows, target[start:start + block_rows])
        counts += torch.bincount(target[start:start + block_rows], minlength=k).to(counts.dtype)
        if source is not None:
            add_segment_sums(sums, -rows, source[start:start + block_rows])
            counts -= torch.bincount(source[start:start + block_rows], minlength=k).to(counts.dtype)


def add_segment_sums(sums: torch.Tensor, rows: torch.Tensor, index: torch.Tensor) -> None:
    """``sums[index[i]] += rows[i]`` in float64, in an order fixed by the data (bitwise repeatable).

    On CPU ``index_add_`` adds in index order; on CUDA it adds with atomics in a random order, so
    rows are sorted by index and each run of equal indices is reduced with a cumulative sum.
    """
    if rows.device.type == "cpu":
        sums.index_add_(0, index, rows.to(torch.float64))
    else:
        sorted_segment_sums(sums, rows, index)


def sorted_segment_sums(sums: torch.Tensor, rows: torch.Tensor, index: torch.Tensor) -> None:
    """``sums[index[i]] += rows[i]`` without atomics: sort by index, then reduce each run of equal
    indices as a difference of float64 cumulative sums."""
    order = torch.argsort(index, stable=True)
    groups, counts = torch.unique_consecutive(index[order], return_counts=True)
    running = torch.cumsum(rows[order].to(torch.float64), dim=0)
    ends = torch.cumsum(counts, dim=0) - 1
    segment = running[ends]
    segment[1:] -= running[ends[:-1]]
    sums[groups] += segment


def _reseed_empty(x: torch.Tensor, owner: torch.Tensor, d2: torch.Tensor, sums: torch.Tensor,
                  counts: torch.Tensor) -> int:
    """Move each empty cluster onto the farthest remaining point (see module doc); returns how many.

    ``owner`` (N,) says which cluster's sum holds each point; the moved points change owner.
    """
    empty = (counts == 0).nonzero().flatten()
    if empty.numel() == 0:
        return 0
    farthest = torch.argsort(d2, descending=True, stable=True).cpu()
    owners = owner.cpu()
    left = counts.cpu().clone()
    picked: List[int] = []
    for start in range(0, farthest.numel(), 4096):
        for point in farthest[start:start + 4096].tolist():
            donor = int(owners[point])
            if left[donor] > 1:
                left[donor] -= 1
                picked.append(point)
                if len(picked) == empty.numel():
                    break
        if len(picked) == empty.numel():
            break
    points = torch.tensor(picked, dtype=torch.long, device=x.device)
    empty = empty[: points.numel()]
    counts[empty] = 0.0
    sums[empty] = 0.0
    _move_points(x, sums, counts, points, owner[points], empty, points.numel())
    owner[points] = empty
    return points.numel()


def _kmeanspp(points: torch.Tensor, weights: torch.Tensor, k: int, generator: torch.Generator,
              batch: int, block_elements: int) -> torch.Tensor:
    """Indices (CPU) of ``k`` distinct rows of ``points`` picked by weighted k-means++ in batches."""
    n = points.shape[0]
    p_sq = (points * points).sum(dim=1)
    first = torch.multinomial(weights.cpu().to(torch.float64), 1, generator=generator)
    chosen = [first]
    taken = torch.zeros(n, dtype=torch.bool)
    taken[first] = True
    _, d2 = _nearest(points, p_sq, points[first.to(points.device)], block_elements)
    n_chosen = 1
    while n_chosen < k:
        score = (weights.to(d2.device, torch.float64) * d2.to(torch.float64)).cpu()
        score[taken] = 0.0
        n_positive = int((score > 0).sum())
        if n_positive == 0:  # every remaining point coincides with a chosen one: pick uniformly
            rest = (~taken).nonzero().flatten()
            chosen.append(rest[torch.randperm(rest.numel(), generator=generator)[: k - n_chosen]])
            break
        step = min(batch, k - n_chosen, n_positive)
        pick = torch.multinomial(score, step, replacement=False, generator=generator)
        chosen.append(pick)
        taken[pick] = True
        n_chosen += step
        if n_chosen < k:
            _, d2_new = _nearest(points, p_sq, points[pick.to(points.device)], block_elements)
            d2 = torch.minimum(d2, d2_new)
    return torch.cat(chosen)


def _init_subsample(x: torch.Tensor, k: int, generator: torch.Generator, factor: int, batch: int,
                    block_elements: int) -> torch.Tensor:
    n = x.shape[0]
    subset = torch.randperm(n, generator=generator)[: min(n, factor * k)].to(x.device)
    points = x[subset]
    weights = torch.ones(points.shape[0], dtype=torch.float64)
    return points[_kmeanspp(points, weights, k, generator, batch, block_elements).to(x.device)]


def _init_parallel(x: torch.Tensor, x_sq: torch.Tensor, k: int, generator: torch.Generator,
                   oversampling_factor: float, rounds: int, batch: int, block_elements: int) -> torch.Tensor:
    """k-means|| (see module doc): oversampled candidates, then weighted k-means++ down to k."""
    n = x.shape[0]
    first = torch.randint(n, (1,), generator=generator)
    candidates = [first]
    n_candidates = 1
    _, best_d2 = _nearest(x, x_sq, x[first.to(x.device)], block_elements)
    best_d2[first.to(x.device)] = 0.0
    nearest = torch.zeros(n, dtype=torch.long, device=x.device)
    for round_index in range(rounds):
        potential = float(best_d2.sum(dtype=torch.float64))
        if potential <= 0.0:
            break
        keep = (best_d2.to(torch.float64) * (oversampling_factor * k / potential)).clamp_(max=1.0).cpu()
        new = (torch.rand(n, generator=generator, dtype=torch.float64) < keep).nonzero().flatten()
        if new.numel() > 0:
            new_dev = new.to(x.device)
            labels, d2 = _nearest(x, x_sq, x[new_dev], block_elements)
            closer = d2 < best_d2
            best_d2 = torch.where(closer, d2, best_d2)
            nearest = torch.where(closer, labels + n_candidates, nearest)
            best_d2[new_dev] = 0.0
            nearest[new_dev] = torch.arange(n_candidates, n_candidates + new.numel(), device=x.device)
            candidates.append(new)
            n_candidates += new.numel()
        logger.info("k-means|| round %d/%d: %d candidates (+%d), potential %.6g",
                    round_index + 1, rounds, n_candidates, new.numel(), potential)
    index = torch.cat(candidates)
    if n_candidates <= k:  # too few candidates: add uniformly drawn other points
        others = torch.ones(n, dtype=torch.bool)
        others[index] = False
        rest = others.nonzero().flatten()
        extra = rest[torch.randperm(rest.numel(), generator=generator)[: k - n_candidates]]
        return x[torch.cat([index, extra]).to(x.device)]
    weights = torch.bincount(nearest, minlength=n_candidates).cpu().to(torch.float64)
    points = x[index.to(x.device)]
    return points[_kmeanspp(points, weights, k, generator, batch, block_elements).to(x.device)]


def _lloyd(x: torch.Tensor, x_sq: torch.Tensor, centroids: torch.Tensor, max_iter: int, tol: float,
           block_elements: int) -> Tuple[torch.Tensor, torch.Tensor, float, int, bool]:
    """Lloyd iterations from ``centroids``; returns labels, centroids, inertia, n_iter, converged.

    The float64 cluster sums are updated with the points that changed cluster only, and the next
    assignment scores only the centroids that moved (:func:`_nearest_after_move`).
    """
    k, dim = centroids.shape
    n = x.shape[0]
    block_rows = max(1, min(n, block_elements // k))
    sums = torch.zeros(k, dim, dtype=torch.float64, device=x.device)
    counts = torch.zeros(k, dtype=torch.float64, device=x.device)
    owner: Optional[torch.Tensor] = None
    state: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
    moved: Optional[torch.Tensor] = None
    previous_inertia: Optional[float] = None
    converged = labels_final = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        started = time.perf_counter()
        labels, d2 = _assign(x, x_sq, centroids, block_elements, state, moved)
        inertia = float(d2.sum(dtype=torch.float64))
        if state is not None and torch.equal(labels, state[0]):
            converged = labels_final = True
            logger.info("k-means iteration %d/%d: inertia %.8g, no label changed: converged",
                        n_iter, max_iter, inertia)
            break
        changed = labels.numel() if state is None else int((labels != state[0]).sum())
        if owner is None:
            _move_points(x, sums, counts, torch.arange(n, device=x.device), None, labels, block_rows)
        else:
            switched = (labels != owner).nonzero().flatten()
            _move_points(x, sums, counts, switched, owner[switched], labels[switched], block_rows)
        owner = labels.clone()
        n_reseeded = _reseed_empty(x, owner, d2, sums, counts)
        updated = (sums / counts[:, None]).to(x.dtype)
        moved = (updated != centroids).any(dim=1)
        centroids = updated
        state = (labels, d2)
        change = (math.inf if previous_inertia is None
                  else abs(previous_inertia - inertia) / max(previous_inertia, 1e-300))
        logger.info("k-means iteration %d/%d: inertia %.8g, relative change %.3g, %d labels changed, "
                    "%d empty clusters re-seeded, %d centroids moved, %.2f s", n_iter, max_iter, inertia, change,
                    changed, n_reseeded, int(moved.sum()), time.perf_counter() - started)
        if change <= tol:
            converged = True
            break
        previous_inertia = inertia
    if not labels_final:
        labels, d2 = _assign(x, x_sq, centroids, block_elements, state, moved)
        inertia = float(d2.sum(dtype=torch.float64))
    return labels, centroids, inertia, n_iter, converged


def kmeans(x: torch.Tensor, n_clusters: int, *, max_iter: int = 300, tol: float = 1e-4, n_init: int = 1,
           seed: int = 0, device: Union[str, torch.device] = "cpu", chunk_size: Optional[int] = None,
           init: str = "k-means||", init_centroids: Optional[torch.Tensor] = None,
           oversampling_factor: float = 2.0, init_rounds: int = 5, init_subsample_factor: int = 8,
           init_batch: Optional[int] = None, normalize: bool = False) -> KMeansResult:
    """Cluster the rows of ``x`` (N, D) into ``n_clusters`` with Lloyd's algorithm.

    ``tol``: stop once the relative change of inertia between two iterations is <= tol (cuML's
    criterion; 0 runs until no label changes or ``max_iter``). ``chunk_size``: rows per distance
    block (default: blocks of 2**26 distances). ``normalize``: L2-normalise the rows first (the
    original clusters the raw embeddings: default False). ``init_centroids`` (K, D) replaces the
    initialisation. With ``n_init`` > 1 the run with the lowest inertia wins (seeds seed, seed+1, ...).
    """
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"kmeans: x must be a 2-D float tensor, got shape {tuple(x.shape)} {x.dtype}")
    n, dim = x.shape
    if not 1 <= n_clusters <= n:
        raise ValueError(f"kmeans: n_clusters={n_clusters} must be between 1 and the number of points ({n})")
    if max_iter < 1 or n_init < 1 or tol < 0:
        raise ValueError(f"kmeans: need max_iter >= 1, n_init >= 1, tol >= 0 (got {max_iter}, {n_init}, {tol})")
    if init not in INIT_METHODS:
        raise ValueError(f"kmeans: init={init!r}, expected one of {list(INIT_METHODS)}")
    if init_centroids is not None and (tuple(init_centroids.shape) != (n_clusters, dim) or n_init != 1):
        raise ValueError(f"kmeans: init_centroids must have shape ({n_clusters}, {dim}) with n_init=1, got "
                         f"{tuple(init_centroids.shape)} with n_init={n_init}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"kmeans: chunk_size={chunk_size} must be >= 1")
    block_elements = DEFAULT_BLOCK_ELEMENTS if chunk_size is None else chunk_size * n_clusters
    batch = init_batch if init_batch is not None else max(1, math.ceil(n_clusters / PP_STEPS))
    device = torch.device(device)
    data = x.to(device, torch.float32)
    if normalize:
        data = F.normalize(data, dim=1)
    data = data.contiguous()
    x_sq = (data * data).sum(dim=1)
    logger.info("k-means: %d points x %d dims -> %d clusters on %s, distance blocks of %d rows, "
                "about %.2f GB", n, dim, n_clusters, device, max(1, min(n, block_elements // n_clusters)),
                (n * (4 * dim + 64) + 4 * block_elements + 16 * n_clusters * dim) / 1e9)
    best: Optional[KMeansResult] = None
    for run in range(n_init):
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(seed + run)
        if init_centroids is not None:
            centroids = init_centroids.to(device, torch.float32)
        elif init == "k-means||":
            centroids = _init_parallel(data, x_sq, n_clusters, generator, oversampling_factor, init_rounds,
                                       batch, block_elements)
        else:
            centroids = _init_subsample(data, n_clusters, generator, init_subsample_factor, batch, block_elements)
        init_seconds = time.perf_counter() - started
        logger.info("k-means run %d/%d: initialisation (%s) %.2f s", run + 1, n_init,
                    "given" if init_centroids is not None else init, init_seconds)
        labels, centroids, inertia, n_iter, converged = _lloyd(data, x_sq, centroids, max_iter, tol,
                                                                block_elements)
        result = KMeansResult(labels.cpu(), centroids.cpu(), inertia, n_iter, converged, init_seconds,
                              time.perf_counter() - started)
        if best is None or result.inertia < best.inertia:
            best = result
    assert best is not None
    return best
