"""Purity and cluster sizes by hand counts; speakers from keys."""
import numpy as np
import pytest

from clustering.report import cluster_sizes, purity, speakers_from_keys


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
