"""Progress of long loops: a tqdm bar on a terminal, periodic plain lines in a log file.

A tqdm bar redraws itself with carriage returns, which fills a log file with thousands of partial
lines. When standard error is not a terminal, :class:`LineProgress` writes one complete line every
``interval`` seconds and one when the loop ends instead.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, Optional, TextIO, Union

from tqdm import tqdm

LINE_INTERVAL_S = 30.0
"""Seconds between two plain progress lines."""


class LineProgress:
    """The part of tqdm's interface the scripts use, written as plain lines."""

    def __init__(self, iterable: Optional[Iterable] = None, total: Optional[int] = None, desc: str = "",
                 unit: str = "it", disable: bool = False, interval: float = LINE_INTERVAL_S,
                 stream: Optional[TextIO] = None) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc = desc
        self.unit = unit
        self.disable = disable
        self.interval = interval
        self.stream = stream if stream is not None else sys.stderr
        self.n = 0
        self.postfix = ""
        self.started = self.last_line = time.perf_counter()
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None, "LineProgress was built without an iterable"
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last_line >= self.interval:
            self.last_line = now
            self._write(now)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write(time.perf_counter())

    def line(self, now: float) -> str:
        seconds = now - self.started
        count = f"{self.n}/{self.total}" if self.total else str(self.n)
        percent = f" ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
        rate = f", {self.n / seconds:.1f} {self.unit}/s" if seconds > 0 else ""
        extra = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {count} {self.unit}{percent} in {seconds:.0f} s{rate}{extra}"

    def _write(self, now: float) -> None:
        if not self.disable:
            print(self.line(now), file=self.stream, flush=True)


def progress_bar(iterable: Optional[Iterable] = None, *, total: Optional[int] = None, desc: str = "",
                 unit: str = "it", disable: bool = False, leave: bool = True) -> Union[tqdm, LineProgress]:
    """A tqdm bar when standard error is a terminal, else a :class:`LineProgress`.

    ``leave=False`` bars (short preliminary passes) write nothing when standard error is not a terminal.
    """
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave, dynamic_ncols=True)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, disable=disable or not leave)
