"""The demo's speech corpus: FSDD recordings joined into a VoxCeleb-like layout, lists and trials.

Layout (as VoxCeleb): ``ROOT/SPEAKER/SESSION/UTT.wav``; an embedding key or a list path is the
last three parts ``SPEAKER/SESSION/UTT.wav``. Any folder in that layout can replace the FSDD
corpus (``run_rounds.py --demo --data DIR``).
"""
from __future__ import annotations

import itertools
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from demo.noise import background
from utils.atomic import atomic_open, atomic_write_text
from utils.errors import InputError

FSDD_DIR = Path(__file__).resolve().parent / "fsdd" / "recordings"
"""The carried FSDD recordings (CC BY-SA 4.0, see demo/fsdd/LICENSE)."""

_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
AUDIO_SUFFIXES = (".wav", ".flac")


def _fsdd_groups(recordings_dir: Path, sessions: int) -> Dict[Tuple[str, int], List[Path]]:
    """FSDD files by (speaker, session); session k holds the k-th contiguous block of indices."""
    parsed = []
    for path in sorted(recordings_dir.iterdir()):
        match = _FSDD_NAME.match(path.name)
        if match is None:
            if path.suffix == ".wav":
                raise InputError(f"{path}: not an FSDD file name ('{{digit}}_{{speaker}}_{{index}}.wav')")
            continue
        parsed.append((match.group(2), int(match.group(3)), int(match.group(1)), path))
    if not parsed:
        raise InputError(f"no FSDD recordings ('{{digit}}_{{speaker}}_{{index}}.wav') in {recordings_dir}")
    n_indices = max(index for _, index, _, _ in parsed) + 1
    groups: Dict[Tuple[str, int], List[Path]] = defaultdict(list)
    for speaker, index, _digit, path in sorted(parsed):
        groups[(speaker, index * sessions // n_indices + 1)].append(path)
    return groups


def _chunk_sizes(total: int, low: int, high: int, rng: np.random.Generator) -> List[int]:
    """Random sizes in [low, high] summing to ``total``; a short remainder joins the last chunk."""
    sizes: List[int] = []
    while sum(sizes) < total:
        sizes.append(int(rng.integers(low, high + 1)))
    sizes[-1] -= sum(sizes) - total
    if sizes[-1] < low and len(sizes) > 1:
        sizes[-2] += sizes.pop()
    return sizes


def build_fsdd_corpus(out_root: str | os.PathLike, recordings_dir: str | os.PathLike = FSDD_DIR,
                      sessions: int = 5, digits_per_utterance: Tuple[int, int] = (3, 5),
                      gap_seconds: float = 0.1, background_snr_db: Optional[Tuple[float, float]] = (20.0, 35.0),
                      seed: int = 0) -> List[str]:
    """Join FSDD recordings of one speaker and session into utterances ``SPEAKER/SESSIONk/NNNNN.wav``.

    The files keep the recordings' sample rate (8 kHz) and 16-bit samples; ``gap_seconds`` of
    silence separate the joined digits. With ``background_snr_db`` = (low, high), each utterance is
    mixed with its own background (``demo.noise.background``: coloured noise, music or a voice-like
    buzz, drawn apart from the augmentation sets) at an SNR drawn uniformly from that range, as
    speech recorded in the wild. Deterministic for a given ``seed``. Returns the written paths
    relative to ``out_root``.
    """
    low, high = digits_per_utterance
    if not 1 <= low <= high:
        raise InputError(f"digits_per_utterance must be (low, high) with 1 <= low <= high, got {digits_per_utterance}")
    rng = np.random.default_rng(seed)
    background_rng = np.random.default_rng([seed, 1])
    written: List[str] = []
    for (speaker, session), paths in sorted(_fsdd_groups(Path(recordings_dir), sessions).items()):
        order = rng.permutation(len(paths))
        start = 0
        for number, size in enumerate(_chunk_sizes(len(paths), low, high, rng), start=1):
            pieces, rate = [], None
            for path in (paths[i] for i in order[start:start + size]):
                audio, file_rate = sf.read(str(path), dtype="int16")
                if rate is not None and file_rate != rate:
                    raise InputError(f"{path}: sample rate {file_rate} Hz differs from {rate} Hz of the other files")
                rate = file_rate
                pieces += [audio, np.zeros(int(round(gap_seconds * file_rate)), dtype=np.int16)]
            start += size
            relative = f"{speaker}/session{session}/{number:05d}.wav"
            target = Path(out_root) / relative
            audio = np.concatenate(pieces[:-1])
            if background_snr_db is not None:
                audio = _with_background(audio, rate, background_snr_db, background_rng)
            with atomic_open(target, "wb") as handle:
                sf.write(handle, audio, rate, format="WAV", subtype="PCM_16")
            written.append(relative)
    return written


def _with_background(speech: np.ndarray, rate: int, snr_db: Tuple[float, float],
                     rng: np.random.Generator) -> np.ndarray:
    """16-bit ``speech`` plus a background at an SNR drawn from ``snr_db``; scaled down only if it would clip."""
    clean = speech.astype(np.float64)
    noise = background(clean.size, rate, rng)
    snr = rng.uniform(*snr_db)
    gain = np.sqrt(np.mean(clean ** 2) / (np.mean(noise ** 2) * 10.0 ** (snr / 10.0)))
    mixed = clean + gain * noise
    peak = np.max(np.abs(mixed))
    if peak > 32767:
        mixed *= 32767 / peak
    return np.round(mixed).astype(np.int16)


def scan_corpus(root: str | os.PathLike) -> List[str]:
    """Every audio file of ``root`` in the ``SPEAKER/SESSION/UTT`` layout, as sorted relative paths."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"corpus folder {root} does not exist (expected SPEAKER/SESSION/UTT.wav files)")
    found, misplaced = [], []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in AUDIO_SUFFIXES or not path.is_file():
            continue
        relative = path.relative_to(root).as_posix()
        (found if relative.count("/") == 2 else misplaced).append(relative)
    if misplaced:
        raise InputError(f"{root}: {len(misplaced)} audio files are not at SPEAKER/SESSION/UTT depth, "
                         f"e.g. {misplaced[:3]}")
    if not found:
        raise InputError(f"{root}: no audio files ({', '.join(AUDIO_SUFFIXES)}) at SPEAKER/SESSION/UTT depth")
    return found


def link_speaker_files(data: str | os.PathLike, corpus: str | os.PathLike) -> List[str]:
    """Link ``DATA/SPEAKER/UTT.ext`` files to ``CORPUS/SPEAKER/s1/UTT.ext``, the three-part layout that
    embedding keys (speaker/session/file) need; returns the relative paths, sorted."""
    data, corpus = Path(data), Path(corpus)
    relative = []
    for source in sorted(p for p in data.glob("*/*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()):
        rel = f"{source.parent.name}/s1/{source.name}"
        target = corpus / rel
        if not target.is_symlink():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source.resolve())
        relative.append(rel)
    if not relative:
        raise InputError(f"{data}: no SPEAKER/UTT audio files ({', '.join(AUDIO_SUFFIXES)})")
    return relative


def split_by_speaker(relative_paths: Sequence[str], every: int) -> Tuple[List[str], List[str]]:
    """(training files, held-out files): every ``every``-th speaker in sorted order, with all its files,
    is held out, so that verification is on speakers training never saw."""
    speakers = sorted({path.split("/")[0] for path in relative_paths})
    held_out = set(speakers[::every])
    if every < 2 or len(held_out) < 2:
        raise InputError(f"holding out every {every}-th of {len(speakers)} speakers leaves "
                         f"{len(held_out)} for verification and {len(speakers) - len(held_out)} for training; "
                         "both need at least 2 (lower --held_out_every, at least 2)")
    return ([path for path in relative_paths if path.split("/")[0] not in held_out],
            [path for path in relative_paths if path.split("/")[0] in held_out])


def split_by_session(relative_paths: Sequence[str], test_sessions: int = 1) -> Tuple[List[str], List[str]]:
    """Hold out the last ``test_sessions`` sessions (in name order) of every speaker for testing.

    A speaker with no more sessions than that keeps all its files for training.
    """
    by_speaker: Dict[str, Dict[str, List[str]]] = defaultdict(lambda: defaultdict(list))
    for relative in relative_paths:
        speaker, session, _ = relative.split("/")
        by_speaker[speaker][session].append(relative)
    train, test = [], []
    for speaker in sorted(by_speaker):
        sessions = sorted(by_speaker[speaker])
        held_out = set(sessions[-test_sessions:]) if len(sessions) > test_sessions else set()
        for session in sessions:
            (test if session in held_out else train).extend(sorted(by_speaker[speaker][session]))
    if len({p.split("/")[0] for p in test}) < 2:
        raise InputError("the test split needs speakers with more than "
                         f"{test_sessions} session(s), and at least two of them: found "
                         f"{len({p.split('/')[0] for p in test})} (make SPEAKER/SESSION folders)")
    return train, test


def write_train_list(relative_paths: Iterable[str], path: str | os.PathLike) -> None:
    """``SPEAKER SPEAKER/SESSION/UTT.wav`` lines, as VoxCeleb2's train_list.txt."""
    atomic_write_text(path, "".join(f"{p.split('/')[0]} {p}\n" for p in relative_paths))


def make_trials(test_paths: Sequence[str], max_trials: int = 20000, seed: int = 0) -> List[Tuple[int, str, str]]:
    """Verification trials ``(label, enroll, test)`` over the test files.

    Every pair when there are at most ``max_trials`` of them (or ``max_trials`` is 0); otherwise
    ``max_trials`` distinct random pairs, half of them same-speaker (when that many exist).
    """
    paths = sorted(test_paths)
    speakers = [p.split("/")[0] for p in paths]
    n_pairs = len(paths) * (len(paths) - 1) // 2
    if max_trials == 0 or n_pairs <= max_trials:
        return [(int(speakers[i] == speakers[j]), paths[i], paths[j])
                for i, j in itertools.combinations(range(len(paths)), 2)]
    rng = np.random.default_rng(seed)
    by_speaker: Dict[str, List[int]] = defaultdict(list)
    for index, speaker in enumerate(speakers):
        by_speaker[speaker].append(index)
    groups = [members for members in by_speaker.values() if len(members) > 1]
    weights = np.array([len(g) * (len(g) - 1) / 2 for g in groups], dtype=np.float64)
    n_target = int(min(max_trials // 2, weights.sum()))
    n_total = int(n_target + min(max_trials - n_target, n_pairs - weights.sum()))
    chosen: set = set()
    while len(chosen) < n_target:
        group = groups[rng.choice(len(groups), p=weights / weights.sum())]
        i, j = sorted(rng.choice(group, size=2, replace=False).tolist())
        chosen.add((i, j))
    while len(chosen) < n_total:
        i, j = sorted(rng.choice(len(paths), size=2, replace=False).tolist())
        if speakers[i] != speakers[j]:
            chosen.add((i, j))
    return [(int(speakers[i] == speakers[j]), paths[i], paths[j]) for i, j in sorted(chosen)]


def write_trials(trials: Iterable[Tuple[int, str, str]], path: str | os.PathLike) -> None:
    """``LABEL ENROLL TEST`` lines, as the VoxCeleb1 trial lists."""
    atomic_write_text(path, "".join(f"{label} {enroll} {test}\n" for label, enroll, test in trials))
