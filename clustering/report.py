"""How good a pseudo-labelling is against the true speakers: NMI, purity and cluster sizes.

The true speaker of a file is taken from its embeddings key as the original does
(``key.split('/')[-3]``, the first part of a ``speaker/video/file`` key); keys with fewer than
three parts carry no speaker, and then no score against speakers is reported.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

SIZE_PERCENTILES = (0, 5, 25, 50, 75, 95, 100)


def speakers_from_keys(keys: Sequence[str]) -> Optional[np.ndarray]:
    """Integer speaker codes (N,) from ``speaker/video/file`` keys, or None if any key is shorter."""
    speakers = []
    for key in keys:
        parts = key.split("/")
        if len(parts) < 3:
            return None
        speakers.append(parts[-3])
    return np.unique(np.asarray(speakers), return_inverse=True)[1].reshape(-1)


def _contingency(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Non-zero cells of the contingency table as an (M, 3) array of (true code, pred code, count)."""
    truth, pred = np.asarray(truth).reshape(-1), np.asarray(pred).reshape(-1)
    if truth.size != pred.size or truth.size == 0:
        raise ValueError(f"need two non-empty label arrays of one length, got {truth.size} true and "
                         f"{pred.size} predicted labels")
    truth = np.unique(truth, return_inverse=True)[1].reshape(-1).astype(np.int64)
    pred = np.unique(pred, return_inverse=True)[1].reshape(-1).astype(np.int64)
    width = int(pred.max()) + 1
    cells, counts = np.unique(truth * width + pred, return_counts=True)
    return np.stack([cells // width, cells % width, counts], axis=1)


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi(truth: np.ndarray, pred: np.ndarray) -> float:
    """Normalised mutual information, arithmetic-mean normalisation (scikit-learn's default)."""
    table = _contingency(truth, pred)
    n = table[:, 2].sum()
    row_totals = np.bincount(table[:, 0], weights=table[:, 2])
    col_totals = np.bincount(table[:, 1], weights=table[:, 2])
    if row_totals.size == col_totals.size and row_totals.size <= 1:
        return 1.0  # one class and one cluster (or nothing): identical labellings
    joint = table[:, 2].astype(np.float64)
    mutual = float((joint / n * (np.log(joint * n) - np.log(row_totals[table[:, 0]] * col_totals[table[:, 1]]))).sum())
    mutual = max(mutual, 0.0)
    if mutual == 0.0:
        return 0.0
    return mutual / ((_entropy(row_totals) + _entropy(col_totals)) / 2.0)


def purity(truth: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of points whose cluster's most frequent true label is their own."""
    table = _contingency(truth, pred)
    best = np.zeros(int(table[:, 1].max()) + 1, dtype=np.int64)
    np.maximum.at(best, table[:, 1], table[:, 2])
    return float(best.sum() / table[:, 2].sum())


def cluster_sizes(pred: np.ndarray) -> Dict[str, float]:
    """Number of non-empty clusters and percentiles of their sizes (keys 'p0' ... 'p100')."""
    sizes = np.unique(np.asarray(pred), return_counts=True)[1]
    summary: Dict[str, float] = {"n_nonempty": int(sizes.size)}
    for q, value in zip(SIZE_PERCENTILES, np.percentile(sizes, SIZE_PERCENTILES)):
        summary[f"p{q}"] = float(value)
    return summary
