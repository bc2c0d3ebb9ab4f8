"""export-pairs: a pairs directory with its texts as TRL rows, and back through ``ingest --format trl``."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from rewardline.cli import app
from rewardline.data import schema
from rewardline.data.tables import read_split, read_table, table_path

FIXTURES = Path(__file__).parents[1] / "fixtures"
runner = CliRunner()


def invoke(*args: str) -> dict:
    result = runner.invoke(app, ["--json", *args, "--params", "absent.yaml"] if args[0] != "export-pairs"
                           else ["--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{"):])


def pairs_dir(tmp_path: Path, *sources: Path, margin: str) -> Path:
    """Hard anchor labels (``anchor_labels=rank``): a TRL row keeps only which side won, not the judge's p."""
    invoke("ingest", *map(str, sources), "--out", str(tmp_path / "ingested"))
    invoke("pairs", str(tmp_path / "ingested"), "--out", str(tmp_path / "pairs"), "--set", f"margin={margin}",
           "--set", "anchor_labels=rank")
    return tmp_path / "pairs"


def triples(directory: Path) -> set[tuple]:
    """Every pair as (split, prompt text, prompt turns, chosen text, rejected text, label, votes, margin,
    category)."""
    prompts = read_table(table_path(directory, "prompts")).to_pylist()
    responses = read_table(table_path(directory, "responses")).to_pylist()
    prompt = {p["prompt_id"]: (p["prompt"], json.dumps(p["prompt_messages"])) for p in prompts}
    text = {r["response_id"]: r["response"] for r in responses}
    out = set()
    for split in schema.SPLITS:
        for p in read_split(directory, split).to_pylist():
            out.add((split, *prompt[p["prompt_id"]], text[p["response_a_id"]], text[p["response_b_id"]],
                     p["label"], p["n_votes"], round(p["margin"], 4), p["category"]))
    return out


@pytest.mark.parametrize("margin", ["none", "score"])
def test_export_then_ingest_as_trl_gives_the_same_pairs(tmp_path: Path, margin: str) -> None:
    """hh-rlhf pairs (multi-turn prompts) + AlpacaEval, 3 samples per prompt: 3 sample-vs-reference judgements and
    the 3 pairs of the K-way sample ranking per prompt (score margins)."""
    original = pairs_dir(tmp_path / "a", FIXTURES / "hh_rlhf_30.jsonl", FIXTURES / "alpacaeval_20x3.json",
                         margin=margin)
    out = tmp_path / "export"
    metrics = invoke("export-pairs", str(original), "--out", str(out), "--format", "trl", "--hf")
    counts = {s: read_split(original, s).num_rows for s in schema.SPLITS}
    assert metrics["rows"] == counts and metrics["ties_left_out"] == dict.fromkeys(schema.SPLITS, 0)
    # 30 hh-rlhf pairs + 20 prompts x (3 sample-vs-reference + 3 sample-vs-sample); no ties in this fixture
    assert sum(counts.values()) == 30 + 20 * (3 + 3)
    assert metrics["margin_column"] is (margin == "score")
    first = orjson.loads((out / "train.jsonl").read_bytes().splitlines()[0])
    assert set(first) == ({"prompt", "chosen", "rejected", "margin", "category", "prompt_id"} if margin == "score"
                          else {"prompt", "chosen", "rejected", "category", "prompt_id"})  # category: AlpacaEval's
    assert pq.read_table(out / "train.parquet").to_pylist()[0] == first

    from datasets import load_from_disk

    hf = load_from_disk(str(out / "hf"))
    assert {s: hf[s].num_rows for s in hf} == counts and hf["train"][0] == first

    back = tmp_path / "b"
    jsonl = [str(out / f"{s}.jsonl") for s in schema.SPLITS]
    ingested = invoke("ingest", *jsonl, "--format", "trl", "--out", str(back / "ingested"))
    assert ingested["rows_quarantined"] == 0 and ingested["rows_in"] == sum(counts.values())
    invoke("pairs", str(back / "ingested"), "--out", str(back / "pairs"), "--set", f"margin={margin}")
    assert triples(back / "pairs") == triples(original)


def test_samples_with_one_text_export_and_ingest_back_as_one_response(tmp_path: Path) -> None:
    """Two AlpacaEval samples of one prompt that came out the same text (the shared data has such) are one response
    to the pairs stage: no pair of a text with itself, so the TRL export has no row whose chosen equals its rejected,
    and re-ingesting it quarantines nothing and gives the same pairs (it used to quarantine such rows as "duplicate
    response in a ranking" and merge the rest)."""
    records = json.loads((FIXTURES / "alpacaeval_20x3.json").read_text())
    same_prompt = [r for r in records if r["instruction"] == records[0]["instruction"]]
    same_prompt[1]["output_2"] = same_prompt[0]["output_2"]  # sample 1 wrote what sample 0 wrote; the judge
    same_prompt[0]["preference"], same_prompt[1]["preference"] = 1.2, 1.8  # ranked them apart all the same
    source = tmp_path / "alpacaeval_same_text.json"
    source.write_text(json.dumps(records))
    original = pairs_dir(tmp_path / "a", source, margin="none")
    pairs = triples(original)
    assert json.loads((original / "metrics.json").read_text())["identical_texts_dropped"] == 1
    assert all(chosen != rejected for _, _, _, chosen, rejected, *_ in pairs)
    assert len(pairs) < 20 * (3 + 3)  # the two samples' comparisons with a third response are one pair
    out = tmp_path / "export"
    invoke("export-pairs", str(original), "--out", str(out), "--format", "trl")
    back = tmp_path / "b"
    ingested = invoke("ingest", *[str(out / f"{s}.jsonl") for s in schema.SPLITS], "--format", "trl",
                      "--out", str(back / "ingested"))
    assert ingested["rows_quarantined"] == 0
    invoke("pairs", str(back / "ingested"), "--out", str(back / "pairs"), "--set", "margin=none")

    def without_votes(rows: set[tuple]) -> set[tuple]:
        """A TRL row is one vote: a merged pair's count is not kept, and a tied pair is left out of the export (the
        equal texts' two judgements against the reference disagree: one pair with label 1/2)."""
        return {(*row[:6], *row[7:]) for row in rows if row[5] != 0.5}

    assert without_votes(triples(back / "pairs")) == without_votes(pairs)


