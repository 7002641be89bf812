"""Reverberation and MUSAN noise: SNR arithmetic, parity with the original's algorithm and scipy,
the batched on-device path against the per-sample worker path, and the sixth augmentation."""
import random

import numpy as np
import pytest
import soundfile
import torch
from scipy import signal

import dataio.augment as AA
import DatasetLoader as DL
from dataio.audio import crop_samples
from dataio.augment import AugmentPlan
from demo.noise import make_musan_like, make_rirs
from utils.errors import InputError

MAX_FRAMES = 30
SAMPLES = crop_samples(MAX_FRAMES)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("aug")
    return make_musan_like(base / "musan", seconds=1), make_rirs(base / "rirs")


@pytest.fixture(scope="module")
def clean():
    t = np.arange(SAMPLES) / 16000
    rng = np.random.default_rng(0)
    return (0.5 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(SAMPLES))[np.newaxis]


def reference_noise(augment, noisecat, audio):
    """The original's additive_noise, restated: per-file gains from dB levels, float64 soundfile reads."""
    snr_range = {"noise": (0, 15), "speech": (13, 20), "music": (5, 15)}[noisecat]
    count_range = {"noise": (1, 1), "speech": (3, 8), "music": (1, 1)}[noisecat]
    clean_db = 10 * np.log10(np.mean(audio ** 2) + 1e-4)
    files = random.sample(augment.noiselist[noisecat], random.randint(*count_range))
    mixed = np.zeros_like(audio)
    for path in files:
        noise = reference_crop(path)
        snr = random.uniform(*snr_range)
        noise_db = 10 * np.log10(np.mean(noise[0] ** 2) + 1e-4)
        mixed += np.sqrt(10 ** ((clean_db - noise_db - snr) / 10)) * noise
    return mixed + audio


def reference_crop(path):
    audio, _ = soundfile.read(path)
    if audio.shape[0] <= SAMPLES:
        audio = np.pad(audio, (0, SAMPLES - audio.shape[0] + 1), "wrap")
    start = int(np.int64(random.random() * (audio.shape[0] - SAMPLES)))
    return audio[np.newaxis, start:start + SAMPLES]


def test_snr_hand_case():
    t = torch.arange(16000, dtype=torch.float64) / 16000
    speech = 0.5 * torch.sin(2 * torch.pi * 200 * t)
    noise = 0.1 * (1 - 2 * (torch.arange(16000) % 2)).double()  # power exactly 0.01
    for snr in (0.0, 7.5, 15.0):
        out = AA.add_scaled_noise(speech, AA.scale_noise(noise, snr))
        added = out - speech
        achieved = 10 * torch.log10(speech.pow(2).mean() / added.pow(2).mean())
        assert abs(achieved.item() - snr) < 0.1
        # the original's gain, by hand: sqrt(10 ** ((clean_db - noise_db - snr) / 10))
        clean_db = 10 * np.log10(0.125 + 1e-4)
        noise_db = 10 * np.log10(0.01 + 1e-4)
        gain = np.sqrt(10 ** ((clean_db - noise_db - snr) / 10))
        torch.testing.assert_close(added, gain * noise, rtol=1e-12, atol=1e-15)


def test_reverberation_equals_scipy_with_unit_energy_rir(folders, clean):
    augment = DL.AugmentWAV(*folders, MAX_FRAMES)
    for seed in range(3):
        random.seed(seed)
        out = augment.reverberate(clean)
        random.seed(seed)
        rir, _ = soundfile.read(random.choice(augment.rir_files))
        rir = rir / np.sqrt(np.sum(rir ** 2))
        expected = signal.convolve(clean, rir[np.newaxis], mode="full")[:, :SAMPLES]
        assert out.shape == clean.shape == expected.shape
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("noisecat", ["noise", "speech", "music"])
def test_additive_noise_matches_original(folders, clean, noisecat):
    augment = DL.AugmentWAV(*folders, MAX_FRAMES)
    for seed in range(3):
        random.seed(seed)
        mine = augment.additive_noise(noisecat, clean)
        random.seed(seed)
        expected = reference_noise(augment, noisecat, clean)
        assert np.abs(mine - clean).max() > 1e-3
        np.testing.assert_allclose(mine, expected, rtol=0, atol=1e-12)


def test_with_frames_equals_a_fresh_augmentation_of_that_length(folders):
    shorter = MAX_FRAMES // 2
    fresh = DL.AugmentWAV(*folders, shorter)
    derived = DL.AugmentWAV(*folders, MAX_FRAMES).with_frames(shorter)
    assert (derived.max_frames, derived.max_audio) == (fresh.max_frames, fresh.max_audio)
    assert derived.noiselist == fresh.noiselist and derived.rir_files == fresh.rir_files
    audio = np.random.default_rng(0).standard_normal((1, fresh.max_audio)).astype(np.float32)
    for noisecat in ("noise", "speech", "music"):
        random.seed(7)
        expected = fresh.additive_noise(noisecat, audio)
        random.seed(7)
        np.testing.assert_array_equal(derived.additive_noise(noisecat, audio), expected)


def replay(augment, seed, categories):
    random.seed(seed)
    random.randint(0, 5)
    return [augment.pick_noise(category) for category in categories]


