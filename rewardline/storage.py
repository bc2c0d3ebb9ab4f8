"""Read, write and list files on the local disk or on S3 (``s3://bucket/key``).

S3 goes through boto3: credentials come from the standard AWS chain (env, config files,
instance roles); the endpoint from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (e.g. a
local SeaweedFS or MinIO); retries use botocore's ``standard`` mode. Failures raise
:class:`StorageError` naming the URI.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

S3_SCHEME = "s3://"
DEFAULT_MAX_ATTEMPTS = 5


class StorageError(OSError):
    """A storage operation failed; the message names the URI."""


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
    """The S3 endpoint override from the environment, if any."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


@lru_cache(maxsize=8)
def _client(endpoint: str | None, max_attempts: int, identity: tuple[str | None, ...]):  # noqa: ANN202
    """One client per (endpoint, retries, credential env): boto3 clients are thread-safe but costly."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": max_attempts}, s3={"addressing_style": "path"})
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)


def s3_client(max_attempts: int = DEFAULT_MAX_ATTEMPTS):  # noqa: ANN201
    """A cached boto3 S3 client for the current endpoint setting."""
    identity = tuple(os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_DEFAULT_REGION"))
    return _client(endpoint_url(), max_attempts, identity)


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
        raise StorageError(f"listing {uri} failed: no such file or directory")
    return sorted(str(p) for p in path.rglob("*") if p.is_file() and wanted(p.name))


def read_bytes(uri: str) -> bytes:
    """The whole content of a local file or S3 object."""
    try:
        if is_s3(uri):
            bucket, key = split_s3(uri)
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return Path(uri).read_bytes()
    except Exception as err:
        raise _fail("reading", uri, err) from err


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to a local file (parents created) or an S3 object."""
    try:
        if is_s3(uri):
            bucket, key = split_s3(uri)
            s3_client().put_object(Bucket=bucket, Key=key, Body=data)
            return
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except Exception as err:
        raise _fail("writing", uri, err) from err
