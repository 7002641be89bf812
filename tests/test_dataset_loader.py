"""Audio reading, crops, the training list, the datasets, prepare_batch and the sampler."""
import logging
import os
import random

import numpy as np
import pytest
import soundfile
import torch
import torchaudio.functional as AF

import DatasetLoader as DL
from dataio import audio as audio_io
from dataio.audio import AudioReadError, crop_samples, read_audio
from dataio.datasets import prepare_batch
from demo.noise import make_musan_like, make_rirs
from tests.data_factory import make_speaker_dataset
from utils.errors import InputError

# ----- the original's algorithms, restated independently (float64 soundfile reads, plain loops) -----

def reference_load(path, max_frames, evalmode=True, num_eval=5):
    max_audio = max_frames * 160 + 240
    audio, _ = soundfile.read(path)
    if audio.shape[0] <= max_audio:
        audio = np.pad(audio, (0, max_audio - audio.shape[0] + 1), "wrap")
    size = audio.shape[0]
    if evalmode:
        starts = np.linspace(0, size - max_audio, num=num_eval)
    else:
        starts = np.array([np.int64(random.random() * (size - max_audio))])
    if evalmode and max_frames == 0:
        return np.stack([audio]).astype(float)
    return np.stack([audio[int(s):int(s) + max_audio] for s in starts]).astype(float)


def reference_sampler(labels, n_per, max_seg, batch, seed, epoch, world, rank):
    g = torch.Generator()
    g.manual_seed(seed + epoch)
    order = torch.randperm(len(labels), generator=g).tolist()
    per_label = {}
    for index in order:
        per_label.setdefault(labels[index], []).append(index)
    groups, group_label = [], []
    for position, key in enumerate(sorted(per_label)):
        files = per_label[key]
        usable = min(len(files), max_seg)
        usable -= usable % n_per
        for start in range(0, usable, n_per):
            groups.append(files[start:start + n_per])
            group_label.append(position)
    mixed = torch.randperm(len(group_label), generator=g).tolist()
    taken_labels, taken = [], []
    for candidate in mixed:
        batch_start = len(taken_labels) - len(taken_labels) % batch
        if group_label[candidate] not in taken_labels[batch_start:]:
            taken_labels.append(group_label[candidate])
            taken.append(candidate)
    ordered = [groups[i] for i in taken]
    total = len(ordered) - len(ordered) % (batch * world)
    return ordered[int(rank / world * total):int((rank + 1) / world * total)]


@pytest.fixture(scope="module")
def speakers(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("vox"))
    list_path, entries = make_speaker_dataset(root, n_speakers=3, n_sessions=2, n_utts=2, seconds=(0.4, 1.2))
    return root, list_path, entries


def write_wav(path, audio, rate):
    soundfile.write(str(path), audio, rate, subtype="PCM_16")
    return str(path)


# ----- reading and cropping -----

def test_crop_samples():
    assert crop_samples(300) == 48240 and crop_samples(0) == 240


@pytest.mark.parametrize("seconds,max_frames,num_eval",
                         [(1.0, 50, 5), (0.2, 50, 3), (0.01, 0, 1), (1.0, 0, 5), (0.5, 300, 15)])
def test_loadwav_eval_matches_original(tmp_path, seconds, max_frames, num_eval):
    rng = np.random.default_rng(3)
    path = write_wav(tmp_path / "a.wav", 0.3 * rng.standard_normal(int(seconds * 16000)), 16000)
    mine = DL.loadWAV(path, max_frames, evalmode=True, num_eval=num_eval)
    expected = reference_load(path, max_frames, evalmode=True, num_eval=num_eval)
    assert mine.dtype == np.float64 and mine.shape == expected.shape
    np.testing.assert_array_equal(mine, expected)


@pytest.mark.parametrize("seconds", [1.3, 0.1])
def test_loadwav_train_matches_original_with_same_random_state(tmp_path, seconds):
    rng = np.random.default_rng(4)
    path = write_wav(tmp_path / "a.wav", 0.3 * rng.standard_normal(int(seconds * 16000)), 16000)
    for seed in range(5):
        random.seed(seed)
        mine = DL.loadWAV(path, 40, evalmode=False)
        random.seed(seed)
        expected = reference_load(path, 40, evalmode=False)
        np.testing.assert_array_equal(mine, expected)
    assert mine.shape == (1, crop_samples(40))


