"""The project's error types, and how an entry point reports them.

Library code raises :class:`InputError` (or a subclass) for anything the user can fix: a missing
or malformed file, a bad line of a list, an unknown config key, an option out of range. Its message
names the file, line, key or option and says what was expected. :class:`TrainingDiverged` stops a
training run whose weights or losses are no longer finite; :class:`WriteError` says which output
could not be written and why (a full disk). Entry points turn both into one line
and exit status 1 (:func:`utils.cli.run_cli`); every other exception is a bug and keeps its
traceback. ``WAVLM_SSL_SV_TRACEBACK=1`` shows the traceback of reported errors too.
"""
from __future__ import annotations

TRACEBACK_ENV = "WAVLM_SSL_SV_TRACEBACK"


class ReportedError(Exception):
    """An error an entry point reports as one line: the user can act on its message."""


class InputError(ReportedError, ValueError):
    """An input (file, list line, config key, option value) that cannot be used."""


class WriteError(ReportedError):
    """An output could not be written: the disk is full, a quota is reached, the file system is read-only."""


class TrainingDiverged(ReportedError, RuntimeError):
    """Training produced non-finite losses or weights; no checkpoint is written from that state."""