def seed_for_kind(kind):
    return next(s for s in range(1000) if random.seed(s) or random.randint(0, 5) == kind)


def test_sixth_augmentation_faithful_is_music_only(folders):
    seed = seed_for_kind(5)
    faithful = DL.AugmentWAV(*folders, MAX_FRAMES, sixth_augmentation="faithful")
    random.seed(seed)
    plan = faithful.draw()
    assert plan.rir is None and len(plan.noises) == 1
    torch.testing.assert_close(plan.noises[0], replay(faithful, seed, ["music"])[0], rtol=0, atol=0)
    fixed = DL.AugmentWAV(*folders, MAX_FRAMES, sixth_augmentation="babble_music")
    random.seed(seed)
    plan = fixed.draw()
    expected = replay(fixed, seed, ["speech", "music"])
    assert len(plan.noises) == 2
    for got, want in zip(plan.noises, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_babble_music_takes_music_gain_from_babbled_signal(folders, clean):
    augment = DL.AugmentWAV(*folders, MAX_FRAMES, sixth_augmentation="babble_music")
    random.seed(seed_for_kind(5))
    plan = augment.draw()
    babbled = clean + np.sqrt(np.mean(clean ** 2) + 1e-4) * plan.noises[0].numpy()
    expected = babbled + np.sqrt(np.mean(babbled ** 2) + 1e-4) * plan.noises[1].numpy()
    np.testing.assert_allclose(DL.AugmentWAV.apply(clean, plan), expected, rtol=0, atol=1e-12)


def test_six_kinds_drawn_with_equal_odds(folders, monkeypatch):
    augment = DL.AugmentWAV(*folders, MAX_FRAMES)
    drawn = []
    monkeypatch.setattr(augment, "pick_rir", lambda: drawn.append("rir") or torch.ones(3))
    monkeypatch.setattr(augment, "pick_noise", lambda c: drawn.append(c) or torch.zeros(SAMPLES))
    random.seed(0)
    plans = [augment.draw() for _ in range(3000)]
    none = sum(p.rir is None and not p.noises for p in plans)
    counts = {c: drawn.count(c) for c in ("rir", "music", "speech", "noise")}
    assert abs(none - 500) < 80 and abs(counts["rir"] - 500) < 80
    assert abs(counts["music"] - 1000) < 120 and abs(counts["speech"] - 500) < 80 and abs(counts["noise"] - 500) < 80


@pytest.mark.parametrize("sixth", ["faithful", "babble_music"])
def test_batched_plans_equal_per_sample_worker_path(folders, clean, sixth):
    augment = DL.AugmentWAV(*folders, MAX_FRAMES, sixth_augmentation=sixth)
    random.seed(1)
    plans = [AugmentPlan(None, ()), AugmentPlan(augment.pick_rir(), ())]
    plans += [AugmentPlan(None, tuple(augment.pick_noise(c) for c in cats)) for cats in augment.kind_noises[2:]]
    crops = [clean * (0.5 + i) for i in range(len(plans))]
    worker = np.concatenate([DL.AugmentWAV.apply(c, p) for c, p in zip(crops, plans)])
    tensors = augment.plan_tensors(plans)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = torch.from_numpy(np.concatenate(crops)).float().to(device)
    out = AA.augment_batch(batch, tensors["reverb"].to(device), tensors["rir"].to(device), tensors["noise"].to(device))
    worker = torch.from_numpy(worker).float()
    assert out.dtype == torch.float32
    relative = (out.cpu() - worker).abs().amax(dim=1) / worker.abs().amax(dim=1)
    assert relative.max() < 1e-4
    assert torch.equal(out[0].cpu(), batch[0].cpu())


def test_long_rir_is_cut_without_changing_output(clean):
    rng = np.random.default_rng(2)
    decay = np.exp(-np.arange(SAMPLES + 500) / 3000)
    rir = AA.unit_energy(torch.from_numpy(rng.standard_normal(SAMPLES + 500) * decay))
    full = AA.reverberate(torch.from_numpy(clean), rir)
    cut = AA.reverberate(torch.from_numpy(clean), rir[:SAMPLES])
    torch.testing.assert_close(full, cut, rtol=0, atol=1e-10)
    assert full.shape == clean.shape


def test_missing_or_incomplete_folders_are_named(tmp_path, folders):
    musan, rirs = folders
    with pytest.raises(InputError,
                       match=r"musan_path '.*nowhere' is not a folder; expected musan_path/\{music,speech,noise\}"):
        DL.AugmentWAV(str(tmp_path / "nowhere"), rirs, MAX_FRAMES)
    small = make_musan_like(tmp_path / "small", {"music": 1, "speech": 5, "noise": 1}, seconds=0.5)
    with pytest.raises(InputError, match="has 5 'speech' files, needs at least 8"):
        DL.AugmentWAV(small, rirs, MAX_FRAMES)
    with pytest.raises(InputError, match=r"rir_path '.*empty' holds no impulse responses"):
        DL.AugmentWAV(musan, str(tmp_path / "empty"), MAX_FRAMES)
    with pytest.raises(ValueError, match="sixth_augmentation"):
        DL.AugmentWAV(musan, rirs, MAX_FRAMES, sixth_augmentation="both")
