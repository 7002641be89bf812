"""Entry-point wrapper: a problem with the user's input ends the script with one clear line, not a traceback."""
from __future__ import annotations

import os
import sys
from typing import Any, Callable

from DatasetLoader import AudioReadError

INPUT_ERRORS = (OSError, ValueError, AudioReadError)
"""Raised, with a message naming the file / line / key, when an input is missing or malformed."""


def run_cli(main: Callable[[], Any]) -> None:
    """Run ``main()``; on an input error print ``script: error: message`` and exit with status 1.

    Set ``SSLSV_TRACEBACK=1`` to see the full traceback instead.
    """
    try:
        main()
    except INPUT_ERRORS as error:
        if os.environ.get("SSLSV_TRACEBACK"):
            raise
        print(f"{os.path.basename(sys.argv[0])}: error: {error}", file=sys.stderr)
        sys.exit(1)
