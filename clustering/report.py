"""How good a pseudo-labelling is against the true speakers: NMI, purity and cluster sizes.

The true speaker of a file is taken from its embeddings key as the original does
(``key.split('/')[-3]``, the first part of a ``speaker/video/file`` key); keys with fewer than
three parts carry no speaker, and then no score against speakers is reported. NMI is scikit-learn's
(arithmetic-mean normalisation, the original's call).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
from sklearn.metrics import normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

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


def nmi(truth: np.ndarray, pred: np.ndarray) -> float:
    """Normalised mutual information of two labellings (scikit-learn's ``normalized_mutual_info_score``)."""
    return float(normalized_mutual_info_score(truth, pred))


def purity(truth: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of points whose cluster's most frequent true label is their own."""
    table = contingency_matrix(truth, pred, sparse=True)
    return float(table.max(axis=0).sum() / table.sum())


def cluster_sizes(pred: np.ndarray) -> Dict[str, float]:
    """Number of non-empty clusters and percentiles of their sizes (keys 'p0' ... 'p100')."""
    sizes = np.unique(np.asarray(pred), return_counts=True)[1]
    summary: Dict[str, float] = {"n_nonempty": int(sizes.size)}
    for q, value in zip(SIZE_PERCENTILES, np.percentile(sizes, SIZE_PERCENTILES)):
        summary[f"p{q}"] = float(value)
    return summary
