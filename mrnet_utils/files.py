"""Atomic writes: a reader sees the old file (or set of files) or the new one, never a torn one.

Every file the project writes that another step reads back (checkpoints, the slice
cache, sample arrays, figures) goes through `write_atomically`: the bytes go to a
temporary file in the same folder, named after the writing process
(`.<name>.<pid>.partial`), are flushed and fsynced, and the temporary file is renamed
over the target. A process only ever removes its own temporary files, and those of
processes that no longer run (`remove_stale_partials`), so two writers never delete
each other's work in progress.

A set of files that belong together (a samples folder, a score table and its Markdown twin, the
phantom's MRNet tree, a study's result folder) is written as one unit by `result_folder`: into a
temporary sibling folder (`.<name>.<pid>.partial`), sealed with `COMPLETE_FILE` (the list of its
files and their sizes), and renamed into place at the end, the way Hadoop and Spark publish a job's
output folder with its `_SUCCESS` marker; an earlier folder is swapped out in one atomic step on
Linux. A kill leaves the earlier folder as it was; a reader checks the marker (`check_complete`)
and refuses a folder without one.

One writer per output: `claim_folder` creates a run folder and holds an exclusive advisory lock on
it (`fcntl.flock` on `LOCK_FILE` inside it) while the work runs; `path_lock` does the same for a
file or result folder through a lock file beside it (`.<name>.lock`), which outlives the renames.
A second process aimed at the same output (a resubmitted job, a second `--resume`) is refused with
the holder's process id instead of interleaving its files with the first's. The operating system
releases the lock when the holder exits, however it exits.

A full disk (ENOSPC), a full quota (EDQUOT) or a file-size limit (EFBIG, `ulimit -f`) during any of
these writes is one MRNetError line naming the file, and leaves no temporary file, lock or empty file.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import fnmatch
import json
import math
import os
import re
import shutil
import socket
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from mrnet_utils.errors import MRNetError

PARTIAL_SUFFIX = ".partial"
_PARTIAL = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)" + re.escape(PARTIAL_SUFFIX))
# The earlier result folder while `result_folder` swaps the new one in (two renames apart).
_REPLACED = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.replaced")
LOCK_FILE = ".mrnet_utils.lock"  # in a claimed folder, while its writer runs; holds "pid@host"
COMPLETE_FILE = "_COMPLETE.json"  # in a finished result folder: its files and their sizes
# flock is not offered here (some network file systems): the folder is used unlocked, with a warning.
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
_LIBC = ctypes.CDLL(None, use_errno=True)  # the C library this process runs on, for `_exchange`
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>
_NO_ROOM = {
    errno.ENOSPC: "free disk space there or write to a disk with room",
    errno.EDQUOT: "free space within your disk quota there or write to a disk with room",
    errno.EFBIG: "the file is larger than this process may write (ulimit -f) or the file system allows; "
                 "raise the limit or write to another disk",
}


def partial_path(path: Path) -> Path:
    """This process's temporary file (or folder) for `path`."""
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
        if cause is None or isinstance(error, MRNetError):
            raise
        raise MRNetError(write_failure(path, cause, what)) from error
    _sync(path.parent)
    return path


def write_json(path: str | os.PathLike, value: Any, what: str = "record") -> Path:
    """`value` as strict JSON (RFC 8259: no NaN or Infinity, which most JSON readers refuse), atomically.

    A non-finite number is one MRNetError line naming where in `value` it is, before anything is written.
    """
    path = Path(path)

    def write(handle: BinaryIO) -> None:
        handle.write((json.dumps(value, indent=1, allow_nan=False) + "\n").encode())

    try:
        return write_atomically(path, write, what)
    except ValueError:
        where = _non_finite(value, "")
        if where is None:
            raise
        raise MRNetError(f"cannot write {what} {path}: {where} is not a finite number, which JSON cannot hold; "
                         "nothing was written") from None


