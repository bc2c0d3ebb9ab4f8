"""Source adapters on real fixtures (tests/fixtures/README.md) and their corrupted variants."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from rewardline.data import schema as S
from rewardline.data.adapters import FORMATS, AdapterResult, detect_format, is_empty, read_file
from rewardline.data.adapters.jsonl import read_jsonl

FIXTURES = Path(__file__).parents[1] / "fixtures"
GOOD = {
    "hh_rlhf_30.jsonl": ("hh-rlhf", 30),
    "alpacaeval_20x3.json": ("alpaca-eval", 60),
    "pairwise_alpaca.jsonl": ("pairwise", 30),
    "pairwise_conversations.jsonl": ("pairwise", 10),
    "rankings_nested.jsonl": ("rankings", 12),
    "rankings_nested.parquet": ("rankings", 10),
    "rankings_long.csv": ("rankings", 40),
}
# corrupted file -> {record number: (field, reason fragment)}
CORRUPT = {
    "hh_rlhf_corrupt.jsonl": {
        4: (None, "invalid JSON"),
        6: (None, "invalid UTF-8"),
        7: ("rejected", "missing required field 'rejected'"),
        8: ("chosen", "expected a string, got int 5"),
        9: ("rejected", "do not share a prompt"),
    },
    "alpacaeval_corrupt.json": {
        2: ("preference", "preference: expected a number in [1, 2], got 2.5"),
        3: ("preference", "expected a number"),
        4: ("instruction", "missing required field 'instruction'"),
    },
    "pairwise_corrupt.jsonl": {
        2: ("winner", "winner: expected one of ('model_a', 'model_b', 'tie', 'tie (bothbad)'), got 'model_c'"),
        3: ("model_b", "missing required field 'model_b'"),
        4: ("winner", "missing required field 'winner'"),
    },
    "rankings_corrupt.jsonl": {
        2: ("responses.rank", "responses[0].rank: expected an integer, got float 1.5"),
        3: ("annotator_id", "missing required field 'annotator_id'"),
        4: ("responses.text", "missing 'text'"),
        5: ("responses.rank", 'expected an integer, got str "1"'),
    },
    "rankings_long_corrupt.csv": {  # the lines where data rows 2 and 5 start (the header is line 1)
        3: ("rank", "expected an integer"),
        6: ("response", "missing required field 'response'"),
    },
}
CORRUPT_RECORDS = {
    "hh_rlhf_corrupt.jsonl": 10,
    "alpacaeval_corrupt.json": 6,
    "pairwise_corrupt.jsonl": 5,
    "rankings_corrupt.jsonl": 6,
    "rankings_long_corrupt.csv": 8,
}


def load(name: str, **kwargs) -> AdapterResult:
    return read_file((FIXTURES / name).read_bytes(), f"fixtures/{name}", **kwargs)


def check_accounting(result: AdapterResult) -> None:
    """distinct ranked origins + quarantine rows = records_in, disjoint; one ranking per record."""
    ranked, quarantine = result.ranked, result.quarantine
    assert ranked.schema.equals(S.RANKED_RESPONSES) and quarantine.schema.equals(S.QUARANTINE)
    origins = set(zip(ranked["origin_file"].to_pylist(), ranked["origin_line"].to_pylist(), strict=True))
    bad = set(zip(quarantine["origin_file"].to_pylist(), quarantine["origin_line"].to_pylist(), strict=True))
    assert len(bad) == quarantine.num_rows
    assert not origins & bad
    assert len(origins) + len(bad) == result.records_in
    per_record = ranked.group_by(["origin_line"]).aggregate(
        [("annotator_id", "count_distinct"), ("prompt", "count_distinct")]
    )
    assert pc.max(per_record["annotator_id_count_distinct"]).as_py() == 1
    assert pc.max(per_record["prompt_count_distinct"]).as_py() == 1


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_fixture_counts_and_accounting(name: str) -> None:
    fmt, n = GOOD[name]
    data = (FIXTURES / name).read_bytes()
    assert detect_format(name, data) == fmt
    result = load(name)
    assert result.records_in == n
    assert result.quarantine.num_rows == 0
    check_accounting(result)
    assert result.ranked["rank"].null_count == 0 and result.ranked["response"].null_count == 0
    assert result.ranked["prompt"].null_count == 0


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_corrupt_fixture_quarantines_exactly_the_bad_records(name: str) -> None:
    result = load(name)
    expected = CORRUPT[name]
    assert result.records_in == CORRUPT_RECORDS[name]
    check_accounting(result)
    rows = {r["origin_line"]: r for r in result.quarantine.to_pylist()}
    assert sorted(rows) == sorted(expected)
    for line, (field, fragment) in expected.items():
        assert rows[line]["field"] == field, (line, rows[line])
        assert fragment in rows[line]["reason"], (line, rows[line])
        assert rows[line]["raw"] and len(rows[line]["raw"]) <= 2000
    kept = set(result.ranked["origin_line"].to_pylist())
    assert len(kept) == result.records_in - len(expected)
    if name == "hh_rlhf_corrupt.jsonl":  # lines 3 and 11 are blank: not records
        assert kept == {1, 2, 5, 10, 12}


def test_hh_rlhf_prompt_responses_and_turns() -> None:
    result = load("hh_rlhf_30.jsonl")
    t = result.ranked.to_pylist()
    assert [r["rank"] for r in t[:4]] == [1, 2, 1, 2]
    first = t[0]
    assert first["prompt"].startswith("\n\nHuman: what are some pranks with a pen i can do?")
    assert first["prompt"].endswith("\n\nHuman: okay some of these do not have anything to do with pens\n\nAssistant:")
    assert first["response"].startswith("No, sorry!  All of these involve a pen")
    assert t[1]["response"] != first["response"] and t[1]["prompt"] == first["prompt"]
    assert [m["role"] for m in first["prompt_messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert first["prompt_messages"][1]["content"] == "Are you looking for practical joke ideas?"
    assert first["prompt_messages"][4]["content"] == "okay some of these do not have anything to do with pens"
    assert {r["annotator_id"] for r in t} == {"hh-rlhf-crowdworker"}
    assert {r["source"] for r in t} == {None} and {r["batch_id"] for r in t} == {"hh_rlhf_30"}
    # single-turn dialogues have no prompt_messages
    single = [r for r in t if r["prompt"].count("\n\nHuman:") == 1]
    assert single and all(r["prompt_messages"] is None for r in single)


def test_alpaca_eval_one_sample_vs_reference_ranking_per_record_and_k_way_sample_rankings() -> None:
    t = load("alpacaeval_20x3.json").ranked
    assert t.num_rows == 180  # 60 records x (sample, reference) + 20 instructions x 3 samples
    k = t.group_by(["prompt", "annotator_id", "ranking_key"]).aggregate([("response_id", "count_distinct")])
    sizes = dict(zip(k["ranking_key"].to_pylist(), k["response_id_count_distinct"].to_pylist(), strict=False))
    assert k.num_rows == 60 + 20 and sizes["samples@alpacaeval_20x3.json"] == 3
    assert sorted(k["response_id_count_distinct"].to_pylist()) == [2] * 60 + [3] * 20
    larry = [r for r in t.to_pylist() if r["prompt"] == "Who is Larry Page?"]
    # preferences 1.8439 (sample 0), 1.99999 (sample 1), 1.0015 (sample 2); reference scores 0.5
    by_key = {(r["ranking_key"], r["response_id"]): r for r in larry}
    ref = "gpt-3.5-turbo-0613"
    for sample, sample_rank in (("allenai/tulu-2-dpo-13b.0", 1), ("allenai/tulu-2-dpo-13b.1", 1),
                                ("allenai/tulu-2-dpo-13b.2", 2)):
        assert by_key[(sample, sample)]["rank"] == sample_rank and by_key[(sample, ref)]["rank"] == 3 - sample_rank
        assert by_key[(sample, ref)]["is_anchor"] and not by_key[(sample, sample)]["is_anchor"]
        assert by_key[(sample, ref)]["origin_line"] == by_key[(sample, sample)]["origin_line"]
    sample0 = by_key[("allenai/tulu-2-dpo-13b.0", "allenai/tulu-2-dpo-13b.0")]
    assert sample0["score"] == pytest.approx(0.8438951157) and sample0["source"] == "allenai/tulu-2-dpo-13b.0"
    reference = by_key[("allenai/tulu-2-dpo-13b.0", ref)]
    assert reference["score"] == 0.5 and reference["prompt_id"] is None  # derived from the instruction text
    assert reference["category"] == "helpful_base"
    assert reference["response"].startswith("Larry Page is an American computer scientist")
    # the K-way ranking of the 3 samples (no reference) by P(sample beats reference), best first
    samples = [r for r in larry if r["ranking_key"] == "samples@alpacaeval_20x3.json"]
    assert [(r["response_id"], r["rank"]) for r in samples] == [
        ("allenai/tulu-2-dpo-13b.1", 1), ("allenai/tulu-2-dpo-13b.0", 2), ("allenai/tulu-2-dpo-13b.2", 3)]
    assert samples[1]["score"] == sample0["score"] and not any(r["is_anchor"] for r in samples)
    assert samples[1]["origin_line"] == sample0["origin_line"]  # the same record as its anchor comparison


def test_alpaca_eval_equal_preference_ties() -> None:
    data = (
        b'[{"instruction":"q","output_1":"ref","generator_1":"r","output_2":"a","generator_2":"g.0",'
        b'"preference":1.5,"annotator":"j"},{"instruction":"q","output_1":"ref","generator_1":"r",'
        b'"output_2":"b","generator_2":"g.1","preference":1.9,"annotator":"j"}]'
    )
    t = read_file(data, "x.json").ranked.to_pylist()
    assert [(r["ranking_key"], r["response_id"], r["rank"]) for r in t] == [
        ("g.0", "g.0", 1), ("g.0", "r", 1), ("g.1", "g.1", 1), ("g.1", "r", 2),
        ("samples@x.json", "g.1", 1), ("samples@x.json", "g.0", 2)]
    assert {r["prompt_id"] for r in t} == {None}
    # equal preferences share a rank in the K-way ranking of the samples (dense: the next is 2)
    three = [{"instruction": "q", "output_1": "ref", "generator_1": "r", "output_2": text, "generator_2": gen,
              "preference": pref, "annotator": "j"} for text, gen, pref in (("a", "g.0", 1.5), ("b", "g.1", 1.9),
                                                                               ("c", "g.2", 1.5))]
    ranked = read_file(json.dumps(three).encode(), "y.json").ranked.to_pylist()
    k_way = [r for r in ranked if r["ranking_key"] == "samples@y.json"]
    assert sorted((r["response_id"], r["rank"]) for r in k_way) == [("g.0", 2), ("g.1", 1), ("g.2", 2)]


def test_pairwise_from_alpaca_rows() -> None:
    t = load("pairwise_alpaca.jsonl").ranked.to_pylist()
    assert len(t) == 60
    for a, b in zip(t[::2], t[1::2], strict=True):
        assert a["origin_line"] == b["origin_line"] and a["prompt"] == b["prompt"]
        assert a["source"] == "gpt-3.5-turbo-0613" and b["source"] == "allenai/tulu-2-dpo-13b.0"
        assert sorted([a["rank"], b["rank"]]) in ([1, 2], [1, 1])
    superman = [r for r in t if r["prompt"] == "Who created the Superman cartoon character?"]  # winner model_b
    assert [(r["source"], r["rank"]) for r in superman] == [("gpt-3.5-turbo-0613", 2), ("allenai/tulu-2-dpo-13b.0", 1)]
    assert superman[0]["prompt_id"] == "34" and superman[0]["annotator_id"] == "weighted_alpaca_eval_gpt4_turbo"
    kobe = [r for r in t if r["prompt"] == "Why is kobe beef so damn expensive?"]  # winner model_a
    assert [r["rank"] for r in kobe] == [1, 2] and kobe[0]["category"] == "helpful_base"


def test_pairwise_conversations_multi_turn() -> None:
    result = load("pairwise_conversations.jsonl")
    t = result.ranked.to_pylist()
    hh = load("hh_rlhf_30.jsonl")  # conversations were built from hh-rlhf pairs 30..39
    assert hh.records_in == 30
    first_a, first_b = t[0], t[1]
    assert first_a["rank"] == 1 and first_b["rank"] == 2 and first_a["source"] == "hh-chosen"
    assert first_a["prompt"] == first_b["prompt"] and first_a["prompt"].endswith("\n\nAssistant:")
    multi = [r for r in t if r["prompt_messages"] is not None]
    assert multi and all(r["prompt_messages"][-1]["role"] == "user" for r in multi)
    assert all(r["prompt"].startswith("\n\nHuman: ") for r in multi)


def test_pairwise_conversation_faults() -> None:
    import orjson

    def conv(*turns: str) -> list[dict]:
        return [{"role": ("user", "assistant")[i % 2], "content": c} for i, c in enumerate(turns)]

    head = {"model_a": "x", "model_b": "y", "judge": "u"}
    lines = [
        {**head, "winner": "tie", "conversation_a": conv("hi", "a"), "conversation_b": conv("hi", "b")},
        {**head, "winner": "tie", "conversation_a": conv("hi"), "conversation_b": conv("hi", "b")},
        {**head, "winner": "model_a", "conversation_a": conv("hi", "a"), "conversation_b": conv("other", "b")},
    ]
    result = read_file(b"\n".join(map(orjson.dumps, lines)), "arena.jsonl")
    check_accounting(result)
    t = result.ranked.to_pylist()
    assert [(r["prompt"], r["response"], r["rank"], r["prompt_messages"]) for r in t] == [
        ("hi", "a", 1, None),
        ("hi", "b", 1, None),
    ]
    q = {r["origin_line"]: (r["field"], r["reason"]) for r in result.quarantine.to_pylist()}
    assert q[2] == ("conversation_a", "conversation_a: no assistant turn")
    assert q[3][0] == "conversation_b" and "do not share the prompt" in q[3][1]


def test_the_data_contract_names_the_pairwise_judge() -> None:
    """A row without ``judge`` or ``annotator_id`` is quarantined ("missing required field 'judge'"): the format's row
    of docs/data-contract.md names it (it did not: an arena export following the table lost every row)."""
    row = {"model_a": "x", "model_b": "y", "winner": "model_a", "prompt": "q", "response_a": "a", "response_b": "b"}
    result = read_file(json.dumps(row).encode(), "arena.jsonl", fmt="pairwise")
    assert result.quarantine["reason"].to_pylist() == ["missing required field 'judge' (or 'annotator_id')"]
    doc = (Path(__file__).parents[2] / "docs" / "data-contract.md").read_text()
    assert "`judge` (or `annotator_id`)" in next(line for line in doc.splitlines() if line.startswith("| `pairwise` |"))


def test_native_nested_long_and_parquet_agree() -> None:
    nested = load("rankings_nested.jsonl").ranked
    parquet = load("rankings_nested.parquet").ranked
    long = load("rankings_long.csv").ranked
    cols = ["prompt_id", "prompt", "category", "annotator_id", "response_id", "response", "source", "rank", "score"]
    first10 = nested.filter(pc.less_equal(nested["origin_line"], 10)).select(cols)
    assert first10.equals(parquet.select(cols))
    assert first10.equals(long.select(cols))
    assert np.all(np.diff(long["origin_line"].to_numpy()) >= 1)  # one CSV row per record, from line 2 on
    assert long["origin_line"][0].as_py() == 2
    assert set(nested["batch_id"].to_pylist()) == {"rankings_nested"}
    # the two messages-only records: prompt rendered from the turns, ids left null
    msgs = nested.filter(pc.greater(nested["origin_line"], 10)).to_pylist()
    assert len(msgs) == 4 and all(r["prompt_id"] is None and r["response_id"] is None for r in msgs)
    multi, single = msgs[0], msgs[2]
    assert multi["prompt"].startswith("\n\nHuman: Teach me") and multi["prompt"].endswith("\n\nAssistant:")
    assert [m["role"] for m in multi["prompt_messages"]] == ["user", "assistant", "user"]
    assert single["prompt"] == "What is your favorite cuss word?" and single["prompt_messages"] is None


def test_content_faults_pass_through() -> None:
    """Empty texts, K = 1, duplicate ranks are the canonical step's business, not the adapter's."""
    data = (
        b'{"prompt":"","annotator_id":"a","responses":[{"text":"","rank":1}]}\n'
        b'{"prompt":"p","annotator_id":"a","responses":[{"text":"x","rank":0},{"text":"x","rank":0}]}\n'
    )
    result = read_file(data, "content.jsonl")
    assert result.quarantine.num_rows == 0 and result.ranked.num_rows == 3


def test_gzip_and_batch_id(tmp_path: Path) -> None:
    data = (FIXTURES / "hh_rlhf_30.jsonl").read_bytes()
    plain = read_file(data, "a/hh.jsonl")
    zipped = read_file(gzip.compress(data), "a/hh.jsonl.gz")
    assert zipped.ranked.drop_columns(["origin_file"]).equals(plain.ranked.drop_columns(["origin_file"]))
    assert set(read_file(data, "x.jsonl", batch_id="b7").ranked["batch_id"].to_pylist()) == {"b7"}
    with pytest.raises(ValueError, match="not gzip"):
        read_file(data, "a/hh.jsonl.gz")



@pytest.mark.parametrize("fmt", ["auto", "rankings", "hh-rlhf"])
def test_a_parquet_name_whose_data_is_not_parquet_says_so(fmt: str) -> None:
    """A damaged ``batch.parquet`` (a truncated download, a renamed file) was read as JSON Lines: in a source folder
    its bytes became quarantined "records" with ``invalid UTF-8`` reasons (rows_in grew by its line count), on its
    own ``cannot read it as jsonl``; neither said the Parquet file was damaged."""
    garbage = bytes(range(256)) * 8 + b"\n\xff\xfe\n"
    with pytest.raises(ValueError, match=r"^data/raw/fresh/batch.parquet: name ends in \.parquet but the data is not "
                                         r"Parquet \(no PAR1 magic number\); expected a Parquet file"):
        read_file(garbage, "data/raw/fresh/batch.parquet", fmt=fmt)

def test_csv_cells_that_are_not_utf8_are_named_as_such() -> None:
    """Was: 'prompt: expected a value of type string' for a Latin-1 prompt, and in a rank column also holding a
    cell that is no integer, that cell's record blamed for a missing rank and the undecodable one for not an integer."""
    data = b"prompt,annotator_id,response,rank\nQ\xe9,a,x,1\nQ,a,x,\xff\nQ,a,y,x\nQ,a,z,1\nQ,a,w,2\n"
    result = read_file(data, "latin.csv")
    rows = {r["origin_line"]: (r["field"], r["reason"]) for r in result.quarantine.to_pylist()}
    assert rows == {2: ("prompt", "invalid UTF-8 in prompt; expected UTF-8 text"),
                    3: ("rank", "invalid UTF-8 in rank; expected UTF-8 text"),
                    4: ("rank", "rank: expected an integer")}
    assert result.ranked["origin_line"].to_pylist() == [5, 6] and result.records_in == 5


