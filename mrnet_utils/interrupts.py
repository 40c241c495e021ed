"""Stopping on SIGTERM and SIGINT: at the next safe point (training), or at once but cleanly.

SIGTERM is what a batch scheduler sends before it kills a job (SLURM at the time limit with
`--signal`, and at preemption); SIGINT is Ctrl-C, and a notebook's "interrupt kernel". Left
to Python's defaults, SIGTERM ends the process on the spot (no `finally` runs, temporary files
stay) and SIGINT raises KeyboardInterrupt wherever the program happens to be.

- `raise_on_stop_signals`: either signal raises `Interrupted` in the main thread, so that
  `finally` blocks and the atomic writer (files.write_atomically) clean up before the process
  exits. The command line runs every command under it.
- `StopRequest`: either signal is only recorded, for a loop that checks `requested` at the end
  of each step and stops there, its work saved (training.loop.train). A second signal while the
  first is pending raises `Interrupted` at once, for a user who will not wait; one within
  `repeat_window` seconds of the first is the same request arriving twice (Ctrl-C reaches torchrun
  and its workers, and torchrun passes it on to them again) and is ignored.

Both install their handlers only in the main thread (Python delivers signals there alone) and
restore the previous ones on exit. The exit code of a process stopped this way is the shell's
convention, 128 + the signal number: 143 for SIGTERM, 130 for SIGINT.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from types import FrameType
from typing import Callable, Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """A stop signal ended the work. A BaseException, as KeyboardInterrupt is, so that no `except Exception`
    mistakes it for a failure of the step it interrupted."""

    def __init__(self, signum: int, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.signum = signum
        self.parameter = parameter  # the argument that continues the work, as MRNetError.parameter names one

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def raise_on_stop_signals(what: str = "the work") -> Iterator[None]:
    """SIGTERM and SIGINT raise `Interrupted` ("{signal} stopped {what}") while the block runs."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum, f"{signal.Signals(signum).name} stopped {what}")

    with _handlers(stop):
        yield


class StopRequest:
    """Records the first SIGTERM or SIGINT (`requested`: its number, or None) for a loop to act on."""

    def __init__(self, what: str = "the work", repeat_window: float = 5.0) -> None:
        self.what, self.repeat_window = what, repeat_window
        self.requested: int | None = None
        self._first = 0.0

    def __enter__(self) -> "StopRequest":
        self._context = _handlers(self._record)
        self._context.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._context.__exit__(*exc_info)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is None:
            self.requested, self._first = signum, time.monotonic()
        elif time.monotonic() - self._first > self.repeat_window:
            raise Interrupted(signum, f"a second {signal.Signals(signum).name} stopped {self.what} at once")


@contextmanager
def _handlers(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, signal.SIG_DFL if old is None else old)  # None: a handler set outside Python


__all__ = ["STOP_SIGNALS", "Interrupted", "StopRequest", "raise_on_stop_signals"]
