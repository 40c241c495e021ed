"""The one exception type the command line turns into a one-line message."""


class MRNetError(Exception):
    """A problem with the user's input or environment, stated so that they can fix it.

    The message names the file or parameter at fault and what to do about it. The
    command line prints it on one line, without a traceback, and exits non-zero.
    """
