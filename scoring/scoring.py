"""Scoring of verification trials (docs/method.md §7) and the reports written beside them.

Every test file has two embeddings: ``num_eval`` crops (n, D) and the whole file (D,). Both are
L2-normalised and a trial's score is the mean of (the mean of the crop×crop cosine matrix, the
whole-file cosine). Because the mean of all pairwise dot products of two sets is the dot product of
their means, that score is one dot product of per-file *scoring vectors*

    u = [mean_k normalize(c_k), normalize(w)] / sqrt(2),      score(e, t) = u_e · u_t,

which is what is computed here (in float64): one vector per file instead of an n×n matrix per trial.
For AS-norm a cohort embedding c (one per training file) is scored like a file whose crops and
whole file all gave c: u_f · [ĉ, ĉ] / sqrt(2) = a_f · ĉ with a_f = (mean_k ĉ_k + ŵ) / 2, so the cohort
is kept as one normalised (C, D) float32 matrix, whatever its size.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dataio.trials import TrialList
from scoring.metrics import compute_eer_mindcf
from scoring.score_norm import CohortStatistics, adaptive_snorm, cohort_statistics, subtract_mean
from utils.atomic import atomic_open

SECOND_P_TARGET = 0.01
"""p_target of the second minDCF (the first is ``--dcf_p_target``, 0.05 by default)."""


def scoring_vectors(crops: Tensor, whole: Tensor, mean: Optional[Tensor] = None) -> Tensor:
    """Per-file vectors (F, 2D) whose dot products are the docs/method.md §7 scores; crops (F, n, D), whole (F, D).

    ``mean`` (D,), when given, is subtracted from every embedding before normalisation.
    """
    if crops.dim() != 3 or whole.dim() != 2 or crops.shape[0] != whole.shape[0] or crops.shape[2] != whole.shape[1]:
        raise ValueError(f"expected crops (F, n, D) and whole (F, D), "
                         f"got {tuple(crops.shape)} and {tuple(whole.shape)}")
    crops, whole = crops.double(), whole.double()
    if mean is not None:
        crops, whole = subtract_mean(crops, mean), subtract_mean(whole, mean)
    crop_part = F.normalize(crops, dim=2).mean(dim=1)
    return torch.cat([crop_part, F.normalize(whole, dim=1)], dim=1) / math.sqrt(2.0)


def pair_scores(vectors: Tensor, enroll: np.ndarray, test: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """``vectors[enroll[i]] · vectors[test[i]]`` for every trial i, ``chunk`` trials at a time."""
    out = np.empty(len(enroll), dtype=np.float64)
    for start in range(0, len(enroll), chunk):
        e = torch.as_tensor(enroll[start:start + chunk])
        t = torch.as_tensor(test[start:start + chunk])
        out[start:start + chunk] = (vectors[e] * vectors[t]).sum(dim=1).numpy()
    return out


def fused_cohort_statistics(vectors: Tensor, cohort: Tensor, top_k: int, mean: Optional[Tensor] = None,
                            max_entries: int = 1 << 25) -> CohortStatistics:
    """AS-norm statistics of each file's top_k fused scores against the cohort (C, D).

    Files are scored in chunks of at most ``max_entries`` cohort scores (128 MB). Unlike
    ``score_norm.cohort_statistics``, the file side is not renormalised: the fused score is a dot
    product of scoring vectors, not a cosine, and cohort scores must share the trial scores' scale.
    """
    dim = cohort.shape[1]
    probes = ((vectors[:, :dim] + vectors[:, dim:]) / math.sqrt(2.0)).float()
    cohort = cohort.float() if mean is None else subtract_mean(cohort.float(), mean)
    chunk = max(1, max_entries // cohort.shape[0])
    statistics = cohort_statistics(probes, F.normalize(cohort, dim=1), top_k, chunk_size=chunk, normalise=False)
    return CohortStatistics(statistics.mean.double(), statistics.std.double())


def trial_indices(trials: TrialList, files: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """(enrolment, test) positions in ``files`` of every trial's two files."""
    index = {name: i for i, name in enumerate(files)}
    enroll = np.fromiter((index[name] for name in trials.enroll), dtype=np.int64, count=len(trials))
    test = np.fromiter((index[name] for name in trials.test), dtype=np.int64, count=len(trials))
    return enroll, test


@dataclass
class TrialScores:
    """Scores of a trial list: ``fused`` (the reported score) and its two halves, in trial order."""

    fused: np.ndarray
    crops: np.ndarray
    whole: np.ndarray


