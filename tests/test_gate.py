"""The loss gate's threshold: closed-form crossing vs the original's grid search, and its failure modes."""
import logging
import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.mixture import GaussianMixture

from loss import LGL_threshold_update_gmm, NoCrossingError, gaussian_crossing, read_loss_file


def write_losses(path, losses):
    lines = [f"{float(value)!r} id{i % 7:05d}/video/{i:05d}.wav\n" for i, value in enumerate(losses)]
    path.write_text("".join(lines))
    return str(path)


def grid_threshold(path):
    """The original's method, re-implemented: 1,000-point grid, sign changes between the grid modes.

    Returns (crossings found strictly between the modes, grid step).
    """
    log_losses = np.log([float(line.split()[0]) for line in open(path)])
    gmm = GaussianMixture(n_components=2, random_state=0, covariance_type="full", tol=1e-5, max_iter=1000)
    gmm.fit(log_losses.reshape(-1, 1))
    grid = np.linspace(log_losses.min(), log_losses.max(), 1000)
    densities = [gmm.weights_[k] * norm.pdf(grid, gmm.means_[k, 0], np.sqrt(gmm.covariances_[k, 0, 0]))
                 for k in range(2)]
    changes = np.argwhere(np.diff(np.sign(densities[0] - densities[1]))).flatten()
    mode_a, mode_b = grid[np.argmax(densities[0])], grid[np.argmax(densities[1])]
    found = grid[changes]
    return found[(found > min(mode_a, mode_b)) & (found < max(mode_a, mode_b))], grid[1] - grid[0]


