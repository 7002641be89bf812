"""The loss gate's threshold: where the two modes of the per-sample log-loss distribution meet (docs/method.md §4).

A 2-component Gaussian mixture is fitted to log(CE) of the previous epoch; the threshold is the point
between the two means where the weighted densities cross. The original located it on a 1,000-point
grid and crashed when it did not find exactly one; here it is solved in closed form, and when there is
no single crossing the previous threshold is kept with a logged warning.

Loss values that cannot be logged: non-finite ones are left out; zeros (a float32 cross-entropy
underflows to 0 for very confident samples) are set to the smallest positive loss of the file, so the
low-loss mode keeps their mass. Both are counted in a warning.
"""
from __future__ import annotations

import logging
import math
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from utils.errors import InputError
from utils.textfile import read_text_lines

logger = logging.getLogger(__name__)

GMM_OPTIONS = dict(n_components=2, covariance_type="full", random_state=0, tol=1e-5, max_iter=1000)


class NoCrossingError(ValueError):
    """The two weighted Gaussians do not cross exactly once between their means."""


def read_loss_file(path: str) -> Tuple[np.ndarray, List[str]]:
    """Read a ``CE PATH`` per-line file into (float64 losses, paths).

    The path is everything after the first run of whitespace, so paths may contain spaces.
    """
    losses: List[float] = []
    paths: List[str] = []
    for number, line in enumerate(read_text_lines(path, "per-sample loss file"), start=1):
        fields = line.strip().split(maxsplit=1)
        try:
            if len(fields) != 2:
                raise ValueError
            losses.append(float(fields[0]))
        except ValueError:
            message = f"{path}:{number}: expected '<loss> <path>', got {line.rstrip()!r}"
            raise InputError(message) from None
        paths.append(fields[1])
    return np.asarray(losses, dtype=np.float64), paths


def gaussian_crossing(means: Sequence[float], variances: Sequence[float], weights: Sequence[float]) -> float:
    """The point strictly between the two means where w1*N(x; m1, v1) = w2*N(x; m2, v2).

    Equating the log-densities gives a*x^2 + b*x + c = 0, solved with the cancellation-free form
    of the quadratic formula (it also covers a = 0, equal variances). The parabola's vertex lies
    beyond the narrower component's mean, so at most one root falls between the means; when none
    does (one weighted density dominates the whole span), raises NoCrossingError.
    """
    (m1, m2), (v1, v2), (w1, w2) = (tuple(map(float, p)) for p in (means, variances, weights))
    if not all(math.isfinite(v) and v > 0 for v in (v1, v2)):
        raise NoCrossingError(f"degenerate variances {v1!r}, {v2!r}")
    if not all(math.isfinite(w) and w > 0 for w in (w1, w2)):
        raise NoCrossingError(f"degenerate weights {w1!r}, {w2!r}")
    if m1 == m2:
        raise NoCrossingError(f"both components have the same mean {m1!r}")
    a = 0.5 / v2 - 0.5 / v1
    b = m1 / v1 - m2 / v2
    c = 0.5 * m2 * m2 / v2 - 0.5 * m1 * m1 / v1 + math.log(w1 / w2) + 0.5 * math.log(v2 / v1)
    discriminant = b * b - 4.0 * a * c
    if discriminant < 0:
        raise NoCrossingError("the weighted densities never cross")
    q = -0.5 * (b + math.copysign(math.sqrt(discriminant), b))
    roots = ([q / a] if a != 0 else []) + ([c / q] if q != 0 else [])
    low, high = min(m1, m2), max(m1, m2)
    between = sorted({r for r in roots if low < r < high})
    if len(between) != 1:
        raise NoCrossingError(f"{len(between)} crossings between the means {low:.6g} and {high:.6g}")
    return between[0]


def _log_losses(losses: np.ndarray, path: str) -> np.ndarray:
    """log of the finite losses, zeros and negatives raised to the smallest positive loss."""
    finite = np.isfinite(losses)
    if not finite.all():
        logger.warning("%s: left out %d non-finite loss values", path, int((~finite).sum()))
    losses = losses[finite]
    positive = losses > 0
    if positive.any() and not positive.all():
        floor = losses[positive].min()
        logger.warning("%s: raised %d loss values <= 0 to the smallest positive loss %g",
                       path, int((~positive).sum()), floor)
        losses = np.where(positive, losses, floor)
    return np.log(losses[losses > 0])


def LGL_threshold_update_gmm(loss_vals_path: str,
                             previous_threshold: Optional[float] = None) -> Optional[float]:
    """New gate threshold (on log CE) from an epoch's ``CE PATH`` file, or ``previous_threshold``.

    ``previous_threshold`` is returned, with a logged warning, whenever the mixture does not give a
    single crossing between its modes (too few distinct values, unimodal data, degenerate fit).
    """
    losses, _ = read_loss_file(loss_vals_path)
    log_losses = _log_losses(losses, loss_vals_path)
    if np.unique(log_losses).size < 2:
        logger.warning("%s: fewer than 2 distinct usable loss values (%d lines); keeping the gate "
                       "threshold at %s", loss_vals_path, losses.size, previous_threshold)
        return previous_threshold

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        gmm = GaussianMixture(**GMM_OPTIONS).fit(log_losses.reshape(-1, 1))
    for warning in caught:
        logger.warning("%s: %s", loss_vals_path, warning.message)

    try:
        return gaussian_crossing(gmm.means_[:, 0], gmm.covariances_[:, 0, 0], gmm.weights_)
    except NoCrossingError as reason:
        logger.warning("%s: no single gate threshold (%s); keeping the gate threshold at %s",
                       loss_vals_path, reason, previous_threshold)
        return previous_threshold
