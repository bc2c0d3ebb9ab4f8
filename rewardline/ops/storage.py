"""Read, write and list files on the local disk or on any fsspec filesystem (``s3://``, ``gs://``,
``az://``, ``hf://``, ``http(s)://``, ``memory://``, any registered protocol).

Remote URLs go through `fsspec <https://filesystem-spec.readthedocs.io>`_; S3 through s3fs
(aiobotocore):

* credentials come from each filesystem's standard chain (for S3 the AWS env ``AWS_ACCESS_KEY_ID`` /
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE`` + ``~/.aws``, instance roles; for ``hf://`` ``HF_TOKEN``)
  and are never read, stored or logged here;
* the S3 endpoint from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (e.g. a local SeaweedFS or
  MinIO), else from :func:`configure` (``storage.endpoint_url`` in ``params.yaml``), else AWS itself;
* S3 retries are botocore's ``standard`` mode (exponential backoff with jitter, also on connection
  errors), ``max_attempts`` attempts per request and connect/read timeouts configurable; s3fs's own
  retry loop is off so the bound is that one;
* listings are recursive (``fs.find``) and paginated by the filesystem; local files of
  ``multipart_threshold`` bytes and more are uploaded in ``multipart_chunksize`` parts (s3fs sends one
  PUT below twice the part size), and an S3 multipart object only becomes visible when the upload
  completes; a failed upload is aborted (best effort: when the server is unreachable the parts stay,
  invisible, for :func:`abort_incomplete_uploads` or a bucket lifecycle rule to remove).

Atomic writes: a reader never sees a half-written file. Local writes go to a temp file in the target
directory and are renamed into place (``os.replace``); on object stores (:data:`ATOMIC_PUT`) an object
appears only once its PUT or multipart upload completed; on any other filesystem the data go to a
temp name beside the target and are moved onto it. Failures raise :class:`StorageError` naming the URI
(exit 3: retried), or :class:`~rewardline.errors.PermissionDenied` (exit 2: retrying will not help) when a
remote store refuses the caller: no credentials found, a key it does not know, a wrong secret, access denied.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from rewardline.errors import BadInput, PermissionDenied, exception_chain, service_error_code
from rewardline.ops.atomic import UNWRITABLE, check_writable

S3_SCHEME = "s3://"
DEFAULT_MAX_ATTEMPTS = 5
MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB  # S3's minimum for every part but the last
BUCKET_PROTOCOLS = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")  # the first path segment is a bucket
# Object stores: a PUT (or completed multipart upload) is atomic, a reader sees the old or the new object.
ATOMIC_PUT = (*BUCKET_PROTOCOLS, "memory", "hf")


class StorageError(OSError):
    """A storage operation failed; the message names the URI."""


class StorageNotFound(StorageError, FileNotFoundError):
    """The file, directory or S3 prefix named does not exist (bad input: exit 2, not an outage)."""


@dataclass(frozen=True)
class S3Settings:
    """Tunables of the S3 client and of uploads (see :func:`configure`)."""

    endpoint_url: str | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    multipart_threshold: int = 64 * MIB
    multipart_chunksize: int = 16 * MIB
    max_concurrency: int = 4


_settings = S3Settings()
ENV_OVERRIDES = {  # env var -> (field, type); env wins over configure()
    "REWARDLINE_S3_MAX_ATTEMPTS": ("max_attempts", int),
    "REWARDLINE_S3_CONNECT_TIMEOUT": ("connect_timeout", float),
    "REWARDLINE_S3_READ_TIMEOUT": ("read_timeout", float),
}


def configure(**changes: object) -> S3Settings:
    """Change the module-wide S3 settings (e.g. from a ``storage:`` params section); returns the new ones.

    Unknown keys raise ``TypeError``; ``None`` values are ignored.
    """
    global _settings
    _settings = replace(_settings, **{k: v for k, v in changes.items() if v is not None})
    if _settings.multipart_chunksize < MIN_PART_SIZE:
        raise ValueError(f"multipart_chunksize must be >= {MIN_PART_SIZE} bytes (S3 minimum part size)")
    return _settings


def settings() -> S3Settings:
    """The effective settings: :func:`configure`'d values with the env overrides applied."""
    current = _settings
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or current.endpoint_url
    current = replace(current, endpoint_url=endpoint or None)
    for var, (name, kind) in ENV_OVERRIDES.items():
        if os.environ.get(var):
            current = replace(current, **{name: kind(os.environ[var])})
    return current


