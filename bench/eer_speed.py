"""Time the vectorised ``tuneThreshold`` against the original's loop algorithm on one random trial set.

Usage (from the repository root): ``python bench/eer_speed.py [--trials 550000] [--repeats 3]``.

Every path does the original evaluator's work: the EER from ``tuneThresholdfromScore`` and minDCF
at p_target 0.05 and 0.01 from ``ComputeErrorRates`` + ``ComputeMinDcf``. The loop reference and
the first two vectorised paths receive the same Python lists the original evaluator builds:
float32-valued scores (so that equal scores occur, as with real cosine scores) and 0/1 labels; the
last path receives numpy arrays, as this project's evaluator passes them. The best of ``--repeats``
runs is reported for each path; the loop reference runs the full trial count, nothing is scaled.
The public API pays for its list return types (conversions to and from Python lists);
``compute_eer_mindcf`` sorts once and stays in numpy.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

import numpy as np

import tuneThreshold
from bench.reference_eer import reference_error_rates, reference_min_dcf, reference_tune_threshold

P_TARGETS = (0.05, 0.01)
Figures = dict[str, float]


def random_trials(n_trials: int, seed: int) -> tuple[list[float], list[int]]:
    """Half target trials; cosine-like scores rounded to float32, as a model would produce them."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n_trials) < 0.5).astype(np.int64)
    scores = np.where(labels == 1, rng.normal(0.55, 0.15, n_trials), rng.normal(0.05, 0.12, n_trials))
    return scores.astype(np.float32).astype(np.float64).tolist(), labels.tolist()


def evaluate_reference(scores: list[float], labels: list[int]) -> Figures:
    """The original evaluator's calls, on the loop implementation."""
    figures = {"eer": float(reference_tune_threshold(scores, labels, [1, 0.1])[1])}
    fnrs, fprs, thresholds = reference_error_rates(scores, labels)
    for p_target in P_TARGETS:
        figures[f"min_dcf_{p_target}"] = reference_min_dcf(fnrs, fprs, thresholds, p_target, 1, 1)[0]
    return figures


def evaluate_public_api(scores: list[float], labels: list[int]) -> Figures:
    """The same calls on the vectorised ``tuneThreshold`` interface."""
    figures = {"eer": float(tuneThreshold.tuneThresholdfromScore(scores, labels, [1, 0.1])[1])}
    fnrs, fprs, thresholds = tuneThreshold.ComputeErrorRates(scores, labels)
    for p_target in P_TARGETS:
        figures[f"min_dcf_{p_target}"] = tuneThreshold.ComputeMinDcf(fnrs, fprs, thresholds, p_target, 1, 1)[0]
    return figures


def evaluate_one_pass(scores: list[float] | np.ndarray, labels: list[int] | np.ndarray) -> Figures:
    """All figures from ``compute_eer_mindcf`` (one sort of the trials)."""
    result = tuneThreshold.compute_eer_mindcf(scores, labels, P_TARGETS)
    return {"eer": result["eer"], **{f"min_dcf_{p}": result["min_dcf"][p] for p in P_TARGETS}}


def best_time(run: Callable[[], Figures], repeats: int) -> tuple[float, Figures]:
    """Shortest wall time over ``repeats`` runs, and the figures of the last run."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        figures = run()
        best = min(best, time.perf_counter() - start)
    return best, figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=550_000, help="number of trials (VoxCeleb1-H: 550,894)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per path; the best is kept")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.trials < 2 or args.repeats < 1:
        parser.error("--trials must be at least 2 and --repeats at least 1")

    scores, labels = random_trials(args.trials, args.seed)
    n_ties = args.trials - len(set(scores))
    print(f"{args.trials} trials, {sum(labels)} targets, {n_ties} scores equal to an earlier one; "
          f"best of {args.repeats} runs per path")
    reference_time, reference = best_time(lambda: evaluate_reference(scores, labels), args.repeats)
    print(f"loop reference           {reference_time * 1000:9.1f} ms")

    score_array, label_array = np.asarray(scores), np.asarray(labels)
    worst_diff = 0.0
    for name, evaluate in [("vectorised public API", lambda: evaluate_public_api(scores, labels)),
                           ("compute_eer_mindcf", lambda: evaluate_one_pass(scores, labels)),
                           ("  same, numpy arrays in", lambda: evaluate_one_pass(score_array, label_array))]:
        elapsed, figures = best_time(evaluate, args.repeats)
        print(f"{name:<24} {elapsed * 1000:9.1f} ms   speed-up x{reference_time / elapsed:.1f}")
        for key, value in figures.items():
            diff = abs(value - reference[key])
            worst_diff = max(worst_diff, diff)
            print(f"    {key:<13} reference {reference[key]:.12f}  vectorised {value:.12f}  |diff| {diff:.1e}")
    equal = worst_diff < 1e-9
    print(f"figures equal within 1e-9: {equal}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
