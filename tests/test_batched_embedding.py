"""Batched embedding gives every file the embedding it gets alone (to 1e-4 relative)."""
import os

import numpy as np
import pytest
import soundfile
import torch

from dataio.audio import crop_audio, header_length, read_audio
from dataio.datasets import AudioFiles, CropSpec
from models.wavlm_checkpoint import save_random_wavlm_checkpoint
from models.wavlm_mhfa import MainModel
from scoring.embedding import BatchedEncoder, embed_files, equal_length_groups, padding_is_exact, plan_batches

CPU = torch.device("cpu")
# Lengths in samples: 3 files share 12000 samples, 2 share 9000, the rest are all different.
LENGTHS = [12000, 7001, 9000, 12000, 15333, 9000, 4000, 12000, 10017]


def make_encoder(tmp_path, **cfg):
    ckpt = str(tmp_path / f"wavlm_{cfg.get('extractor_mode', 'default')}.pt")
    save_random_wavlm_checkpoint(ckpt, seed=3, **cfg)
    torch.manual_seed(0)
    return MainModel(pretrained_model_path=ckpt, nOut=24, head_nb=4, compression_dim=16).eval()


def write_files(folder, lengths, seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for i, length in enumerate(lengths):
        path = os.path.join(folder, f"id{i:05d}", "vid", f"{i:05d}.wav")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        soundfile.write(path, 0.3 * rng.standard_normal(length), 16000, subtype="FLOAT")
        paths.append(path)
    return paths


def alone(encoder, waveform):
    with torch.no_grad():
        return encoder(waveform[None])[0]


def max_relative_difference(batched, single):
    return float(((batched - single).norm(dim=-1) / single.norm(dim=-1)).max())


def test_plan_and_groups_by_hand():
    assert plan_batches([5, 3, 5, 1, 3], 2) == [[3, 1], [4, 0], [2]]
    assert equal_length_groups([5, 3, 5, 1, 3]) == [[0, 2], [1, 4], [3]]
    with pytest.raises(ValueError):
        plan_batches([1], 0)


def test_header_length_matches_read_audio(tmp_path):
    path = str(tmp_path / "a.wav")
    soundfile.write(path, np.zeros(12345), 22050)
    assert header_length(path) == read_audio(path).shape[0] == 8958
    assert header_length(path, max_samples=5000) == 5000


def test_default_mode_batches_only_equal_lengths_and_matches_single(tmp_path):
    encoder = make_encoder(tmp_path)
    assert not padding_is_exact(encoder)
    paths = write_files(str(tmp_path / "audio"), LENGTHS)
    spec = CropSpec(eval_frames=30, num_eval=3)
    result = embed_files(encoder, paths, CPU, batch_size=4, crops=spec, max_samples=11000)
    dataset = AudioFiles(paths, spec, max_samples=11000)
    whole_single = torch.stack([alone(encoder, dataset[i][2]) for i in range(len(paths))])
    crops_single = torch.stack([torch.stack([alone(encoder, c) for c in dataset[i][1]]) for i in range(len(paths))])
    whole_diff = max_relative_difference(result.whole, whole_single)
    crop_diff = max_relative_difference(result.crops, crops_single)
    print(f"\ndefault extractor: max relative difference batched vs alone: "
          f"whole {whole_diff:.2e}, crops {crop_diff:.2e}")
    assert whole_diff < 1e-4 and crop_diff < 1e-4
    # Capped at 11000: lengths {11000 x4, 7001, 9000 x2, 4000, 10017} -> 3 batches of 4, 4, 1 files
    # sorted by length: [4000, 7001, 9000, 9000] [10017, 11000, 11000, 11000] [11000]:
    # whole forwards 3 + 2 + 1, and one crop forward per batch.
    assert result.forwards == 6 + 3
    assert result.crops.shape == (len(paths), 3, 24)


def test_layer_norm_mode_pads_different_lengths_exactly(tmp_path):
    encoder = make_encoder(tmp_path, extractor_mode="layer_norm", layer_norm_first=True, normalize=True)
    assert padding_is_exact(encoder)
    paths = write_files(str(tmp_path / "audio"), LENGTHS, seed=1)
    result = embed_files(encoder, paths, CPU, batch_size=len(paths))
    single = torch.stack([alone(encoder, torch.from_numpy(read_audio(p))) for p in paths])
    diff = max_relative_difference(result.whole, single)
    print(f"\nlayer_norm extractor: max relative difference padded batch vs alone over {len(set(LENGTHS))} "
          f"lengths: {diff:.2e}")
    assert diff < 1e-4
    assert result.forwards == 1 and result.crops is None


def test_padding_would_change_default_mode_embeddings(tmp_path):
    """Why the default mode never pads: the first block's group norm sees the padded zeros."""
    encoder = make_encoder(tmp_path)
    waves = [torch.randn(6000), torch.randn(12000)]
    with torch.no_grad():
        padded = encoder(torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), torch.tensor([6000, 12000]))
    runner = BatchedEncoder(encoder, CPU)
    exact = runner.embed(waves)
    assert runner.forwards == 2
    assert max_relative_difference(padded[:1], exact[:1]) > 1e-3
    assert max_relative_difference(padded[1:], exact[1:]) < 1e-5


def test_whole_file_as_read_and_short_files_wrap_padded_to_400_samples(tmp_path, caplog):
    paths = write_files(str(tmp_path / "audio"), [200, 9000])
    short = AudioFiles(paths, CropSpec(eval_frames=10, num_eval=2), max_samples=5000)
    audio = read_audio(paths[0])
    with caplog.at_level("WARNING"):
        _, crops, whole = short[0]
    assert f"{paths[0]} holds 200 samples (12.5 ms), fewer than 400: it is repeated to 400 samples" in caplog.text
    np.testing.assert_array_equal(whole.numpy(), np.concatenate([audio, audio]))
    np.testing.assert_array_equal(crops.numpy(), crop_audio(audio, 10, num_eval=2).astype(np.float32))
    assert short[1][2].shape == (5000,)
    np.testing.assert_array_equal(AudioFiles(paths)[1][2].numpy(), read_audio(paths[1]))
    assert AudioFiles(paths)[0][2].shape == (400,)
