"""Trial lists, the docs/method.md §7 score, AS-norm, result lines, checkpoint averaging.

Checked by hand and against direct formulas."""
import os

import numpy as np
import pytest
import torch

from dataio.trials import TrialListError, check_trial_files, check_trial_labels, read_trial_list
from scoring.metrics import compute_eer_mindcf
from scoring.scoring import (
    EvalResult,
    TrialScores,
    fused_cohort_statistics,
    measure,
    pair_scores,
    score_trials,
    scoring_vectors,
    write_scores,
)
from scripts.checkpoint_average import average_state_dicts
from scripts.checkpoint_average import main as average_main
from utils.atomic import atomic_append_line
from utils.errors import InputError


def write(tmp_path, text, name="trials.txt"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return str(path)


def test_trial_list_parsing(tmp_path):
    trials = read_trial_list(write(tmp_path, "1 a/x/1.wav b/y/2.wav\n\n0 a/x/1.wav c/z/3.wav\n"))
    assert trials.enroll == ["a/x/1.wav", "a/x/1.wav"] and trials.test == ["b/y/2.wav", "c/z/3.wav"]
    assert trials.labels.tolist() == [1, 0] and trials.line_numbers == [1, 3]
    assert trials.files() == ["a/x/1.wav", "b/y/2.wav", "c/z/3.wav"]
    assert trials.first_lines() == {"a/x/1.wav": 1, "b/y/2.wav": 1, "c/z/3.wav": 3}
    assert read_trial_list(write(tmp_path, "a b\nc d\n", "two.txt")).labels is None


def test_kaldi_trials_and_a_byte_order_mark_are_read(tmp_path):
    kaldi = read_trial_list(write(tmp_path, "\ufeffa/x/1.wav b/y/2.wav target\na/x/1.wav c/z/3.wav nontarget\n"))
    assert (kaldi.format, kaldi.enroll, kaldi.test) == ("kaldi", ["a/x/1.wav"] * 2, ["b/y/2.wav", "c/z/3.wav"])
    assert kaldi.labels.tolist() == [1, 0]


@pytest.mark.parametrize("text,kind", [("1 a b\n1 a c\n", "target"), ("a b nontarget\n", "non-target")])
def test_a_list_of_one_kind_of_trial_is_refused(tmp_path, text, kind):
    with pytest.raises(TrialListError, match=f"all .* trials are {kind} trials"):
        check_trial_labels(read_trial_list(write(tmp_path, text)))


@pytest.mark.parametrize("text,message", [
    ("1 a b\nc d\n", ":2: 'c d' is not in the format of the list's first trial ('LABEL ENROLL TEST')"),
    ("a b target\n1 a b\n", ":2: '1 a b' is not in the format of the list's first trial ('ENROLL TEST target|"),
    ("1 a b c\n", ":1: expected 'LABEL ENROLL TEST', 'ENROLL TEST target|nontarget' or 'ENROLL TEST', got 4 fields"),
    ("1 a b\nyes a b\n", ":2: label must be 1 (target) or 0 (non-target), got 'yes'"),
    ("\n\n", "holds no trials"),
    (b"1 a b\n1 caf\xe9 b\n", ":2: trial list is not UTF-8 text (byte 0xe9)"),
])
def test_malformed_trial_lists_name_file_and_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as error:
        read_trial_list(path)
    assert path in str(error.value) and message in str(error.value)


def test_missing_files_are_listed_with_their_first_line(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    lines = "".join(f"1 a.wav m{i:02d}.wav\n" for i in range(12))
    trials = read_trial_list(write(tmp_path, lines))
    with pytest.raises(TrialListError) as error:
        check_trial_files(trials, str(tmp_path))
    text = str(error.value)
    assert text.startswith("12 file(s)") and f"{trials.path}:1: {tmp_path}/m00.wav" in text
    assert f"{trials.path}:10: {tmp_path}/m09.wav" in text and "m10.wav" not in text and "... and 2 more" in text
    check_trial_files(read_trial_list(write(tmp_path, "a.wav a.wav\n", "ok.txt")), str(tmp_path))


def test_score_by_hand(tmp_path):
    """Crops e = {(2,0), (0,3)}, t = {(1,0), (5,0)}: crop cosines 1, 1, 0, 0 -> 0.5; wholes (1,0) vs (0,4) -> 0."""
    trials = read_trial_list(write(tmp_path, "1 e t\n0 t e\n1 e e\n"))
    files = ["e", "t"]
    crops = torch.tensor([[[2.0, 0.0], [0.0, 3.0]], [[1.0, 0.0], [5.0, 0.0]]])
    whole = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    scores = score_trials(trials, files, crops, whole)
    np.testing.assert_allclose(scores.fused, [0.25, 0.25, 0.75], atol=1e-12)
    np.testing.assert_allclose(scores.crops, [0.5, 0.5, 0.5], atol=1e-12)
    np.testing.assert_allclose(scores.whole, [0.0, 0.0, 1.0], atol=1e-12)
    # Mean subtraction: wholes (2,1), (1,2) minus (1,1) are orthogonal; without it their cosine is 0.8.
    whole = torch.tensor([[2.0, 1.0], [1.0, 2.0]])
    assert score_trials(trials, files, crops, whole).whole[0] == pytest.approx(0.8)
    assert score_trials(trials, files, crops, whole, mean=torch.tensor([1.0, 1.0])).whole[0] == pytest.approx(0.0)


def test_scoring_vectors_equal_the_matrix_formula():
    generator = torch.Generator().manual_seed(0)
    crops, whole = torch.randn(7, 5, 8, generator=generator), torch.randn(7, 8, generator=generator)
    enroll, test = np.array([0, 1, 2, 6, 3]), np.array([4, 5, 6, 0, 3])
    ours = pair_scores(scoring_vectors(crops, whole), enroll, test)
    normal_crops = torch.nn.functional.normalize(crops.double(), dim=2)
    normal_whole = torch.nn.functional.normalize(whole.double(), dim=1)
    direct = [((normal_crops[e] @ normal_crops[t].T).mean() + normal_whole[e] @ normal_whole[t]).item() / 2
              for e, t in zip(enroll, test)]
    np.testing.assert_allclose(ours, direct, rtol=0, atol=1e-12)


def test_asnorm_against_a_direct_implementation(tmp_path):
    rng = np.random.default_rng(1)
    n_files, n_crops, dim, n_cohort, top_k = 6, 3, 5, 20, 7
    crops = rng.normal(size=(n_files, n_crops, dim))
    whole, cohort = rng.normal(size=(n_files, dim)), rng.normal(size=(n_cohort, dim))
    mean = cohort.mean(axis=0)
    names = [f"f{i}" for i in range(n_files)]
    pairs = [(i, j) for i in range(n_files) for j in range(i + 1, n_files)]
    trials = read_trial_list(write(tmp_path, "".join(f"f{i} f{j}\n" for i, j in pairs)))

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    c, w, k = unit(crops - mean), unit(whole - mean), unit(cohort - mean)
    raw = lambda i, j: ((c[i] @ c[j].T).mean() + w[i] @ w[j]) / 2  # noqa: E731
    against_cohort = np.array([[((c[i] @ k[m]).mean() + w[i] @ k[m]) / 2 for m in range(n_cohort)]
                               for i in range(n_files)])
    top = -np.sort(-against_cohort, axis=1)[:, :top_k]
    mu, sigma = top.mean(axis=1), top.std(axis=1)
    direct = [((raw(i, j) - mu[i]) / sigma[i] + (raw(i, j) - mu[j]) / sigma[j]) / 2 for i, j in pairs]
    ours = score_trials(trials, names, torch.from_numpy(crops), torch.from_numpy(whole), mean=torch.from_numpy(mean),
                        cohort=torch.from_numpy(cohort), top_k=top_k)
    np.testing.assert_allclose(ours.fused, direct, rtol=1e-5, atol=1e-5)  # cohort side in float32
    np.testing.assert_allclose(ours.whole, [w[i] @ w[j] for i, j in pairs], atol=1e-12)
    vectors = scoring_vectors(torch.from_numpy(crops), torch.from_numpy(whole), torch.from_numpy(mean))
    whole_matrix = fused_cohort_statistics(vectors, torch.from_numpy(cohort), top_k, torch.from_numpy(mean))
    one_file_per_chunk = fused_cohort_statistics(vectors, torch.from_numpy(cohort), top_k, torch.from_numpy(mean),
                                                 max_entries=n_cohort)
    for chunked, full in zip(one_file_per_chunk, whole_matrix):
        torch.testing.assert_close(chunked, full, rtol=0, atol=1e-6)
    np.testing.assert_allclose(whole_matrix.mean.numpy(), mu, atol=1e-6)


def test_measure_and_result_line(tmp_path):
    rng = np.random.default_rng(2)
    labels = np.tile([1, 0, 0], 20)
    trials = read_trial_list(write(tmp_path, "".join(f"{y} e{i} t{i}\n" for i, y in enumerate(labels))))
    fused, crops, whole = (rng.normal(size=60) + labels * s for s in (2.0, 1.0, 0.5))
    result = measure(TrialScores(fused, crops, whole), trials, "model000000007", 0.05, 1.0, 1.0)
    expected = compute_eer_mindcf(fused, labels, p_targets=(0.05, 0.01))
    assert result.eer == expected["eer"] and result.min_dcf == expected["min_dcf"]
    assert result.eer_whole == compute_eer_mindcf(whole, labels)["eer"]
    line = result.line()
    assert f"checkpoint model000000007 | trials {trials.path} (60 trials: 20 target, 40 non-target)" in line
    assert f"EER {expected['eer']:.4f}%" in line and f"minDCF(p_target=0.05) {expected['min_dcf'][0.05]:.5f}" in line
    assert "minDCF(p_target=0.01)" in line
    assert list(measure(TrialScores(fused, crops, whole), trials, "m", 0.01, 1.0, 1.0).min_dcf) == [0.01]
    unlabelled = read_trial_list(write(tmp_path, "a b\n", "u.txt"))
    assert "(1 trials, no labels: scores only)" in measure(TrialScores(fused[:1], crops[:1], whole[:1]), unlabelled,
                                                             "m", 0.05, 1.0, 1.0).line()


def test_write_scores_and_append_results_line(tmp_path):
    trials = read_trial_list(write(tmp_path, "1 a b\n0 a c\n"))
    path = str(tmp_path / "scores.txt")
    write_scores(path, np.array([0.5, -0.125]), trials)
    assert open(path).read() == "0.50000000 1 a b\n-0.12500000 0 a c\n"
    results = str(tmp_path / "r" / "eval_results.txt")
    os.makedirs(os.path.dirname(results))
    with open(results, "w") as handle:
        handle.write("old line without newline")
    atomic_append_line(results, EvalResult("m", "l", 1).line())
    atomic_append_line(results, "second")
    lines = open(results).read().splitlines()
    assert lines[0] == "old line without newline" and "checkpoint m | trials l" in lines[1] and lines[2] == "second"


def test_checkpoint_average_by_hand(tmp_path):
    first, second = str(tmp_path / "model000000001.model"), str(tmp_path / "model000000002.model")
    torch.save({"w": torch.tensor([1.0, 2.0]), "h": torch.tensor([0.5], dtype=torch.float16),
                "n": torch.tensor(5)}, first)
    torch.save({"module.w": torch.tensor([3.0, 7.0]), "module.h": torch.tensor([1.5], dtype=torch.float16),
                "module.n": torch.tensor(5)}, second)  # a DDP-prefixed original checkpoint averages with ours
    averaged = average_state_dicts([first, second])
    assert averaged["w"].tolist() == [2.0, 4.5] and averaged["w"].dtype == torch.float32
    assert averaged["h"].tolist() == [1.0] and averaged["h"].dtype == torch.float16
    assert averaged["n"].item() == 5
    out = str(tmp_path / "avg.model")
    average_main([out, "--model_dir", str(tmp_path), "--num", "2"])
    assert torch.load(out, weights_only=True)["w"].tolist() == [2.0, 4.5]
    torch.save({"w": torch.tensor([1.0, 2.0]), "h": torch.tensor([0.5], dtype=torch.float16),
                "n": torch.tensor(6)}, second)
    with pytest.raises(ValueError, match="non-float tensor n differs"):
        average_state_dicts([first, second])
    torch.save({"w": torch.tensor([1.0, 2.0])}, second)
    with pytest.raises(ValueError, match="different keys"):
        average_state_dicts([first, second])
    with pytest.raises(InputError, match="holds 2 checkpoint"):
        average_main([out, "--model_dir", str(tmp_path), "--num", "3"])
