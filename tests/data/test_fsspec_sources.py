"""Sources on any fsspec filesystem, offline: an ``hf://``-style hub stood in for by a local filesystem
registered under the protocol ``hftest``, ``memory://``, and ``http://`` from a local HTTP server on a
free 127.0.0.1 port.

``hftest://datasets/<org>/<name>/<file>`` maps onto a local directory (fsspec's ``DirFileSystem``), so
ingest, listing and the atomic-write path for filesystems without atomic PUTs (temp name, then move)
run for real through :mod:`rewardline.ops.storage` without a network.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem

from rewardline.data.ingest import IngestConfig, Source, run_ingest
from rewardline.ops import storage

NAMES = ("hh_rlhf_30.jsonl", "rankings_nested.jsonl")


class HubLikeFileSystem(DirFileSystem):
    """A read-write local directory served under ``hftest://`` (paths laid out like the Hugging Face hub's)."""

    protocol = "hftest"
    root = ""  # set by the fixture

    def __init__(self, **kwargs) -> None:
        super().__init__(path=self.root, fs=LocalFileSystem(), **kwargs)


@pytest.fixture
def hub(tmp_path: Path, fixtures_dir: Path) -> Iterator[Path]:
    """``hftest://datasets/org/prefs/data/`` holding two fixture files; the local root returned."""
    root = tmp_path / "hub"
    data = root / "datasets" / "org" / "prefs" / "data"
    data.mkdir(parents=True)
    for name in NAMES:
        (data / name).write_bytes((fixtures_dir / name).read_bytes())
    HubLikeFileSystem.root = str(root)
    fsspec.register_implementation("hftest", HubLikeFileSystem, clobber=True)
    storage._cached_fs.cache_clear()
    yield root
    storage._cached_fs.cache_clear()


def test_ingest_from_an_hf_style_source_matches_the_local_files(hub: Path, fixtures_dir: Path, tmp_path: Path):
    prefix = "hftest://datasets/org/prefs/data/"
    assert storage.is_remote(prefix) and not storage.is_remote(str(fixtures_dir))
    listed = storage.list_files(prefix, suffixes=(".jsonl",))
    assert listed == [prefix + name for name in sorted(NAMES)]
    remote = run_ingest(IngestConfig(sources=[Source(path=prefix)]), tmp_path / "remote")
    local = run_ingest(IngestConfig(sources=[Source(path=str(fixtures_dir / n)) for n in NAMES]), tmp_path / "local")
    assert remote["rows_in"] == local["rows_in"] > 0
    assert remote["rows_quarantined"] == local["rows_quarantined"]
    assert (tmp_path / "remote" / "rankings" / "part-000.parquet").exists()


def test_writes_without_atomic_put_go_through_a_temp_name(hub: Path, tmp_path: Path):
    uri = "hftest://datasets/org/prefs/out/model.bin"
    storage.write_bytes(uri, b"v1")
    storage.write_bytes(uri, b"v2")
    assert storage.read_bytes(uri) == b"v2" and storage.exists(uri)
    assert [p.name for p in (hub / "datasets/org/prefs/out").iterdir()] == ["model.bin"]  # no temp left
    with pytest.raises(storage.StorageError, match="missing.bin"):
        storage.upload_file(tmp_path / "missing.bin", "hftest://datasets/org/prefs/out/missing.bin")
    assert [p.name for p in (hub / "datasets/org/prefs/out").iterdir()] == ["model.bin"]
    storage.download_file(uri, tmp_path / "back" / "model.bin")
    assert (tmp_path / "back" / "model.bin").read_bytes() == b"v2"
    with pytest.raises(storage.StorageNotFound, match="nope"):
        storage.read_bytes("hftest://datasets/org/prefs/nope.jsonl")
    assert not storage.exists("hftest://datasets/org/prefs/nope.jsonl")


def test_memory_filesystem_round_trip(tmp_path: Path):
    src = tmp_path / "x.bin"
    src.write_bytes(b"payload")
    seen: list[int] = []
    storage.upload_file(src, "memory://rewardline-test/a/x.bin", progress=seen.append)
    storage.write_bytes("memory://rewardline-test/a/b/y.jsonl", b"{}\n")
    assert seen == [7]
    assert storage.list_files("memory://rewardline-test/a", suffixes=(".jsonl",)) == [
        "memory:///rewardline-test/a/b/y.jsonl"]
    assert storage.read_bytes("memory://rewardline-test/a/x.bin") == b"payload"
    with pytest.raises(storage.StorageNotFound):
        storage.list_files("memory://rewardline-test/none/")


def test_ingest_from_an_http_url(fixtures_dir: Path, tmp_path: Path):
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(fixtures_dir))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # a free port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hh_rlhf_30.jsonl"
        assert storage.list_files(url, suffixes=(".jsonl",)) == [url] and storage.exists(url)
        remote = run_ingest(IngestConfig(sources=[Source(path=url, format="hh-rlhf")]), tmp_path / "remote")
        on_disk = Source(path=str(fixtures_dir / "hh_rlhf_30.jsonl"), format="hh-rlhf")
        local = run_ingest(IngestConfig(sources=[on_disk]), tmp_path / "local")
        assert remote["rows_in"] == local["rows_in"] > 0
        with pytest.raises(storage.StorageError, match="nope.jsonl"):
            storage.read_bytes(url.replace("hh_rlhf_30", "nope"))
    finally:
        server.shutdown()
        server.server_close()
