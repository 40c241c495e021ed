"""Progress of long loops: a bar where someone watches it, plain lines in a batch job's log.

On a terminal or in Jupyter, `track` shows tqdm's bar (`tqdm.auto`: a widget in a notebook). Anywhere else
(a SLURM or nohup log file, a pipe) a bar's carriage returns pile up in the file, so the loop writes a plain
line to stderr every `LOG_SECONDS` and one when it ends, in tqdm's own format:

    train base64_swin:  40% 400/1000 [01:02<01:33,  6.43step/s, img_s=51.4, loss=0.0213]

`quiet()` turns both off, as the command line's `--quiet` does. Every long loop of the package goes through here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from numbers import Number
from typing import Any

from tqdm.auto import tqdm

LOG_SECONDS = 30.0  # between two plain lines of a loop that is not shown on a terminal
_LINE = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
_LINE_NO_TOTAL = "{desc}: {n_fmt} [{elapsed}, {rate_fmt}{postfix}]"
_quiet = False  # within `quiet()`
_clock = time.monotonic  # a module attribute, so that a test can run a loop on a fake clock


@contextmanager
def quiet() -> Iterator[None]:
    """No progress output from the loops run inside the block."""
    global _quiet
    before, _quiet = _quiet, True
    try:
        yield
    finally:
        _quiet = before


def track(iterable: Iterable | None = None, *, desc: str, total: int | None = None, initial: int = 0,
          unit: str = "it", enabled: bool = True) -> Any:
    """A progress display over `iterable`, or, without one, advanced by `update(n)`; either way with tqdm's
    `set_postfix(**values)` and `close()`. `enabled=False` (or `quiet()`) shows nothing."""
    if not enabled or _quiet:
        return tqdm(iterable, disable=True)
    if _watched():
        return tqdm(iterable, desc=desc, total=total, initial=initial, unit=unit)
    return LogLines(iterable, desc, total, initial, unit)


def _watched() -> bool:
    """Shown on a terminal, or in a Jupyter kernel (where tqdm.auto chose its notebook widget)."""
    in_jupyter = any(base.__module__ == "tqdm.notebook" for base in tqdm.__mro__)
    return in_jupyter or bool(getattr(sys.stderr, "isatty", lambda: False)())


class LogLines:
    """tqdm's interface for a log file: a plain line to stderr every `LOG_SECONDS` while the count moves,
    and one at the end (from `close()`, which a finished iteration calls)."""

    def __init__(self, iterable: Iterable | None, desc: str, total: int | None, initial: int, unit: str):
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.n = self.initial = initial
        self.written: int | None = None  # the count of the last line written
        self.postfix: str | None = None
        self.start = self.last = _clock()
        self.closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if _clock() - self.last >= LOG_SECONDS:
            self._write()

    def set_postfix(self, **values: Any) -> None:
        """As tqdm shows them: sorted by name, numbers shortened."""
        self.postfix = ", ".join(f"{key}={tqdm.format_num(value) if isinstance(value, Number) else value}"
                                 for key, value in sorted(values.items()))

    def close(self) -> None:
        if not self.closed and self.n != self.written:
            self._write()
        self.closed = True

    def __enter__(self) -> LogLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self) -> None:
        self.last = _clock()
        line = tqdm.format_meter(self.n, self.total, self.last - self.start, prefix=self.desc, unit=self.unit,
                                 postfix=self.postfix, initial=self.initial,
                                 bar_format=_LINE if self.total else _LINE_NO_TOTAL)
        print(line, file=sys.stderr, flush=True)
        self.written = self.n