def bimodal_log_losses(seed, clean, noisy):
    """Log-losses from two normal modes, each given as (mean, std, count)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(m, s, n) for m, s, n in (clean, noisy)])


@pytest.mark.parametrize("seed, clean, noisy", [
    (0, (-2.0, 0.5, 2000), (1.0, 0.8, 700)),
    (1, (-4.0, 1.2, 1500), (0.5, 0.4, 1500)),
    (2, (-1.0, 0.3, 300), (2.5, 1.5, 2500)),
    (3, (-3.0, 0.7, 2500), (-0.5, 0.7, 500)),
])
def test_closed_form_crossing_agrees_with_the_original_grid(tmp_path, seed, clean, noisy):
    path = write_losses(tmp_path / "epoch.txt", np.exp(bimodal_log_losses(seed, clean, noisy)))
    found, step = grid_threshold(path)
    assert len(found) == 1
    threshold = LGL_threshold_update_gmm(path)
    assert abs(threshold - found[0]) <= step
    assert clean[0] < threshold < noisy[0]


def test_crossing_equal_variances_by_hand():
    v, w1, w2 = 0.25, 0.7, 0.3
    expected = 1.0 + v * math.log(w1 / w2) / 2.0  # (m1+m2)/2 + v*ln(w1/w2)/(m2-m1)
    assert gaussian_crossing([0.0, 2.0], [v, v], [w1, w2]) == pytest.approx(expected, abs=1e-12)
    assert gaussian_crossing([2.0, 0.0], [v, v], [w2, w1]) == pytest.approx(expected, abs=1e-12)


def test_crossing_unequal_variances_equalises_the_weighted_densities():
    means, variances, weights = [-1.0, 3.0], [0.5, 2.0], [0.6, 0.4]
    x = gaussian_crossing(means, variances, weights)
    assert -1.0 < x < 3.0
    d1 = weights[0] * norm.pdf(x, means[0], math.sqrt(variances[0]))
    d2 = weights[1] * norm.pdf(x, means[1], math.sqrt(variances[1]))
    assert d1 == pytest.approx(d2, rel=1e-10)


@pytest.mark.parametrize("means, variances, weights, reason", [
    ([0.0, 0.1], [0.01, 4.0], [0.5, 0.5], "0 crossings"),  # narrow mode dominates both means
    ([1.0, 1.0], [0.5, 2.0], [0.5, 0.5], "same mean"),
    ([0.0, 1.0], [0.0, 2.0], [0.5, 0.5], "degenerate variances"),
    ([0.0, 1.0], [1.0, 2.0], [1.0, 0.0], "degenerate weights"),
])
def test_no_single_crossing_is_reported(means, variances, weights, reason):
    with pytest.raises(NoCrossingError, match=reason):
        gaussian_crossing(means, variances, weights)


def test_unimodal_losses_keep_the_previous_threshold(tmp_path, caplog):
    log_losses = np.random.default_rng(0).laplace(0.0, 1.0, 3000)
    path = write_losses(tmp_path / "epoch.txt", np.exp(log_losses))
    found, _ = grid_threshold(path)
    assert len(found) != 1  # the original would have crashed here
    with caplog.at_level(logging.WARNING, logger="loss.gate"):
        assert LGL_threshold_update_gmm(path, previous_threshold=1.5) == 1.5
    assert "no single gate threshold" in caplog.text and "epoch.txt" in caplog.text


@pytest.mark.parametrize("losses", [[0.7] * 50, [0.7], []])
def test_too_few_distinct_values_keep_the_previous_threshold(tmp_path, caplog, losses):
    path = write_losses(tmp_path / "epoch.txt", losses)
    with caplog.at_level(logging.WARNING, logger="loss.gate"):
        assert LGL_threshold_update_gmm(path, previous_threshold=2.0) == 2.0
        assert LGL_threshold_update_gmm(path) is None
    assert "fewer than 2 distinct" in caplog.text


def test_zero_losses_are_raised_to_the_smallest_positive_loss(tmp_path, caplog):
    losses = np.exp(bimodal_log_losses(0, (-2.0, 0.5, 2000), (1.0, 0.8, 700)))
    with_zeros = np.concatenate([losses, np.zeros(40)])
    floored = np.concatenate([losses, np.full(40, losses.min())])
    with caplog.at_level(logging.WARNING, logger="loss.gate"):
        got = LGL_threshold_update_gmm(write_losses(tmp_path / "zeros.txt", with_zeros))
    assert "raised 40 loss values <= 0" in caplog.text
    assert got == LGL_threshold_update_gmm(write_losses(tmp_path / "floored.txt", floored))


def test_non_finite_losses_are_left_out(tmp_path, caplog):
    losses = np.exp(bimodal_log_losses(1, (-4.0, 1.2, 1500), (0.5, 0.4, 1500)))
    dirty = np.concatenate([losses[:10], [np.nan, np.inf], losses[10:]])
    with caplog.at_level(logging.WARNING, logger="loss.gate"):
        got = LGL_threshold_update_gmm(write_losses(tmp_path / "dirty.txt", dirty))
    assert "left out 2 non-finite" in caplog.text
    assert got == LGL_threshold_update_gmm(write_losses(tmp_path / "clean.txt", losses))


def test_read_loss_file_values_and_paths(tmp_path):
    path = tmp_path / "epoch.txt"
    path.write_text("0.25 id00012/21Uxsk56VDQ/00001.wav\n1e-3\tid1/a b/2.wav  \n7 x\n")
    losses, paths = read_loss_file(str(path))
    np.testing.assert_array_equal(losses, [0.25, 1e-3, 7.0])
    assert paths == ["id00012/21Uxsk56VDQ/00001.wav", "id1/a b/2.wav", "x"]


@pytest.mark.parametrize("bad_line", ["abc id1/a/1.wav", "0.5", "", "0,5 id1/a/1.wav"])
def test_malformed_line_names_file_and_line(tmp_path, bad_line):
    path = tmp_path / "epoch.txt"
    path.write_text(f"0.1 id1/a/1.wav\n0.2 id1/a/2.wav\n{bad_line}\n0.3 id1/a/3.wav\n")
    with pytest.raises(ValueError, match=r"epoch\.txt:3: expected '<loss> <path>'"):
        read_loss_file(str(path))
    with pytest.raises(ValueError, match=r"epoch\.txt:3"):
        LGL_threshold_update_gmm(str(path), previous_threshold=1.0)
