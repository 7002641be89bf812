"""Entry-point wrapper: a reported error ends the script with one clear line, not a traceback."""
from __future__ import annotations

import os
import re
import sys
from typing import Any, Callable, Optional

from utils.errors import TRACEBACK_ENV, ReportedError

REPORTED = (ReportedError, OSError)
"""Errors shown as one line: the project's own, and the operating system's (a disk full, a file
that cannot be opened), whose messages name the file. Anything else is a bug and keeps its traceback."""


_WORKER_ERROR = re.compile(r"^Caught (\w+) in DataLoader worker process (\d+)\.\nOriginal Traceback", re.S)


def one_line(error: BaseException) -> str:
    """The message of ``error``; for an error that a DataLoader worker re-raised with the worker's whole
    traceback in its message, only the original message and the worker's number."""
    text = str(error)
    worker = _WORKER_ERROR.match(text)
    if worker is None:
        return text
    name, number = worker.groups()
    at = text.rfind(f"{name}: ")
    message = text[at + len(name) + 2:].strip() if at >= 0 else text.rstrip().splitlines()[-1]
    return f"{message} (in data-loader worker {number})"


def error_status(action: Callable[[], Any], prog: Optional[str] = None) -> int:
    """Run ``action()``; return 0, or print ``PROG: error: message`` and return 1 on a reported error.

    ``prog`` defaults to the script's file name.

    Set ``WAVLM_SSL_SV_TRACEBACK=1`` to see the full traceback instead.
    """
    try:
        action()
    except REPORTED as error:
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(f"{prog or os.path.basename(sys.argv[0])}: error: {one_line(error)}", file=sys.stderr, flush=True)
        return 1
    return 0


def run_cli(main: Callable[[], Any]) -> None:
    """Run ``main()`` as a script's entry point: a reported error exits with status 1 (see :func:`error_status`)."""
    if error_status(main):
        sys.exit(1)
