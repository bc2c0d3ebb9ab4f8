"""Atomic, locked outputs: a stage's directory appears whole or not at all, one writer at a time.

**Staging.** :func:`staged_output` yields a fresh folder ``.<name>.staging-<random>`` beside
``out`` (same filesystem, so renames are atomic); the stage writes everything there. On
success the files are fsynced and the folder is published in one step:

* ``out`` absent: ``rename(staging, out)``;
* ``out`` present: ``renameat2(staging, out, RENAME_EXCHANGE)`` swaps the two names in one
  atomic step (Linux ≥ 3.15: ext4, xfs, btrfs, tmpfs, overlayfs), and the staging name,
  now holding the old result, is removed. Where the exchange is unsupported:
  ``rename(out, aside)``, ``rename(staging, out)``, remove ``aside``.

So at any instant ``out`` holds the old complete result or the new complete one, never a
mix (in the fallback, between its two renames, ``out`` is briefly absent with the old
result in ``.<name>.old-<random>``). A killed run leaves at most a staging or aside folder;
the next run, holding the lock, removes them (an aside folder whose ``out`` is missing is
renamed back first). On failure the staging folder is removed and ``out`` is untouched.

**Locks.** :func:`exclusive` takes an exclusive ``flock`` (:mod:`filelock`) on
``.<name>.lock`` beside the target and writes the holder (pid, host, command, since) into
it. A second writer waits up to ``timeout`` seconds (``REWARDLINE_LOCK_TIMEOUT``, default
:data:`DEFAULT_LOCK_TIMEOUT`; ``-1`` waits forever), then raises :class:`OutputLocked`
naming the holder (the CLI exits 3: transient, retry later). The kernel drops a ``flock`` when its holder dies,
SIGKILL included, so no stale lock outlives a crash. ``flock`` is per host: on NFS two
machines may not exclude each other. A lock file that cannot be created (a folder this user cannot write, a
read-only filesystem, ``/proc``, a parent that is a file) is :class:`~rewardline.errors.BadInput` at once (exit 2),
not a wait.

**Writable.** :func:`check_writable` (through :func:`check_output_dir`, before any work) refuses an output whose
folder this user cannot create files in, exit 2 naming it (:data:`UNWRITABLE`): retrying would fail the same way.
Disk full, quota and I/O errors stay ``OSError`` (exit 3).

S3 outputs are not directories: objects are written whole (single PUT, or a multipart upload
that becomes visible only on completion, :mod:`rewardline.ops.storage`), and a multi-object
unit (an inbox batch) writes its ``manifest.json`` last, so readers trust only what a
manifest lists (:mod:`rewardline.retraining.inbox`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import inspect
import json
import os
import re
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from rewardline.errors import BadInput

LOCK_TIMEOUT_ENV = "REWARDLINE_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 10.0  # seconds a second writer waits before giving up
STAGING, ASIDE = "staging", "old"
_RENAME_EXCHANGE, _AT_FDCWD = 2, -100  # linux/fs.h, fcntl.h
_F = TypeVar("_F", bound=Callable[..., Any])


#: ``errno`` of a place where this user cannot create a file: no permission, a read-only filesystem, a path
#: through a file, a pseudo-filesystem (``/proc`` answers ENOENT). Not an outage: a retry fails the same (exit 2).
UNWRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.ENOENT,
                        errno.EISDIR, errno.ELOOP, errno.ENAMETOOLONG})
EXPECT_WRITABLE = "expected a directory this user can write"
#: ``s3://b/k`` as given, or as :class:`~pathlib.Path` left it (``s3:/b/k``): a URL, not a local folder.
URL_PREFIX = re.compile(r"^(?P<protocol>[A-Za-z][A-Za-z0-9+.-]+):/+")


class OutputLocked(TimeoutError):
    """Another process holds the lock on an output; the message names it (a ``TimeoutError``: CLI exit 3, transient)."""


def lock_path(target: Path) -> Path:
    """``.<name>.lock`` beside ``target``."""
    return target.parent / f".{target.name}.lock"


def lock_timeout(default: float = DEFAULT_LOCK_TIMEOUT) -> float:
    """Seconds to wait for a lock: ``REWARDLINE_LOCK_TIMEOUT`` when set, else ``default``."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{LOCK_TIMEOUT_ENV}={raw!r}: expected a number of seconds (-1: wait forever)") from None


def _holder_record() -> bytes:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                       "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode()


