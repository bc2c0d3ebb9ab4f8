"""Out-of-core data stages (rewardline.data.buckets): ingest, validate and pairs forced to 4 prompt buckets give
the outputs of the one-bucket (in-memory) run on a small source with faulty records and several annotators.

Tables are compared as sets of rows (sorted): with several buckets a table holds the buckets one after the
other. Counts and the record accounting must be equal; float metrics equal to 1e-9 (sums over buckets add in
another order); the Thurstone utilities to 1e-6 (each bucket's Newton fit stops at the same tolerance,
max |∇L| < 1e-8, after its own number of iterations).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rewardline.data import buckets
from rewardline.data.ingest import IngestConfig, Source, run_ingest
from rewardline.data.synthetic import synthetic_rankings_table
from rewardline.data.tables import copy_table, parts_of, read_table
from rewardline.pairs.expand import PairsConfig, run_pairs
from rewardline.validation.validate import ValidateConfig, run_validate

SHARDS = 4


def _source(path: Path) -> Path:
    """400 nested rankings, half the prompts ranked by 3 of 8 annotators, with faulty records: an empty response
    text, a missing annotator, a record repeated (duplicate ranking), a prompt id reused with another text, a rank
    out of range; and one annotator who ranks at random (excluded by validate at min agreement 0.3)."""
    table = synthetic_rankings_table(400, k=4, response_chars=30, multi_annotator_share=0.5, n_annotators=8, seed=3)
    rows = table.to_pylist()
    rng = np.random.default_rng(0)
    for row in rows:
        if row["annotator_id"] == "annotator-0003":
            for response, rank in zip(row["responses"], rng.permutation(len(row["responses"])) + 1, strict=True):
                response["rank"] = int(rank)
    rows[2]["responses"][1]["text"] = ""
    rows[9]["annotator_id"] = None
    rows.append(rows[5])
    rows[30]["prompt"] = rows[30]["prompt"] + " (edited)"
    rows[41]["responses"][0]["rank"] = 9
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    return path


def _rows(path: Path) -> list[dict]:
    """The table's rows, sorted (a table holds its buckets one after the other; a split, one part per bucket)."""
    rows = read_table(path).to_pylist()
    return sorted(rows, key=lambda row: json.dumps(row, sort_keys=True, default=str))


def _close(a: object, b: object, tol: float) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=tol, abs_tol=tol)
    return a == b


def _run(source: Path, out: Path, shards: int | None, later_shards: int | None = -1) -> dict[str, dict]:
    """The three stages, ingest forced to ``shards`` buckets, validate and pairs to ``later_shards`` (default: the
    same; None: not forced, so they take ingest's parts as their buckets)."""
    later = shards if later_shards == -1 else later_shards
    ingest = run_ingest(IngestConfig(sources=[Source(path=str(source), format="rankings")]), out / "ingested",
                        shards=shards)
    validate = run_validate(out / "ingested", out / "validated", ValidateConfig(min_annotator_agreement=0.3,
                                                                                min_alpha=0.0), shards=later)
    pairs = run_pairs(out / "validated", out / "pairs", PairsConfig(targets="thurstone"), shards=later)
    return {"ingest": ingest, "validate": validate, "pairs": pairs}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path, dict]:
    root = tmp_path_factory.mktemp("ooc")
    source = _source(root / "rankings.parquet")
    return root / "one", _run(source, root / "one", None), root / "four", _run(source, root / "four", SHARDS)


def test_forced_buckets_give_the_one_bucket_metrics(runs: tuple[Path, dict, Path, dict]) -> None:
    _, one, _, four = runs
    ingest = one["ingest"]
    assert ingest["rows_in"] == 401 == ingest["rows_ok"] + ingest["rows_quarantined"]
    assert ingest["rows_quarantined"] >= 5 and four["ingest"] == ingest
    assert one["validate"]["annotators_excluded"] == ["annotator-0003"]
    assert one["validate"]["rankings_removed"] > 0 and one["validate"]["expectations_failed"] == 0
    assert _close(four["validate"], one["validate"], 1e-9)
    targets_one, targets_four = one["pairs"].pop("targets"), four["pairs"].pop("targets")
    assert _close(four["pairs"], one["pairs"], 1e-9)
    assert targets_four["responses"] == targets_one["responses"] > 0
    assert targets_four["max_gradient"] < 1e-6
    assert math.isclose(targets_four["se_median"], targets_one["se_median"], rel_tol=1e-6)


@pytest.mark.parametrize("table", ["ingested/prompts", "ingested/responses", "ingested/rankings",
                                   "ingested/quarantine.parquet", "validated/prompts", "validated/responses",
                                   "validated/rankings", "pairs/prompts", "pairs/responses", "pairs/train",
                                   "pairs/val", "pairs/test", "pairs/targets"])
