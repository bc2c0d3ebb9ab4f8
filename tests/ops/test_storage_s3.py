"""rewardline.ops.storage against a real S3 server (SeaweedFS ``weed mini``, see conftest.s3_server)."""

from __future__ import annotations

import gzip
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rewardline.data.adapters import read_file
from rewardline.ops import storage

N_OBJECTS = 1234  # > 1000: list_objects_v2 returns at most 1000 keys per page


def test_is_s3_and_split() -> None:
    assert storage.is_s3("s3://b/k/x.jsonl") and not storage.is_s3("/tmp/x.jsonl")
    assert storage.split_s3("s3://bucket/a/b.json") == ("bucket", "a/b.json")
    with pytest.raises(ValueError, match="expected s3://bucket/key"):
        storage.split_s3("s3:///key")


def test_local_list_read_write(tmp_path: Path) -> None:
    storage.write_bytes(str(tmp_path / "a" / "b" / "x.jsonl"), b"1\n")
    storage.write_bytes(str(tmp_path / "a" / "y.csv"), b"h\n")
    storage.write_bytes(str(tmp_path / "z.jsonl.gz"), gzip.compress(b"2\n"))
    files = storage.list_files(str(tmp_path))
    assert files == sorted(files) and len(files) == 3
    assert storage.list_files(str(tmp_path), suffixes=(".jsonl", ".jsonl.gz")) == [
        str(tmp_path / "a" / "b" / "x.jsonl"),
        str(tmp_path / "z.jsonl.gz"),
    ]
    assert storage.list_files(str(tmp_path / "a" / "y.csv")) == [str(tmp_path / "a" / "y.csv")]
    assert storage.read_bytes(str(tmp_path / "a" / "b" / "x.jsonl")) == b"1\n"
    with pytest.raises(storage.StorageError, match="nope"):
        storage.read_bytes(str(tmp_path / "nope"))
    with pytest.raises(storage.StorageError, match="no such file"):
        storage.list_files(str(tmp_path / "missing"))


@pytest.mark.parametrize("remote", [False, True])
def test_a_staged_output_appears_whole_or_not_at_all(tmp_path: Path, remote: bool, request) -> None:
    """`staged_output` (what `score` streams its chunks into): written piece by piece, the target appears only when
    the block succeeds; an error in the block leaves the old target (or none) and no temp file behind."""
    if remote:
        s3 = request.getfixturevalue("s3_env")
        target = f"s3://{s3.bucket}/staged/{tmp_path.name}/out.jsonl"
    else:
        target = str(tmp_path / "out" / "out.jsonl")
    with storage.staged_output(target) as staged, staged.open("wb") as sink:
        for piece in (b"1\n", b"2\n"):
            sink.write(piece)
            assert not storage.exists(target)  # nothing visible while it is written
    assert storage.read_bytes(target) == b"1\n2\n"
    with pytest.raises(RuntimeError, match="killed mid-write"), storage.staged_output(target) as staged:
        staged.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert storage.read_bytes(target) == b"1\n2\n"  # the old content, untouched
    if not remote:
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["out.jsonl"]  # no .part left


def test_s3_pagination_and_round_trip(s3_env) -> None:
    prefix = f"s3://{s3_env.bucket}/many/"
    uris = [f"{prefix}part-{i:05d}.jsonl" for i in range(N_OBJECTS)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda u: storage.write_bytes(u, u.encode()), uris))
    storage.write_bytes(f"{prefix}other.csv", b"x")

    listed = storage.list_files(prefix, suffixes=(".jsonl",))
    assert listed == sorted(uris)  # all pages, sorted, suffix-filtered
    assert len(storage.list_files(prefix)) == N_OBJECTS + 1
    assert storage.read_bytes(uris[1001]) == uris[1001].encode()

    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
    storage.write_bytes(f"s3://{s3_env.bucket}/blob/bin", payload)
    assert storage.read_bytes(f"s3://{s3_env.bucket}/blob/bin") == payload


def test_s3_errors_name_the_uri(s3_env) -> None:
    missing = f"s3://{s3_env.bucket}/does/not/exist.jsonl"
    with pytest.raises(storage.StorageError, match="does/not/exist.jsonl"):
        storage.read_bytes(missing)
    with pytest.raises(storage.StorageError, match="no-such-bucket"):
        storage.list_files("s3://no-such-bucket/x/")


