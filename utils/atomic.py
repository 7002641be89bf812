"""Write outputs so that a crash never leaves a half-written file that looks whole.

Everything is written to a temporary file in the destination's folder and renamed over the
destination only once it is complete (``os.replace`` is atomic on POSIX and Windows). Temporary
files are named ``.<name>.<random>.tmp``, get the permissions a plain ``open()`` would give under
the user's umask, and are removed when the write fails.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from typing import IO, Any, Iterator, List, Optional, Sequence, Tuple

import torch

from utils.errors import InputError, WriteError

TEMPORARY_SUFFIX = ".tmp"


def check_writable(path: str | os.PathLike, what: str = "output") -> None:
    """Fail now, not after hours of work, when ``path`` (a file to be written) cannot be written.

    Writes a temporary file in ``path``'s folder, or in the nearest folder above it that exists when it does
    not yet, and removes it. No folder is made (the writers make them when they write): a run that fails
    later leaves none behind, and the processes of a torchrun group, which all check, never remove a
    folder another one is probing. Raises an InputError naming ``what`` and the path when ``path`` is a
    folder or cannot be written.
    """
    shown = os.fspath(path)
    if os.path.isdir(path):
        raise InputError(f"cannot write {what} {shown}: it is a folder; give a file name")
    existing = os.path.dirname(os.path.abspath(shown))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise InputError(f"cannot write {what} {shown}: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", suffix=TEMPORARY_SUFFIX, dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as error:
        raise InputError(f"cannot write {what} {shown}: {error.strerror or error}") from None


def _same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name one file: the same path after links, or a hard link of it."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return False


def check_distinct(outputs: Sequence[Tuple[str, Optional[str | os.PathLike]]],
                   inputs: Sequence[Tuple[str, Optional[str | os.PathLike]]] = ()) -> None:
    """Refuse an output that names an input or another output: writing it would destroy the other file.

    ``outputs`` and ``inputs`` are ``(option, path)`` pairs (a path of None is not given). Call it before any
    work, with every file the command reads and writes; the error names both options and the path.
    """
    given_outputs = [(name, os.fspath(path)) for name, path in outputs if path]
    given_inputs = [(name, os.fspath(path)) for name, path in inputs if path]
    for index, (output, path) in enumerate(given_outputs):
        for other, other_path in given_inputs:
            if _same_file(path, other_path):
                raise InputError(f"{output} {path} is the file {other} names: writing it would destroy that "
                                 "input; give another output file")
        for other, other_path in given_outputs[:index]:
            if _same_file(path, other_path):
                raise InputError(f"{output} {path} is the file {other} names: one output would overwrite the "
                                 "other; give two different files")


_TEMPORARY_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}" + re.escape(TEMPORARY_SUFFIX) + "$")


def remove_stale_temporaries(folder: str | os.PathLike) -> List[str]:
    """Remove the temporary files that killed writers left in ``folder`` (this module's naming only).

    Call it when a run starts, before anything writes there. Returns the removed paths.
    """
    removed = []
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if _TEMPORARY_NAME.match(name) and os.path.isfile(path):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                    removed.append(path)
    return removed


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _write_failure(error: BaseException) -> Optional[OSError]:
    """The out-of-space (or read-only) OSError behind ``error``, if any.

    ``torch.save`` reports a failed write as ``RuntimeError: ... unexpected pos``, with the OSError as
    its context, so the chain of causes is searched.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _WRITE_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None


def _umask() -> int:
    """The process's umask, read from /proc where there is one.

    Elsewhere it is set and restored at once; the umask is shared by every thread, so in between a
    directory made by another thread (parallel extraction) would get mode 0777. Reading it changes nothing.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
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
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        failure = _write_failure(error)
        if failure is not None:
            raise WriteError(f"cannot write {path}: {failure.strerror.lower()}") from error
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
