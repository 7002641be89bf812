"""Training lists: ``LABEL RELPATH`` per line, as voxceleb_trainer and the pseudo-labeller write them."""
from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

from utils.errors import InputError


def read_train_list(train_list: str) -> Tuple[List[str], List[str], List[int]]:
    """Parse ``LABEL RELPATH`` lines: (labels, relative paths, 1-based line numbers). Blank lines are skipped."""
    labels: List[str] = []
    paths: List[str] = []
    line_numbers: List[int] = []
    with open(train_list, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise InputError(
                    f"{train_list}:{number}: expected two fields 'LABEL RELPATH', got {len(fields)}: {line.strip()!r}"
                )
            labels.append(fields[0])
            paths.append(fields[1])
            line_numbers.append(number)
    if not labels:
        raise InputError(f"train list {train_list} has no entries; expected lines 'LABEL RELPATH'")
    return labels, paths, line_numbers


def check_listed_files(train_list: str, paths: Sequence[str], line_numbers: Sequence[int], train_path: str) -> None:
    """Raise an InputError naming the first few listed files that do not exist, with their list lines."""
    missing = missing_files(paths)
    if missing:
        shown = "; ".join(f"line {line_numbers[i]}: {paths[i]}" for i in missing[:5])
        raise InputError(
            f"{train_list}: {len(missing)} of {len(paths)} listed files do not exist "
            f"(train_path {train_path!r}); first: {shown}"
        )


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
