"""Atomic file writes: a reader sees the old file or the new one, never a torn one.

Every file the project writes that another step reads back (checkpoints, the slice
cache, sample arrays, figures) goes through `write_atomically`: the bytes go to a
temporary file in the same folder, named after the writing process
(`.<name>.<pid>.partial`), are flushed and fsynced, and the temporary file is renamed
over the target. A process only ever removes its own temporary files, and those of
processes that no longer run (`remove_stale_partials`), so two writers never delete
each other's work in progress.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import BinaryIO, Callable

from mrnet_utils.errors import MRNetError

PARTIAL_SUFFIX = ".partial"
_PARTIAL = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)" + re.escape(PARTIAL_SUFFIX))


def partial_path(path: Path) -> Path:
    """This process's temporary file for `path`."""
    return path.with_name(f".{path.name}.{os.getpid()}{PARTIAL_SUFFIX}")


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None], what: str = "file") -> Path:
    """Call `write(handle)` on a temporary file next to `path`, then rename it to `path`.

    Any failure (a full disk, an interrupt) removes the temporary file and leaves an
    existing `path` untouched. An OSError becomes one MRNetError line naming the file
    and `what` it is.
    """
    path = Path(path)
    temporary = partial_path(path)
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:  # KeyboardInterrupt included: never leave a temporary file behind
        temporary.unlink(missing_ok=True)
        cause = os_error_in(error)
        if cause is None:
            raise
        raise MRNetError(write_failure(path, cause, what)) from error
    _sync_folder(path.parent)
    return path


def remove_stale_partials(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files in `folder` left by processes that no longer run; return them."""
    removed = []
    for candidate in Path(folder).glob(f".*{PARTIAL_SUFFIX}"):
        match = _PARTIAL.fullmatch(candidate.name)
        if match and not _process_alive(int(match.group("pid"))):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def os_error_in(error: BaseException | None) -> OSError | None:
    """The OSError along an exception's chain (torch.save reports one as a RuntimeError raised while handling it)."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    return error


def write_failure(path: Path, error: OSError, what: str) -> str:
    """One line saying which file could not be written, why, and what to do."""
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "free disk space there or write to a disk with room"
    else:
        advice = "make the folder writable or choose another one"
    return f"cannot write {what} {path.name} to {path.parent}: {reason}; {advice} (files already there are untouched)"


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable, so that a power cut cannot bring back the old file."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True
