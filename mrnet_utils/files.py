"""Atomic file writes: a reader sees the old file or the new one, never a torn one.

Every file the project writes that another step reads back (checkpoints, the slice
cache, sample arrays, figures) goes through `write_atomically`: the bytes go to a
temporary file in the same folder, named after the writing process
(`.<name>.<pid>.partial`), are flushed and fsynced, and the temporary file is renamed
over the target. A process only ever removes its own temporary files, and those of
processes that no longer run (`remove_stale_partials`), so two writers never delete
each other's work in progress.

One writer per output folder: `claim_folder` creates a run or samples folder and holds an
exclusive advisory lock on it (`fcntl.flock` on `LOCK_FILE` inside it) while the work runs,
so that a second process aimed at the same folder (a resubmitted job, a second `--resume`)
is refused with the holder's process id instead of interleaving its files with the first's.
The operating system releases the lock when the holder exits, however it exits.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from mrnet_utils.errors import MRNetError

PARTIAL_SUFFIX = ".partial"
_PARTIAL = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)" + re.escape(PARTIAL_SUFFIX))
LOCK_FILE = ".mrnet_utils.lock"  # in a claimed folder, while its writer runs; holds "pid@host"
# flock is not offered here (some network file systems): the folder is used unlocked, with a warning.
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


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


def is_bookkeeping(path: Path) -> bool:
    """A lock or temporary file of this module, which says nothing about what a folder holds."""
    return path.name == LOCK_FILE or _PARTIAL.fullmatch(path.name) is not None


@contextmanager
def claim_folder(folder: str | os.PathLike, parameter: str = "out_dir") -> Iterator[Path]:
    """Create `folder` if need be, check that it is writable, and be its only writer while the block runs.

    A folder another process holds is refused with one MRNetError naming the folder and that
    process. If the block raises, the folders this call created are removed again when they are
    still empty (a refused or failed run leaves nothing behind). `parameter` is the argument
    that named the folder, for the error.
    """
    folder = Path(folder)
    created = _make_folder(folder, parameter)
    try:
        with folder_lock(folder, parameter):
            yield folder
    except BaseException:
        for path in created:  # deepest first; stop at the first that holds something
            try:
                path.rmdir()
            except OSError:
                break
        raise


@contextmanager
def folder_lock(folder: str | os.PathLike, parameter: str = "out_dir") -> Iterator[Path]:
    """Hold the exclusive lock of an existing `folder` while the block runs; refuse one another process holds."""
    folder = Path(folder)
    path = folder / LOCK_FILE
    descriptor = _lock(path, folder, parameter)
    try:
        yield path
    finally:
        if descriptor is not None:
            # Removed while still held: a process that opened the old file finds it unlinked after
            # locking it, and starts again on a new one (`_lock`), so two never hold the folder at once.
            path.unlink(missing_ok=True)
            os.close(descriptor)


def _lock(path: Path, folder: Path, parameter: str) -> int | None:
    """A descriptor of `path` locked by this process (None where the file system offers no locks)."""
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise MRNetError(
                f"output folder {folder} is not writable ({error.strerror}); choose another {parameter}",
                parameter=parameter,
            ) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            pid, _, host = holder.partition("@")
            raise MRNetError(
                f"{folder} is in use by process {pid}{f' on {host}' if host else ''} (it holds {path}); "
                f"wait for it to finish or stop it, or choose another {parameter}",
                parameter=parameter,
            ) from None
        except OSError as error:
            if error.errno not in _NO_LOCKS:
                raise
            os.close(descriptor)
            warnings.warn(f"cannot lock {folder} ({error.strerror}); nothing stops a second process writing there",
                          stacklevel=3)
            return None
        try:
            same = os.path.samestat(os.fstat(descriptor), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(descriptor)  # the previous holder removed this file between our open and our lock
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}@{socket.gethostname()}\n".encode(), 0)
    return descriptor


def _make_folder(folder: Path, parameter: str) -> list[Path]:
    """Create `folder` and its missing parents, and check that files can be written there; the folders
    created, deepest first."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing.append(path)
    probe = folder / f".write_test.{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise MRNetError(
            f"output folder {folder} is not writable ({error.strerror}); choose another {parameter}",
            parameter=parameter,
        ) from None
    return missing


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
