"""Read, write and list files on the local disk or on S3 (``s3://bucket/key``).

S3 goes through boto3:

* credentials come from the standard AWS chain (env ``AWS_ACCESS_KEY_ID`` /
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE`` + ``~/.aws``, instance roles) and are never
  read, stored or logged here;
* the endpoint from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (e.g. a local
  SeaweedFS or MinIO), else from :func:`configure` (``storage.endpoint_url`` in
  ``params.yaml``), else AWS itself;
* retries use botocore's ``standard`` mode (exponential backoff with jitter, also on
  connection errors), ``max_attempts`` and connect/read timeouts configurable;
* listings are paginated; files from ``multipart_threshold`` bytes up are uploaded in
  parts, and an S3 multipart object only becomes visible when the upload completes; a
  failed upload is aborted (best effort: when the server is unreachable the error says
  which upload id is left, invisible, for :func:`abort_incomplete_uploads` or a bucket
  lifecycle rule to remove).

Local writes go to a temp file in the target directory and are renamed into place
(``os.replace``), so a reader never sees a half-written file. Failures raise
:class:`StorageError` naming the URI.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

S3_SCHEME = "s3://"
DEFAULT_MAX_ATTEMPTS = 5
MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB  # S3's minimum for every part but the last


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


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> (``bucket``, ``some/key``)."""
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise ValueError(f"{uri}: expected s3://bucket/key")
    return bucket, key


def endpoint_url() -> str | None:
    """The S3 endpoint override (env, else :func:`configure`), if any."""
    return settings().endpoint_url