def test_ingest_hh_rlhf_from_s3(s3_env, fixtures_dir: Path) -> None:
    local = (fixtures_dir / "hh_rlhf_30.jsonl").read_bytes()
    uri = f"s3://{s3_env.bucket}/raw/hh_rlhf_30.jsonl.gz"
    storage.write_bytes(uri, gzip.compress(local))
    [found] = storage.list_files(f"s3://{s3_env.bucket}/raw/", suffixes=(".jsonl.gz",))
    result = read_file(storage.read_bytes(found), found)
    assert result.records_in == 30 and result.quarantine.num_rows == 0
    assert result.ranked.num_rows == 60
    assert set(result.ranked.column("origin_file").to_pylist()) == {uri}
    from_disk = read_file(local, "hh_rlhf_30.jsonl").ranked
    assert result.ranked.drop_columns(["origin_file"]).equals(from_disk.drop_columns(["origin_file"]))


def test_a_refused_caller_is_bad_input_not_an_outage(s3_env, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    """A key the server does not know, or no credentials at all, used to be a StorageError (exit 3), which the
    flows retry with backoff to no avail: it is PermissionDenied (exit 2) naming the URI and what to check."""
    from rewardline.errors import EXIT_BAD_INPUT, PermissionDenied, exit_code

    uri = f"s3://{s3_env.bucket}/refused/x.jsonl"
    storage.write_bytes(uri, b"{}\n")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody-we-know")
    with pytest.raises(PermissionDenied) as unknown:
        storage.read_bytes(uri)
    assert re.fullmatch(rf"{uri}: reading failed: refused \((HTTP 403|InvalidAccessKeyId)\): check the credentials "
                        r"and the bucket's permissions", str(unknown.value)), str(unknown.value)
    assert exit_code(unknown.value) == EXIT_BAD_INPUT
    with pytest.raises(PermissionDenied, match="writing failed: refused"):
        storage.write_bytes(f"s3://{s3_env.bucket}/refused/y.jsonl", b"{}\n")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(PermissionDenied) as nobody:
        storage.read_bytes(uri)
    assert str(nobody.value) == f"{uri}: reading failed: no credentials found (set AWS_ACCESS_KEY_ID and " \
                                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
    assert exit_code(nobody.value) == EXIT_BAD_INPUT


def test_a_refused_upload_is_bad_input_naming_the_uri(s3_env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Was: `rewardline score --input x.parquet --out s3://bucket/y.parquet` with a wrong AWS_SECRET_ACCESS_KEY exited 3
    (transient, retried to no avail) 'writing s3://... failed after 5 attempts per request: The request signature we
    calculated does not match ...'; upload_file (score's, rerank's and every staged S3 output) did not check for a
    refusal as write_bytes does. Now PermissionDenied, exit 2."""
    from rewardline.errors import EXIT_BAD_INPUT, PermissionDenied, exit_code

    local = tmp_path / "y.jsonl"
    local.write_bytes(b"{}\n")
    uri = f"s3://{s3_env.bucket}/refused-upload/y.jsonl"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody-we-know")
    for size in (4, storage.settings().multipart_threshold):  # one PUT; a multipart upload
        local.write_bytes(b"{}\n".ljust(size, b" "))
        with pytest.raises(PermissionDenied) as refused:
            storage.upload_file(local, uri)
        assert re.fullmatch(rf"{uri}: writing failed: refused \((HTTP 403|InvalidAccessKeyId)\): check the credentials "
                            r"and the bucket's permissions", str(refused.value)), refused.value
        assert exit_code(refused.value) == EXIT_BAD_INPUT
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_env.env["AWS_ACCESS_KEY_ID"])
    assert not storage.exists(uri)


def test_a_changed_secret_is_used_not_the_cached_clients(s3_env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: the cached filesystem was keyed by the access key id only, so a process (a server, a flow) whose
    AWS_SECRET_ACCESS_KEY or session token changed under the same id kept signing with the old secret."""
    from rewardline.errors import PermissionDenied

    uri = f"s3://{s3_env.bucket}/rotated/x.txt"
    storage.write_bytes(uri, b"x")
    assert storage.read_bytes(uri) == b"x"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(PermissionDenied, match="reading failed: refused"):
        storage.read_bytes(uri)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.env["AWS_SECRET_ACCESS_KEY"])
    assert storage.read_bytes(uri) == b"x"


def test_an_s3_url_without_a_bucket_is_bad_input(s3_env) -> None:
    """Was: `rewardline ingest s3:// --out DIR` exited 3 (transient, retried to no avail) 'listing s3:// failed:
    Cannot traverse all of S3'. A URL naming no bucket is the user's: StorageNotFound, exit 2, saying what to give."""
    from rewardline.errors import EXIT_BAD_INPUT, exit_code

    for uri in ("s3://", "s3:///"):
        with pytest.raises(storage.StorageNotFound) as listing:
            storage.list_files(uri)
        assert str(listing.value) == f"listing {uri} failed: no bucket named; expected s3://bucket/key"
        assert exit_code(listing.value) == EXIT_BAD_INPUT
        with pytest.raises(storage.StorageNotFound, match=re.escape(f"reading {uri} failed: no bucket named")):
            storage.read_bytes(uri)