def test_resampling_matches_torchaudio(tmp_path, monkeypatch):
    monkeypatch.setattr(audio_io, "_warned", set())
    rng = np.random.default_rng(5)
    path = write_wav(tmp_path / "a8k.wav", 0.3 * rng.standard_normal(8000), 8000)
    raw, rate = soundfile.read(path, dtype="float32")
    expected = AF.resample(torch.from_numpy(raw), 8000, 16000).numpy()
    mine = read_audio(path)
    assert rate == 8000 and mine.shape == (16000,) and mine.dtype == np.float32
    np.testing.assert_array_equal(mine, expected)


def test_stereo_is_averaged_and_each_conversion_warns_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(audio_io, "_warned", set())
    rng = np.random.default_rng(6)
    stereo = 0.3 * rng.standard_normal((4000, 2))
    path = write_wav(tmp_path / "st.wav", stereo, 16000)
    path8k = write_wav(tmp_path / "a8k.wav", stereo[:, 0], 8000)
    pcm, _ = soundfile.read(path, dtype="float32")
    with caplog.at_level(logging.WARNING, logger="DatasetLoader"):
        mono = read_audio(path)
        read_audio(path)
        read_audio(path8k)
        read_audio(path8k)
    np.testing.assert_allclose(mono, (pcm[:, 0] + pcm[:, 1]) / 2, rtol=0, atol=1e-7)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "2 channels" in messages[0] and "8000 Hz" in messages[1]


def test_unreadable_audio_names_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(AudioReadError, match="bad.wav"):
        read_audio(str(bad))


# ----- the training list -----

def test_label_order_is_sorted_strings_and_attributes(tmp_path):
    for rel in ("a/x/1.wav", "a/x/2.wav", "b/y/1.wav"):
        os.makedirs(tmp_path / os.path.dirname(rel), exist_ok=True)
        write_wav(tmp_path / rel, np.zeros(400), 16000)
    listing = tmp_path / "list.txt"
    listing.write_text("2 a/x/1.wav\n\n10 a/x/2.wav\n1 b/y/1.wav\n")
    data = DL.train_dataset_loader(str(listing), False, "", "", 10, str(tmp_path))
    assert data.label_names == ["1", "10", "2"] and data.num_labels == 3
    assert data.data_label == [2, 1, 0]
    assert data.relative_paths == ["a/x/1.wav", "a/x/2.wav", "b/y/1.wav"]
    assert data.data_list[2] == os.path.join(str(tmp_path), "b/y/1.wav")
    assert data.line_numbers == [1, 3, 4]


def test_missing_files_are_reported_with_lines(speakers, tmp_path):
    root, _, entries = speakers
    listing = tmp_path / "list.txt"
    lines = [f"{label} {rel}" for label, rel in entries[:3]] + ["id9 nope/x/1.wav", "id9 nope/x/2.wav"]
    listing.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"2 of 5 listed files do not exist.*line 4: .*nope/x/1.wav; line 5"):
        DL.train_dataset_loader(str(listing), False, "", "", 10, root)


@pytest.mark.parametrize("text,pattern", [("", "has no entries"), ("\n \n", "has no entries"),
                                          ("a a/1.wav\nb\n", r"list.txt:2: expected two fields"),
                                          ("a a/1.wav extra\n", r"list.txt:1: expected two fields")])
def test_bad_train_lists(tmp_path, text, pattern):
    listing = tmp_path / "list.txt"
    listing.write_text(text)
    with pytest.raises(ValueError, match=pattern):
        DL.train_dataset_loader(str(listing), False, "", "", 10, str(tmp_path))


def test_unreadable_training_file_names_list_line(tmp_path):
    os.makedirs(tmp_path / "s")
    (tmp_path / "s" / "bad.wav").write_bytes(b"junk")
    listing = tmp_path / "list.txt"
    listing.write_text("\nspk s/bad.wav\n")
    data = DL.train_dataset_loader(str(listing), False, "", "", 10, str(tmp_path))
    with pytest.raises(AudioReadError, match=r"list.txt line 2: cannot read audio file .*bad.wav"):
        data[[0]]


# ----- items and batches -----

