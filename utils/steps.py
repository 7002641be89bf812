"""Resumable sequences of steps: a finished step leaves a done-marker and is skipped on the next run.

``run_rounds.py`` (the self-supervised loop) and ``scripts/dataprep.py`` (corpus preparation) both
run long steps that an interruption must not repeat; this is their one marker mechanism. A marker is
``FOLDER/<step>.done``, a JSON record of what the step returned, how long it took and when it
finished, written atomically only after the step succeeded.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from utils.records import read_json, write_json


class StepMarkers:
    """Done-markers of the steps of one run, in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def marker(self, name: str) -> Path:
        return self.folder / f"{name}.done"

    def finished(self, name: str) -> Optional[Dict[str, Any]]:
        """The record of step ``name`` if it finished on an earlier run, else None."""
        marker = self.marker(name)
        return read_json(marker) if marker.is_file() else None

    def run(self, name: str, action: Callable[[], Optional[Dict[str, Any]]], **record: Any) -> Dict[str, Any]:
        """Run ``action``; then mark the step done with what it returned, ``record``, seconds and finish time."""
        begun = time.time()
        result = dict(action() or {}, **record)
        result.update(seconds=round(time.time() - begun, 1), finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        write_json(self.marker(name), result)
        return result