@lru_cache(maxsize=8)
def _client(
    endpoint: str | None, max_attempts: int, timeouts: tuple[float, float], pool: int, identity: tuple[str | None, ...]
):  # noqa: ANN202
    """One client per (endpoint, retries, timeouts, credential env): boto3 clients are thread-safe but costly."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=timeouts[0],
        read_timeout=timeouts[1],
        max_pool_connections=max(10, pool * 2),
        # S3-compatible servers on a host:port need path-style addressing; AWS picks its own.
        s3={"addressing_style": "path" if endpoint else "auto"},
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)


def s3_client(max_attempts: int | None = None):  # noqa: ANN201
    """A cached boto3 S3 client for the current settings (``max_attempts`` overrides the setting)."""
    cfg = settings()
    identity = tuple(
        os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION")
    )
    attempts = max_attempts if max_attempts is not None else cfg.max_attempts
    return _client(cfg.endpoint_url, attempts, (cfg.connect_timeout, cfg.read_timeout), cfg.max_concurrency, identity)


def _fail(op: str, uri: str, err: Exception) -> StorageError:
    return StorageError(f"{op} {uri} failed: {err}")


def list_files(uri: str, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """Sorted file URIs under ``uri`` (a file, a directory searched recursively, or an S3 prefix).

    ``suffixes`` keeps only names ending in one of them (e.g. ``(".jsonl", ".jsonl.gz")``).
    """

    def wanted(name: str) -> bool:
        return suffixes is None or name.endswith(tuple(suffixes))

    if is_s3(uri):
        bucket, prefix = split_s3(uri)
        out = []
        try:
            for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                out += [
                    f"{S3_SCHEME}{bucket}/{obj['Key']}"
                    for obj in page.get("Contents", [])
                    if not obj["Key"].endswith("/") and wanted(obj["Key"])
                ]
        except Exception as err:  # botocore raises many unrelated types
            raise _fail("listing", uri, err) from err
        return sorted(out)
    path = Path(uri)
    if path.is_file():
        return [str(path)] if wanted(path.name) else []
    if not path.is_dir():
        raise StorageNotFound(f"listing {uri} failed: {_why_missing(path)}")
    found = []
    for entry in path.rglob("*"):
        if entry.is_file():
            found += [str(entry)] if wanted(entry.name) else []
        elif entry.is_symlink() and (why := _why_missing(entry)).startswith("symlink loop"):
            raise StorageNotFound(f"listing {uri} failed: {why}")  # a dangling link is skipped, a loop is not
    return sorted(found)


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


def exists(uri: str) -> bool:
    """True when the local file or S3 object exists (an S3 object only once its write completed)."""
    if not is_s3(uri):
        return Path(uri).is_file()
    bucket, key = split_s3(uri)
    try:
        s3_client().head_object(Bucket=bucket, Key=key)
        return True
    except Exception as err:
        code = getattr(err, "response", {}).get("Error", {}).get("Code")
        if code in ("404", "NoSuchKey", "NotFound"):
            return False
        raise _fail("checking", uri, err) from err


def read_bytes(uri: str) -> bytes:
    """The whole content of a local file or S3 object."""
    try:
        if is_s3(uri):
            bucket, key = split_s3(uri)
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return Path(uri).read_bytes()
    except Exception as err:
        raise _fail("reading", uri, err) from err


@contextlib.contextmanager
def _atomic_local(path: Path) -> Iterator[Path]:
    """A temp path next to ``path`` that is fsynced and renamed onto it on success, removed on failure.

    The temp file is created with mode 0666 minus the umask (as ``open`` would create ``path``),
    not ``mkstemp``'s 0600, so the published file has the usual mode (0644 under umask 022).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.part"
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
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


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to a local file (parents created, atomic rename) or an S3 object (atomic PUT)."""
    try:
        if is_s3(uri):
            bucket, key = split_s3(uri)
            if len(data) >= settings().multipart_threshold:
                with tempfile.NamedTemporaryFile(suffix=".upload") as tmp:
                    tmp.write(data)
                    tmp.flush()
                    upload_file(tmp.name, uri)
                return
            s3_client().put_object(Bucket=bucket, Key=key, Body=data)
            return
        with _atomic_local(Path(uri)) as tmp:
            tmp.write_bytes(data)
    except StorageError:
        raise
    except Exception as err:
        raise _fail("writing", uri, err) from err


def upload_file(local_path: str | Path, uri: str, progress: Callable[[int], None] | None = None) -> None:
    """Copy a local file to ``uri`` (S3 or local), multipart from ``multipart_threshold`` bytes up.

    ``progress(n_bytes)`` is called after each completed part (or once for a single PUT).
    The object becomes visible only when the whole upload succeeded; on failure the
    multipart upload is aborted (see the module docstring) and :class:`StorageError` raised.
    """
    local_path = Path(local_path)
    if not is_s3(uri):
        try:
            with _atomic_local(Path(uri)) as tmp, local_path.open("rb") as src, tmp.open("wb") as dst:
                while chunk := src.read(MIB):
                    dst.write(chunk)
        except Exception as err:
            raise _fail("writing", uri, err) from err
        if progress:
            progress(local_path.stat().st_size)
        return
    cfg = settings()
    size = local_path.stat().st_size
    bucket, key = split_s3(uri)
    client = s3_client()
    if size < cfg.multipart_threshold:
        try:
            with local_path.open("rb") as body:
                client.put_object(Bucket=bucket, Key=key, Body=body)
        except Exception as err:
            raise _fail("writing", uri, err) from err
        if progress:
            progress(size)
        return
    _multipart_upload(client, local_path, bucket, key, size, cfg, progress)


def _multipart_upload(
    client, path: Path, bucket: str, key: str, size: int, cfg: S3Settings, progress: Callable[[int], None] | None
) -> None:
    uri = f"{S3_SCHEME}{bucket}/{key}"
    chunk = max(cfg.multipart_chunksize, MIN_PART_SIZE)
    offsets = list(range(0, size, chunk))
    try:
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    except Exception as err:
        raise _fail("writing", uri, err) from err

    def send(number_offset: tuple[int, int]) -> dict:
        number, offset = number_offset
        with path.open("rb") as fh:
            fh.seek(offset)
            body = fh.read(chunk)
        etag = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body)["ETag"]
        if progress:
            progress(len(body))
        return {"PartNumber": number, "ETag": etag}

    try:
        with ThreadPoolExecutor(max(1, cfg.max_concurrency)) as pool:
            parts = list(pool.map(send, enumerate(offsets, start=1)))
        client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    except Exception as err:
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            note = "incomplete upload aborted, nothing written"
        except Exception as abort_err:  # server gone: the parts stay invisible until aborted
            note = (
                f"incomplete multipart upload {upload_id} could not be aborted ({type(abort_err).__name__}); "
                "the object is not visible; remove the upload with rewardline.ops.storage.abort_incomplete_uploads"
            )
        raise StorageError(
            f"writing {uri} failed after {cfg.max_attempts} attempts per request: {err}; {note}"
        ) from err


def abort_incomplete_uploads(uri: str) -> list[str]:
    """Abort every unfinished multipart upload under the S3 prefix ``uri``; returns the aborted keys."""
    bucket, prefix = split_s3(uri)
    client = s3_client()
    aborted = []
    try:
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                aborted.append(upload["Key"])
    except Exception as err:
        raise _fail("aborting uploads under", uri, err) from err
    return aborted


def download_file(uri: str, local_path: str | Path) -> None:
    """Copy ``uri`` (S3 or local) to a local file; the file appears only once complete."""
    local_path = Path(local_path)
    try:
        with _atomic_local(local_path) as tmp:
            if is_s3(uri):
                bucket, key = split_s3(uri)
                from boto3.s3.transfer import TransferConfig

                cfg = settings()
                transfer = TransferConfig(
                    multipart_threshold=cfg.multipart_threshold,
                    multipart_chunksize=cfg.multipart_chunksize,
                    max_concurrency=cfg.max_concurrency,
                )
                s3_client().download_file(bucket, key, str(tmp), Config=transfer)
            else:
                tmp.write_bytes(Path(uri).read_bytes())
    except Exception as err:
        raise _fail("reading", uri, err) from err
