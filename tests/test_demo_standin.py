"""The demo's WavLM stand-in: its frozen convolutions are a filterbank of band energies."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from demo.standin import BANDS, centre_frequencies, save_standin_checkpoint
from models.wavlm_checkpoint import load_pretrained_wavlm


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    path = Path(tmp_path_factory.mktemp("standin")) / "wavlm_standin.pt"
    save_standin_checkpoint(path)
    model, _ = load_pretrained_wavlm(str(path))
    return model.eval()


def band_energies(model: torch.nn.Module, wave: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.feature_extractor(torch.from_numpy(wave).float()[None])[0].mean(dim=1).numpy()


@pytest.mark.parametrize("band", [3, 12, 20, 29])
def test_a_tone_peaks_in_its_own_band(standin: torch.nn.Module, band: int) -> None:
    hz = centre_frequencies()[band]
    time = np.arange(16000) / 16000
    energies = band_energies(standin, np.sin(2 * math.pi * hz * time + 0.3))
    assert energies.shape == (BANDS,)
    assert int(np.argmax(energies)) == band
    neighbours = np.delete(energies, [band - 1, band, band + 1])
    assert energies[band] > 3 * neighbours.max()


def test_frames_every_20_ms_and_level_invariant(standin: torch.nn.Module) -> None:
    """The first block's group norm divides each channel by the utterance's level (its eps aside)."""
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, 32000)
    quiet, loud = band_energies(standin, 0.1 * noise), band_energies(standin, 3.0 * noise)
    np.testing.assert_allclose(quiet, loud, rtol=2e-3)
    assert int(standin.frame_lengths(torch.tensor([32000]))[0]) == 32000 // 320 - 1
