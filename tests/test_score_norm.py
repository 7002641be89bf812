"""score_norm: hand-computed AS-norm, parity with sklearn / numpy, invariants, input checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics.pairwise import cosine_similarity

from scoring.score_norm import (
    CohortStatistics,
    adaptive_snorm,
    cohort_scores,
    cohort_statistics,
    subtract_mean,
    top_k_statistics,
)

# file 0: top-2 cohort scores 0.9, 0.5 -> mean 0.7, std 0.2; file 1: 0.6, 0.2 -> mean 0.4, std 0.2
HAND_COHORT_SCORES = torch.tensor([[0.1, 0.5, 0.3, 0.9], [0.2, 0.2, 0.6, 0.0]], dtype=torch.float64)


def test_hand_computed_adaptive_snorm() -> None:
    statistics = top_k_statistics(HAND_COHORT_SCORES, top_k=2)
    torch.testing.assert_close(statistics.mean, torch.tensor([0.7, 0.4], dtype=torch.float64))
    torch.testing.assert_close(statistics.std, torch.tensor([0.2, 0.2], dtype=torch.float64))
    normalised = adaptive_snorm([0.8, 0.3], [0, 1], [1, 1], statistics)
    # ((0.8 - 0.7) / 0.2 + (0.8 - 0.4) / 0.2) / 2 = 1.25 ; (0.3 - 0.4) / 0.2 = -0.5 on both sides
    torch.testing.assert_close(normalised, torch.tensor([1.25, -0.5], dtype=torch.float64))


def test_cohort_statistics_match_numpy_and_do_not_depend_on_chunking() -> None:
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(10, 6, generator=generator, dtype=torch.float64)
    cohort = torch.randn(25, 6, generator=generator, dtype=torch.float64)
    scores = cohort_scores(embeddings, cohort)
    np.testing.assert_allclose(scores.numpy(), cosine_similarity(embeddings.numpy(), cohort.numpy()), atol=1e-12)
    top = np.sort(scores.numpy(), axis=1)[:, ::-1][:, :7]
    whole = cohort_statistics(embeddings, cohort, top_k=7)
    np.testing.assert_allclose(whole.mean.numpy(), top.mean(axis=1), atol=1e-12)
    np.testing.assert_allclose(whole.std.numpy(), top.std(axis=1, ddof=0), atol=1e-12)
    chunked = cohort_statistics(embeddings, cohort, top_k=7, chunk_size=3)
    torch.testing.assert_close(chunked.mean, whole.mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(chunked.std, whole.std, rtol=0, atol=1e-12)
    dot = cohort_statistics(embeddings, cohort, top_k=7, chunk_size=4, normalise=False)
    top_dot = np.sort(embeddings.numpy() @ cohort.numpy().T, axis=1)[:, ::-1][:, :7]
    np.testing.assert_allclose(dot.mean.numpy(), top_dot.mean(axis=1), atol=1e-12)
    np.testing.assert_allclose(dot.std.numpy(), top_dot.std(axis=1), atol=1e-12)


def test_adaptive_snorm_is_invariant_to_an_affine_change_of_scores() -> None:
    generator = torch.Generator().manual_seed(1)
    cohort_matrix = torch.rand(5, 12, generator=generator, dtype=torch.float64)
    raw = torch.rand(8, generator=generator, dtype=torch.float64)
    enroll, test = torch.randint(0, 5, (8,), generator=generator), torch.randint(0, 5, (8,), generator=generator)
    before = adaptive_snorm(raw, enroll, test, top_k_statistics(cohort_matrix, 4))
    after = adaptive_snorm(3 * raw - 2, enroll, test, top_k_statistics(3 * cohort_matrix - 2, 4))
    torch.testing.assert_close(after, before, rtol=0, atol=1e-12)
    assert not torch.allclose(before, raw)


def test_subtract_mean() -> None:
    embeddings = np.array([[1.0, 2.0], [3.0, 6.0]])
    torch.testing.assert_close(subtract_mean(embeddings, [1.0, 2.0]), torch.tensor([[0.0, 0.0], [2.0, 4.0]],
                                                                                     dtype=torch.float64))
    torch.testing.assert_close(subtract_mean(embeddings, [[2.0, 4.0]]), torch.tensor([[-1.0, -2.0], [1.0, 2.0]],
                                                                                       dtype=torch.float64))
    with pytest.raises(ValueError, match=r"mean of shape \(3,\) does not match embeddings of shape \(2, 2\)"):
        subtract_mean(embeddings, [1.0, 2.0, 3.0])


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="top_k=5 must lie between 2 and the cohort size 4"):
        top_k_statistics(HAND_COHORT_SCORES, 5)
    with pytest.raises(ValueError, match="top_k=1"):
        top_k_statistics(HAND_COHORT_SCORES, 1)
    with pytest.raises(ValueError, match="file 1: its top 2 cohort scores are all equal"):
        top_k_statistics(torch.tensor([[0.1, 0.5, 0.3], [0.4, 0.4, 0.1]]), 2)
    with pytest.raises(ValueError, match="cohort embeddings have dimension 3 but file embeddings have dimension 2"):
        cohort_scores(torch.ones(4, 2), torch.ones(5, 3))
    with pytest.raises(ValueError, match="must be a non-empty 2-D matrix"):
        cohort_scores(torch.ones(4), torch.ones(5, 4))
    statistics = CohortStatistics(torch.tensor([0.7, 0.4]), torch.tensor([0.2, 0.2]))
    with pytest.raises(ValueError, match=r"test_index holds 0..2, outside the 2 files"):
        adaptive_snorm([0.1, 0.2], [0, 1], [0, 2], statistics)
    with pytest.raises(ValueError, match="one file index per trial score"):
        adaptive_snorm([0.1, 0.2], [0], [0, 1], statistics)
    with pytest.raises(ValueError, match="integer file indices"):
        adaptive_snorm([0.1, 0.2], [0.0, 1.0], [0, 1], statistics)