def locate(crop, audio):
    """Start of ``crop`` inside ``audio`` (wrap-padded like crop_audio), or None."""
    size = crop.shape[0]
    if audio.shape[0] <= size:
        audio = np.pad(audio, (0, size - audio.shape[0] + 1), "wrap")
    for start in np.flatnonzero(audio[: audio.shape[0] - size + 1] == crop[0]):
        if np.array_equal(audio[start:start + size], crop):
            return int(start)
    return None


def test_batch_rows_match_their_labels_and_paths(speakers):
    root, list_path, entries = speakers
    data = DL.train_dataset_loader(list_path, False, "", "", 20, root)
    sampler = DL.train_dataset_sampler(data, nPerSpeaker=2, max_seg_per_spk=4, batch_size=3, distributed=False, seed=7)
    loader = torch.utils.data.DataLoader(data, batch_size=3, sampler=sampler, num_workers=0, drop_last=True)
    batch = next(iter(loader))
    assert batch[0].shape == (3, 2, crop_samples(20)) and batch[0].dtype == torch.float32
    clean, augmented, labels, paths = prepare_batch(batch, torch.device("cpu"))
    assert clean.shape == (6, crop_samples(20)) and labels.dtype == torch.long and len(paths) == 6
    torch.testing.assert_close(clean, augmented, rtol=0, atol=0)
    label_of = {rel: data.label_names.index(label) for label, rel in entries}
    for row in range(6):
        assert labels[row].item() == label_of[paths[row]]
        audio = read_audio(os.path.join(root, paths[row])).astype(np.float64)
        assert locate(clean[row].numpy().astype(np.float64), audio) is not None
    assert labels[:3].tolist() == labels[3:].tolist()
    assert set(paths[:3]).isdisjoint(paths[3:])


def test_item_rejects_mixed_labels(speakers):
    root, list_path, entries = speakers
    data = DL.train_dataset_loader(list_path, False, "", "", 20, root)
    first_other = next(i for i, (label, _) in enumerate(entries) if label != entries[0][0])
    with pytest.raises(ValueError, match="share one label"):
        data[[0, first_other]]


def test_test_dataset_returns_eval_crops_and_whole_file(speakers):
    root, _, entries = speakers
    names = [rel for _, rel in entries[:2]]
    data = DL.test_dataset_loader(names, root, eval_frames=30, num_eval=4)
    crops, whole, name = data[1]
    path = os.path.join(root, names[1])
    assert name == names[1] and len(data) == 2
    np.testing.assert_array_equal(crops.numpy(), reference_load(path, 30, True, 4).astype(np.float32))
    np.testing.assert_array_equal(whole.numpy(), reference_load(path, 0, True, 4).astype(np.float32))
    assert whole.shape == (1, soundfile.info(path).frames)


def test_worker_init_fn_seeds_numpy_from_its_state():
    np.random.seed(11)
    first = int(np.random.get_state()[1][0])
    DL.worker_init_fn(3)
    value = np.random.random()
    np.random.seed(first + 3)
    assert value == np.random.random()


# ----- the sampler -----

class Labels:
    def __init__(self, labels):
        self.data_label = labels


@pytest.mark.parametrize("n_per,max_seg,batch", [(1, 5, 4), (2, 5, 3), (1, 500, 8)])
def test_sampler_matches_original(n_per, max_seg, batch):
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 23, size=300).tolist()
    seed = 20211202
    for epoch in (1, 2):
        single = DL.train_dataset_sampler(Labels(labels), n_per, max_seg, batch, False, seed)
        single.set_epoch(epoch)
        assert list(single) == reference_sampler(labels, n_per, max_seg, batch, seed, epoch, 1, 0)
        assert len(single) == len(list(single)) and len(single) % batch == 0
        blocks = []
        for rank in (0, 1):
            part = DL.train_dataset_sampler(Labels(labels), n_per, max_seg, batch, True, seed,
                                            num_replicas=2, rank=rank)
            part.set_epoch(epoch)
            blocks.append(list(part))
            assert blocks[-1] == reference_sampler(labels, n_per, max_seg, batch, seed, epoch, 2, rank)
        assert len(blocks[0]) == len(blocks[1]) > 0 and len(blocks[0]) % batch == 0
        flat = [i for group in blocks[0] + blocks[1] for i in group]
        assert len(flat) == len(set(flat))
        global_order = reference_sampler(labels, n_per, max_seg, batch, seed, epoch, 1, 0)
        assert blocks[0] + blocks[1] == global_order[:len(blocks[0]) * 2]
        for block in blocks:
            for start in range(0, len(block), batch):
                batch_labels = [labels[group[0]] for group in block[start:start + batch]]
                assert len(set(batch_labels)) == batch
                assert all(len({labels[i] for i in group}) == 1 for group in block[start:start + batch])
    counts = np.bincount(labels)
    one = DL.train_dataset_sampler(Labels(labels), n_per, max_seg, batch, False, seed)
    assert max(np.bincount([labels[i] for g in one for i in g], minlength=23)) <= min(max_seg, counts.max())