def test_csv_with_cr_line_endings() -> None:
    """Classic Mac / Excel "CSV (Macintosh)": lines ended by CR alone (was: exit 3, "internal error: Error: new-line
    character seen in unquoted field"; a CR-ended header alone is a file without records)."""
    data = b"prompt,annotator_id,response,rank\rQ,a,x,1\rQ,a,y,2\r"
    assert detect_format("mac.csv", data) == "rankings"
    result = read_file(data, "mac.csv")
    assert result.records_in == 2 and result.ranked["response"].to_pylist() == ["x", "y"]
    assert is_empty("mac.csv", b"prompt,annotator_id,response,rank\r") and not is_empty("mac.csv", data)


def test_a_column_repeated_in_a_csv_header_or_parquet_schema_is_a_clear_error(tmp_path: Path) -> None:
    """Was: exit 3, "internal error: KeyError: 'Field "rank" exists 2 times in schema'"."""
    csv = b"prompt,annotator_id,response,rank,rank\nQ,a,x,1,2\nQ,a,y,2,1\n"
    for data in (csv, csv.replace(b"y,2,1\n", b"y,2\n")):  # the second: a wrong-width row, read row by row
        with pytest.raises(ValueError, match=r"dup\.csv: column 'rank' appears 2 times; expected each column once"):
            read_file(data, "dup.csv")
    table = pa.Table.from_arrays([pa.array(["Q", "Q"]), pa.array(["a", "a"]), pa.array(["x", "y"]),
                                  pa.array([1, 2]), pa.array([2, 1])],
                                 names=["prompt", "annotator_id", "response", "rank", "rank"])
    pq.write_table(table, tmp_path / "dup.parquet")
    with pytest.raises(ValueError, match=r"dup\.parquet: column 'rank' appears 2 times"):
        read_file((tmp_path / "dup.parquet").read_bytes(), "dup.parquet")


