"""Loop-based reference for the EER / minDCF interface of voxceleb_trainer's ``tuneThreshold.py``.

Written from the algorithm's description to pin down the behaviour that ``tuneThreshold.py`` must
reproduce: the ROC comes from ``sklearn.metrics.roc_curve`` (as in the original), the error-rate
curve and the detection cost are walked one trial at a time in pure Python. Slow on purpose; used by
``bench/eer_speed.py`` and the tests as the ground truth.
"""
from __future__ import annotations

from operator import itemgetter
from typing import Sequence

import numpy
from sklearn import metrics


def reference_tune_threshold(
    scores: Sequence[float],
    labels: Sequence[int],
    target_fa: Sequence[float],
    target_fr: Sequence[float] | None = None,
) -> tuple[list[list[float]], float, numpy.ndarray, numpy.ndarray]:
    """Operating points nearest to each target rate, and the EER (%), from sklearn's ROC."""
    fpr, tpr, thresholds = metrics.roc_curve(labels, scores, pos_label=1)
    fnr = 1 - tpr
    tuned = []
    for wanted_fr in target_fr or ():
        at = numpy.nanargmin(numpy.absolute(wanted_fr - fnr))
        tuned.append([thresholds[at], fpr[at], fnr[at]])
    for wanted_fa in target_fa:
        at = numpy.nanargmin(numpy.absolute(wanted_fa - fpr))
        tuned.append([thresholds[at], fpr[at], fnr[at]])
    at_eer = numpy.nanargmin(numpy.absolute(fnr - fpr))
    return tuned, max(fpr[at_eer], fnr[at_eer]) * 100, fpr, fnr


def reference_error_rates(
    scores: Sequence[float], labels: Sequence[int]
) -> tuple[list[float], list[float], tuple[float, ...]]:
    """FNR and FPR when each sorted score in turn is the threshold (ties keep input order).

    Counts are accumulated entry by entry from the previous one, like the original's loop.
    """
    ranked = sorted(((index, score) for index, score in enumerate(scores)), key=itemgetter(1))
    order = [index for index, _ in ranked]
    thresholds = tuple(score for _, score in ranked)
    sorted_labels = [labels[index] for index in order]
    misses: list[int] = []
    accepted_impostors: list[int] = []
    for position in range(len(sorted_labels)):
        label = sorted_labels[position]
        if position == 0:
            misses.append(label)
            accepted_impostors.append(1 - label)
        else:
            misses.append(misses[position - 1] + label)
            accepted_impostors.append(accepted_impostors[position - 1] + 1 - label)
    n_targets = sum(sorted_labels)
    n_nontargets = len(sorted_labels) - n_targets
    fnrs = [count / float(n_targets) for count in misses]
    fprs = [1 - count / float(n_nontargets) for count in accepted_impostors]
    return fnrs, fprs, thresholds


def reference_min_dcf(
    fnrs: Sequence[float],
    fprs: Sequence[float],
    thresholds: Sequence[float],
    p_target: float,
    c_miss: float,
    c_fa: float,
) -> tuple[float, float]:
    """Smallest normalised detection cost over the curve and the first threshold reaching it."""
    best_cost = float("inf")
    best_threshold = thresholds[0]
    for position in range(len(fnrs)):
        cost = c_miss * fnrs[position] * p_target + c_fa * fprs[position] * (1 - p_target)
        if cost < best_cost:
            best_cost = cost
            best_threshold = thresholds[position]
    return best_cost / min(c_miss * p_target, c_fa * (1 - p_target)), best_threshold