def test_forced_buckets_give_the_one_bucket_tables(runs: tuple[Path, dict, Path, dict], table: str) -> None:
    one_dir, _, four_dir, _ = runs
    one, four = _rows(one_dir / table), _rows(four_dir / table)
    assert one and four == one
    if not table.endswith(".parquet"):  # partitioned: a part per prompt bucket
        assert len(parts_of(one_dir / table)) == 1 and len(parts_of(four_dir / table)) == SHARDS


def test_forced_buckets_give_the_one_bucket_utilities(runs: tuple[Path, dict, Path, dict]) -> None:
    one_dir, _, four_dir, _ = runs
    key = ("prompt_id", "response_id")
    one = read_table(one_dir / "pairs/targets").sort_by([(k, "ascending") for k in key])
    four = read_table(four_dir / "pairs/targets").sort_by([(k, "ascending") for k in key])
    assert one.select([*key, "split", "anchored"]).equals(four.select([*key, "split", "anchored"]))
    np.testing.assert_allclose(four["utility"].to_numpy(), one["utility"].to_numpy(), atol=1e-6)
    np.testing.assert_allclose(four["se"].to_numpy(), one["se"].to_numpy(), atol=1e-6)


def test_validate_counts_a_fault_outside_the_sample_bucket(tmp_path: Path,
                                                           runs: tuple[Path, dict, Path, dict]) -> None:
    """A null batch_id in a rankings row: found by the exact per-bucket counts whichever bucket it is in."""
    one_dir, _, _, _ = runs
    broken = tmp_path / "ingested"
    broken.mkdir()
    for name in ("prompts", "responses"):
        copy_table(one_dir / "ingested", broken, name)
    rankings = read_table(one_dir / "ingested/rankings")
    batch = rankings["batch_id"].to_pylist()
    batch[-1] = None
    pq.write_table(rankings.set_column(rankings.schema.get_field_index("batch_id"), "batch_id",
                                       pa.array(batch, pa.string())), broken / "rankings.parquet")  # older layout
    for shards in (None, SHARDS):
        metrics = run_validate(broken, tmp_path / f"validated-{shards}", ValidateConfig(min_alpha=0.0), shards=shards)
        assert metrics["expectations_failed"] == 1, shards
        report = json.loads((tmp_path / f"validated-{shards}" / "report.json").read_text())
        failure = report["expectations"]["failed"][0]
        assert (failure["expectation"], failure["column"], failure["unexpected_count"]) == (
            "expect_column_values_to_not_be_null", "batch_id", 1)


def test_validate_and_pairs_take_ingests_parts_as_their_buckets(tmp_path: Path,
                                                                 runs: tuple[Path, dict, Path, dict]) -> None:
    """Ingest in 4 buckets writes 4 prompt-aligned parts per table; validate and pairs, not forced, read part ``i``
    of each table as bucket ``i`` (nothing re-partitioned) and give the forced run's tables and metrics."""
    one_dir, _, four_dir, four = runs
    source = one_dir.parent / "rankings.parquet"  # the runs' source (its path is in the rows' origin_file)
    files = {name: one_dir / "ingested" / name for name in ("prompts", "responses", "rankings")}
    assert buckets.PromptBuckets(files, {}, 10**9).parts is None  # one part each: the one-bucket path
    files = {name: four_dir / "ingested" / name for name in ("prompts", "responses", "rankings")}
    with buckets.PromptBuckets(files, {}, 10**9) as parted:
        assert parted.parts is not None and len(parted.parts) == SHARDS and not parted.spills and not parted.single
    parts = _run(source, tmp_path / "parts", SHARDS, None)
    assert parts["ingest"] == four["ingest"] and _close(parts["validate"], four["validate"], 1e-9)
    without_targets = [{k: v for k, v in run["pairs"].items() if k != "targets"} for run in (parts, four)]
    assert _close(*without_targets, 1e-9) and parts["pairs"]["targets"]["responses"] > 0
    for table in ("validated/prompts", "validated/rankings", "pairs/responses", "pairs/train", "pairs/targets"):
        assert _rows(tmp_path / "parts" / table) == _rows(four_dir / table), table
    for index in range(SHARDS):  # prompt-aligned: part i of every table holds the same prompts
        prompts = set(pq.read_table(tmp_path / f"parts/validated/prompts/part-00{index}.parquet")["prompt_id"]
                      .to_pylist())
        for table in ("validated/rankings", "pairs/train", "pairs/test", "pairs/targets"):
            held = set(pq.read_table(tmp_path / f"parts/{table}/part-00{index}.parquet")["prompt_id"].to_pylist())
            assert held <= prompts, (table, index)


def test_shard_groups_cover_every_shard_once() -> None:
    rows = np.array([5, 0, 3, 9, 1, 0, 2])
    groups = buckets.shard_groups(rows, 6)
    assert [s for g in groups for s in g] == list(range(7))
    assert all(rows[g].sum() <= 6 or len(g) == 1 for g in groups)
    assert buckets.shard_groups(np.zeros(3, np.int64), 6) == [[0, 1, 2]]