def _write_holder(fd: int) -> None:
    """filelock's ``on_acquired`` hook: the lock file's content names its holder (waiters never truncate it)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, _holder_record(), 0)


def describe_holder(lock_file: Path) -> str:
    """'pid P on host H (command C) since T' from the lock file, or why it is unknown."""
    try:
        holder = json.loads(lock_file.read_bytes() or b"null")
        return f"pid {holder['pid']} on host {holder['host']} ({holder['command']}) since {holder['since']}"
    except (OSError, ValueError, TypeError, KeyError):
        return "an unknown process (no holder recorded yet)"


def _create_lock_file(target: Path, lock_file: Path, what: str) -> None:
    """Create ``lock_file`` (and its folder) if absent, so that a place where it cannot be created is
    :class:`BadInput` naming it at once: filelock would take a ``/proc`` path's ENOENT for a race and wait out the
    timeout, then report a lock held by an unknown process (exit 3)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK, 0o666))  # no O_TRUNC: the holder's record
    except OSError as err:
        if err.errno not in UNWRITABLE:
            raise
        raise BadInput(detail=f"{what} {target}: cannot create its lock file {lock_file} ({err.strerror}); "
                              f"{EXPECT_WRITABLE}") from None


@contextlib.contextmanager
def exclusive(target: Path | str, timeout: float | None = None, what: str = "output") -> Iterator[Path]:
    """Hold the exclusive lock on ``target`` (a directory or file, existing or not); yields the lock file.

    Raises :class:`OutputLocked` naming the holder when it is not free within ``timeout``
    seconds (None: :func:`lock_timeout`).
    """
    target = Path(target)
    wait = lock_timeout() if timeout is None else timeout
    lock_file = lock_path(target)
    _create_lock_file(target, lock_file, what)
    lock = FileLock(lock_file, timeout=wait, preserve_lock_file=True, on_acquired=_write_holder)
    try:
        lock.acquire()
    except Timeout:
        raise OutputLocked(
            f"{what} {target} is locked by {describe_holder(lock_file)}; waited {wait:g} s "
            f"(lock file {lock_file}; {LOCK_TIMEOUT_ENV} sets the wait). Another run is writing it: "
            "wait for it to finish, or write to another --out"
        ) from None
    try:
        yield lock_file
    finally:
        lock.release()


def _leftovers(out_dir: Path, kind: str) -> list[Path]:
    return sorted(out_dir.parent.glob(f".{out_dir.name}.{kind}-*"))