CSV_LINES = (b'prompt_id,prompt,annotator_id,response_id,response,rank\n'  # line 1
             b'p1,"multi\nline\nprompt",a1,r1,hello,1\n'  # lines 2-4
             b'p1,"multi\nline\nprompt",a1,r2,"a\n\nb",2\n'  # lines 5-9: an empty line inside a cell
             b'\n'  # line 10: blank, no record
             b'p2,q,a1,r3,x,notanint\n'  # line 11: rank is not an integer
             b'p2,q,a1,r4,y,1\n'  # line 12: its ranking left with K=1
             b'p3,q3,a1,r5,,1\n')  # line 13: no response


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("wrong_width", [False, True])
def test_csv_origin_line_is_the_line_where_the_record_starts(newline: bytes, wrong_width: bool) -> None:
    """Was the record number (header excluded): 3 and 5 for the faults at lines 11 and 13, wrong by the header and
    the quoted cells' lines for a user opening the file. Now the physical line, as for JSONL, in ranked rows too;
    Arrow's read and the row-by-row read of a file with a wrong-width row (line 15, after a blank line) agree."""
    data = CSV_LINES + (b'\np4,q4,a1,r6,z,1,extra\n' if wrong_width else b"")
    data = data.replace(b"\n", newline)
    result = read_file(data, "lines.csv", fmt="rankings")
    faults = {r["origin_line"]: r["field"] for r in result.quarantine.to_pylist()}
    assert faults == {11: "rank", 13: "response", **({15: None} if wrong_width else {})}, faults
    assert result.ranked["origin_line"].to_pylist() == [2, 5, 12]  # ingest quarantines line 12's ranking (K=1)
    assert result.ranked["response"].to_pylist() == ["hello", "a\n\nb".replace("\n", newline.decode()), "y"]
    raw = {r["origin_line"]: r["raw"] for r in result.quarantine.to_pylist()}
    assert raw[11] == "p2,q,a1,r3,x,notanint"


