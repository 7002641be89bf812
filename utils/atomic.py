"""Write outputs so that a crash never leaves a half-written file that looks whole.

Everything is written to a temporary file in the destination's folder and renamed over the
destination only once it is complete (``os.replace`` is atomic on POSIX and Windows). Temporary
files are named ``.<name>.<random>.tmp``, get the permissions a plain ``open()`` would give under
the user's umask, and are removed when the write fails.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Any, Iterator

import torch

TEMPORARY_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = True) -> Iterator[str]:
    """A temporary path beside ``path`` for a writer that needs a file name (ffmpeg, soundfile).

    When the block succeeds the temporary file is renamed to ``path``; on an exception it is removed
    and ``path`` is left untouched. ``durable`` fsyncs the file before the rename, so that the
    rename never exposes unwritten data after a power loss; bulk extraction of a million small
    files turns it off.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=TEMPORARY_SUFFIX, dir=folder)
    try:
        os.close(fd)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; outputs are shared on clusters
        yield tmp_path
        if durable:
            fd = os.open(tmp_path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", durable: bool = True, **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it to ``path`` when the block succeeds (:func:`atomic_path`)."""
    if not any(m in mode for m in "wx"):
        raise ValueError(f"atomic_open writes files; mode {mode!r} has no 'w'")
    with atomic_path(path, durable) as tmp_path:
        with open(tmp_path, mode.replace("x", "w"), **kwargs) as handle:
            yield handle


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_open`."""
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def atomic_append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line to a small log file by rewriting it atomically: never left half-written."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            previous = handle.read()
    except FileNotFoundError:
        previous = ""
    if previous and not previous.endswith("\n"):
        previous += "\n"
    atomic_write_text(path, previous + line.rstrip("\n") + "\n")
