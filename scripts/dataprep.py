"""Prepare VoxCeleb1/2, MUSAN and the simulated RIRs from the archives you downloaded.

Each subcommand extracts, converts and checks one corpus, writing under ``--out`` the layout that
trainSpeakerNet.py and trainSpeakerNet_Eval.py read (docs/method.md §6):

    python scripts/dataprep.py voxceleb1 --archive vox1_dev_wav.zip --archive vox1_test_wav.zip --out data
    python scripts/dataprep.py voxceleb2 --archive vox2_dev_aac.zip --out data      # needs ffmpeg
    python scripts/dataprep.py musan     --archive musan.tar.gz --out data
    python scripts/dataprep.py rirs      --archive rirs_noises.zip --out data
    python scripts/dataprep.py trials    --list veri_test2.txt --list list_test_all2.txt \\
                                         --list list_test_hard2.txt --voxceleb1 data/voxceleb1 --out data
    python scripts/dataprep.py train_list --root data/voxceleb2 --output data/train_list.txt

gives ``data/voxceleb1/idXXXXX/VIDEO/NNNNN.wav`` (test_path), ``data/voxceleb2/...`` (train_path)
with ``data/train_list.txt``, ``data/musan_split/{music,speech,noise}/SOURCE/SSSSS.wav`` (musan_path),
``data/simulated_rirs/ROOMSIZE/RoomNNN/*.wav`` (rir_path) and ``data/trials/*.txt`` — for the data
folder ``data``, the options' default paths, so that no path option is needed.
An archive split into parts (``vox1_dev_wav_partaa`` ...) may be given part by part: the parts are
joined first. Every step leaves a marker in ``OUT/.dataprep/`` when it succeeds and is skipped on a
re-run; an interrupted step is redone, skipping the files already complete (each file is written
under a temporary name and renamed when whole). Counts and sample rates are checked against the
published figures: a difference is a warning (a subset is fine), or an error with ``--strict``.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import soundfile as sf

from dataio.trials import read_trial_list
from utils.atomic import atomic_open, atomic_path, atomic_write_text, check_distinct, check_writable
from utils.cli import error_status
from utils.errors import InputError
from utils.progress import progress_bar
from utils.steps import StepMarkers

SAMPLE_RATE = 16000
MARKER_DIR = ".dataprep"


@dataclass(frozen=True)
class Published:
    """Published size of a corpus."""

    speakers: int
    files: int


VOXCELEB1 = Published(speakers=1251, files=153516)  # dev 1,211 / 148,642 + test 40 / 4,874
VOXCELEB2_DEV = Published(speakers=5994, files=1092009)
MUSAN_FILES = {"music": 660, "speech": 426, "noise": 930}

TRIAL_LISTS: Dict[str, Tuple[str, int]] = {
    # official file name -> (our file name, published number of trials)
    "veri_test.txt": ("voxceleb1_o.txt", 37720),
    "veri_test2.txt": ("voxceleb1_o_clean.txt", 37611),
    "list_test_all.txt": ("voxceleb1_e.txt", 581480),
    "list_test_all2.txt": ("voxceleb1_e_clean.txt", 579818),
    "list_test_hard.txt": ("voxceleb1_h.txt", 552536),
    "list_test_hard2.txt": ("voxceleb1_h_clean.txt", 550894),
}

KNOWN_MD5 = {
    # as listed by voxceleb_trainer (lists/fileparts.txt, files.txt, augment.txt)
    "vox1_dev_wav.zip": "ae63e55b951748cc486645f532ba230b",
    "vox1_test_wav.zip": "185fdc63c3c739954633d50379a3d102",
    "vox2_dev_aac.zip": "bbc063c46078a602ca71605645c2a402",
    "vox2_test_aac.zip": "0d2b3ea430a821c33263b5ea37ede312",
    "musan.tar.gz": "0c472d4fc0c5141eca47ad1ffeb2a7df",
    "rirs_noises.zip": "e6f48e257286e05de56413b4779d8ffb",
}

_SPEAKER_ID = re.compile(r"^id\d{5}$")
_PART = re.compile(r"^(?P<stem>.+)_part[a-z]{2}$")


class DataprepError(InputError):
    """A failure the user can act on; the message names the archive, file or list involved."""


# ---------------------------------------------------------------------------------------------
# Step bookkeeping and reporting


class Steps:
    """The steps of one dataprep run; markers under ``OUT/.dataprep``; ``force`` redoes finished ones."""

    def __init__(self, out: Path, force: bool) -> None:
        self.markers = StepMarkers(out / MARKER_DIR)
        self.force = force

    def run(self, name: str, action: Callable[[], Dict]) -> None:
        if not self.force and self.markers.finished(name) is not None:
            print(f"[skip] {name}: done on a previous run ({self.markers.marker(name)})", flush=True)
            return
        print(f"[step] {name}", flush=True)
        self.markers.run(name, action)


def _mismatch(message: str, strict: bool) -> None:
    """A difference from the published figures: a warning, or an error under --strict."""
    if strict:
        raise DataprepError(message + " (--strict)")
    print(f"WARNING: {message}", flush=True)


def _check_count(what: str, found: int, published: int, strict: bool) -> None:
    if found == published:
        print(f"{what}: {found:,} as published", flush=True)
    elif found < published:
        _mismatch(f"{what}: {found:,} found, {published:,} published — a subset of the corpus", strict)
    else:
        _mismatch(f"{what}: {found:,} found, more than the {published:,} published", strict)


def check_sample_rates(files: Sequence[Path], n_checked: int, strict: bool, seed: int = 0) -> int:
    """Check that ``n_checked`` random files (all when 0) are 16 kHz mono; returns how many were read."""
    files = list(files)
    chosen = files if n_checked <= 0 or n_checked >= len(files) else random.Random(seed).sample(files, n_checked)
    wrong = []
    for path in chosen:
        info = sf.info(str(path))
        if info.samplerate != SAMPLE_RATE or info.channels != 1:
            wrong.append(f"{path} ({info.samplerate} Hz, {info.channels} channel(s))")
    if wrong:
        _mismatch(f"{len(wrong)} of {len(chosen)} checked files are not 16 kHz mono, e.g. {wrong[:3]}", strict)
    else:
        print(f"sample rate: {len(chosen):,} checked files are 16 kHz mono", flush=True)
    return len(chosen)


# ---------------------------------------------------------------------------------------------
# Archives


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise DataprepError(f"archive {path} not found: download it first (see the README's data section)")


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_md5(path: Path) -> None:
    """Compare ``path`` with its published checksum (archives of known name only)."""
    expected = KNOWN_MD5.get(path.name)
    if expected is None:
        print(f"md5: no published checksum for {path.name}", flush=True)
        return
    found = md5sum(path)
    if found != expected:
        raise DataprepError(f"archive {path}: md5 {found} differs from the published {expected}: "
                            "the download is corrupt or incomplete; download it again")
    print(f"md5: {path.name} matches the published checksum", flush=True)


def join_parts(archives: Sequence[Path], out: Path, steps: Steps) -> List[Path]:
    """Replace each group of ``NAME_partaa, NAME_partab, ...`` by the joined ``OUT/NAME.zip``."""
    groups: Dict[str, List[Path]] = defaultdict(list)
    whole: List[Path] = []
    for path in archives:
        match = _PART.match(path.name)
        if match:
            groups[match.group("stem")].append(path)
        else:
            whole.append(path)
    for stem, parts in sorted(groups.items()):
        target = out / f"{stem}.zip"

        def concatenate(parts: List[Path] = sorted(parts), target: Path = target) -> Dict:
            for part in parts:
                _require_file(part)
            with atomic_open(target, "wb") as sink:
                for part in progress_bar(parts, desc=f"joining {target.name}", unit="part"):
                    with open(part, "rb") as source:
                        shutil.copyfileobj(source, sink, 1 << 24)
            return {"parts": [str(p) for p in parts], "archive": str(target)}

        steps.run(f"join.{stem}", concatenate)
        whole.append(target)
    return whole


def _safe_relative(name: str, archive: Path) -> Path:
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise DataprepError(f"archive {archive}: member {name!r} points outside the extraction folder")
    return relative


Member = Tuple[str, int, Callable[[], IO[bytes]]]
"""An archive member: (name, size in bytes, open its content)."""

ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, gzip.BadGzipFile)


def _zip_members(handle: zipfile.ZipFile) -> Iterator[Member]:
    for info in handle.infolist():
        if not info.is_dir():
            yield info.filename, info.file_size, lambda info=info: handle.open(info)


def _tar_members(handle: tarfile.TarFile) -> Iterator[Member]:
    for info in handle:
        if info.isfile():
            yield info.name, info.size, lambda info=info: handle.extractfile(info)


def extract_archive(archive: Path, destination: Callable[[str], Optional[Path]], label: str) -> int:
    """Extract the members of a zip or tar (.tar, .tar.gz) for which ``destination(name)`` gives a path.

    Returns the number of such members. A member whose target already exists with the member's size
    is kept (resume after a crash); every other is written under a temporary name and renamed whole.
    """
    _require_file(archive)
    is_zip = archive.suffix == ".zip"
    count = 0
    current = None
    try:
        with (zipfile.ZipFile(archive) if is_zip else tarfile.open(archive, "r:*")) as handle:
            members = (_zip_members if is_zip else _tar_members)(handle)
            for current, size, open_member in progress_bar(members, desc=f"extracting {label}", unit="file"):
                target = destination(current)
                if target is None:
                    continue
                count += 1
                if target.exists() and target.stat().st_size == size:
                    continue
                with open_member() as source, atomic_open(target, "wb", durable=False) as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
    except ARCHIVE_ERRORS as err:
        where = f" at member {current!r}" if current is not None else ""
        raise DataprepError(f"archive {archive} is corrupt or incomplete{where} ({err}): "
                            "download it again (with --md5 to check it)") from err
    return count


def _speaker_layout(root: Path, archive: Path, suffix: str) -> Callable[[str], Optional[Path]]:
    """Map ``.../idXXXXX/VIDEO/NNNNN<suffix>`` members (any prefix: wav/, dev/aac/) to ``root/idXXXXX/...``."""

    def destination(name: str) -> Optional[Path]:
        parts = _safe_relative(name, archive).parts
        if len(parts) < 3 or not parts[-1].endswith(suffix) or not _SPEAKER_ID.match(parts[-3]):
            return None
        return root.joinpath(*parts[-3:])

    return destination


def scan_speaker_files(root: Path, suffix: str = ".wav") -> List[Path]:
    """``root/SPEAKER/VIDEO/FILE<suffix>`` files, sorted."""
    return sorted(root.glob(f"*/*/*{suffix}"))


def _verify_speaker_corpus(name: str, root: Path, published: Published, args: argparse.Namespace) -> Dict:
    files = scan_speaker_files(root)
    if not files:
        raise DataprepError(f"{name}: no idXXXXX/VIDEO/NNNNN.wav files under {root}")
    speakers = {f.parent.parent.name for f in files}
    _check_count(f"{name} speakers", len(speakers), published.speakers, args.strict)
    _check_count(f"{name} files", len(files), published.files, args.strict)
    checked = check_sample_rates(files, args.rate_check, args.strict)
    return {"speakers": len(speakers), "files": len(files), "rate_checked": checked}


def _archives(args: argparse.Namespace, out: Path, steps: Steps) -> List[Path]:
    archives = join_parts([Path(a) for a in args.archive], out, steps)
    for archive in archives:
        _require_file(archive)
        if args.md5:
            check_md5(archive)
    return archives


# ---------------------------------------------------------------------------------------------
# Subcommands


def cmd_voxceleb1(args: argparse.Namespace) -> None:
    out = Path(args.out)
    steps = Steps(out, args.force)
    root = out / "voxceleb1"
    for archive in _archives(args, out, steps):
        steps.run(f"voxceleb1.extract.{archive.name}", lambda archive=archive: {
            "files": extract_archive(archive, _speaker_layout(root, archive, ".wav"), archive.name)})
    steps.run("voxceleb1.verify", lambda: _verify_speaker_corpus("VoxCeleb1", root, VOXCELEB1, args))
    print(f"VoxCeleb1 ready: --test_path {root}", flush=True)


def find_ffmpeg(explicit: Optional[str]) -> str:
    found = shutil.which(explicit or "ffmpeg")
    if found is None:
        raise DataprepError(
            f"ffmpeg not found ({explicit or 'not on PATH'}): it converts VoxCeleb2's AAC (.m4a) files to "
            "16 kHz WAV. Install it (e.g. `apt-get install ffmpeg` or `conda install -c conda-forge ffmpeg`) "
            "or give its path with --ffmpeg")
    return found


def convert_to_wav(ffmpeg: str, source: Path, keep_source: bool) -> Optional[str]:
    """One file to 16 kHz mono 16-bit WAV beside it (skipped when done); returns an error text or None."""
    target = source.with_suffix(".wav")
    if not target.exists():
        try:
            with atomic_path(target, durable=False) as partial:
                command = [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(source), "-vn", "-ac", "1",
                           "-ar", str(SAMPLE_RATE), "-acodec", "pcm_s16le", "-f", "wav", partial]
                result = subprocess.run(command, capture_output=True, text=True)
                if result.returncode != 0:
                    raise DataprepError(f"{source}: ffmpeg exit {result.returncode}: {result.stderr.strip()[-300:]}")
        except DataprepError as error:
            return str(error)
    if not keep_source:
        source.unlink()
    return None


def convert_all(ffmpeg: str, root: Path, workers: int, keep_source: bool) -> Dict:
    sources = scan_speaker_files(root, ".m4a")
    failures = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for error in progress_bar(pool.map(lambda s: convert_to_wav(ffmpeg, s, keep_source), sources),
                                  total=len(sources), desc="m4a -> wav", unit="file"):
            if error is not None:
                failures.append(error)
    if failures:
        raise DataprepError(f"{len(failures)} of {len(sources)} conversions failed (re-run to retry them), "
                            "e.g.:\n  " + "\n  ".join(failures[:5]))
    return {"files": len(sources)}


def write_train_list(root: Path, output: Path) -> int:
    """``SPEAKER SPEAKER/VIDEO/NNNNN.wav`` for every wav under ``root``; returns the number of lines."""
    files = scan_speaker_files(root)
    if not files:
        raise DataprepError(f"no SPEAKER/VIDEO/FILE.wav files under {root}")
    lines = [f"{f.parent.parent.name} {f.relative_to(root).as_posix()}\n" for f in files]
    atomic_write_text(output, "".join(lines))
    print(f"wrote {output} ({len(lines):,} files, {len({f.parent.parent.name for f in files}):,} speakers)", flush=True)
    return len(lines)


def cmd_voxceleb2(args: argparse.Namespace) -> None:
    out = Path(args.out)
    steps = Steps(out, args.force)
    root = out / "voxceleb2"
    ffmpeg = find_ffmpeg(args.ffmpeg)
    for archive in _archives(args, out, steps):
        layout = _speaker_layout(root, archive, ".m4a")

        def destination(name: str, layout=layout) -> Optional[Path]:
            target = layout(name)
            return None if target is None or target.with_suffix(".wav").exists() else target

        steps.run(f"voxceleb2.extract.{archive.name}", lambda archive=archive, destination=destination: {
            "files": extract_archive(archive, destination, archive.name)})
    steps.run("voxceleb2.convert", lambda: convert_all(ffmpeg, root, args.workers, args.keep_m4a))
    steps.run("voxceleb2.verify", lambda: _verify_speaker_corpus("VoxCeleb2 dev", root, VOXCELEB2_DEV, args))
    steps.run("voxceleb2.train_list", lambda: {"lines": write_train_list(root, out / "train_list.txt")})
    print(f"VoxCeleb2 ready: --train_path {root} --train_list {out / 'train_list.txt'}", flush=True)


def _musan_layout(root: Path, archive: Path) -> Callable[[str], Optional[Path]]:
    def destination(name: str) -> Optional[Path]:
        parts = _safe_relative(name, archive).parts
        if "musan" not in parts:
            return None
        return root.joinpath(*parts[parts.index("musan") + 1:])

    return destination


def piece_starts(n_samples: int, piece: int, hop: int) -> List[int]:
    """Starts of the ``piece``-sample windows every ``hop`` samples; a shorter file is one piece."""
    return list(range(0, n_samples - piece + 1, hop)) or [0]


def split_musan(source_root: Path, split_root: Path, piece_seconds: float, hop_seconds: float) -> Dict:
    """Cut every ``{music,speech,noise}/COLLECTION/NAME.wav`` into ``split_root/KIND/NAME/SSSSS.wav`` pieces.

    SSSSS is the piece's start in seconds. The collection folder is dropped so that the pieces
    sit at the ``musan_path/*/*/*.wav`` depth the loader globs (file names are unique across
    collections: they start with the kind and the collection).
    """
    piece, hop = int(piece_seconds * SAMPLE_RATE), int(hop_seconds * SAMPLE_RATE)
    counts: Dict[str, int] = defaultdict(int)
    written = 0
    seen: Dict[Tuple[str, str], Path] = {}
    sources = sorted(p for kind in MUSAN_FILES for p in (source_root / kind).glob("*/*.wav"))
    if not sources:
        raise DataprepError(f"no MUSAN files {source_root}/{{music,speech,noise}}/*/*.wav: extract musan.tar.gz first")
    for source in progress_bar(sources, desc="splitting MUSAN", unit="file"):
        kind = source.parent.parent.name
        counts[kind] += 1
        key = (kind, source.stem)
        if key in seen:
            raise DataprepError(f"MUSAN files {seen[key]} and {source} would share the folder {kind}/{source.stem}")
        seen[key] = source
        info = sf.info(str(source))
        folder = split_root / kind / source.stem
        starts = piece_starts(info.frames, piece, hop)
        names = [folder / f"{start // SAMPLE_RATE:05d}.wav" for start in starts]
        if all(n.exists() for n in names):
            continue
        audio, rate = sf.read(str(source), dtype="int16")
        if rate != SAMPLE_RATE:
            raise DataprepError(f"MUSAN file {source} is sampled at {rate} Hz, expected {SAMPLE_RATE}")
        folder.mkdir(parents=True, exist_ok=True)
        for start, name in zip(starts, names):
            with atomic_path(name, durable=False) as partial:
                sf.write(partial, audio[start:start + piece], SAMPLE_RATE, format="WAV", subtype="PCM_16")
            written += 1
    return {"sources": dict(counts), "pieces_written": written}


def cmd_musan(args: argparse.Namespace) -> None:
    out = Path(args.out)
    steps = Steps(out, args.force)
    source_root, split_root = out / "musan", out / "musan_split"
    for archive in _archives(args, out, steps):
        steps.run(f"musan.extract.{archive.name}", lambda archive=archive: {
            "files": extract_archive(archive, _musan_layout(source_root, archive), archive.name)})

    def verify() -> Dict:
        for kind, published in MUSAN_FILES.items():
            _check_count(f"MUSAN {kind} files", len(list((source_root / kind).glob("*/*.wav"))), published, args.strict)
        return {}

    steps.run("musan.verify", verify)
    steps.run("musan.split", lambda: split_musan(source_root, split_root, args.piece_seconds, args.hop_seconds))
    print(f"MUSAN ready: --musan_path {split_root}", flush=True)


def cmd_rirs(args: argparse.Namespace) -> None:
    out = Path(args.out)
    steps = Steps(out, args.force)
    root = out / "simulated_rirs"
    rooms = set(args.rooms)
    for archive in _archives(args, out, steps):
        def destination(name: str, archive: Path = archive) -> Optional[Path]:
            parts = _safe_relative(name, archive).parts
            if "simulated_rirs" not in parts or not name.endswith(".wav"):
                return None
            inner = parts[parts.index("simulated_rirs") + 1:]
            return root.joinpath(*inner) if len(inner) == 3 and inner[0] in rooms else None

        steps.run(f"rirs.extract.{archive.name}", lambda archive=archive, destination=destination: {
            "files": extract_archive(archive, destination, archive.name)})

    def verify() -> Dict:
        files = sorted(root.glob("*/*/*.wav"))
        if not files:
            raise DataprepError(f"no simulated RIRs {root}/ROOMSIZE/RoomNNN/*.wav for rooms {sorted(rooms)}")
        by_room = {room: len(list((root / room).glob("*/*.wav"))) for room in sorted(rooms)}
        print(f"simulated RIRs: {len(files):,} files {by_room}", flush=True)
        return {"files": len(files), "by_room": by_room,
                "rate_checked": check_sample_rates(files, args.rate_check, args.strict)}

    steps.run("rirs.verify", verify)
    print(f"RIRs ready: --rir_path {root}", flush=True)


def prepare_trial_list(source: Path, voxceleb1: Path, out_dir: Path, strict: bool) -> Dict:
    """Check an official VoxCeleb1 list and write it under our name, keeping the trials whose files exist."""
    name, published = TRIAL_LISTS.get(source.name, (source.name, None))
    trials = read_trial_list(str(source))
    if trials.labels is None:
        raise DataprepError(f"{source}: an official list has 'LABEL ENROLL TEST' lines; this one has no labels")
    if published is not None:
        _check_count(f"{source.name} trials", len(trials), published, strict)
    present = {p.relative_to(voxceleb1).as_posix() for p in scan_speaker_files(voxceleb1)}
    labelled = zip(trials.labels.tolist(), trials.enroll, trials.test)
    kept = [(str(label), enroll, test) for label, enroll, test in labelled if enroll in present and test in present]
    if len(kept) < len(trials):
        missing = sorted(name for name in trials.files() if name not in present)
        _mismatch(f"{source.name}: {len(trials) - len(kept):,} trials name files missing from {voxceleb1} "
                  f"({len(missing):,} files, e.g. {missing[:3]}); they are left out", strict)
    if not kept:
        raise DataprepError(f"{source.name}: no trial has both files under {voxceleb1}")
    target = out_dir / name
    atomic_write_text(target, "".join(" ".join(t) + "\n" for t in kept))
    print(f"wrote {target} ({len(kept):,} trials, {sum(t[0] == '1' for t in kept):,} target)", flush=True)
    return {"source": str(source), "trials": len(kept), "left_out": len(trials) - len(kept)}


def cmd_trials(args: argparse.Namespace) -> None:
    out = Path(args.out)
    steps = Steps(out, args.force)
    voxceleb1 = Path(args.voxceleb1)
    if not voxceleb1.is_dir():
        raise DataprepError(f"VoxCeleb1 folder {voxceleb1} not found: run the voxceleb1 step first")
    sources = [Path(p) for p in args.list]
    check_distinct([("--out's trial list", out / "trials" / source.name) for source in sources],
                   [("--list", source) for source in sources])
    for source in sources:
        steps.run(f"trials.{source.name}", lambda source=source: prepare_trial_list(
            source, voxceleb1, out / "trials", args.strict))
    print(f"trial lists ready under {out / 'trials'} (use one as --test_list, with --test_path {voxceleb1})",
          flush=True)


def cmd_train_list(args: argparse.Namespace) -> None:
    check_writable(args.output, "--output")
    write_train_list(Path(args.root), Path(args.output))


# ---------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="The layout written: python -m pydoc scripts/dataprep.py",
                                     allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str, handler: Callable, archives: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        sub.set_defaults(handler=handler)
        if archives:
            sub.add_argument("--archive", action="append", required=True,
                             help="downloaded archive (repeat for several; parts NAME_partaa... are joined)")
            sub.add_argument("--md5", action="store_true", help="check archives against their published md5 first")
        if name != "train_list":
            sub.add_argument("--out", required=True, help="data folder to write into")
            sub.add_argument("--strict", action="store_true",
                             help="fail (instead of warning) when counts or sample rates differ from the "
                                  "published ones")
            sub.add_argument("--force", action="store_true", help="redo steps already marked done")
        return sub

    vox1 = add("voxceleb1", "extract VoxCeleb1 wav archives into OUT/voxceleb1", cmd_voxceleb1)
    vox2 = add("voxceleb2", "extract VoxCeleb2 aac archives into OUT/voxceleb2 as 16 kHz wav; write OUT/train_list.txt",
               cmd_voxceleb2)
    vox2.add_argument("--ffmpeg", help="ffmpeg executable (default: ffmpeg on PATH)")
    vox2.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel ffmpeg conversions")
    vox2.add_argument("--keep_m4a", action="store_true", help="keep the .m4a files after conversion")
    rirs = add("rirs", "extract the simulated RIRs of rirs_noises.zip into OUT/simulated_rirs", cmd_rirs)
    rirs.add_argument("--rooms", nargs="+", default=["smallroom", "mediumroom"],
                      choices=["smallroom", "mediumroom", "largeroom"], help="room sizes to extract")
    for sub in (vox1, vox2, rirs):
        sub.add_argument("--rate_check", type=int, default=1000,
                         help="check the sample rate of this many random files (0: all)")
    musan = add("musan", "extract MUSAN into OUT/musan and cut it into OUT/musan_split", cmd_musan)
    musan.add_argument("--piece_seconds", type=float, default=5.0, help="length of a piece")
    musan.add_argument("--hop_seconds", type=float, default=3.0, help="start-to-start distance of pieces")
    trials = add("trials", "check official VoxCeleb1 trial lists and write them to OUT/trials", cmd_trials,
                 archives=False)
    trials.add_argument("--list", action="append", required=True,
                        help="official list: veri_test2.txt (O clean), list_test_all2.txt (E clean), "
                             "list_test_hard2.txt (H clean) or the uncleaned versions")
    trials.add_argument("--voxceleb1", required=True, help="the prepared OUT/voxceleb1 folder")
    listing = add("train_list", "write a LABEL PATH training list from a SPEAKER/VIDEO/FILE.wav folder",
                  cmd_train_list, archives=False)
    listing.add_argument("--root", required=True, help="folder of SPEAKER/VIDEO/FILE.wav files")
    listing.add_argument("--output", required=True, help="list file to write")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return error_status(lambda: args.handler(args), prog=f"dataprep {args.command}")


if __name__ == "__main__":
    sys.exit(main())
