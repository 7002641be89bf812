"""Entry-point wrapper: a problem with the user's input ends the script with one clear line, not a traceback."""
from __future__ import annotations

import os
import sys
from typing import Any, Callable

from DatasetLoader import AudioReadError

INPUT_ERRORS = (OSError, ValueError, AudioReadError)
"""Raised, with a message naming the file / line / key, when an input is missing or malformed."""


def input_error_status(action: Callable[[], Any]) -> int:
    """Run ``action()``; return 0, or print ``script: error: message`` and return 1 on an input error.

    Set ``SSLSV_TRACEBACK=1`` to see the full traceback instead.
    """
    try:
        action()
    except INPUT_ERRORS as error:
        if os.environ.get("SSLSV_TRACEBACK"):
            raise
        print(f"{os.path.basename(sys.argv[0])}: error: {error}", file=sys.stderr)
        return 1
    return 0


def run_cli(main: Callable[[], Any]) -> None:
    """Run ``main()`` as a script's entry point: an input error exits with status 1 (see :func:`input_error_status`)."""
    if input_error_status(main):
        sys.exit(1)
