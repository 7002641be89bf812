"""Figures of an evaluation: the DET curve and the score distributions, as PNG files.

matplotlib is optional: it is imported when a figure is drawn, through its object API (no pyplot,
no change of the process-wide backend). Without it each function logs one line and returns None.
Files are rendered in memory and written atomically.
"""
from __future__ import annotations

import io
import logging
import os
from typing import Any, Sequence

import numpy as np
from scipy.special import ndtri

from scoring.metrics import check_trials, compute_eer_mindcf, det_points
from utils.atomic import atomic_open

logger = logging.getLogger(__name__)

DET_TICKS_PERCENT = (0.01, 0.1, 0.5, 1, 2, 5, 10, 20, 40, 60, 80, 90)


def _figure_class() -> Any:
    """matplotlib's ``Figure`` class, or None (with one log line) when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("matplotlib not installed: skipping plots")
        return None
    return Figure


def _save_png(figure: Any, path: str | os.PathLike) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return os.fspath(path)


def _operating_point(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    """(FPR, FNR) when trials scoring at most ``threshold`` are rejected (the minDCF convention)."""
    rejected = scores <= threshold
    targets = labels == 1
    return float(np.mean(~rejected[~targets])), float(np.mean(rejected[targets]))


EDGE_MARGIN = 0.25
"""Room (in normal deviates) between the plotted rates and the frame: a point at a range's end, such as a
minDCF of about 1 (reject or accept everything: 0 % or 100 % errors), is drawn whole inside the frame."""


def _point_label(name: str, fpr: float, fnr: float, low: float, high: float) -> str:
    """``name``, plus the true rates when the point lies outside the plotted range (drawn at its edge)."""
    if low <= fpr <= high and low <= fnr <= high:
        return name
    return f"{name} at FA {100 * fpr:.3g} %, miss {100 * fnr:.3g} % (drawn at the edge)"


def det_figure(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    title: str = "DET curve",
    p_targets: Sequence[float] = (0.05, 0.01),
) -> Any:
    """The DET figure of :func:`plot_det` (a matplotlib ``Figure``), or None without matplotlib."""
    figure_class = _figure_class()
    if figure_class is None:
        return None
    score_array, label_array = check_trials(scores, labels)
    fpr, fnr, _ = det_points(score_array, label_array)
    figures = compute_eer_mindcf(score_array, label_array, p_targets)
    eer = figures["eer"] / 100
    min_dcf_points = {p_target: _operating_point(score_array, label_array, figures["min_dcf_threshold"][p_target])
                      for p_target in p_targets}
    low = max(0.5 / min(figures["n_target"], figures["n_nontarget"]), 1e-4)
    high = min(0.95, max([0.45, eer, *np.ravel(list(min_dcf_points.values()))]) + 0.05)

    def probit(rates: Any) -> np.ndarray:
        return ndtri(np.clip(rates, low, high))

    figure = figure_class(figsize=(5.5, 5.5))
    axes = figure.add_subplot()
    axes.plot(probit(fpr), probit(fnr), color="tab:blue", linewidth=1.5, label="DET")
    axes.plot(probit([low, high]), probit([low, high]), color="0.7", linewidth=0.8, linestyle="--")
    axes.plot(probit(eer), probit(eer), "o", color="tab:red", label=f"EER {figures['eer']:.3f} %", zorder=3)
    for (p_target, (point_fpr, point_fnr)), marker in zip(min_dcf_points.items(), "sD^v<>"):
        name = f"minDCF(p={p_target:g}) {figures['min_dcf'][p_target]:.4f}"
        axes.plot(probit(point_fpr), probit(point_fnr), marker, color="tab:green", fillstyle="none", markersize=9,
                  markeredgewidth=1.6, zorder=4, clip_on=False,
                  label=_point_label(name, point_fpr, point_fnr, low, high))
    ticks = [tick for tick in DET_TICKS_PERCENT if low <= tick / 100 <= high]
    tick_positions = probit(np.array(ticks) / 100)
    tick_labels = [f"{tick:g}" for tick in ticks]
    axes.set_xticks(tick_positions, tick_labels)
    axes.set_yticks(tick_positions, tick_labels)
    limits = (float(probit(low)) - EDGE_MARGIN, float(probit(high)) + EDGE_MARGIN)
    axes.set_xlim(*limits)
    axes.set_ylim(*limits)
    axes.set_xlabel("False alarm rate (%)")
    axes.set_ylabel("Miss rate (%)")
    axes.set_title(title)
    axes.grid(True, linewidth=0.4, alpha=0.6)
    # Below the frame: inside it, the legend would hide whichever corner holds a minDCF point.
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=7, frameon=False)
    return figure


def plot_det(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    path: str | os.PathLike,
    title: str = "DET curve",
    p_targets: Sequence[float] = (0.05, 0.01),
) -> str | None:
    """DET curve (miss vs false-alarm rate on normal-deviate axes) with the EER and minDCF points."""
    figure = det_figure(scores, labels, title, p_targets)
    return None if figure is None else _save_png(figure, path)


def plot_score_histograms(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    path: str | os.PathLike,
    title: str = "Score distributions",
    bins: int = 100,
) -> str | None:
    """Normalised histograms of target and non-target scores, with the EER threshold."""
    figure_class = _figure_class()
    if figure_class is None:
        return None
    score_array, label_array = check_trials(scores, labels)
    figures = compute_eer_mindcf(score_array, label_array, ())
    edges = np.histogram_bin_edges(score_array, bins=bins)
    figure = figure_class(figsize=(6.5, 4))
    axes = figure.add_subplot()
    for label, name, color in ((1, "target", "tab:blue"), (0, "non-target", "tab:orange")):
        chosen = score_array[label_array == label]
        axes.hist(chosen, bins=edges, density=True, alpha=0.55, color=color, label=f"{name} ({chosen.size})")
    if np.isfinite(figures["eer_threshold"]):
        axes.axvline(figures["eer_threshold"], color="tab:red", linewidth=1,
                     label=f"EER threshold (EER {figures['eer']:.3f} %)")
    axes.set_xlabel("Score")
    axes.set_ylabel("Density")
    axes.set_title(title)
    axes.legend(fontsize=8)
    return _save_png(figure, path)
