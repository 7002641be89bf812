"""Verification trial lists, read and checked *before* any model is built.

Three formats, told apart by the first trial:

- ``LABEL ENROLL TEST`` with LABEL 1 (target) or 0 (non-target): voxceleb_trainer's, scored and measured;
- ``ENROLL TEST target|nontarget``: Kaldi's ``trials`` file, scored and measured;
- ``ENROLL TEST``: scored only.

A typo in line 30,000 of VoxCeleb1-H, or a list with only one kind of trial, then costs a second,
not an hour of embedding.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from utils.errors import InputError
from utils.textfile import read_text_lines


class TrialListError(InputError):
    """A trial list that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class TrialList:
    """The trials of one list file, in file order.

    ``labels`` is None for an ``ENROLL TEST`` list; ``line_numbers[i]`` is the 1-based line of trial i;
    ``format`` is "label", "kaldi" or "pairs" (see the module doc).
    """

    path: str
    enroll: List[str]
    test: List[str]
    labels: Optional[np.ndarray]
    line_numbers: List[int]
    format: str = "label"

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


KALDI_LABELS = {"target": 1, "nontarget": 0}


def read_trial_list(path: str) -> TrialList:
    """Parse a trial list; blank lines are skipped, every trial must be in the first trial's format."""
    enroll: List[str] = []
    test: List[str] = []
    labels: List[int] = []
    line_numbers: List[int] = []
    kind: Optional[str] = None
    for number, line in enumerate(read_text_lines(path, "trial list"), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        if len(fields) not in (2, 3):
            raise TrialListError(f"{where}: expected 'LABEL ENROLL TEST', 'ENROLL TEST target|nontarget' or "
                                 f"'ENROLL TEST', got {len(fields)} fields: {line.strip()!r}")
        line_kind = "pairs" if len(fields) == 2 else "kaldi" if fields[2] in KALDI_LABELS else "label"
        if kind is None:
            kind = line_kind
        elif line_kind != kind and not (kind == "label" and len(fields) == 3):
            raise TrialListError(f"{where}: {line.strip()!r} is not in the format of the list's first trial "
                                 f"({FORMATS[kind]}); a list holds one format")
        if kind == "label":
            if fields[0] not in ("0", "1"):
                raise TrialListError(f"{where}: label must be 1 (target) or 0 (non-target), got {fields[0]!r}")
            labels.append(int(fields[0]))
            enroll.append(fields[1])
            test.append(fields[2])
        else:
            if kind == "kaldi":
                labels.append(KALDI_LABELS[fields[2]])
            enroll.append(fields[0])
            test.append(fields[1])
        line_numbers.append(number)
    if kind is None:
        raise TrialListError(f"trial list {path!r} holds no trials")
    label_array = None if kind == "pairs" else np.asarray(labels, dtype=np.int64)
    return TrialList(path, enroll, test, label_array, line_numbers, kind)


FORMATS = {"label": "'LABEL ENROLL TEST'", "kaldi": "'ENROLL TEST target|nontarget'", "pairs": "'ENROLL TEST'"}


def check_trial_labels(trials: TrialList) -> None:
    """A labelled list must hold target and non-target trials: error rates need both."""
    if trials.labels is not None and trials.labels.min() == trials.labels.max():
        kind = "target" if trials.labels[0] == 1 else "non-target"
        raise TrialListError(f"trial list {trials.path!r}: all {len(trials)} trials are {kind} trials; an EER "
                             "needs both target and non-target trials (or give an unlabelled 'ENROLL TEST' list "
                             "to score only)")


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
