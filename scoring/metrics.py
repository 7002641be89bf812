"""Equal error rate and minimum detection cost of verification trials, vectorised with numpy.

The three camel-case functions keep the names, signatures, return values and return types of
voxceleb_trainer's ``tuneThreshold.py`` (docs/method.md §9), so scripts written against it keep working;
inside, every loop over trials is a sort plus cumulative sums.

Conventions, as in the original:

- a higher score means "same speaker"; label 1 is a target trial, 0 a non-target trial;
- the EER comes from the ROC curve of ``sklearn.metrics.roc_curve`` (one point per distinct score,
  collinear intermediate points dropped, a first point at threshold +inf): the point where
  |FNR - FPR| is smallest, reported as max(FNR, FPR) in percent (docs/method.md §7);
- the minDCF curve has one point per trial, in ascending score order with ties kept in input
  order; at point i the trials up to and including i are rejected;
- minDCF = min_i(c_miss * FNR_i * p_target + c_fa * FPR_i * (1 - p_target)) / min(c_miss * p_target,
  c_fa * (1 - p_target)), with the first threshold reaching the minimum.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def check_trials(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Scores as float64 and labels as int64, after checking shapes, values and both classes."""
    try:
        score_array = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"scores must be a 1-D sequence of numbers: {error}") from error
    if score_array.ndim != 1 or score_array.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D sequence of numbers, got shape {score_array.shape}")
    label_array = np.asarray(labels)
    if label_array.shape != score_array.shape:
        raise ValueError(f"labels have shape {label_array.shape} but scores have shape {score_array.shape}: "
                         "one label per score is expected")
    not_finite = np.flatnonzero(~np.isfinite(score_array))
    if not_finite.size:
        at = int(not_finite[0])
        raise ValueError(f"scores[{at}] is {score_array[at]}: every score must be a finite number")
    not_binary = np.flatnonzero(~((label_array == 0) | (label_array == 1)))
    if not_binary.size:
        at = int(not_binary[0])
        raise ValueError(f"labels[{at}] is {label_array[at].item()!r}: labels must be 1 (target) or 0 (non-target)")
    label_array = label_array.astype(np.int64)
    n_targets = int(label_array.sum())
    if n_targets in (0, label_array.size):
        present = "targets" if n_targets else "non-targets"
        raise ValueError(f"all {label_array.size} labels are {present}: error rates need both target (1) "
                         "and non-target (0) trials")
    return score_array, label_array


