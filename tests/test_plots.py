"""plots: valid PNG files written atomically, and a clean skip when matplotlib is missing."""
from __future__ import annotations

import logging
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from scoring import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def trials() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = (rng.random(2000) < 0.5).astype(int)
    return rng.normal(labels * 2.0, 1.0), labels


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk, after checking the PNG signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("plot", [plots.plot_det, plots.plot_score_histograms])
def test_plots_write_png(plot, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    scores, labels = trials()
    target = tmp_path / "figures" / "plot.png"
    written = plot(scores, labels, target, title="test")
    assert written == str(target)
    width, height = png_size(target)
    assert width > 200 and height > 200
    assert [entry.name for entry in target.parent.iterdir()] == ["plot.png"]


def test_plots_reject_bad_trials(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match=r"labels\[0\] is 3"):
        plots.plot_det([0.1, 0.2], [3, 1], tmp_path / "det.png")
    assert not list(tmp_path.iterdir())


def test_without_matplotlib_plots_are_skipped(monkeypatch, caplog, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    scores, labels = trials()
    with caplog.at_level(logging.WARNING, logger="plots"):
        assert plots.plot_det(scores, labels, tmp_path / "det.png") is None
        assert plots.plot_score_histograms(scores, labels, tmp_path / "hist.png") is None
    assert [record.getMessage() for record in caplog.records] == ["matplotlib not installed: skipping plots"] * 2
    assert not list(tmp_path.iterdir())


def test_min_dcf_markers_at_the_ends_of_the_range_are_drawn_whole_inside_the_frame() -> None:
    """With minDCF = 1 (the best is to reject every trial: 0 % false alarms, 100 % misses) both minDCF points lie
    beyond the plotted rates: they are drawn whole, inside the frame, and the legend gives their true rates."""
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(60), np.zeros(3000)].astype(int)
    scores = rng.normal(0, 1, labels.size) + 0.3 * labels
    figure = plots.det_figure(scores, labels, "round1: model000000010 on trials")
    axes = figure.axes[0]
    markers = [line for line in axes.get_lines() if line.get_label().startswith("minDCF")]
    assert [line.get_label() for line in markers] == [
        f"minDCF(p={p}) 1.0000 at FA 0 %, miss 100 % (drawn at the edge)" for p in ("0.05", "0.01")]
    (x_low, x_high), (y_low, y_high) = axes.get_xlim(), axes.get_ylim()
    for line in markers:
        (x,), (y,) = line.get_xdata(), line.get_ydata()
        room = min(x - x_low, x_high - x, y - y_low, y_high - y)
        assert room == pytest.approx(plots.EDGE_MARGIN), "a marker half outside the frame is half hidden"
        assert not line.get_clip_on()
    legend = axes.get_legend()
    assert legend.get_bbox_to_anchor().transformed(axes.transAxes.inverted()).y1 < 0, \
        "the legend lies below the frame, where it hides no point"
    assert axes.get_title() == "round1: model000000010 on trials"
