"""A batch's ``rankings.jsonl`` is read as ingest reads it: records it would quarantine are bad input, not 0 pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rewardline.errors import EXIT_BAD_INPUT, BadInput, exit_code
from rewardline.retraining import cycle as rt
from rewardline.retraining import inbox

ROOT = Path(__file__).parents[2]
BATCH = Path(__file__).parents[1] / "fixtures" / "fresh_batches" / "batch-01-in-distribution"


@pytest.fixture(scope="module")
def params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def rankings_records() -> list[dict]:
    return [json.loads(line) for line in (BATCH / "rankings.jsonl").read_text().splitlines()]


def as_batch(tmp_path: Path, records: list[dict]) -> inbox.Batch:
    rankings = "".join(json.dumps(r) + "\n" for r in records).encode()
    return inbox.write_batch(str(tmp_path / "inbox"), "b1", (BATCH / "samples.jsonl").read_bytes(), rankings)


def test_rankings_in_another_format_are_bad_input_naming_the_first_record(tmp_path: Path, params: dict):
    """Chosen/rejected pairs in rankings.jsonl were all quarantined and ignored: the drift check ran on 0 labelled
    pairs, and a retrain decision appended the file to data/raw/fresh."""
    pairs = [{"prompt": r["prompt"], "chosen": r["responses"][0]["text"], "rejected": r["responses"][1]["text"]}
             for r in rankings_records()]
    batch = as_batch(tmp_path, pairs)
    with pytest.raises(BadInput) as err:
        rt.batch_pairs(batch, params)
    message = str(err.value)
    assert message.startswith(f"{batch.file_uri('rankings.jsonl')}:1: field 'annotator_id': "), message
    assert "24 of 24 records quarantined" in message and "ingest.max_quarantine_share" in message, message
    assert "docs/data-contract.md" in message
    assert exit_code(err.value) == EXIT_BAD_INPUT
    assert isinstance(err.value, inbox.Rejected) and err.value.batch_id == "b1"  # the retrain ledger closes the batch


def test_a_few_quarantined_records_within_the_ingest_share_are_tolerated(tmp_path: Path, params: dict):
    records = rankings_records()
    del records[5]["annotator_id"]  # 1 of 24: within a share of 0.05
    bp = rt.batch_pairs(as_batch(tmp_path, records), params)
    assert bp is not None and bp.pairs.num_rows > 0
    strict = {**params, "ingest": {**params["ingest"], "max_quarantine_share": 0.0}}
    with pytest.raises(BadInput, match=r"rankings.jsonl:6: field 'annotator_id'.*1 of 24 records quarantined"):
        rt.batch_pairs(as_batch(tmp_path / "strict", records), strict)


def test_the_fixture_batch_has_no_quarantined_record(tmp_path: Path, params: dict):
    bp = rt.batch_pairs(as_batch(tmp_path, rankings_records()), params)
    assert bp is not None and bp.pairs.num_rows > 100
