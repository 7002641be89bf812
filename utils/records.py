"""Machine-readable records of a run: what one stage hands to the next, instead of log text.

Training appends one JSON object per epoch to a ``.jsonl`` file, evaluation writes one JSON result
per checkpoint and trial list, pseudo-labelling writes a JSON summary; ``run_rounds.py`` builds its
table from these files. Every write is atomic. :class:`EpochLog` can also mirror the numbers to
TensorBoard (``torch.utils.tensorboard``, which needs the optional ``tensorboard`` package).
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional

from utils.atomic import atomic_write_text
from utils.errors import InputError


def _plain(value: Any) -> Any:
    """A JSON-safe copy: non-finite floats become None (JSON has no NaN), tuples become lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_json(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Write ``record`` as one indented JSON document, atomically."""
    atomic_write_text(path, json.dumps(_plain(record), indent=1) + "\n")


def read_json(path: str | os.PathLike) -> Dict[str, Any]:
    """A JSON document written by :func:`write_json`."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise InputError(f"{os.fspath(path)} is not valid JSON: {error}") from None


def read_records(path: str | os.PathLike) -> List[Dict[str, Any]]:
    """Every record of a ``.jsonl`` file, in order; an unreadable line is an error naming it."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise InputError(f"{os.fspath(path)}:{number}: not a JSON record ({error})") from None
    return records


class EpochLog:
    """Per-epoch records in ``path`` (JSON lines), and the same scalars in TensorBoard when asked.

    A record's numeric fields other than ``epoch`` become TensorBoard scalars named ``tag/field``
    at step ``epoch``.
    """

    def __init__(self, path: str | os.PathLike, tensorboard_dir: Optional[str] = None, tag: str = "train") -> None:
        self.path = path
        self.tag = tag
        self.writer = None
        if tensorboard_dir:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise InputError(f"--tensorboard needs the tensorboard package ({error}); "
                                 "pip install tensorboard, or leave --tensorboard off") from None
            self.writer = SummaryWriter(tensorboard_dir)

    def log(self, record: Mapping[str, Any]) -> None:
        """Add ``record``, dropping any earlier record of the same or a later epoch (an epoch redone after
        a kill between its record and its checkpoint)."""
        kept = [r for r in read_records(self.path) if r["epoch"] < record["epoch"]] if os.path.isfile(self.path) else []
        atomic_write_text(self.path, "".join(json.dumps(_plain(r)) + "\n" for r in [*kept, record]))
        if self.writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{self.tag}/{key}", value, record["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
