"""Batch ids are plain names wherever they are read: the inbox listing, the ledger, the retrain cycle."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from rewardline.retraining import cycle as rt
from rewardline.retraining import inbox
from rewardline.retraining.ledger import Ledger

FRESH = Path(__file__).parents[1] / "fixtures" / "fresh_batches" / "batch-01-in-distribution"
BAD_IDS = ["..", ".", "../x", "a/../b", "a/b", "", " a", "a b", ".hidden", "-flag", "a..b", "a" * 129, "é", None, 7]


@pytest.mark.parametrize("batch_id", ["a", "batch-01", "2024-06-01_run.3", "A" * 128])
def test_plain_names_are_valid(batch_id: str):
    assert inbox.batch_id_problem(batch_id) is None and inbox.check_batch_id(batch_id) == batch_id


@pytest.mark.parametrize("batch_id", BAD_IDS)
def test_anything_else_is_refused_with_the_reason(batch_id: object):
    problem = inbox.batch_id_problem(batch_id)
    assert problem and problem.startswith(f"invalid batch id {batch_id!r}: expected")
    with pytest.raises(ValueError, match="invalid batch id"):
        inbox.check_batch_id(batch_id)


def test_discover_skips_an_invalid_batch_folder_without_reading_it(tmp_path: Path):
    root = str(tmp_path / "inbox")
    inbox.write_batch(root, "good", (FRESH / "samples.jsonl").read_bytes())
    for name in ("bad..id", "bad id"):  # valid folder names, invalid batch ids
        (tmp_path / "inbox" / name).mkdir()
        (tmp_path / "inbox" / name / "samples.jsonl").write_bytes(b"{}\n")
    ready, skipped = inbox.discover(root)
    assert [b.batch_id for b in ready] == ["good"]
    assert {s.batch_id: s.reason.split(":")[0] for s in skipped} == {
        "bad id": "invalid batch id 'bad id'", "bad..id": "invalid batch id 'bad..id'"}
    with pytest.raises(ValueError, match="invalid batch id"):
        inbox.write_batch(root, "..", b"{}\n")


def test_the_ledger_refuses_and_skips_invalid_ids_and_recovery_never_leaves_fresh_dir(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    cfg = rt.RetrainConfig()
    ledger = Ledger(tmp_path / cfg.ledger)
    with pytest.raises(ValueError, match="invalid batch id '../../victim'"):
        ledger.record("../../victim", "h", "started")
    ledger.record("ok", "h", "started")
    victim = tmp_path / "victim.jsonl"  # what "../../victim" would name from data/raw/fresh/
    victim.write_text("keep me\n")
    with ledger.path.open("ab") as fh:  # a hand-edited line
        fh.write(orjson.dumps({"batch_id": "../../../victim", "content_hash": "h", "state": "appended"}) + b"\n")
    with caplog.at_level(logging.WARNING):
        assert [e["batch_id"] for e in ledger.events()] == ["ok"]
    assert "ledger.jsonl:2: invalid batch id '../../../victim'" in caplog.text
    assert rt.recover(tmp_path, cfg, ledger) == ["ok"]
    assert victim.read_text() == "keep me\n"
    with pytest.raises(ValueError, match="invalid batch id"):
        rt.fresh_path(tmp_path, cfg, "../../victim")
