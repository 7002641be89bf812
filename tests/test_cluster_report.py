"""NMI, purity and cluster sizes against scikit-learn and hand counts."""
import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from clustering.report import cluster_sizes, nmi, purity, speakers_from_keys


@pytest.mark.parametrize("seed, n, n_true, n_pred", [(0, 1000, 7, 13), (1, 50, 50, 3), (2, 400, 1, 9), (3, 30, 4, 30)])
def test_nmi_equals_sklearn(seed, n, n_true, n_pred):
    rng = np.random.default_rng(seed)
    truth, pred = rng.integers(n_true, size=n), rng.integers(n_pred, size=n)
    pred[: n // 2] = truth[: n // 2] * 3 % n_pred  # some dependence between the two
    assert nmi(truth, pred) == pytest.approx(normalized_mutual_info_score(truth, pred), abs=1e-12)


def test_nmi_edge_cases_follow_sklearn():
    names = np.array(["id1", "id1", "id2", "id2"])
    assert nmi(names, np.array([5, 5, 9, 9])) == pytest.approx(1.0, abs=1e-12)
    assert nmi(np.zeros(5), np.zeros(5)) == 1.0 == normalized_mutual_info_score(np.zeros(5), np.zeros(5))
    assert nmi(np.zeros(4), np.arange(4)) == 0.0 == normalized_mutual_info_score(np.zeros(4), np.arange(4))
    with pytest.raises(ValueError, match="3 true and 2 predicted"):
        nmi(np.zeros(3), np.zeros(2))


def test_purity_and_sizes_hand_counts():
    truth = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
    pred = np.array([4, 4, 7, 7, 7, 9, 9, 9, 4, 9])
    # cluster 4: {0,0,2} -> 2; cluster 7: {0,1,1} -> 2; cluster 9: {2,2,2,1} -> 3
    assert purity(truth, pred) == pytest.approx(7 / 10)
    sizes = cluster_sizes(pred)
    assert sizes["n_nonempty"] == 3 and sizes["p0"] == 3 and sizes["p50"] == 3 and sizes["p100"] == 4


def test_speakers_come_from_the_third_last_key_part():
    codes = speakers_from_keys(["id2/v/1.wav", "id1/v/2.wav", "x/id2/w/3.wav"])
    assert codes.tolist() == [1, 0, 1]
    assert speakers_from_keys(["id1/v/1.wav", "v/1.wav"]) is None