def test_a_json_list_with_a_byte_order_mark() -> None:
    """Was: --format auto, exit 2 "no JSON object found in the first records; cannot read it as jsonl"; a given
    format, the whole list one record quarantined ("UTF-8 byte order mark (BOM) is not supported"), its items lost."""
    items = [{"prompt": f"q{i}", "annotator_id": "a", "responses": [{"text": "x", "rank": 1}, {"text": "y", "rank": 2}]}
             for i in range(2)]
    data = b"\xef\xbb\xbf" + json.dumps(items).encode()
    assert detect_format("win.json", data) == "rankings"
    for fmt in ("auto", "rankings"):
        result = read_file(data, "win.json", fmt=fmt)
        assert result.records_in == 2 and result.quarantine.num_rows == 0
        assert result.ranked["origin_line"].to_pylist() == [1, 1, 2, 2]
    assert read_file(gzip.compress(data), "win.json.gz").records_in == 2


def test_a_message_list_ending_with_the_assistant_is_quarantined() -> None:
    """The data contract: a multi-turn prompt's last turn is the user's (was: accepted, the prompt rendered as
    '...Assistant: yo\\n\\nAssistant:' with nothing for the responses to answer)."""
    def record(*roles: str) -> dict:
        return {"messages": [{"role": r, "content": f"turn {i}"} for i, r in enumerate(roles)], "annotator_id": "a",
                "responses": [{"text": "x", "rank": 1}, {"text": "y", "rank": 2}]}

    lines = [record("user"), record("user", "assistant"), record("system", "user", "Assistant", "user"),
             record("user", "Assistant")]
    result = read_file(b"\n".join(json.dumps(r).encode() for r in lines), "msgs.jsonl")
    check_accounting(result)
    rows = {r["origin_line"]: (r["field"], r["reason"]) for r in result.quarantine.to_pylist()}
    reason = "messages: the last turn is the assistant's; expected the user's turn that the responses answer"
    assert rows == {2: ("messages", reason), 4: ("messages", reason)}
    plain = {"prompt": "q", "annotator_id": "a", "responses": [{"text": "x", "rank": 1}, {"text": "y", "rank": 2}]}
    assert read_file(json.dumps(plain).encode(), "plain.jsonl").quarantine.num_rows == 0  # no message list at all


