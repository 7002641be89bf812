"""scripts/dataprep.py on tiny fabricated archives with the real corpora's folder structure."""
import io
import os
import stat
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import dataio.trials as trial_lists
from DatasetLoader import train_dataset_loader
from scripts import dataprep


def wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def tone(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(int(seconds * rate))).astype(np.float32).clip(-1, 1)


def make_zip(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


VOX1_DEV = {"wav/id10001/vidA/00001.wav": 0.3, "wav/id10001/vidA/00002.wav": 0.4, "wav/id10002/vidB/00001.wav": 0.5}
VOX1_TEST = {"wav/id10270/vidC/00001.wav": 0.3, "wav/id10270/vidD/00001.wav": 0.35}


@pytest.fixture
def vox1_archives(tmp_path):
    dev = make_zip(tmp_path / "vox1_dev_wav.zip",
                   {name: wav_bytes(tone(sec, seed=i)) for i, (name, sec) in enumerate(VOX1_DEV.items())})
    test = make_zip(tmp_path / "vox1_test_wav.zip",
                    {name: wav_bytes(tone(sec, seed=9 + i)) for i, (name, sec) in enumerate(VOX1_TEST.items())})
    return dev, test


def run(argv, capsys):
    code = dataprep.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_voxceleb1_layout_counts_and_resume(tmp_path, vox1_archives, capsys):
    dev, test = vox1_archives
    out = tmp_path / "data"
    code, stdout, _ = run(["voxceleb1", "--archive", dev, "--archive", test, "--out", out], capsys)
    assert code == 0
    with zipfile.ZipFile(dev) as archive:
        assert (out / "voxceleb1/id10001/vidA/00002.wav").read_bytes() == archive.read("wav/id10001/vidA/00002.wav")
    files = sorted(p.relative_to(out / "voxceleb1").as_posix() for p in (out / "voxceleb1").rglob("*.wav"))
    assert files == sorted(name[len("wav/"):] for name in {**VOX1_DEV, **VOX1_TEST})
    assert "VoxCeleb1 speakers: 3 found, 1,251 published — a subset" in stdout
    assert "VoxCeleb1 files: 5 found, 153,516 published — a subset" in stdout
    assert "5 checked files are 16 kHz mono" in stdout
    assert not list(out.rglob("*.partial"))

    code, stdout, _ = run(["voxceleb1", "--archive", dev, "--archive", test, "--out", out], capsys)
    assert code == 0
    assert stdout.count("[skip]") == 3 and "[step]" not in stdout

    code, _, stderr = run(["voxceleb1", "--archive", dev, "--archive", test, "--out", out, "--strict", "--force"],
                          capsys)
    assert code == 1 and "1,251 published — a subset of the corpus (--strict)" in stderr


def test_interrupted_extraction_is_redone(tmp_path, vox1_archives, capsys):
    dev, _ = vox1_archives
    out = tmp_path / "data"
    assert run(["voxceleb1", "--archive", dev, "--out", out], capsys)[0] == 0
    whole = out / "voxceleb1/id10002/vidB/00001.wav"
    expected = whole.read_bytes()
    # What a kill leaves: one file never written, another one's temporary half, no done-marker.
    (out / "voxceleb1/id10001/vidA/00001.wav").unlink()
    whole.unlink()
    (whole.parent / (whole.name + ".partial")).write_bytes(expected[:100])
    (out / ".dataprep/voxceleb1.extract.vox1_dev_wav.zip.done").unlink()
    code, stdout, _ = run(["voxceleb1", "--archive", dev, "--out", out], capsys)
    assert code == 0 and "[step] voxceleb1.extract.vox1_dev_wav.zip" in stdout
    assert whole.read_bytes() == expected
    assert (out / "voxceleb1/id10001/vidA/00001.wav").is_file()


def test_archive_parts_are_joined(tmp_path, vox1_archives, capsys):
    dev, _ = vox1_archives
    data = dev.read_bytes()
    parts = [tmp_path / "vox1_dev_wav_partaa", tmp_path / "vox1_dev_wav_partab"]
    parts[0].write_bytes(data[: len(data) // 2])
    parts[1].write_bytes(data[len(data) // 2:])
    out = tmp_path / "data"
    code, stdout, _ = run(["voxceleb1", "--archive", parts[1], "--archive", parts[0], "--out", out], capsys)
    assert code == 0 and (out / "vox1_dev_wav.zip").read_bytes() == data
    assert len(list((out / "voxceleb1").rglob("*.wav"))) == 3


def test_corrupt_missing_and_checksum_errors_name_the_archive(tmp_path, vox1_archives, capsys):
    out = tmp_path / "data"
    garbage = tmp_path / "vox1_test_wav.zip"
    garbage.write_bytes(b"this is not a zip file" * 10)
    code, _, stderr = run(["voxceleb1", "--archive", garbage, "--out", out], capsys)
    assert code == 1 and f"archive {garbage} is corrupt or incomplete" in stderr

    dev, _ = vox1_archives
    data = bytearray(dev.read_bytes())
    with zipfile.ZipFile(dev) as archive:
        info = archive.getinfo("wav/id10001/vidA/00002.wav")
    data[info.header_offset + 30 + len(info.filename) + 200] ^= 0xFF  # one byte of that member's samples
    damaged = tmp_path / "damaged" / "vox1_dev_wav.zip"
    damaged.parent.mkdir()
    damaged.write_bytes(bytes(data))
    code, _, stderr = run(["voxceleb1", "--archive", damaged, "--out", out], capsys)
    assert code == 1 and f"archive {damaged} is corrupt" in stderr and "wav/id10001/vidA/00002.wav" in stderr

    code, _, stderr = run(["rirs", "--archive", tmp_path / "rirs_noises.zip", "--out", out], capsys)
    assert code == 1 and f"archive {tmp_path / 'rirs_noises.zip'} not found" in stderr

    fake = tmp_path / "musan.tar.gz"
    fake.write_bytes(b"\x1f\x8b" + b"\x00" * 50)
    code, _, stderr = run(["musan", "--archive", fake, "--out", out, "--md5"], capsys)
    assert code == 1 and "differs from the published 0c472d4fc0c5141eca47ad1ffeb2a7df" in stderr
    code, _, stderr = run(["musan", "--archive", fake, "--out", out], capsys)
    assert code == 1 and f"archive {fake} is corrupt or incomplete" in stderr


FAKE_FFMPEG = """\
    #!{python}
    # Test stand-in for ffmpeg: decodes with soundfile (the fabricated .m4a files hold WAV data)
    # and resamples to the -ar rate, writing 16-bit WAV to the last argument.
    import sys
    import soundfile as sf
    from scipy.signal import resample_poly
    args = sys.argv[1:]
    audio, rate = sf.read(args[args.index("-i") + 1], dtype="float32")
    target = int(args[args.index("-ar") + 1])
    sf.write(args[-1], resample_poly(audio, target, rate), target, format="WAV", subtype="PCM_16")
"""


def test_voxceleb2_conversion_and_train_list(tmp_path, capsys):
    members = {"dev/aac/id00012/21Uxsk56VDQ/00001.m4a": 0.5, "dev/aac/id00012/21Uxsk56VDQ/00002.m4a": 0.6,
               "dev/aac/id00015/0fijmz4vTVU/00001.m4a": 0.7}
    archive = make_zip(tmp_path / "vox2_dev_aac.zip",
                       {name: wav_bytes(tone(sec, 8000, seed=i), 8000)
                        for i, (name, sec) in enumerate(members.items())})
    ffmpeg = tmp_path / "ffmpeg"
    ffmpeg.write_text(textwrap.dedent(FAKE_FFMPEG.format(python=sys.executable)))
    ffmpeg.chmod(ffmpeg.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "data"
    code, stdout, _ = run(["voxceleb2", "--archive", archive, "--out", out, "--ffmpeg", ffmpeg, "--workers", 2], capsys)
    assert code == 0
    root = out / "voxceleb2"
    assert not list(root.rglob("*.m4a"))
    info = sf.info(str(root / "id00015/0fijmz4vTVU/00001.wav"))
    assert (info.samplerate, info.channels, info.frames) == (16000, 1, 11200)  # 0.7 s at 8 kHz -> 16 kHz
    assert (out / "train_list.txt").read_text().splitlines() == [
        "id00012 id00012/21Uxsk56VDQ/00001.wav", "id00012 id00012/21Uxsk56VDQ/00002.wav",
        "id00015 id00015/0fijmz4vTVU/00001.wav"]
    assert "VoxCeleb2 dev speakers: 2 found, 5,994 published — a subset" in stdout
    dataset = train_dataset_loader(str(out / "train_list.txt"), augment=False, musan_path="", rir_path="",
                                   max_frames=20, train_path=str(root))
    assert dataset.num_labels == 2 and len(dataset.data_list) == 3


def test_voxceleb2_without_ffmpeg_stops_before_extracting(tmp_path, capsys):
    archive = make_zip(tmp_path / "vox2_dev_aac.zip", {"dev/aac/id00012/v/00001.m4a": b"x"})
    out = tmp_path / "data"
    code, _, stderr = run(["voxceleb2", "--archive", archive, "--out", out, "--ffmpeg", tmp_path / "no-ffmpeg"], capsys)
    assert code == 1 and "ffmpeg not found" in stderr and "--ffmpeg" in stderr
    assert not (out / "voxceleb2").exists()


def test_musan_pieces(tmp_path, capsys):
    sources = {"musan/music/fma/music-fma-0000.wav": tone(12.0, seed=1),
               "musan/noise/free-sound/noise-free-sound-0000.wav": tone(3.0, seed=2),
               "musan/speech/librivox/speech-librivox-0000.wav": tone(10.0, seed=3)}
    archive = tmp_path / "musan.tar.gz"
    with tarfile.open(archive, "w:gz") as handle:
        for name, data in {**{n: wav_bytes(a) for n, a in sources.items()}, "musan/README": b"readme"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            handle.addfile(info, io.BytesIO(data))
    out = tmp_path / "data"
    code, stdout, _ = run(["musan", "--archive", archive, "--out", out], capsys)
    assert code == 0 and "MUSAN music files: 1 found, 660 published" in stdout
    split = out / "musan_split"
    pieces = sorted(p.relative_to(split).as_posix() for p in split.glob("*/*/*.wav"))
    # 5 s pieces every 3 s: 12 s -> starts 0, 3, 6; 10 s -> 0, 3; a 3 s file is one (short) piece.
    assert pieces == ["music/music-fma-0000/00000.wav", "music/music-fma-0000/00003.wav",
                      "music/music-fma-0000/00006.wav", "noise/noise-free-sound-0000/00000.wav",
                      "speech/speech-librivox-0000/00000.wav", "speech/speech-librivox-0000/00003.wav"]
    music, _ = sf.read(str(out / "musan/music/fma/music-fma-0000.wav"), dtype="int16")
    piece, rate = sf.read(str(split / "music/music-fma-0000/00006.wav"), dtype="int16")
    assert rate == 16000 and np.array_equal(piece, music[6 * 16000: 11 * 16000])
    assert sf.info(str(split / "noise/noise-free-sound-0000/00000.wav")).frames == 3 * 16000


def test_rirs_keep_the_chosen_rooms(tmp_path, capsys):
    rir = wav_bytes(tone(0.2, seed=4))
    archive = make_zip(tmp_path / "rirs_noises.zip", {
        "RIRS_NOISES/simulated_rirs/smallroom/Room001/Room001-00001.wav": rir,
        "RIRS_NOISES/simulated_rirs/smallroom/rir_list": b"list",
        "RIRS_NOISES/simulated_rirs/mediumroom/Room002/Room002-00001.wav": rir,
        "RIRS_NOISES/simulated_rirs/largeroom/Room003/Room003-00001.wav": rir,
        "RIRS_NOISES/real_rirs_isotropic_noises/RVB2014_type1_rir_largeroom1_near_angla.wav": rir})
    out = tmp_path / "data"
    code, stdout, _ = run(["rirs", "--archive", archive, "--out", out], capsys)
    assert code == 0
    root = out / "simulated_rirs"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "mediumroom/Room002/Room002-00001.wav", "smallroom/Room001/Room001-00001.wav"]
    assert "--rir_path" in stdout


def test_trial_lists(tmp_path, vox1_archives, capsys):
    dev, test = vox1_archives
    out = tmp_path / "data"
    assert run(["voxceleb1", "--archive", dev, "--archive", test, "--out", out], capsys)[0] == 0
    official = tmp_path / "veri_test2.txt"
    official.write_text("1 id10270/vidC/00001.wav id10270/vidD/00001.wav\n"
                        "0 id10270/vidC/00001.wav id10001/vidA/00001.wav\n"
                        "0 id10270/vidC/00001.wav id10309/gone/00001.wav\n")
    code, stdout, _ = run(["trials", "--list", official, "--voxceleb1", out / "voxceleb1", "--out", out], capsys)
    assert code == 0
    assert "veri_test2.txt trials: 3 found, 37,611 published — a subset" in stdout
    assert "1 trials name files missing" in stdout
    written = out / "trials/voxceleb1_o_clean.txt"
    assert written.read_text().splitlines() == official.read_text().splitlines()[:2]
    parsed = trial_lists.read_trial_list(str(written))
    trial_lists.check_trial_files(parsed, str(out / "voxceleb1"))
    assert parsed.labels.tolist() == [1, 0]

    bad = tmp_path / "list_test_hard2.txt"
    bad.write_text("1 a/b/c.wav a/b/d.wav\nyes a/b/c.wav a/b/d.wav\n")
    code, _, stderr = run(["trials", "--list", bad, "--voxceleb1", out / "voxceleb1", "--out", out], capsys)
    assert code == 1 and f"{bad}:2: label must be 1 (target) or 0 (non-target), got 'yes'" in stderr


def test_train_list_from_an_existing_folder(tmp_path, capsys):
    root = tmp_path / "wavs"
    for rel in ("id00002/v1/00001.wav", "id00001/v9/00002.wav", "id00001/v9/00001.wav"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(root / rel), tone(0.1), 16000)
    code, _, _ = run(["train_list", "--root", root, "--output", tmp_path / "list.txt"], capsys)
    assert code == 0
    assert (tmp_path / "list.txt").read_text().splitlines() == [
        "id00001 id00001/v9/00001.wav", "id00001 id00001/v9/00002.wav", "id00002 id00002/v1/00001.wav"]
    assert not os.path.exists(tmp_path / ".dataprep")
