"""Reading the project's text inputs (train lists, trial lists, configs, loss files) with clear errors."""
from __future__ import annotations

import codecs
import os
from typing import List

from utils.errors import InputError


def read_text_lines(path: str | os.PathLike, what: str) -> List[str]:
    """The lines of the UTF-8 text file ``path`` (a leading byte-order mark dropped), without line ends.

    Lines end at ``\\n``, ``\\r\\n`` or ``\\r``. A missing file, a folder, or bytes that are not UTF-8
    raise an InputError naming ``what`` (e.g. "train list"), the file and, for bad bytes, the line.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{what} {path} is a folder, not a file") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        start = error.start + (len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0)
        line = raw[:start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: {what} is not UTF-8 text (byte 0x{raw[start]:02x}); "
                         "save it as UTF-8") from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return lines[:-1] if lines[-1] == "" else lines
