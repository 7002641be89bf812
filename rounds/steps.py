"""The driver's steps: each is the command a user would type, run with its output shown and logged.

A finished step leaves ``BASE/.steps/<step>.done`` (utils/steps.py), which records the size and
modification time of every file the step read (its inputs) and of every file it wrote (its outputs). When
the driver runs again, a finished step whose inputs and outputs are unchanged is skipped; one whose inputs
changed (an earlier step was redone, or a file was replaced) is redone, after its stale outputs are
removed, and so is one whose output another step rewrote (the MFCC and DINO bootstraps write the same
initial embeddings); a failed step leaves nothing and runs again. One driver at a time works in a
folder (:class:`FolderLock`).
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from utils.errors import InputError
from utils.steps import StepMarkers


class DriverError(InputError):
    """A problem the user can fix; the message says what and where."""


@dataclass
class Step:
    """One unit of work: a command line (built when the step runs) or an in-process action.

    ``inputs`` (evaluated when the step comes up) lists the files it reads; ``outputs`` the files and
    folders it writes, removed before the step is redone on changed inputs (a training run would
    otherwise resume from the checkpoints of the old inputs).
    """

    name: str
    title: str
    command: Optional[Callable[[], List[str]]] = None
    action: Optional[Callable[[], None]] = None
    inputs: Callable[[], Sequence[Path]] = lambda: ()
    outputs: Sequence[Path] = ()


def fingerprint(paths: Sequence[Path]) -> Dict[str, Optional[List[int]]]:
    """``{path: [size, modification time in ns]}`` of each file (None for one that does not exist)."""
    found: Dict[str, Optional[List[int]]] = {}
    for path in paths:
        try:
            info = os.stat(path)
            found[str(path)] = [info.st_size, info.st_mtime_ns]
        except FileNotFoundError:
            found[str(path)] = None
    return found


def remove_outputs(paths: Sequence[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


class FolderLock:
    """An exclusive lock on ``FOLDER/.lock`` for the life of this process: a second driver in the same folder
    stops at once with the first one's process id, instead of both writing the same files."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / ".lock"
        self.handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "unknown"
            self.handle.close()
            raise DriverError(f"another run_rounds.py (process {holder}) is running in {folder}: wait for it to "
                              "finish, or stop it, or use another --base_path") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"{os.getpid()}\n")
        self.handle.flush()


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the driver dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class StepRunner:
    """Runs steps in order, streaming their output to the console and to ``BASE/logs/<step>.log``."""

    def __init__(self, base: Path, env: Dict[str, str], dry_run: bool = False) -> None:
        self.base = base
        self.env = env
        self.dry_run = dry_run
        self.markers = StepMarkers(base / ".steps")
        self.started = time.time()

    def run_all(self, steps: Sequence[Step]) -> None:
        for index, step in enumerate(steps, start=1):
            self.run(step, f"[{index}/{len(steps)}]")

    def run(self, step: Step, counter: str) -> None:
        clock = time.strftime("%H:%M:%S", time.gmtime(time.time() - self.started))
        command = step.command() if step.command is not None else None
        record = self.markers.finished(step.name)
        inputs = fingerprint(step.inputs()) if not self.dry_run else {}
        if record is not None and not self.dry_run:
            marker = self.markers.marker(step.name)
            changed = [path for path, value in inputs.items() if record.get("inputs", inputs).get(path) != value]
            recorded_outputs = record.get("outputs", {})
            rewritten = [path for path, value in fingerprint([Path(p) for p in recorded_outputs]).items()
                         if recorded_outputs[path] != value]
            if not changed and not rewritten:
                print(f"{counter} {clock} skip {step.title}: done {record['finished']} ({marker})", flush=True)
                if record["command"] != command:
                    print(f"    note: it was run with another command ({shlex.join(record['command'] or [])}); "
                          f"delete {marker} to run it again", flush=True)
                return
            reason = (f"its input {changed[0]} changed" if changed else
                      f"its output {rewritten[0]} was rewritten by another step")
            print(f"{counter} {clock} redo {step.title}: {reason} since it was done {record['finished']}", flush=True)
            remove_outputs(step.outputs)
        shown = shlex.join(command) if command is not None else "(in-process)"
        print(f"\n{counter} {clock} ==== {step.title} ====\n$ {shown}", flush=True)
        if self.dry_run:
            return

        def execute() -> Dict[str, Dict[str, Optional[List[int]]]]:
            if command is None:
                step.action()
            else:
                log = self.base / "logs" / f"{step.name}.log"
                status = run_logged(command, self.env, log)
                if status != 0:
                    raise DriverError(f"step {step.title} failed (exit status {status}); its output is in {log}. "
                                      "Fix the cause and run the same command again: finished steps are skipped")
            return {"outputs": fingerprint([path for path in step.outputs if not path.is_dir()])}

        record = self.markers.run(step.name, execute, command=command, inputs=inputs)
        print(f"{counter} {step.title}: done in {record['seconds']:.0f} s", flush=True)


def run_logged(command: List[str], env: Dict[str, str], log: Path) -> int:
    """Run ``command``, copying its output to our stdout and appending it to ``log``; return its status.

    If the driver is interrupted (Ctrl-C, SIGTERM) the child is terminated before the driver exits.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as sink:
        sink.write(f"\n$ {shlex.join(command)}  # {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                 preexec_fn=_die_with_parent)
        try:
            while chunk := os.read(child.stdout.fileno(), 1 << 16):
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
                sink.write(chunk)
            return child.wait()
        finally:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
