"""The one exception type the command line turns into a one-line message."""

from __future__ import annotations


class MRNetError(Exception):
    """A problem with the user's input or environment, stated so that they can fix it.

    The message names the file or parameter at fault and what to do about it, in the
    library's own terms (`out_dir`, `resume=True`). `parameter` names the argument at
    fault, so that a front end can add the flag or notebook parameter that sets it. The
    command line prints the message on one line, without a traceback, and exits non-zero.
    """

    def __init__(self, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter
