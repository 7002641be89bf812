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
