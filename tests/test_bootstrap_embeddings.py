"""bootstrap_embeddings.py: MFCC mean+std statistics as label-free initial embeddings."""
import numpy as np
import pytest
import torch
import torchaudio
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

import scripts.bootstrap_embeddings as boot
from dataio.embedding_store import load_embeddings
from tests.data_factory import make_speaker_dataset


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("boot")
    train_list, entries = make_speaker_dataset(str(root), n_speakers=3, n_sessions=2, n_utts=3,
                                               seconds=(0.6, 1.0), sample_rate=8000)
    return root, train_list, entries


def test_statistics_without_vad_are_mfcc_mean_and_std():
    audio = torch.from_numpy(np.random.default_rng(0).standard_normal(16000).astype(np.float32))
    reference = torchaudio.transforms.MFCC(sample_rate=16000, n_mfcc=13, melkwargs={
        "n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 40})(audio)
    ours = boot.MfccStatistics(n_mfcc=13, n_mels=40, vad_db=0)(audio)
    assert ours.shape == (26,)
    torch.testing.assert_close(ours, torch.cat([reference.mean(dim=1), reference.std(dim=1)]))


def test_energy_threshold_drops_appended_silence():
    rng = np.random.default_rng(1)
    t = np.arange(16000) / 16000
    voiced = torch.from_numpy((np.sin(2 * np.pi * 150 * t) + 0.05 * rng.standard_normal(16000)).astype(np.float32))
    padded = torch.cat([voiced, 1e-5 * torch.randn(16000)])  # + 1 s at about -100 dB
    with_vad, without_vad = boot.MfccStatistics(vad_db=40), boot.MfccStatistics(vad_db=0)
    # 101 frames of 10 ms cover the voiced second; of the 100 silent frames only the one that
    # straddles the boundary (37 dB down) stays.
    assert with_vad.voiced_frames(voiced).shape[1] == 101
    assert with_vad.voiced_frames(padded).shape[1] == 102 and without_vad.voiced_frames(padded).shape[1] == 201
    vad_shift = (with_vad(padded) - with_vad(voiced)).abs().max()
    plain_shift = (without_vad(padded) - without_vad(voiced)).abs().max()
    print(f"max change from 1 s of silence: {vad_shift:.2f} with the energy threshold, {plain_shift:.2f} without")
    assert vad_shift < 0.15 * plain_shift


def test_standardise():
    matrix = torch.tensor([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [5.0, 5.0, 9.0]])
    out = boot.standardise(matrix)
    torch.testing.assert_close(out[:, 0], torch.tensor([-1.0, 0.0, 1.0]) * (3 / 2) ** 0.5)
    assert torch.equal(out[:, 1], torch.zeros(3))  # a constant column
    torch.testing.assert_close(out.std(dim=0, unbiased=False)[[0, 2]], torch.ones(2))


def test_cli_keys_shapes_determinism_and_no_labels(corpus, tmp_path):
    root, train_list, entries = corpus
    first, second, relabelled = (str(tmp_path / n) for n in ("a.pt", "b.pt", "c.pt"))
    assert boot.main(["--train_list", train_list, "--train_path", str(root), "--embeddings_path", first]) == 0
    assert boot.main(["--train_list", train_list, "--train_path", str(root), "--embeddings_path", second]) == 0
    other_labels = tmp_path / "list.txt"
    other_labels.write_text("".join(f"x {rel}\n" for _, rel in entries))
    assert boot.main(["--train_list", str(other_labels), "--train_path", str(root), "--embeddings_path", relabelled,
                      "--n_mfcc", "20"]) == 0

    stored = torch.load(first)
    assert list(stored) == [rel for _, rel in entries]  # key = the last three path parts, list order
    assert all(v.shape == (1, 40) and v.dtype == torch.float32 for v in stored.values())
    keys, matrix = load_embeddings(first)
    for other in (second, relabelled):
        other_keys, other_matrix = load_embeddings(other)
        assert other_keys == keys and torch.equal(other_matrix, matrix)
    torch.testing.assert_close(matrix.mean(dim=0), torch.zeros(40), atol=1e-4, rtol=0)

    speakers = [label for label, _ in entries]
    predicted = KMeans(3, n_init=10, random_state=0).fit_predict(matrix.numpy())
    nmi = normalized_mutual_info_score(speakers, predicted)
    print(f"NMI of k-means(3) on the MFCC statistics of 3 synthetic speakers: {nmi:.3f}")
    assert nmi > 0.9


def test_cli_names_a_missing_audio_file_and_writes_nothing(corpus, tmp_path, capsys):
    root, _, entries = corpus
    listed = tmp_path / "list.txt"
    listed.write_text(f"x {entries[0][1]}\nx id10001/sess00/99999.wav\n")
    out = tmp_path / "emb.pt"
    assert boot.main(["--train_list", str(listed), "--train_path", str(root), "--embeddings_path", str(out)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "id10001/sess00/99999.wav" in errors[0] and "Traceback" not in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.txt"]
