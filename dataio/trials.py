"""Verification trial lists: ``LABEL ENROLL TEST`` (scored and measured) or ``ENROLL TEST`` (scored only).

A list is read and every file it names is checked *before* any model is built, so that a typo in
line 30,000 of VoxCeleb1-H costs a second, not an hour of embedding.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from utils.errors import InputError


class TrialListError(InputError):
    """A trial list that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class TrialList:
    """The trials of one list file, in file order.

    ``labels`` is None for an ``ENROLL TEST`` list; ``line_numbers[i]`` is the 1-based line of trial i.
    """

    path: str
    enroll: List[str]
    test: List[str]
    labels: Optional[np.ndarray]
    line_numbers: List[int]

    def __len__(self) -> int:
        return len(self.enroll)

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def files(self) -> List[str]:
        """Every file the trials name, once each, sorted (the embedding order)."""
        return sorted(set(self.enroll) | set(self.test))

    def first_lines(self) -> Dict[str, int]:
        """The first line on which each file appears."""
        first: Dict[str, int] = {}
        for line, enroll, test in zip(self.line_numbers, self.enroll, self.test):
            first.setdefault(enroll, line)
            first.setdefault(test, line)
        return first


def read_trial_list(path: str) -> TrialList:
    """Parse a trial list; blank lines are skipped, every other line must have the first line's field count."""
    if not os.path.isfile(path):
        raise TrialListError(f"trial list {path!r} does not exist")
    enroll: List[str] = []
    test: List[str] = []
    labels: List[int] = []
    line_numbers: List[int] = []
    n_fields: Optional[int] = None
    with open(path, "r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            where = f"{path}:{number}"
            if len(fields) not in (2, 3):
                raise TrialListError(f"{where}: expected 'LABEL ENROLL TEST' or 'ENROLL TEST', "
                                     f"got {len(fields)} fields: {line.strip()!r}")
            if n_fields is None:
                n_fields = len(fields)
            elif len(fields) != n_fields:
                raise TrialListError(f"{where}: {len(fields)} fields, but the list's first trial has {n_fields}; "
                                     "a list is either all 'LABEL ENROLL TEST' or all 'ENROLL TEST'")
            if n_fields == 3:
                if fields[0] not in ("0", "1"):
                    raise TrialListError(f"{where}: label must be 1 (target) or 0 (non-target), got {fields[0]!r}")
                labels.append(int(fields[0]))
            enroll.append(fields[-2])
            test.append(fields[-1])
            line_numbers.append(number)
    if not enroll:
        raise TrialListError(f"trial list {path!r} holds no trials")
    label_array = np.asarray(labels, dtype=np.int64) if n_fields == 3 else None
    return TrialList(path, enroll, test, label_array, line_numbers)


def check_trial_files(trials: TrialList, root: str) -> None:
    """Raise naming every missing file (up to ten) with the trial-list line that first names it."""
    first = trials.first_lines()
    missing = [name for name in trials.files() if not os.path.isfile(os.path.join(root, name))]
    if not missing:
        return
    missing.sort(key=lambda name: first[name])
    shown = "\n".join(f"  {trials.path}:{first[name]}: {os.path.join(root, name)}" for name in missing[:10])
    more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
    raise TrialListError(f"{len(missing)} file(s) named in the trial list do not exist under "
                         f"test_path {root!r}:\n{shown}{more}")