def clean_leftovers(out_dir: Path) -> list[Path]:
    """Under the lock: remove staging folders of killed runs; an aside folder is renamed back
    when ``out_dir`` is missing (a run killed between the fallback's two renames), else removed."""
    cleaned = []
    for aside in _leftovers(out_dir, ASIDE):
        if not os.path.lexists(out_dir):
            os.rename(aside, out_dir)
        else:
            shutil.rmtree(aside, ignore_errors=True)
        cleaned.append(aside)
    for staging in _leftovers(out_dir, STAGING):
        shutil.rmtree(staging, ignore_errors=True)
        cleaned.append(staging)
    return cleaned


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (so a power cut after the rename keeps the data)."""
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync(Path(folder) / name)
        _fsync(Path(folder))


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap the names ``a`` and ``b`` (Linux renameat2 RENAME_EXCHANGE); False when unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if sys.platform == "linux" else None
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False  # filesystem or kernel without RENAME_EXCHANGE
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def publish(staging: Path, out_dir: Path, exchange: bool = True) -> None:
    """Put the complete ``staging`` folder in place of ``out_dir`` (see the module docstring)."""
    if not os.path.lexists(out_dir):
        os.rename(staging, out_dir)
    elif exchange and _exchange(staging, out_dir):
        shutil.rmtree(staging)  # now the old result
    else:
        aside = out_dir.parent / f".{out_dir.name}.{ASIDE}-{secrets.token_hex(4)}"
        os.rename(out_dir, aside)
        os.rename(staging, out_dir)
        shutil.rmtree(aside)
    _fsync(out_dir.parent)


def check_output_dir(out_dir: Path | str) -> None:
    """Refuse, with :class:`~rewardline.errors.BadInput` (exit 2) before any work, an ``out_dir`` that publishing
    would wreck: a URL (``s3://b/k``, which as a path made a local folder ``s3:``), one that exists and is not a
    directory (a file named by mistake: it would be swapped out of its name into a hidden staging name, and the run
    would then fail), the working directory or a folder holding it (replaced whole, it would be deleted), or one in a
    folder this user cannot write (:func:`check_writable`)."""
    if (url := URL_PREFIX.match(os.fspath(out_dir))) and url["protocol"].lower() not in ("file", "local"):
        shown = URL_PREFIX.sub(rf"{url['protocol']}://", os.fspath(out_dir), count=1)
        raise BadInput(detail=f"output {shown} is a URL: a stage writes a local directory (published by a rename; "
                              "`dvc push` copies stage outputs to the S3 remote); expected a local --out")
    out_dir = Path(out_dir)
    here = Path.cwd()
    if Path(os.path.realpath(out_dir)) in (here, *here.parents):
        raise BadInput(detail=f"output {out_dir} is or holds the working directory {here}: writing the output "
                              "replaces the folder whole and would delete it; expected an --out below or beside it")
    if os.path.lexists(out_dir) and not out_dir.is_dir():
        raise BadInput(out_dir, detail="exists and is not a directory; expected an output directory "
                                       "(absent, or a previous result to replace)")
    check_writable(out_dir)


def check_writable(path: Path | str, what: str = "output") -> None:
    """Refuse with :class:`~rewardline.errors.BadInput` (exit 2), before any work, a ``path`` whose folder this user
    cannot create files in (:data:`UNWRITABLE`; a folder above it that is a file). The nearest existing folder above
    ``path`` is probed with a file created and removed at once; the missing folders below it are left to the writer.
    Other errors (disk full, I/O) pass unchanged (exit 3)."""
    folder = Path(os.path.abspath(path)).parent
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise BadInput(detail=f"{what} {path}: {folder} is not a directory; {EXPECT_WRITABLE}")
    probe = folder / f".{Path(path).name}.probe-{secrets.token_hex(4)}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError as err:
        if err.errno not in UNWRITABLE:
            raise
        raise BadInput(detail=f"{what} {path}: cannot create files in {folder} ({err.strerror}); "
                              f"{EXPECT_WRITABLE}") from None
    os.unlink(probe)


@contextlib.contextmanager
def staged_output(out_dir: Path | str, timeout: float | None = None, carry: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Lock ``out_dir``, yield an empty staging folder beside it; publish it as ``out_dir`` on success.

    ``carry``: entries of the old ``out_dir`` (direct children, e.g. training checkpoints) moved
    into the staging folder just before publishing, so the new result keeps them. On an
    exception the staging folder is removed and ``out_dir`` left as it was. An ``out_dir`` that is a file, the
    working directory or a folder holding it is refused before anything is written (:func:`check_output_dir`).
    """
    out_dir = Path(out_dir)
    if out_dir.is_symlink():  # publish beside the real folder (same filesystem), keep the link
        out_dir = Path(os.path.realpath(out_dir))
    check_output_dir(out_dir)
    with exclusive(out_dir, timeout=timeout):
        clean_leftovers(out_dir)
        staging = out_dir.parent / f".{out_dir.name}.{STAGING}-{secrets.token_hex(4)}"
        staging.mkdir(mode=0o777)  # umask applies: the folder gets the mode of any other new folder
        try:
            yield staging
            for entry in map(Path, carry):
                if entry.parent == out_dir and os.path.lexists(entry) and not os.path.lexists(staging / entry.name):
                    os.replace(entry, staging / entry.name)
            fsync_tree(staging)
            publish(staging, out_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def refuse_holding_inputs(out_dir: Path | str, inputs: Iterable[str | os.PathLike]) -> None:
    """Raise :class:`~rewardline.errors.BadInput` (exit 2) when ``out_dir`` is, or holds, one of the local
    ``inputs`` (publishing the output replaces the folder whole, which would delete them), or lies inside an input
    folder (a later run would read the output as input, and publishing that input would delete it)."""
    out = Path(os.path.realpath(out_dir))
    for given in inputs:
        text = os.fspath(given)
        if "://" in text and not text.startswith("file://"):  # a remote source is never under a local folder
            continue
        path = Path(os.path.realpath(text.removeprefix("file://")))
        if path == out or out in path.parents:
            raise BadInput(detail=f"output {out_dir} holds the input {text}: writing the output replaces the folder "
                                  "whole and would delete it; expected an --out outside the inputs")
        if path in out.parents:
            raise BadInput(detail=f"output {out_dir} is inside the input folder {text}: a later run would read the "
                                  "output as input; expected an --out outside the inputs")


def writes_output(param: str = "out_dir",
                  inputs: Callable[[dict[str, Any]], Iterable[str | os.PathLike]] | None = None) -> Callable[[_F], _F]:
    """Decorator: the function writes its output directory (argument ``param``) through
    :func:`staged_output`: locked for the whole call, published whole on return. ``inputs`` gives the paths the
    function reads, from its arguments by name: an output folder that is or holds one is refused first
    (:func:`refuse_holding_inputs`)."""

    def wrap(fn: _F) -> _F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            if inputs is not None:
                refuse_holding_inputs(bound.arguments[param], inputs(bound.arguments))
            with staged_output(bound.arguments[param]) as staging:
                bound.arguments[param] = staging
                return fn(*bound.args, **bound.kwargs)

        return run  # type: ignore[return-value]

    return wrap