def test_detect_format_errors() -> None:
    with pytest.raises(ValueError, match=r"weird\.jsonl: cannot detect the source format from fields \['a', 'b'\]"):
        detect_format("weird.jsonl", b'{"a": 1, "b": 2}\n')
    with pytest.raises(ValueError, match="no JSON object"):
        detect_format("junk.jsonl", b"not json\n")
    # a truncated JSON list: where it breaks (was: "no JSON object found in the first records")
    with pytest.raises(ValueError, match=r"cut\.json: not a valid JSON document: unexpected end of data: line 1 col"):
        detect_format("cut.json", b'[{"a": 1}, {')
    with pytest.raises(ValueError, match=r"nums\.json: no JSON object found"):
        detect_format("nums.json", b"[1, 2]")
    with pytest.raises(ValueError, match="unknown format"):
        read_file(b"{}", "x.jsonl", fmt="csv")
    assert set(FORMATS) == {"rankings", "hh-rlhf", "alpaca-eval", "pairwise", "trl", "rewardbench",
                            "prm800k", "math-shepherd", "gsm8k", "solutions"}
    hh = b'{"chosen":"\\n\\nHuman: q\\n\\nAssistant: a","rejected":"\\n\\nHuman: q\\n\\nAssistant: b"}'
    assert detect_format("first_line_bad.jsonl", b"{bad\n" + hh + b"\n") == "hh-rlhf"
    # chosen/rejected texts that are not hh-style transcripts are a TRL implicit-prompt dataset
    assert detect_format("first_line_bad.jsonl", b'{bad\n{"chosen":"a","rejected":"b"}\n') == "trl"


