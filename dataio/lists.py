"""Training lists: ``LABEL RELPATH`` per line, as voxceleb_trainer and the pseudo-labeller write them."""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Sequence, Tuple

from dataio.audio import audio_problem
from dataio.embedding_store import keyed_paths
from utils.distributed import all_gather_objects, get_rank, get_world_size, is_main_process
from utils.errors import InputError
from utils.progress import progress_bar
from utils.textfile import read_text_lines

logger = logging.getLogger(__name__)


def read_train_list(train_list: str) -> Tuple[List[str], List[str], List[int]]:
    """Parse ``LABEL RELPATH`` lines: (labels, relative paths, 1-based line numbers). Blank lines are skipped.

    A file listed more than once is kept as often as it is listed (the original trains it that often)
    and logged as a warning with the count.
    """
    labels: List[str] = []
    paths: List[str] = []
    line_numbers: List[int] = []
    first_line: Dict[str, int] = {}
    repeats: List[Tuple[int, int]] = []
    for number, line in enumerate(read_text_lines(train_list, "train list"), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise InputError(
                f"{train_list}:{number}: expected two fields 'LABEL RELPATH', got {len(fields)}: {line.strip()!r}"
            )
        if fields[1] in first_line:
            repeats.append((number, first_line[fields[1]]))
        first_line.setdefault(fields[1], number)
        labels.append(fields[0])
        paths.append(fields[1])
        line_numbers.append(number)
    if not labels:
        raise InputError(f"train list {train_list} has no entries; expected lines 'LABEL RELPATH'")
    if repeats:
        logger.warning("%s: %d lines list a file already listed (first: line %d repeats line %d); each line is "
                       "used, so those files count more than once per epoch", train_list, len(repeats), *repeats[0])
    return labels, paths, line_numbers


def checked_train_list(train_list: str, train_path: str) -> Tuple[List[str], List[str], List[int], List[str]]:
    """(labels, relative paths, line numbers, absolute paths under ``train_path``) of a train list whose
    files all exist; missing files are an error naming their lines."""
    labels, relative, line_numbers = read_train_list(train_list)
    paths = [os.path.abspath(os.path.join(train_path, rel)) for rel in relative]
    check_listed_files(train_list, paths, line_numbers, train_path)
    return labels, relative, line_numbers, paths


def listed_files(train_list: str, train_path: str) -> Tuple[List[str], List[str]]:
    """(absolute paths, embedding keys) of the list's files, each key once, in list order.

    A file listed again is embedded once (logged); missing files are an error naming their lines.
    """
    _, _, line_numbers, paths = checked_train_list(train_list, train_path)
    keyed = keyed_paths(paths, [f"{train_list}:{number}" for number in line_numbers])
    return list(keyed.values()), list(keyed)


def check_listed_files(train_list: str, paths: Sequence[str], line_numbers: Sequence[int], train_path: str) -> None:
    """Raise an InputError naming the first few listed files that do not exist, with their list lines."""
    missing = missing_files(paths)
    if missing:
        shown = "; ".join(f"line {line_numbers[i]}: {paths[i]}" for i in missing[:5])
        raise InputError(
            f"{train_list}: {len(missing)} of {len(paths)} listed files do not exist "
            f"(train_path {train_path!r}); first: {shown}"
        )


def check_listed_audio(train_list: str, paths: Sequence[str], line_numbers: Sequence[int],
                       threads: int = 8) -> None:
    """``--check_audio``: read every listed file in full before epoch 1 and raise an InputError naming, at once,
    every file training cannot use (:func:`dataio.audio.audio_problem`: unreadable, empty, NaN or inf,
    digital silence), instead of failing when the sampler first picks one, hours into the run.

    NaN and silence lie in the samples, which no header shows, so this costs one read of the audio: the
    files are read ``threads`` at a time (the reads wait on the disk, not on Python), and under torchrun each
    process reads its share; every process then raises the same error. Collective.
    """
    rank, world = get_rank(), get_world_size()
    share = list(range(rank, len(paths), world))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        problems = list(progress_bar(pool.map(audio_problem, [paths[i] for i in share]), total=len(share),
                                     desc="Checking the audio", unit="file", disable=not is_main_process()))
    found = [(index, problem) for index, problem in zip(share, problems) if problem]
    bad = sorted(item for part in all_gather_objects(found) for item in part)
    if bad:
        shown = "\n".join(f"  line {line_numbers[index]}: {paths[index]} {problem}" for index, problem in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise InputError(f"{train_list}: {len(bad)} of {len(paths)} listed files cannot be trained on "
                         f"(--check_audio false skips this check):\n{shown}{more}")


def missing_files(paths: Sequence[str]) -> List[int]:
    """Indices of ``paths`` that are not in their folder, listing each folder once (fast on network disks)."""
    listings: Dict[str, frozenset] = {}
    missing = []
    for index, path in enumerate(paths):
        folder, name = os.path.split(path)
        if folder not in listings:
            try:
                listings[folder] = frozenset(os.listdir(folder))
            except OSError:
                listings[folder] = frozenset()
        if name not in listings[folder]:
            missing.append(index)
    return missing