def test_a_source_with_its_own_prompt_ids_comes_back_in_the_same_splits(tmp_path: Path) -> None:
    """Sources that name their prompts (native ``prompt_id``, RewardBench ``id``): the split is a hash of that id,
    so the export carries it and ingest reads it back; without it the re-ingested prompts got ids hashed from their
    texts and pairs moved between train, val and test (a prompt evaluated as test had been trained on)."""
    rows = [{"prompt_id": f"q{i}", "prompt": f"Question {i}?", "category": f"c{i % 3}", "annotator_id": "a",
             "responses": [{"text": f"good {i}", "rank": 1}, {"text": f"fair {i}", "rank": 2},
                           {"text": f"bad {i}", "rank": 3}]} for i in range(40)]
    (tmp_path / "named.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
    original = pairs_dir(tmp_path / "a", tmp_path / "named.jsonl", margin="none")
    out = tmp_path / "export"
    invoke("export-pairs", str(original), "--out", str(out), "--format", "trl")
    rows = [orjson.loads(line) for s in schema.SPLITS for line in (out / f"{s}.jsonl").read_bytes().splitlines()]
    assert {row["prompt_id"] for row in rows} == {p["prompt_id"] for p in read_table(table_path(original,
                                                                                                 "prompts")).to_pylist()}
    back = tmp_path / "b"
    invoke("ingest", *[str(out / f"{s}.jsonl") for s in schema.SPLITS], "--out", str(back / "ingested"))
    invoke("pairs", str(back / "ingested"), "--out", str(back / "pairs"), "--set", "margin=none")
    assert triples(back / "pairs") == triples(original)
    assert {s: read_split(back / "pairs", s).num_rows for s in schema.SPLITS} == \
        {s: read_split(original, s).num_rows for s in schema.SPLITS}


def test_export_leaves_out_tied_pairs_and_names_a_bad_directory(tmp_path: Path) -> None:
    original = tmp_path / "pairs"
    rows = [{"prompt": f"q{i}", "annotator_id": "a", "responses": [{"text": "x", "rank": 1}, {"text": "y", "rank": 1},
                                                                    {"text": "z", "rank": 2}]} for i in range(10)]
    (tmp_path / "tied.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
    invoke("ingest", str(tmp_path / "tied.jsonl"), "--out", str(tmp_path / "ingested"))
    invoke("pairs", str(tmp_path / "ingested"), "--out", str(original), "--set", "ties=half")
    ties = sum(int(pc.sum(pc.equal(read_split(original, s)["label"], 0.5)).as_py() or 0)
               for s in schema.SPLITS)
    assert ties == 10
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "train.jsonl").write_text("{}\n")  # an earlier export's: --out is replaced whole (was kept)
    metrics = invoke("export-pairs", str(original), "--out", str(tmp_path / "out"), "--files", "parquet")
    assert sum(metrics["ties_left_out"].values()) == ties and sum(metrics["rows"].values()) == 20
    assert not (tmp_path / "out" / "train.jsonl").exists() and (tmp_path / "out" / "train.parquet").exists()
    inside = runner.invoke(app, ["export-pairs", str(original), "--out", str(original / "trl")])
    assert inside.exit_code == 2 and f"is inside the input folder {original}" in inside.output, inside.output
    bad = runner.invoke(app, ["export-pairs", str(tmp_path / "ingested"), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "not a pairs directory" in bad.output
    assert "it is an ingest or validate output (rankings): `rewardline validate` and then `rewardline pairs`" \
        in bad.output.replace("\n", "")  # what to run instead
    bad = runner.invoke(app, ["export-pairs", str(original), "--out", str(tmp_path / "x"), "--format", "csv"])
    assert bad.exit_code == 2 and "not supported" in bad.output
    (tmp_path / "file").write_text("precious")  # was: exit 3 (transient), "[Errno 17] File exists"
    bad = runner.invoke(app, ["export-pairs", str(original), "--out", str(tmp_path / "file")])
    assert bad.exit_code == 2 and f"{tmp_path / 'file'}: exists and is not a directory" in bad.output, bad.output
    assert (tmp_path / "file").read_text() == "precious"


def test_jsonl_is_written_batch_by_batch_with_every_row(tmp_path: Path):
    import pyarrow as pa

    from rewardline.pairs.export import _write_jsonl

    table = pa.table({"prompt": [f"p{i}" for i in range(5)], "chosen": ["a"] * 5, "margin": [0.5, 0.0, 1.0, 2.0, 0.25]})
    _write_jsonl(table, tmp_path / "out.jsonl", batch_rows=2)  # batches of 2, 2 and 1 rows
    assert [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()] == table.to_pylist()