def _non_finite(value: Any, where: str) -> str | None:
    """Where in `value` (a key path such as `guidance` or `stages[0].loss`) the first NaN or infinity is."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where or 'the value'} ({value})"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        found = _non_finite(item, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}".lstrip("."))
        if found:
            return found
    return None


def remove_stale_partials(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files and folders in `folder` left by processes that no longer run; return them."""
    removed = []
    for candidate in Path(folder).glob(f".*{PARTIAL_SUFFIX}"):
        match = _PARTIAL.fullmatch(candidate.name)
        if match and not _process_alive(int(match.group("pid"))):
            _remove(candidate)
            removed.append(candidate)
    return removed


def is_bookkeeping(path: Path) -> bool:
    """A lock, marker or temporary file of this module, which says nothing about what a folder holds."""
    return (path.name in (LOCK_FILE, COMPLETE_FILE) or (path.name.startswith(".") and path.name.endswith(".lock"))
            or _PARTIAL.fullmatch(path.name) is not None or _REPLACED.fullmatch(path.name) is not None)


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
        _remove_empty(created)
        raise


@contextmanager
def folder_lock(folder: str | os.PathLike, parameter: str = "out_dir") -> Iterator[Path]:
    """Hold the exclusive lock of an existing `folder` while the block runs; refuse one another process holds."""
    folder = Path(folder)
    with _holding(folder / LOCK_FILE, folder, parameter) as path:
        yield path


@contextmanager
def path_lock(path: str | os.PathLike, parameter: str = "out_dir") -> Iterator[Path]:
    """Be the only writer of `path` (a file, or a folder that is replaced whole) while the block runs.

    The lock file is `.<name>.lock` beside `path`, in a folder that must exist; another process
    holding it is refused as in `folder_lock`.
    """
    path = Path(path)
    with _holding(path.with_name(f".{path.name}.lock"), path, parameter) as lock:
        yield lock