def score_trials(trials: TrialList, files: Sequence[str], crops: Tensor, whole: Tensor,
                 mean: Optional[Tensor] = None, cohort: Optional[Tensor] = None, top_k: int = 0) -> TrialScores:
    """Score every trial from the embeddings of ``files`` (row i of ``crops``/``whole`` is ``files[i]``).

    With ``cohort`` (C, D) the fused score is AS-normalised with ``top_k`` cohort scores per file;
    the crop-only and whole-only halves are reported raw (diagnostics, as the original's VEER_S1/S2).
    """
    enroll, test = trial_indices(trials, files)
    vectors = scoring_vectors(crops, whole, mean)
    half = vectors.shape[1] // 2
    fused = pair_scores(vectors, enroll, test)
    if cohort is not None:
        statistics = fused_cohort_statistics(vectors, cohort, top_k, mean)
        fused = adaptive_snorm(torch.from_numpy(fused), enroll, test, statistics).numpy()
    return TrialScores(fused=fused,
                       crops=2.0 * pair_scores(vectors[:, :half].contiguous(), enroll, test),
                       whole=2.0 * pair_scores(vectors[:, half:].contiguous(), enroll, test))


@dataclass
class EvalResult:
    """The figures of one checkpoint on one trial list; EERs in percent, minDCF by p_target."""

    checkpoint: str
    trial_list: str
    n_trials: int
    n_target: int = 0
    n_nontarget: int = 0
    eer: Optional[float] = None
    min_dcf: Dict[float, float] = field(default_factory=dict)
    eer_crops: Optional[float] = None
    eer_whole: Optional[float] = None
    score_norm: str = "none"
    eer_threshold: Optional[float] = None
    """The score at the EER point: accept a trial when its score is at least this."""

    def line(self) -> str:
        """One line with everything needed to tell results apart (list, trial count, p_targets)."""
        head = (f"{time.strftime('%Y-%m-%d %H:%M:%S')} checkpoint {self.checkpoint} | trials {self.trial_list} "
                f"({self.n_trials} trials")
        if self.eer is None:
            return head + ", no labels: scores only) | score norm " + self.score_norm
        dcfs = " ".join(f"minDCF(p_target={p:g}) {v:.5f}" for p, v in self.min_dcf.items())
        return (f"{head}: {self.n_target} target, {self.n_nontarget} non-target) | EER {self.eer:.4f}% {dcfs} | "
                f"EER crops only {self.eer_crops:.4f}%, whole file only {self.eer_whole:.4f}% | "
                f"score norm {self.score_norm}")


def measure(scores: TrialScores, trials: TrialList, checkpoint: str, p_target: float,
            c_miss: float, c_fa: float, score_norm: str = "none") -> EvalResult:
    """EER and minDCF at ``p_target`` and at 0.01 (docs/method.md §7); scores only when the list has no labels."""
    result = EvalResult(checkpoint=checkpoint, trial_list=trials.path, n_trials=len(trials), score_norm=score_norm)
    if trials.labels is None:
        return result
    p_targets = tuple(dict.fromkeys((p_target, SECOND_P_TARGET)))
    main = compute_eer_mindcf(scores.fused, trials.labels, p_targets=p_targets, c_miss=c_miss, c_fa=c_fa)
    result.n_target, result.n_nontarget = main["n_target"], main["n_nontarget"]
    result.eer, result.min_dcf, result.eer_threshold = main["eer"], dict(main["min_dcf"]), main["eer_threshold"]
    result.eer_crops = compute_eer_mindcf(scores.crops, trials.labels, p_targets=(p_target,))["eer"]
    result.eer_whole = compute_eer_mindcf(scores.whole, trials.labels, p_targets=(p_target,))["eer"]
    return result


SCORE_FORMATS = ("original", "kaldi")


def write_scores(path: str, scores: np.ndarray, trials: TrialList, score_format: str = "original") -> None:
    """One line per trial, atomically: ``SCORE LABEL ENROLL TEST`` (``SCORE ENROLL TEST`` for an unlabelled list),
    or Kaldi's ``ENROLL TEST SCORE`` with ``score_format='kaldi'``."""
    if score_format not in SCORE_FORMATS:
        raise ValueError(f"score_format must be one of {SCORE_FORMATS}, got {score_format!r}")
    with atomic_open(path, "w", encoding="utf-8") as handle:
        if score_format == "kaldi":
            handle.writelines(f"{e} {t} {s:.8f}\n" for s, e, t in zip(scores.tolist(), trials.enroll, trials.test))
        elif trials.labels is None:
            handle.writelines(f"{s:.8f} {e} {t}\n" for s, e, t in zip(scores.tolist(), trials.enroll, trials.test))
        else:
            handle.writelines(f"{s:.8f} {label} {e} {t}\n" for s, label, e, t
                              in zip(scores.tolist(), trials.labels.tolist(), trials.enroll, trials.test))