def test_sampler_epochs_differ_and_are_reproducible():
    labels = list(range(40)) * 3
    a = DL.train_dataset_sampler(Labels(labels), 1, 500, 10, False, 1)
    b = DL.train_dataset_sampler(Labels(labels), 1, 500, 10, False, 1)
    a.set_epoch(1)
    b.set_epoch(1)
    first = list(a)
    assert first == list(b)
    a.set_epoch(2)
    assert list(a) != first


def test_sampler_rejects_bad_rank():
    with pytest.raises(ValueError, match="rank 2 is outside world size 2"):
        DL.train_dataset_sampler(Labels([0, 1]), 1, 5, 1, True, 0, num_replicas=2, rank=2)


# ----- augmentation through the dataset -----

@pytest.fixture(scope="module")
def noise_folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("aug")
    return make_musan_like(base / "musan", seconds=1), make_rirs(base / "rirs")


@pytest.mark.parametrize("sixth", ["faithful", "babble_music"])
def test_device_augmentation_equals_worker_augmentation(speakers, noise_folders, sixth):
    root, list_path, _ = speakers
    musan, rirs = noise_folders
    kwargs = dict(train_list=list_path, augment=True, musan_path=musan, rir_path=rirs, max_frames=20,
                  train_path=root, sixth_augmentation=sixth)
    worker = DL.train_dataset_loader(**kwargs)
    device = DL.train_dataset_loader(augment_on_device=True, **kwargs)
    collate = torch.utils.data.default_collate
    groups = [[i] for i in range(len(worker))]
    random.seed(12)
    worker_batch = collate([worker[g] for g in groups])
    random.seed(12)
    device_batch = collate([device[g] for g in groups])
    assert isinstance(device_batch[1], dict) and device_batch[1]["noise"].shape[2] == (1 if sixth == "faithful" else 2)
    clean_w, aug_w, labels_w, paths_w = prepare_batch(worker_batch, torch.device("cpu"))
    clean_d, aug_d, labels_d, paths_d = prepare_batch(device_batch, torch.device("cpu"))
    torch.testing.assert_close(clean_w, clean_d, rtol=0, atol=0)
    assert torch.equal(labels_w, labels_d) and paths_w == paths_d
    scale = aug_w.abs().amax(dim=1)
    assert ((aug_d - aug_w).abs().amax(dim=1) / scale).max() < 1e-4
    changed = (aug_w - clean_w).abs().amax(dim=1) > 1e-3
    assert changed.sum() >= len(groups) // 3


def test_a_byte_order_mark_makes_no_phantom_label_and_repeated_lines_are_counted(tmp_path, caplog):
    for name in ("a/s/1.wav", "a/s/2.wav", "b/s/1.wav"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(str(tmp_path / name), np.zeros(8000, dtype=np.float32), 16000)
    listing = tmp_path / "list.txt"
    listing.write_bytes("\ufeffspk1 a/s/1.wav\nspk1 a/s/2.wav\nspk2 b/s/1.wav\nspk1 a/s/1.wav\n".encode("utf-8"))
    with caplog.at_level("WARNING"):
        data = DL.train_dataset_loader(str(listing), False, "", "", 10, str(tmp_path))
    assert data.label_names == ["spk1", "spk2"] and data.data_label == [0, 0, 1, 0]
    assert "1 lines list a file already listed (first: line 4 repeats line 1)" in caplog.text


def test_a_train_list_that_is_not_utf8_names_its_line(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"spk1 a/s/1.wav\nspk1 a/s/caf\xe9.wav\n")
    with pytest.raises(InputError, match=r"list.txt:2: train list is not UTF-8 text \(byte 0xe9\)"):
        DL.train_dataset_loader(str(listing), False, "", "", 10, str(tmp_path))