@contextmanager
def result_folder(
    folder: str | os.PathLike, overwrite: bool = False, owns: tuple[str, ...] = ("*",), what: str = "output folder",
    parameter: str = "out_dir", record: dict | None = None,
) -> Iterator[Path]:
    """Write a set of files as one unit: the block writes into the temporary folder it is given, which
    replaces `folder` only when the block returns.

    Before the block runs (so before any long computation), `folder` is checked and locked
    (`path_lock`): a file there, an unwritable place, or a folder that holds anything when
    `overwrite` is false is one MRNetError naming it. With `overwrite`, the files of the old folder
    whose names match a pattern of `owns` are replaced; the others (a user's notes) are carried
    into the new one. The new folder is sealed with `COMPLETE_FILE` (its files and their sizes,
    `record` under "record"), and put in place (`_publish`). If the block raises, the temporary
    folder and any parent folders this call created are removed. Errors name `folder`, never the
    temporary one.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise MRNetError(f"{what} {folder} is a file; choose a folder for {parameter}", parameter=parameter)
    created = _make_folder(folder.parent, parameter, shown=folder)
    staging = partial_path(folder)
    try:
        with path_lock(folder, parameter):
            _recover(folder)
            held = sorted(path.name for path in folder.iterdir() if not is_bookkeeping(path)) if folder.is_dir() else []
            if held and not overwrite:
                listed = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
                raise MRNetError(f"{what} {folder} is not empty ({listed}); choose an empty {parameter}, or replace "
                                 "what it holds with overwrite=True", parameter="overwrite")
            try:
                staging.mkdir()
                yield staging
                _guard(folder, lambda: _seal(staging, record), "completion marker")
                if folder.is_dir():
                    _guard(folder, lambda: _carry_over(folder, staging, owns), "files kept from the earlier folder")
                _guard(folder, lambda: _publish(staging, folder), "result folder")
            except MRNetError as error:  # named after the folder asked for, not the temporary one
                _remove(staging)
                raise MRNetError(str(error).replace(str(staging), str(folder)), error.parameter) from None
            except BaseException:
                _remove(staging)
                raise
    except BaseException:
        _remove_empty(created)
        raise


def check_complete(folder: str | os.PathLike, what: str = "result folder", fix: str = "write it again") -> dict:
    """The completion record of a folder written by `result_folder`; one MRNetError if it has none, or if a
    file it lists is missing or has another size (the folder was changed, or copied in part, since)."""
    folder = Path(folder)
    marker = folder / COMPLETE_FILE
    if not folder.is_dir():
        aside = next(iter(_left_by(folder, _REPLACED)), None)
        held = (f" (a writer stopped while replacing it: the earlier one is at {aside}, and the writer puts it back "
                "when it next runs)") if aside else ""
        raise MRNetError(f"{what} {folder} does not exist{held}; {fix}")
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
        sizes = dict(record["files"])
    except FileNotFoundError:
        raise MRNetError(f"{what} {folder} has no {COMPLETE_FILE}: its writer did not finish (it was stopped, killed "
                         f"or failed) or it was not written by mrnet_utils; {fix}") from None
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise MRNetError(f"{what} {folder}: {COMPLETE_FILE} is unreadable ({type(error).__name__}); {fix}") from None
    for name, size in sizes.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            found = f"{path.stat().st_size} bytes" if path.is_file() else "missing"
            raise MRNetError(f"{what} {folder} is not as its writer left it: {name} is {found}, {COMPLETE_FILE} "
                             f"lists {size} bytes; {fix}")
    return record


def _guard(folder: Path, step: Callable[[], None], what: str) -> None:
    """Run one step of finishing `folder`; an OSError becomes one line naming the folder and the step."""
    try:
        step()
    except OSError as error:
        advice = _NO_ROOM.get(error.errno, "make the folder writable or choose another one")
        raise MRNetError(f"cannot finish {folder} ({what}): {error.strerror or error}; {advice} (an earlier {folder.name} "
                         "is untouched)") from None


def _seal(staging: Path, record: dict | None) -> None:
    files = {}
    for path in sorted(staging.rglob("*")):
        if path.is_file() and not is_bookkeeping(path):
            files[path.relative_to(staging).as_posix()] = path.stat().st_size
            _sync(path)  # the marker promises the files: they reach the disk first
    marker = {"files": files}  # no time stamp: the same content gives the same bytes
    if record is not None:
        marker["record"] = record
    write_json(staging / COMPLETE_FILE, marker, "completion marker")
    for path in sorted({path.parent for path in staging.rglob("*")} | {staging}, reverse=True):
        _sync(path)


def _carry_over(old: Path, new: Path, owns: tuple[str, ...]) -> None:
    """Hard-link (or copy) into `new` what `old` holds that the writer does not own and did not write again."""
    for entry in old.iterdir():
        if is_bookkeeping(entry) or any(fnmatch.fnmatch(entry.name, pattern) for pattern in owns):
            continue
        target = new / entry.name
        if target.exists():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, target)


def _link_or_copy(source: str | Path, target: str | Path) -> None:
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:  # a file system without hard links
        shutil.copy2(source, target, follow_symlinks=False)


def _publish(staging: Path, folder: Path) -> None:
    """Put `staging` at `folder`. An existing `folder` is swapped with it in one atomic step where the system
    offers one (`_exchange`), and then removed; elsewhere it is first renamed aside (a folder cannot be
    renamed over a non-empty one), which leaves an instant between two renames with no `folder` (`_recover`)."""
    if not folder.is_dir():
        os.rename(staging, folder)
    elif _exchange(staging, folder):
        _remove(staging)  # the old folder, now at the temporary name
    else:
        aside = folder.with_name(f".{folder.name}.{os.getpid()}.replaced")
        os.rename(folder, aside)
        try:
            os.rename(staging, folder)
        except BaseException:
            os.rename(aside, folder)
            raise
        _remove(aside)
    _sync(folder.parent)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one atomic step: Linux's renameat2 with RENAME_EXCHANGE (kernel 3.15, glibc 2.28, on
    ext4, XFS, Btrfs, tmpfs and others). False where the system or file system does not offer it."""
    renameat2 = getattr(_LIBC, "renameat2", None)
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def _recover(folder: Path) -> None:
    """Clean up after writers of `folder` that no longer run: put back an old folder left aside by a kill
    between `_publish`'s two renames, and remove their temporary and set-aside folders."""
    for pattern in (_REPLACED, _PARTIAL):  # an old folder left aside is restored before anything is removed
        for candidate in _left_by(folder, pattern):
            if pattern is _REPLACED and not folder.exists():
                os.rename(candidate, folder)
            else:
                _remove(candidate)