def _sorted_trials(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated trials in ascending score order, tied scores kept in input order (a stable sort)."""
    score_array, label_array = check_trials(scores, labels)
    order = np.argsort(score_array, kind="stable")
    return score_array[order], label_array[order]


def _roc_from_sorted(
    sorted_scores: np.ndarray, rejected_targets: np.ndarray, drop_intermediate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) with the semantics of ``sklearn.metrics.roc_curve(pos_label=1)``.

    Built from the trials in ascending score order and the running count of targets among them:
    the threshold at each distinct score accepts the trials from its first occurrence upwards.
    """
    first_of_each_score = np.flatnonzero(np.concatenate(([True], sorted_scores[1:] != sorted_scores[:-1])))
    targets_below = rejected_targets[first_of_each_score - 1]
    targets_below[0] = 0
    true_positives = (rejected_targets[-1] - targets_below)[::-1].astype(np.float64)
    false_positives = (sorted_scores.size - first_of_each_score)[::-1] - true_positives
    thresholds = sorted_scores[first_of_each_score][::-1]
    if drop_intermediate and true_positives.size > 2:
        fp_steps, tp_steps = np.diff(false_positives), np.diff(true_positives)
        corner = (fp_steps[1:] != fp_steps[:-1]) | (tp_steps[1:] != tp_steps[:-1])
        keep = np.concatenate(([True], corner, [True]))
        true_positives, false_positives, thresholds = true_positives[keep], false_positives[keep], thresholds[keep]
    true_positives = np.concatenate(([0.0], true_positives))
    false_positives = np.concatenate(([0.0], false_positives))
    thresholds = np.concatenate(([np.inf], thresholds))
    return false_positives / false_positives[-1], true_positives / true_positives[-1], thresholds


def _eer(fpr: np.ndarray, fnr: np.ndarray) -> tuple[np.float64, int]:
    """EER in percent and the index of its ROC point: the first where the two rates are closest."""
    at = int(np.nanargmin(np.absolute(fnr - fpr)))
    return max(fpr[at], fnr[at]) * 100, at


def _error_rates_from_sorted(rejected_targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FNR and FPR when the trials up to and including each position (ascending score) are rejected."""
    rejected_nontargets = np.arange(1, rejected_targets.size + 1) - rejected_targets
    n_targets = rejected_targets[-1]
    n_nontargets = rejected_targets.size - n_targets
    return rejected_targets / float(n_targets), 1 - rejected_nontargets / float(n_nontargets)


def _check_costs(p_target: float, c_miss: float, c_fa: float) -> None:
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must lie strictly between 0 and 1, got {p_target}")
    if not (c_miss > 0 and c_fa > 0):
        raise ValueError(f"c_miss and c_fa must be positive, got c_miss={c_miss}, c_fa={c_fa}")


def _min_dcf_index(
    fnrs: np.ndarray, fprs: np.ndarray, p_target: float, c_miss: float, c_fa: float
) -> tuple[float, int]:
    """Normalised minimum detection cost and the first index reaching it."""
    costs = c_miss * fnrs * p_target + c_fa * fprs * (1 - p_target)
    best = int(np.argmin(costs))
    return float(costs[best] / min(c_miss * p_target, c_fa * (1 - p_target))), best


def tuneThresholdfromScore(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    target_fa: Sequence[float],
    target_fr: Sequence[float] | None = None,
) -> tuple[list[list[np.float64]], np.float64, np.ndarray, np.ndarray]:
    """ROC operating points nearest to target error rates, and the EER.

    Returns ``(tuned, eer_percent, fpr, fnr)``: ``tuned`` holds ``[threshold, fpr, fnr]`` for each
    entry of ``target_fr`` (nearest FNR) followed by each entry of ``target_fa`` (nearest FPR);
    ``fpr`` and ``fnr`` are the ROC curve, thresholds descending from +inf.
    """
    sorted_scores, sorted_labels = _sorted_trials(scores, labels)
    fpr, tpr, thresholds = _roc_from_sorted(sorted_scores, np.cumsum(sorted_labels))
    fnr = 1 - tpr
    targets = [(wanted, fnr) for wanted in target_fr or ()] + [(wanted, fpr) for wanted in target_fa]
    tuned = []
    for wanted, rates in targets:
        at = np.nanargmin(np.absolute(wanted - rates))
        tuned.append([thresholds[at], fpr[at], fnr[at]])
    return tuned, _eer(fpr, fnr)[0], fpr, fnr


def ComputeErrorRates(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray
) -> tuple[list[float], list[float], tuple[float, ...]]:
    """``(fnrs, fprs, thresholds)``: one point per trial, thresholds = the scores in ascending order.

    Lists and a tuple, as in the original (whose thresholds tuple holds the input score objects;
    here they are Python floats of the same value).
    """
    sorted_scores, sorted_labels = _sorted_trials(scores, labels)
    fnrs, fprs = _error_rates_from_sorted(np.cumsum(sorted_labels))
    return fnrs.tolist(), fprs.tolist(), tuple(sorted_scores.tolist())


def ComputeMinDcf(
    fnrs: Sequence[float] | np.ndarray,
    fprs: Sequence[float] | np.ndarray,
    thresholds: Sequence[float],
    p_target: float,
    c_miss: float,
    c_fa: float,
) -> tuple[float, Any]:
    """``(min_dcf, threshold)``: the normalised minimum of the detection cost over the curve."""
    fnr_array = np.asarray(fnrs, dtype=np.float64)
    fpr_array = np.asarray(fprs, dtype=np.float64)
    if fnr_array.ndim != 1 or fnr_array.size == 0:
        raise ValueError(f"fnrs must be a non-empty 1-D sequence, got shape {fnr_array.shape}")
    if fpr_array.shape != fnr_array.shape or len(thresholds) != fnr_array.size:
        raise ValueError(f"fnrs, fprs and thresholds must have the same length, got {fnr_array.size}, "
                         f"{fpr_array.size} and {len(thresholds)}")
    _check_costs(p_target, c_miss, c_fa)
    min_dcf, best = _min_dcf_index(fnr_array, fpr_array, p_target, c_miss, c_fa)
    return min_dcf, thresholds[best]


def compute_eer_mindcf(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    p_targets: Sequence[float] = (0.05, 0.01),
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> dict[str, Any]:
    """EER and minDCF at each prior from one sort of the trials (what the evaluator reports).

    Returns ``{"eer": percent, "eer_threshold": float, "min_dcf": {p: value},
    "min_dcf_threshold": {p: float}, "n_target": int, "n_nontarget": int}``; the figures equal those of
    ``tuneThresholdfromScore`` and ``ComputeErrorRates`` + ``ComputeMinDcf``.
    """
    for p_target in p_targets:
        _check_costs(p_target, c_miss, c_fa)
    sorted_scores, sorted_labels = _sorted_trials(scores, labels)
    rejected_targets = np.cumsum(sorted_labels)
    fpr, tpr, roc_thresholds = _roc_from_sorted(sorted_scores, rejected_targets)
    eer, at_eer = _eer(fpr, 1 - tpr)
    fnrs, fprs = _error_rates_from_sorted(rejected_targets)
    min_dcf, min_dcf_threshold = {}, {}
    for p_target in p_targets:
        min_dcf[p_target], best = _min_dcf_index(fnrs, fprs, p_target, c_miss, c_fa)
        min_dcf_threshold[p_target] = float(sorted_scores[best])
    n_target = int(rejected_targets[-1])
    return {
        "eer": float(eer),
        "eer_threshold": float(roc_thresholds[at_eer]),
        "min_dcf": min_dcf,
        "min_dcf_threshold": min_dcf_threshold,
        "n_target": n_target,
        "n_nontarget": int(sorted_labels.size - n_target),
    }


def det_points(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, fnr, thresholds)`` at every distinct score, thresholds descending from +inf (DET curve)."""
    sorted_scores, sorted_labels = _sorted_trials(scores, labels)
    fpr, tpr, thresholds = _roc_from_sorted(sorted_scores, np.cumsum(sorted_labels), drop_intermediate=False)
    return fpr, 1 - tpr, thresholds