def is_s3(uri: str) -> bool:
    """True for ``s3://bucket/key`` URIs."""
    return uri.startswith(S3_SCHEME)


def is_remote(uri: str) -> bool:
    """True for a URL with a protocol other than ``file://`` (``s3://``, ``hf://``, ``https://``, ...)."""
    protocol, sep, _ = uri.partition("://")
    return bool(sep) and protocol not in ("", "file", "local") and "/" not in protocol


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> (``bucket``, ``some/key``)."""
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise ValueError(f"{uri}: expected s3://bucket/key")
    return bucket, key


def endpoint_url() -> str | None:
    """The S3 endpoint override (env, else :func:`configure`), if any."""
    return settings().endpoint_url


def s3_options(max_attempts: int | None = None) -> dict[str, Any]:
    """``S3FileSystem`` keyword arguments for the current settings (``max_attempts`` overrides the setting)."""
    cfg = settings()
    attempts = max_attempts if max_attempts is not None else cfg.max_attempts
    return {
        "client_kwargs": {"endpoint_url": cfg.endpoint_url} if cfg.endpoint_url else {},
        "config_kwargs": {
            "retries": {"mode": "standard", "max_attempts": attempts},
            "connect_timeout": cfg.connect_timeout,
            "read_timeout": cfg.read_timeout,
            "max_pool_connections": max(10, cfg.max_concurrency * 2),
            # S3-compatible servers on a host:port need path-style addressing; AWS picks its own.
            "s3": {"addressing_style": "path" if cfg.endpoint_url else "auto"},
        },
        "max_concurrency": max(1, cfg.max_concurrency),
        "use_listings_cache": False,
    }


@lru_cache(maxsize=16)
def _cached_fs(protocol: str, options: str, identity: tuple[str | None, ...]):  # noqa: ANN202
    """One filesystem per (protocol, options, credential env): instances hold connection pools."""
    import fsspec

    fs = fsspec.filesystem(protocol, skip_instance_cache=True, **json.loads(options))
    if protocol in ("s3", "s3a"):
        fs.retries = 1  # s3fs's own retry loop off: botocore's max_attempts is the bound
    return fs


def _digest(*names: str) -> str:
    """A digest of the environment variables ``names`` (secrets: the cache key holds no secret itself)."""
    return hashlib.sha256("\0".join(os.environ.get(n) or "" for n in names).encode()).hexdigest()


def filesystem(uri: str):  # noqa: ANN201
    """The fsspec filesystem of ``uri`` and the path inside it, ``(fs, path)``; a bucket protocol's URL without a
    bucket (``s3://``) raises ``FileNotFoundError`` (bad input, not an outage)."""
    from fsspec.core import split_protocol

    protocol, rest = split_protocol(uri)
    protocol = protocol or "file"
    if protocol in BUCKET_PROTOCOLS and not rest.strip("/"):  # s3fs would list every bucket, or say 'Cannot traverse'
        raise FileNotFoundError(f"no bucket named; expected {protocol}://bucket/key")
    options = s3_options() if protocol in ("s3", "s3a") else {}
    identity = (*(os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION")),
                _digest("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "HF_TOKEN"))  # a rotated secret: a new client
    fs = _cached_fs(protocol, json.dumps(options, sort_keys=True), identity)
    return fs, fs._strip_protocol(uri)


def _protocols(fs) -> set[str]:  # noqa: ANN001
    """The protocol names of an fsspec filesystem (``fs.protocol`` is a str or a tuple)."""
    return {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)


#: S3 error codes of a refused caller (botocore ``ClientError``'s ``Error.Code``): not an outage.
DENIED_CODES = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                "TokenRefreshRequired", "AllAccessDisabled", "401", "403")
#: botocore's errors for credentials it could not find or use, by class name (no import needed).
CREDENTIAL_ERRORS = ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError")


def _refusal(err: Exception) -> str | None:
    """Why a remote store refused the caller, when that is what ``err`` (or an exception it came from) says."""
    for cause in exception_chain(err):
        if type(cause).__name__ in CREDENTIAL_ERRORS:
            return "no credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
        code = service_error_code(cause)
        if code in DENIED_CODES:  # a HEAD request's answer has no body: its status code is all there is
            return f"refused ({'HTTP ' if code.isdigit() else ''}{code}): check the credentials and the bucket's " \
                   "permissions"
    return None


def _fail(op: str, uri: str, err: Exception) -> StorageError | PermissionDenied:
    if isinstance(err, FileNotFoundError):
        return StorageNotFound(f"{op} {uri} failed: {err or 'not found'}")
    refusal = _refusal(err) if is_remote(uri) else None
    if refusal:
        return PermissionDenied(uri, detail=f"{op} failed: {refusal}")
    return StorageError(f"{op} {uri} failed: {err}")


def list_files(uri: str, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """Sorted file URIs under ``uri`` (a file, or a directory / prefix searched recursively).

    ``suffixes`` keeps only names ending in one of them (e.g. ``(".jsonl", ".jsonl.gz")``).
    """

    def wanted(name: str) -> bool:
        return suffixes is None or name.endswith(tuple(suffixes))

    if is_remote(uri):
        try:
            fs, path = filesystem(uri)
            found = [fs.unstrip_protocol(p) for p in fs.find(path) if not p.endswith("/") and wanted(p)]
            if not found and _protocols(fs) & set(BUCKET_PROTOCOLS):
                fs.ls(path.split("/")[0])  # an empty prefix is fine; a missing bucket raises
            elif not found and not fs.exists(path):  # on other filesystems, as on the local disk
                raise FileNotFoundError("no such file or directory")
        except Exception as err:  # each backend raises its own types
            raise _fail("listing", uri, err) from err
        return sorted(found)
    path = Path(uri.removeprefix("file://"))
    if path.is_file():
        return [str(path)] if wanted(path.name) else []
    if not path.is_dir():
        raise StorageNotFound(f"listing {uri} failed: {_why_missing(path)}")
    local = []
    for entry in path.rglob("*"):
        if entry.is_file():
            local += [str(entry)] if wanted(entry.name) else []
        elif entry.is_symlink() and (why := _why_missing(entry)).startswith("symlink loop"):
            raise StorageNotFound(f"listing {uri} failed: {why}")  # a dangling link is skipped, a loop is not
    return sorted(local)


def _why_missing(path: Path) -> str:
    """Why ``path`` is neither a file nor a directory: a symlink loop, a dangling link, or absent."""
    try:
        path.stat()
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"symlink loop at {path}"
        if path.is_symlink():
            return f"{path} is a symlink to {os.readlink(path)}, which does not exist"
        return "no such file or directory"
    return f"{path} is neither a file nor a directory"


def check_bucket(uri: str) -> None:
    """One ``HeadBucket`` for an S3 ``uri`` (a job's destination, ingest's source), so an outage (:class:`StorageError`,
    exit 3), a missing bucket (:class:`StorageNotFound`, exit 2) or a refused caller (:class:`PermissionDenied`,
    exit 2) is found before the work. Elsewhere (local, other filesystems): no check, no request."""
    if not uri.startswith((S3_SCHEME, "s3a://")):
        return
    try:
        fs, path = filesystem(uri)
        try:
            bucket = path.split("/")[0]
            fs.call_s3("head_bucket", Bucket=bucket)
        except FileNotFoundError:
            where = f" at {endpoint_url()}" if endpoint_url() else ""
            raise FileNotFoundError(f"no bucket named {bucket!r}{where}") from None
    except Exception as err:  # each backend raises its own types
        raise _fail("checking the bucket of", uri, err) from err


def exists(uri: str) -> bool:
    """True when the file exists (an S3 object only once its write completed)."""
    if not is_remote(uri):
        return Path(uri.removeprefix("file://")).is_file()
    try:
        fs, path = filesystem(uri)
        return bool(fs.isfile(path))
    except FileNotFoundError:
        return False
    except Exception as err:
        raise _fail("checking", uri, err) from err


def read_bytes(uri: str) -> bytes:
    """The whole content of a local file or remote object."""
    try:
        if is_remote(uri):
            fs, path = filesystem(uri)
            return fs.cat_file(path)
        return Path(uri.removeprefix("file://")).read_bytes()
    except Exception as err:
        raise _fail("reading", uri, err) from err


@contextlib.contextmanager
def _atomic_local(path: Path) -> Iterator[Path]:
    """A temp path next to ``path`` that is fsynced and renamed onto it on success, removed on failure.

    The temp file is created with mode 0666 minus the umask (as ``open`` would create ``path``),
    not ``mkstemp``'s 0600, so the published file has the usual mode (0644 under umask 022). A place where this user
    cannot create it is :class:`~rewardline.errors.BadInput` naming it (:func:`~rewardline.ops.atomic.check_writable`).
    """
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.part"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except OSError as err:
        if err.errno in UNWRITABLE:
            check_writable(path)  # raises BadInput naming the folder and why
        raise
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _atomic_remote(fs, path: str, send: Callable[[str], None]) -> None:  # noqa: ANN001
    """``send(target)`` to ``path`` itself on an object store (its PUT is atomic), else to a temp name
    beside it that is then moved onto it (removed on failure)."""
    if _protocols(fs) & set(ATOMIC_PUT):
        send(path)
        return
    parent, _, name = path.rpartition("/")
    tmp = f"{parent}/.{name}.{secrets.token_hex(6)}.part"
    with contextlib.suppress(NotImplementedError, PermissionError):  # parents, as on the local disk
        fs.makedirs(parent, exist_ok=True)
    try:
        send(tmp)
        fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(tmp)
        raise


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to a local file (parents created, atomic rename) or a remote object (atomic, see
    the module docstring; S3 multipart from ``multipart_threshold`` bytes up)."""
    try:
        if is_remote(uri):
            fs, path = filesystem(uri)
            chunk = {"chunksize": settings().multipart_chunksize} if is_s3(uri) else {}
            if is_s3(uri) and len(data) >= settings().multipart_threshold:
                with staged_output(uri) as staged:
                    staged.write_bytes(data)
                return
            _atomic_remote(fs, path, lambda target: fs.pipe_file(target, data, **chunk))
            return
        with _atomic_local(Path(uri.removeprefix("file://"))) as tmp:
            tmp.write_bytes(data)
    except (StorageError, BadInput):
        raise
    except Exception as err:
        raise _fail("writing", uri, err) from err


@contextlib.contextmanager
def staged_output(uri: str) -> Iterator[Path]:
    """A local file to write ``uri``'s content into, piece by piece; when the block ends without an error the file
    becomes ``uri`` whole (a local target: fsynced and renamed into place; a remote one: :func:`upload_file`), and
    on an error it is removed and ``uri`` is left as it was. Errors of the storage itself raise
    :class:`StorageError` / :class:`~rewardline.errors.PermissionDenied`; the block's own errors pass unchanged."""
    if is_remote(uri):
        with tempfile.TemporaryDirectory(prefix="rewardline-staged-") as folder:
            staged = Path(folder) / "staged"
            staged.touch()
            yield staged
            upload_file(staged, uri)
        return
    atomic = _atomic_local(Path(uri.removeprefix("file://")))
    try:
        staged = atomic.__enter__()
    except BadInput:  # a folder this user cannot write: named as such
        raise
    except Exception as err:
        raise _fail("writing", uri, err) from err
    try:
        yield staged
    except BaseException as err:
        atomic.__exit__(type(err), err, err.__traceback__)  # removes the staged file, then the error goes on
        raise
    try:
        atomic.__exit__(None, None, None)
    except Exception as err:
        raise _fail("writing", uri, err) from err


class _Progress:
    """An fsspec callback that hands each completed part's byte count to ``progress``."""

    def __init__(self, progress: Callable[[int], None] | None) -> None:
        from fsspec.callbacks import Callback

        outer = progress

        class Relay(Callback):
            def relative_update(self, inc: int = 1) -> None:
                super().relative_update(inc)
                if outer is not None:
                    outer(inc)

        self.callback = Relay()


def upload_file(local_path: str | Path, uri: str, progress: Callable[[int], None] | None = None) -> None:
    """Copy a local file to ``uri`` (local or remote); on S3 multipart from ``multipart_threshold`` bytes up.

    ``progress(n_bytes)`` is called after each completed part (or once for a single PUT).
    The object becomes visible only when the whole upload succeeded; on failure the
    multipart upload is aborted (see the module docstring) and :class:`StorageError` raised.
    """
    local_path = Path(local_path)
    if not is_remote(uri):
        try:
            with (_atomic_local(Path(uri.removeprefix("file://"))) as tmp, local_path.open("rb") as src,
                  tmp.open("wb") as dst):
                while chunk := src.read(MIB):
                    dst.write(chunk)
        except Exception as err:
            raise _fail("writing", uri, err) from err
        if progress:
            progress(local_path.stat().st_size)
        return
    cfg = settings()
    try:
        size = local_path.stat().st_size
        fs, path = filesystem(uri)
    except Exception as err:
        raise _fail("writing", uri, err) from err
    if not is_s3(uri):
        try:
            _atomic_remote(fs, path, lambda target: fs.put_file(str(local_path), target))
        except Exception as err:
            raise _fail("writing", uri, err) from err
        if progress:
            progress(size)
        return
    # s3fs: one PUT below 2 * chunksize, else a multipart upload in chunksize parts, aborted on failure
    chunksize = max(cfg.multipart_chunksize, MIN_PART_SIZE) if size >= cfg.multipart_threshold else max(size, 1)
    try:
        fs.put_file(str(local_path), path, callback=_Progress(progress).callback, chunksize=chunksize)
    except Exception as err:
        if refusal := _refusal(err):  # a retry is refused the same way: exit 2, not an outage
            raise PermissionDenied(uri, detail=f"writing failed: {refusal}") from err
        multipart = size >= 2 * chunksize
        note = ("the object is not visible; if the server kept the parts of the incomplete multipart upload, "
                "remove them with rewardline.ops.storage.abort_incomplete_uploads" if multipart
                else "the object is not visible")
        raise StorageError(
            f"writing {uri} failed after {cfg.max_attempts} attempts per request: {err}; {note}") from err


def abort_incomplete_uploads(uri: str) -> list[str]:
    """Abort every unfinished multipart upload under the S3 prefix ``uri``; returns the aborted keys."""
    from fsspec.asyn import sync

    bucket, prefix = split_s3(uri)
    fs, _ = filesystem(uri)
    aborted = []
    try:
        for upload in fs.list_multipart_uploads(bucket):
            if upload["Key"].startswith(prefix):
                sync(fs.loop, fs._call_s3, "abort_multipart_upload", Bucket=bucket, Key=upload["Key"],
                     UploadId=upload["UploadId"])
                aborted.append(upload["Key"])
    except Exception as err:
        raise _fail("aborting uploads under", uri, err) from err
    return aborted


def download_file(uri: str, local_path: str | Path) -> None:
    """Copy ``uri`` (local or remote) to a local file; the file appears only once complete."""
    local_path = Path(local_path)
    try:
        with _atomic_local(local_path) as tmp:
            if is_remote(uri):
                fs, path = filesystem(uri)
                fs.get_file(path, str(tmp))
            else:
                tmp.write_bytes(Path(uri.removeprefix("file://")).read_bytes())
    except Exception as err:
        raise _fail("reading", uri, err) from err
