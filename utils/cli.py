"""Entry-point wrapper: a reported error ends the script with one clear line, not a traceback."""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional

from utils.errors import TRACEBACK_ENV, ReportedError

REPORTED = (ReportedError, OSError)
"""Errors shown as one line: the project's own, and the operating system's (a disk full, a file
that cannot be opened), whose messages name the file. Anything else is a bug and keeps its traceback."""


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
        print(f"{prog or os.path.basename(sys.argv[0])}: error: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


def run_cli(main: Callable[[], Any]) -> None:
    """Run ``main()`` as a script's entry point: a reported error exits with status 1 (see :func:`error_status`)."""
    if error_status(main):
        sys.exit(1)
