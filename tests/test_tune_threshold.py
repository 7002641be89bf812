"""tuneThreshold: equality with the loop algorithm and sklearn's ROC, hand-computed cases, input checks."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

import scoring.metrics as TT
from bench.reference_eer import reference_error_rates, reference_min_dcf, reference_tune_threshold

# 4 targets and 4 non-targets; ascending: .1N .2N .3T .35N .4T .7N .8T .9T
HAND_SCORES = [0.9, 0.7, 0.8, 0.35, 0.4, 0.2, 0.3, 0.1]
HAND_LABELS = [1, 0, 1, 0, 1, 0, 1, 0]


def random_trials(seed: int) -> tuple[list[float], list[int]]:
    """Random trials; coarse rounding on some seeds makes many scores equal (ties)."""
    rng = np.random.default_rng(seed)
    n_trials = int(rng.integers(3, 300))
    labels = (rng.random(n_trials) < rng.uniform(0.1, 0.9)).astype(int)
    labels[:2] = [0, 1]
    scores = rng.normal(0, 1, n_trials) + labels * rng.uniform(0, 2)
    decimals = int(rng.integers(0, 4))
    if decimals < 3:
        scores = np.round(scores, decimals)
    return scores.tolist(), labels.tolist()


@pytest.mark.parametrize("seed", range(40))
def test_equal_to_loop_reference(seed: int) -> None:
    scores, labels = random_trials(seed)
    fnrs, fprs, thresholds = TT.ComputeErrorRates(scores, labels)
    ref_fnrs, ref_fprs, ref_thresholds = reference_error_rates(scores, labels)
    assert fnrs == ref_fnrs and fprs == ref_fprs and thresholds == ref_thresholds
    for p_target, c_miss, c_fa in [(0.05, 1, 1), (0.01, 1, 1), (0.3, 2.0, 0.5)]:
        value, threshold = TT.ComputeMinDcf(fnrs, fprs, thresholds, p_target, c_miss, c_fa)
        ref_value, ref_threshold = reference_min_dcf(ref_fnrs, ref_fprs, ref_thresholds, p_target, c_miss, c_fa)
        assert abs(value - ref_value) < 1e-9 and threshold == ref_threshold

    tuned, eer, fpr, fnr = TT.tuneThresholdfromScore(scores, labels, [1, 0.1, 0.02], [0.05])
    ref_tuned, ref_eer, ref_fpr, ref_fnr = reference_tune_threshold(scores, labels, [1, 0.1, 0.02], [0.05])
    assert abs(eer - ref_eer) < 1e-9
    np.testing.assert_array_equal(fpr, ref_fpr)
    np.testing.assert_array_equal(fnr, ref_fnr)
    np.testing.assert_array_equal(np.array(tuned), np.array(ref_tuned))

    summary = TT.compute_eer_mindcf(np.array(scores), np.array(labels), (0.05, 0.01))
    assert abs(summary["eer"] - ref_eer) < 1e-9
    for p_target in (0.05, 0.01):
        ref_value, ref_threshold = reference_min_dcf(ref_fnrs, ref_fprs, ref_thresholds, p_target, 1, 1)
        assert abs(summary["min_dcf"][p_target] - ref_value) < 1e-9
        assert summary["min_dcf_threshold"][p_target] == ref_threshold


def test_eer_matches_sklearn_roc_by_hand() -> None:
    rng = np.random.default_rng(7)
    labels = (rng.random(5000) < 0.3).astype(int)
    scores = np.round(rng.normal(labels * 1.5, 1.0), 2)
    fpr, tpr, thresholds = roc_curve(labels, scores, pos_label=1)
    fnr = 1 - tpr
    at = np.nanargmin(np.abs(fnr - fpr))
    expected_eer = max(fpr[at], fnr[at]) * 100
    _, eer, our_fpr, our_fnr = TT.tuneThresholdfromScore(scores, labels, [0.01])
    assert abs(eer - expected_eer) < 1e-9
    np.testing.assert_array_equal(our_fpr, fpr)
    np.testing.assert_array_equal(our_fnr, fnr)
    summary = TT.compute_eer_mindcf(scores, labels)
    assert abs(summary["eer"] - expected_eer) < 1e-9
    assert summary["eer_threshold"] == thresholds[at]
    assert summary["n_target"] == labels.sum() and summary["n_nontarget"] == (1 - labels).sum()

    full_fpr, full_tpr, full_thresholds = roc_curve(labels, scores, pos_label=1, drop_intermediate=False)
    det_fpr, det_fnr, det_thresholds = TT.det_points(scores, labels)
    np.testing.assert_array_equal(det_fpr, full_fpr)
    np.testing.assert_array_equal(det_fnr, 1 - full_tpr)
    np.testing.assert_array_equal(det_thresholds, full_thresholds)


def test_hand_computed_case() -> None:
    tuned, eer, fpr, fnr = TT.tuneThresholdfromScore(HAND_SCORES, HAND_LABELS, [0.25], [0.5])
    # ROC, thresholds inf .9 .8 .7 .4 .35 .3 .1 (.2 is collinear and dropped): FNR = FPR = 25 % at .4
    np.testing.assert_allclose(fpr, [0, 0, 0, 0.25, 0.25, 0.5, 0.5, 1])
    np.testing.assert_allclose(fnr, [1, 0.75, 0.5, 0.5, 0.25, 0.25, 0, 0])
    assert eer == pytest.approx(25.0, abs=1e-12)
    assert [list(map(float, point)) for point in tuned] == [[0.8, 0.0, 0.5], [0.7, 0.25, 0.5]]

    fnrs, fprs, thresholds = TT.ComputeErrorRates(HAND_SCORES, HAND_LABELS)
    assert thresholds == (0.1, 0.2, 0.3, 0.35, 0.4, 0.7, 0.8, 0.9)
    np.testing.assert_allclose(fnrs, [0, 0, 0.25, 0.25, 0.5, 0.5, 0.75, 1])
    np.testing.assert_allclose(fprs, [0.75, 0.5, 0.5, 0.25, 0.25, 0, 0, 0])
    # p = 0.05: smallest cost 0.5 * 0.05 at .7, normalised by 0.05
    assert TT.ComputeMinDcf(fnrs, fprs, thresholds, 0.05, 1, 1) == (pytest.approx(0.5), 0.7)
    # p = 0.5: cost 0.25 first reached at .2 (again at .35 and .7): the first threshold wins
    assert TT.ComputeMinDcf(fnrs, fprs, thresholds, 0.5, 1, 1) == (pytest.approx(0.5), 0.2)
    summary = TT.compute_eer_mindcf(HAND_SCORES, HAND_LABELS, (0.05, 0.5))
    assert summary["eer"] == pytest.approx(25.0) and summary["eer_threshold"] == 0.4
    assert summary["min_dcf_threshold"] == {0.05: 0.7, 0.5: 0.2}


@pytest.mark.parametrize("labels, expected", [([0, 1, 1, 0], 0.0), ([1, 0, 1, 0], 0.5)])
def test_tied_scores_keep_input_order(labels: list[int], expected: float) -> None:
    """Two trials share 0.5; as in the original, the earlier one is rejected first."""
    scores = [0.5, 0.5, 0.9, 0.1]
    fnrs, fprs, thresholds = TT.ComputeErrorRates(scores, labels)
    assert TT.ComputeMinDcf(fnrs, fprs, thresholds, 0.05, 1, 1)[0] == pytest.approx(expected)
    assert TT.compute_eer_mindcf(scores, labels, (0.05,))["min_dcf"][0.05] == pytest.approx(expected)


def test_return_types_follow_the_original() -> None:
    fnrs, fprs, thresholds = TT.ComputeErrorRates(np.array(HAND_SCORES, dtype=np.float32), HAND_LABELS)
    assert type(fnrs) is list and type(fprs) is list and type(thresholds) is tuple
    assert all(type(value) is float for value in fnrs + fprs + list(thresholds))
    min_dcf, threshold = TT.ComputeMinDcf(fnrs, fprs, thresholds, 0.05, 1, 1)
    assert type(min_dcf) is float and threshold == np.float32(0.7)
    tuned, eer, fpr, fnr = TT.tuneThresholdfromScore(HAND_SCORES, HAND_LABELS, [0.1])
    assert isinstance(eer, np.floating) and isinstance(fpr, np.ndarray) and isinstance(fnr, np.ndarray)
    assert isinstance(tuned, list) and len(tuned) == 1 and len(tuned[0]) == 3


@pytest.mark.parametrize("scores, labels, message", [
    ([0.1, 0.2, 0.3], [0, 2, 1], r"labels\[1\] is 2"),
    ([0.1, 0.2, 0.3], ["0", "1", "1"], r"labels\[0\] is '0'"),
    ([0.1, 0.2, 0.3], [1, 1, 1], "all 3 labels are targets"),
    ([0.1, 0.2, 0.3], [0, 0, 0], "all 3 labels are non-targets"),
    ([0.1, float("nan"), 0.3], [0, 1, 1], r"scores\[1\] is nan"),
    ([0.1, 0.2], [0, 1, 1], "one label per score"),
    ([], [], "non-empty"),
    (["high", "low"], [0, 1], "scores must be a 1-D sequence of numbers"),
])
def test_bad_trials_are_rejected(scores: list, labels: list, message: str) -> None:
    for function in (TT.ComputeErrorRates, TT.compute_eer_mindcf, TT.det_points,
                     lambda s, y: TT.tuneThresholdfromScore(s, y, [0.1])):
        with pytest.raises(ValueError, match=message):
            function(scores, labels)


def test_bad_cost_arguments_are_rejected() -> None:
    fnrs, fprs, thresholds = TT.ComputeErrorRates(HAND_SCORES, HAND_LABELS)
    with pytest.raises(ValueError, match="same length"):
        TT.ComputeMinDcf(fnrs[:-1], fprs, thresholds, 0.05, 1, 1)
    with pytest.raises(ValueError, match="p_target"):
        TT.ComputeMinDcf(fnrs, fprs, thresholds, 1.0, 1, 1)
    with pytest.raises(ValueError, match="c_miss and c_fa"):
        TT.compute_eer_mindcf(HAND_SCORES, HAND_LABELS, (0.05,), c_fa=0)