def _left_by(folder: Path, pattern: re.Pattern) -> list[Path]:
    """The temporary (`_PARTIAL`) or set-aside (`_REPLACED`) siblings of `folder` of processes no longer running."""
    if not folder.parent.is_dir():
        return []
    found = []
    for candidate in folder.parent.iterdir():
        match = pattern.fullmatch(candidate.name)
        if match and match.group("name") == folder.name and not _process_alive(int(match.group("pid"))):
            found.append(candidate)
    return found


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _remove_empty(created: list[Path]) -> None:
    for path in created:  # deepest first; stop at the first that holds something
        try:
            path.rmdir()
        except OSError:
            break


@contextmanager
def _holding(path: Path, target: Path, parameter: str) -> Iterator[Path]:
    descriptor = _lock(path, target, parameter)
    try:
        yield path
    finally:
        if descriptor is not None:
            # Removed while still held: a process that opened the old file finds it unlinked after
            # locking it, and starts again on a new one (`_lock`), so two never hold the folder at once.
            path.unlink(missing_ok=True)
            os.close(descriptor)


def _lock(path: Path, target: Path, parameter: str) -> int | None:
    """A descriptor of `path` locked by this process (None where the file system offers no locks)."""
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            if error.errno in _NO_ROOM:
                raise MRNetError(write_failure(path, error, "lock file"), parameter=parameter) from None
            raise MRNetError(
                f"output folder {target} is not writable ({error.strerror}); choose another {parameter}",
                parameter=parameter,
            ) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            pid, _, host = holder.partition("@")
            raise MRNetError(
                f"{target} is in use by process {pid}{f' on {host}' if host else ''} (it holds {path}); "
                f"wait for it to finish or stop it, or choose another {parameter}",
                parameter=parameter,
            ) from None
        except OSError as error:
            if error.errno not in _NO_LOCKS:
                raise
            os.close(descriptor)
            warnings.warn(f"cannot lock {target} ({error.strerror}); nothing stops a second process writing there",
                          stacklevel=4)
            return None
        try:
            same = os.path.samestat(os.fstat(descriptor), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(descriptor)  # the previous holder removed this file between our open and our lock
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}@{socket.gethostname()}\n".encode(), 0)
    except OSError as error:  # a full disk: no lock file is left behind, as no lock is held
        path.unlink(missing_ok=True)
        os.close(descriptor)
        raise MRNetError(write_failure(path, error, "lock file"), parameter=parameter) from None
    return descriptor


def _make_folder(folder: Path, parameter: str, shown: Path | None = None) -> list[Path]:
    """Create `folder` and its missing parents, and check that files can be written there; the folders
    created, deepest first. Errors name `shown` (default: `folder`)."""
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
        _remove_empty(missing)
        reason = os.strerror(errno.ENOTDIR) if isinstance(error, FileExistsError) else error.strerror  # a file there
        raise MRNetError(
            f"output folder {shown or folder} is not writable ({reason}); choose another {parameter}",
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
    advice = _NO_ROOM.get(error.errno, "make the folder writable or choose another one")
    return f"cannot write {what} {path.name} to {path.parent}: {reason}; {advice} (files already there are untouched)"


def _sync(path: Path) -> None:
    """fsync a file, or a folder: its renames become durable, so that a power cut cannot bring back the old file."""
    descriptor = os.open(path, os.O_RDONLY)
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
