"""Score normalisation for cosine scoring: mean subtraction and adaptive s-norm (AS-norm).

AS-norm (Matejka et al., Interspeech 2017) normalises a trial score s between an enrolment file e and
a test file t with statistics of each file against a cohort of impostor embeddings, keeping only the
top_k cohort scores closest to that file:

    s' = ((s - mean_e) / std_e + (s - mean_t) / std_t) / 2

where mean_x and std_x are the mean and the population standard deviation of file x's top_k cohort
scores. The statistics depend on one file only, so they are computed once per unique file
(:func:`cohort_statistics`) and trials index into them (:func:`adaptive_snorm`).

A top_k larger than the cohort is an error, not a silent fallback to the whole cohort: the result
would then be plain s-norm, a different method from the one asked for.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from utils.errors import InputError

TensorLike = torch.Tensor | np.ndarray


class CohortStatistics(NamedTuple):
    """Per-file mean and standard deviation of the top_k cohort scores, each of shape (F,)."""

    mean: torch.Tensor
    std: torch.Tensor


def _matrix(values: TensorLike, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(values)
    if tensor.ndim != 2 or 0 in tensor.shape:
        raise ValueError(f"{name} must be a non-empty 2-D matrix, got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must hold floating-point values, got dtype {tensor.dtype}")
    return tensor


def subtract_mean(embeddings: TensorLike, mean: TensorLike) -> torch.Tensor:
    """Embeddings (..., D) minus a mean embedding (D,) or (1, D), e.g. the training-set mean."""
    embeddings = torch.as_tensor(embeddings)
    mean = torch.as_tensor(mean, dtype=embeddings.dtype, device=embeddings.device)
    if mean.ndim == 2 and mean.shape[0] == 1:
        mean = mean[0]
    if mean.ndim != 1 or embeddings.ndim == 0 or embeddings.shape[-1] != mean.shape[0]:
        raise ValueError(f"mean of shape {tuple(mean.shape)} does not match embeddings of shape "
                         f"{tuple(embeddings.shape)}: a (D,) vector, D = the embeddings' last dimension, is expected")
    return embeddings - mean


def cohort_scores(embeddings: TensorLike, cohort: TensorLike, normalise: bool = True) -> torch.Tensor:
    """Cosine similarity (F, C) between each file embedding (F, D) and each cohort embedding (C, D).

    With ``normalise=False``, plain dot products: for scoring vectors built so that their dot product
    already is the trial score (cohort scores must be on the trial scores' scale).
    """
    embeddings = _matrix(embeddings, "embeddings")
    cohort = _matrix(cohort, "cohort").to(dtype=embeddings.dtype, device=embeddings.device)
    if cohort.shape[1] != embeddings.shape[1]:
        raise ValueError(f"cohort embeddings have dimension {cohort.shape[1]} but file embeddings have "
                         f"dimension {embeddings.shape[1]}")
    if normalise:
        embeddings, cohort = F.normalize(embeddings, dim=1), F.normalize(cohort, dim=1)
    return embeddings @ cohort.T


def top_k_statistics(scores: TensorLike, top_k: int) -> CohortStatistics:
    """Mean and population std of the top_k largest entries of each row of a (F, C) score matrix."""
    scores = _matrix(scores, "cohort scores")
    if not 2 <= top_k <= scores.shape[1]:
        raise ValueError(f"top_k={top_k} must lie between 2 and the cohort size {scores.shape[1]}")
    top = scores.topk(top_k, dim=1).values
    std = top.std(dim=1, correction=0)
    degenerate = torch.nonzero(std == 0)
    if degenerate.numel():
        raise InputError(f"file {int(degenerate[0, 0])}: its top {top_k} cohort scores are all equal, so their "
                         "standard deviation is 0 and the score cannot be normalised")
    return CohortStatistics(top.mean(dim=1), std)


def cohort_statistics(
    embeddings: TensorLike, cohort: TensorLike, top_k: int, chunk_size: int = 4096, normalise: bool = True
) -> CohortStatistics:
    """:func:`top_k_statistics` of :func:`cohort_scores`, ``chunk_size`` files at a time.

    Chunking bounds memory to chunk_size x C scores (the full matrix for VoxCeleb1 against a
    VoxCeleb2 cohort would not fit).
    """
    embeddings = _matrix(embeddings, "embeddings")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    parts = [top_k_statistics(cohort_scores(embeddings[start:start + chunk_size], cohort, normalise), top_k)
             for start in range(0, embeddings.shape[0], chunk_size)]
    return CohortStatistics(torch.cat([part.mean for part in parts]), torch.cat([part.std for part in parts]))


def adaptive_snorm(
    raw_scores: TensorLike,
    enroll_index: TensorLike,
    test_index: TensorLike,
    statistics: CohortStatistics,
) -> torch.Tensor:
    """AS-norm of N trial scores; trial i pairs file ``enroll_index[i]`` with file ``test_index[i]``.

    The indices point into the files of ``statistics`` (from :func:`cohort_statistics`).
    """
    raw = torch.as_tensor(raw_scores, dtype=statistics.mean.dtype, device=statistics.mean.device)
    n_files = statistics.mean.shape[0]
    indices = []
    for name, index in (("enroll_index", enroll_index), ("test_index", test_index)):
        index = torch.as_tensor(index, device=statistics.mean.device)
        if index.shape != raw.shape or raw.ndim != 1:
            raise ValueError(f"{name} has shape {tuple(index.shape)} but raw_scores has shape "
                             f"{tuple(raw.shape)}: one file index per trial score is expected")
        if index.dtype.is_floating_point or index.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer file indices, got dtype {index.dtype}")
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n_files):
            raise ValueError(f"{name} holds {int(index.min())}..{int(index.max())}, outside the "
                             f"{n_files} files of the cohort statistics")
        indices.append(index)
    enroll, test = indices
    enroll_part = (raw - statistics.mean[enroll]) / statistics.std[enroll]
    test_part = (raw - statistics.mean[test]) / statistics.std[test]
    return (enroll_part + test_part) / 2