def test_jsonl_bisection_cost_and_line_numbers() -> None:
    """Few bad lines among many: O(bad * log n) Arrow parses; blank lines are not records."""
    from rewardline.data.adapters import jsonl

    schema = pa.schema([("a", pa.int64()), ("s", pa.string())])
    lines = [b'{"a": %d, "s": "x"}' % i for i in range(5000)]
    lines[10], lines[2500], lines[4999] = b"{oops", b'{"a": "str"}', b'{"a": 1.5}'
    lines.insert(100, b"")
    calls = 0
    real_parse = jsonl._parse

    def counting(*args):
        nonlocal calls
        calls += 1
        return real_parse(*args)

    jsonl._parse = counting
    try:
        records = read_jsonl(b"\n".join(lines), "big.jsonl", schema)
    finally:
        jsonl._parse = real_parse
    assert records.records_in == 5000 and records.table.num_rows == 4997
    q = records.quarantine().to_pylist()
    assert [(r["origin_line"], r["field"]) for r in q] == [(11, None), (2502, "a"), (5001, "a")]
    assert "invalid JSON" in q[0]["reason"] and "expected an integer, got float 1.5" in q[2]["reason"]
    assert calls <= 3 * 2 * int(np.ceil(np.log2(5000))) + 1
    assert records.line[98] == 100 and records.line[99] == 102  # line 11 is bad, line 101 blank
    assert records.table["a"][99].as_py() == 100
