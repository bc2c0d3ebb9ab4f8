"""The step-level adapters (prm800k, math-shepherd, gsm8k, solutions) on fixtures in the upstream shapes,
format detection, and ingest's accounting over step-level and ranking sources together."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rewardline.data import schema
from rewardline.data.adapters import FORMATS, detect_format, read_file
from rewardline.data.ingest import IngestConfig, Source, run_ingest
from rewardline.data.steps import SOLUTIONS, STEP_FORMATS, StepOptions, canonicalize_solutions
from rewardline.data.tables import table_path, table_rows

FIXTURES = Path(__file__).parents[1] / "fixtures"
PRM800K = FIXTURES / "prm800k_phase12.jsonl"
SHEPHERD = FIXTURES / "math_shepherd.jsonl"
GSM8K = FIXTURES / "gsm8k_train_20.jsonl"
MODEL_SOLUTIONS = FIXTURES / "gsm8k_model_solutions_100.jsonl.gz"


def solutions_of(path: Path, fmt: str = "auto", options: StepOptions | None = None) -> tuple[pa.Table, pa.Table]:
    """(SOLUTIONS rows by line, all quarantine rows) of one file, through the adapter and the content checks."""
    result = read_file(path.read_bytes(), str(path), fmt=fmt, step_options=options)
    assert result.ranked.num_rows == 0
    tables = canonicalize_solutions(result.solutions)
    kept = set(tables.solutions["line"].to_pylist())
    quarantine = pa.concat_tables([result.quarantine, tables.quarantine])
    assert len(kept) + quarantine.num_rows == result.records_in  # every record ok or quarantined, once
    assert not kept & set(quarantine["origin_line"].to_pylist())
    assert tables.solutions.schema.equals(SOLUTIONS)
    return tables.solutions, quarantine


def quarantined(quarantine: pa.Table) -> dict[int, tuple[str, str]]:
    return {r["origin_line"]: (r["field"], r["reason"]) for r in quarantine.to_pylist()}


def test_step_formats_are_registered_and_detected_by_field_names() -> None:
    assert set(STEP_FORMATS) <= set(FORMATS)
    for path, fmt in ((PRM800K, "prm800k"), (SHEPHERD, "math-shepherd"), (GSM8K, "gsm8k"),
                      (MODEL_SOLUTIONS, "solutions")):
        assert detect_format(str(path), path.read_bytes()) == fmt
    # the ranking formats keep their files: a rankings record with a question field is still rankings
    nested = b'{"prompt":"q","question":"q","annotator_id":"a","responses":[{"text":"x","rank":1}]}\n'
    assert detect_format("r.jsonl", nested) == "rankings"
    chosen = (b'{"chosen":"\\n\\nHuman: q\\n\\nAssistant: a","rejected":"\\n\\nHuman: q\\n\\nAssistant: b",'
              b'"question":1}\n')
    assert detect_format("h.jsonl", chosen) == "hh-rlhf"


def test_prm800k_takes_the_chosen_completions_and_stops_at_the_first_error() -> None:
    solutions, quarantine = solutions_of(PRM800K)
    rows = {r["line"]: r for r in solutions.to_pylist()}
    assert sorted(rows) == [1, 2, 3, 4, 11]
    # phase 2, found_error: the unchosen step's -1 completion ends the solution; the 0 rating is neutral
    assert rows[1]["steps"] == ["I need to multiply first, then add.", "$3 \\cdot 4 = 12$.", "$12 + 5 = 18$."]
    assert (rows[1]["step_labels"], rows[1]["outcome"]) == ([0, 1, -1], 0)
    assert (rows[2]["step_labels"], rows[2]["outcome"], rows[2]["final_answer"]) == ([1, 1, 1], 1, "6")
    # phase 1: chosen_completion 1 of two, then the labeller's own step (a +1 step without a rating)
    assert rows[3]["steps"][0] == "$50 = 25 \\cdot 2$." and rows[3]["step_labels"] == [1, 1]
    assert rows[3]["final_answer"] == "5\\sqrt{2}"
    # give_up: the unrated step is unknown (null), and so is the outcome
    assert (rows[4]["step_labels"], rows[4]["outcome"]) == ([1, None], None)
    # a chosen -1 completion ends the solution, even where the labeller went on
    assert (len(rows[11]["steps"]), rows[11]["step_labels"], rows[11]["outcome"]) == (2, [1, -1], 0)
    assert not any(rows[line]["synthetic"] for line in rows)
    assert set(solutions["source_format"].to_pylist()) == {"prm800k"}
    assert quarantined(quarantine) == {
        5: ("label.finish_reason", "label.finish_reason: 'bad_problem' (the labeller reported the problem as broken); "
                                   "expected solution, found_error or give_up"),
        6: ("label.steps[0].chosen_completion",
            "label.steps[0].chosen_completion: 2 is not an index of its 1 completion(s)"),
        7: ("step_labels", "step label 2 is not one of -1, 0, 1 or null (incorrect, neutral, correct, unknown)"),
        8: ("steps", "step 1 of 2 is empty; expected non-empty step texts"),
        9: ("question.problem", "missing required field 'question.problem'"),
        10: ("steps", "no steps; expected at least one reasoning step"),
    }


def test_prm800k_a_finish_reason_of_another_value_is_quarantined() -> None:
    """Was: a finish_reason other than upstream's four ('Solution', a typo) was read as give_up: the solution was
    ingested with outcome null (unknown) instead of 1. Now its record is quarantined, naming the value; a missing
    finish_reason still gives an unknown outcome."""
    record = next(r for r in map(json.loads, PRM800K.read_text().splitlines())
                  if r["label"]["finish_reason"] == "solution")
    variants = []
    for reason in ("solution", "Solution", "found error", None):
        variant = json.loads(json.dumps(record))
        variant["label"]["finish_reason"] = reason
        variants.append(variant)
    result = read_file("\n".join(map(json.dumps, variants)).encode(), "p.jsonl", fmt="prm800k")
    expected = "expected solution, found_error, give_up or bad_problem"
    assert quarantined(result.quarantine) == {
        2: ("label.finish_reason", f"label.finish_reason: 'Solution' is not a finish reason; {expected}"),
        3: ("label.finish_reason", f"label.finish_reason: 'found error' is not a finish reason; {expected}")}
    assert dict(zip(result.solutions["origin_line"].to_pylist(), result.solutions["outcome"].to_pylist(),
                    strict=True)) == {1: 1, 4: None}


def test_math_shepherd_reads_the_label_at_each_step_tag() -> None:
    solutions, quarantine = solutions_of(SHEPHERD)
    rows = {r["line"]: r for r in solutions.to_pylist()}
    assert sorted(rows) == [1, 2, 3]
    assert rows[1]["prompt"] == ("Tom has 3 boxes of 4 pencils and gives away 5 pencils. "
                                 "How many pencils does he have left?")
    assert rows[1]["steps"] == ["Step 1: He has 3 * 4 = <<3*4=12>>12 pencils.",
                                "Step 2: He has 12 - 5 = <<12-5=7>>7 pencils left.", "Step 3: The answer is: 7"]
    assert (rows[1]["step_labels"], rows[1]["outcome"], rows[1]["final_answer"]) == ([1, 1, 1], 1, "7")
    assert (rows[2]["step_labels"], rows[2]["outcome"]) == ([1, -1, -1], 0)
    assert all(r["synthetic"] for r in rows.values())  # Math-Shepherd's labels are generated by rollouts
    assert all("ки" not in step for r in rows.values() for step in r["steps"])
    faults = quarantined(quarantine)
    assert sorted(faults) == [4, 5, 6, 7]
    assert faults[4][0] == "label" and "expected the input with each 'ки' replaced by + or -" in faults[4][1]
    assert faults[5] == ("input", "input: no step tag 'ки'; expected each step to end with it")
    assert faults[6] == ("steps", "step 2 of 3 is empty; expected non-empty step texts")
    assert faults[7] == ("label", "label: '?' at a step tag is not + or -")


def test_math_shepherd_text_after_the_last_step_tag_is_quarantined() -> None:
    """Was: a record whose last step lacks its tag ('... Step 2: b' after the last 'ки') lost that step silently:
    the solution was ingested without it, its outcome taken from the step before. Now the record is quarantined,
    naming the text; whitespace after the last tag is still fine."""
    records = [{"input": "Q? Step 1: a ки\nStep 2: b", "label": "Q? Step 1: a +\nStep 2: b", "task": "x"},
               {"input": "Q? Step 1: a ки\nStep 2: b ки\n", "label": "Q? Step 1: a +\nStep 2: b -\n", "task": "x"}]
    data = "\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode()
    result = read_file(data, "ms.jsonl", fmt="math-shepherd")
    assert quarantined(result.quarantine) == {
        1: ("input", "input: text after the last step tag ('Step 2: b'); expected every step to end with 'ки'")}
    (row,) = result.solutions.to_pylist()
    assert (row["origin_line"], row["steps"], row["step_labels"]) == (2, ["Step 1: a", "Step 2: b"], [1, -1])


def test_math_shepherd_a_step_tag_typo_is_pointed_at() -> None:
    """Was: a mistyped step tag ('kи', a Latin k) quarantined the record as "label: 26 characters where the input
    has 27 ...", leaving the user to diff the two texts. Now the reason also shows where they first differ."""
    record = {"input": "Q? Step 1: a kи\nStep 2: b ки", "label": "Q? Step 1: a +\nStep 2: b +", "task": "x"}
    result = read_file(json.dumps(record, ensure_ascii=False).encode(), "ms.jsonl", fmt="math-shepherd")
    (row,) = result.quarantine.to_pylist()
    assert row["field"] == "label" and row["reason"] == (
        "label: 26 characters where the input has 27 (tags counted once); expected the input with each 'ки' replaced "
        "by + or -; they first differ at character 14: input 'Step 1: a kи\\nStep 2:', label 'Step 1: a +\\nStep 2: '")


def test_solutions_gives_one_row_per_candidate_with_its_outcome() -> None:
    solutions, quarantine = solutions_of(MODEL_SOLUTIONS)
    raw = [json.loads(line) for line in gzip.decompress(MODEL_SOLUTIONS.read_bytes()).splitlines()]
    assert quarantine.num_rows == 0 and solutions.num_rows == sum(len(r["solutions"]) for r in raw) == 400
    rows = solutions.to_pylist()
    expected = [(c["solver"], int(c["is_correct"])) for r in raw for c in r["solutions"]]
    assert [(r["solver"], r["outcome"]) for r in rows] == expected
    first = raw[0]["solutions"][0]["solution"]
    assert rows[0]["steps"] == [line.strip() for line in first.split("\n") if line.strip()]
    assert all(label is None for r in rows for label in r["step_labels"])  # only the outcome was judged
    assert all(len(r["step_labels"]) == len(r["steps"]) for r in rows)
    # the four candidates of a problem share its prompt id, and a final "A: x" line gives the final answer
    by_problem: dict[str, int] = {}
    for r in rows:
        by_problem[r["prompt_id"]] = by_problem.get(r["prompt_id"], 0) + 1
    assert set(by_problem.values()) == {4} and len(by_problem) == 100
    answers = [r["final_answer"] for r in rows]
    assert answers[0] == first.strip().split("\n")[-1][3:].replace(",", "").replace("$", "").strip()
    assert sum(a is None for a in answers) <= 3


def test_solutions_quarantines_a_problem_without_candidates_or_question() -> None:
    data = (b'{"question": "q1", "solutions": []}\n{"solutions": [{"solution": "1+1=2\\nA: 2", "is_correct": true}]}\n'
            b'{"question": "q3", "solutions": [{"solution": "x\\nA: 3", "is_correct": true}, {"solution": "  \\n",'
            b' "is_correct": false}]}\n'
            b'{"question": "q4", "solutions": [{"solution": "y\\nA: $1,000", "is_correct": null}]}\n')
    result = read_file(data, "s.jsonl", fmt="solutions")
    tables = canonicalize_solutions(result.solutions)
    faults = quarantined(pa.concat_tables([result.quarantine, tables.quarantine]))
    assert faults == {1: ("solutions", "solutions: an empty list; expected at least one candidate solution"),
                      2: ("question", "missing required field 'question'"),
                      3: ("steps", "no steps; expected at least one reasoning step")}  # a blank candidate: whole record
    (row,) = tables.solutions.to_pylist()
    assert (row["line"], row["outcome"], row["final_answer"]) == (4, None, "1000")


def test_solutions_a_candidate_without_its_solution_text_is_quarantined_naming_it() -> None:
    """Was: a candidate with no 'solution' (null, or the field misnamed 'text') or a null candidate quarantined
    its record as 'no steps; expected at least one reasoning step', which does not say the field is missing.
    Now the reason names the candidate and the field, as for the record's own required fields."""
    data = (b'{"question": "q1", "solutions": [{"solution": "1+1=2\\nA: 2"}, {"text": "1+1=2\\nA: 2"}]}\n'
            b'{"question": "q2", "solutions": [{"solution": null, "is_correct": true}]}\n'
            b'{"question": "q3", "solutions": [{"solution": "x\\nA: 3"}, null]}\n'
            b'{"question": "q4", "solutions": [{"solution": "y\\nA: 4"}]}\n')
    result = read_file(data, "s.jsonl", fmt="solutions")
    assert quarantined(result.quarantine) == {
        1: ("solutions.solution", "solutions[1]: missing required field 'solution'"),
        2: ("solutions.solution", "solutions[0]: missing required field 'solution'"),
        3: ("solutions.solution", "solutions[1]: missing required field 'solution'")}
    assert result.solutions["origin_line"].to_pylist() == [4]


def test_gsm8k_reference_solutions_are_all_correct_with_a_final_answer_step() -> None:
    solutions, quarantine = solutions_of(GSM8K, options=StepOptions(gsm8k_negatives=0))
    raw = [json.loads(line) for line in GSM8K.read_text().splitlines()]
    assert quarantine.num_rows == 0 and solutions.num_rows == 20
    for record, row in zip(raw, solutions.to_pylist(), strict=True):
        lines = [x.strip() for x in record["answer"].split("\n") if x.strip()]
        assert row["steps"] == [*lines[:-1], "A: " + lines[-1].removeprefix("#### ")]
        assert set(row["step_labels"]) == {1} and row["outcome"] == 1 and not row["synthetic"]
        assert row["final_answer"] == lines[-1].removeprefix("#### ").replace(",", "")
    bad = read_file(b'{"question": "q", "answer": "1+1=<<1+1=2>>2"}\n{"question": "q2"}\n', "g.jsonl", fmt="gsm8k")
    assert quarantined(bad.quarantine) == {
        1: ("answer", "answer: no final '#### <answer>' line; expected GSM8K's reference solution (steps, then "
                      "'#### <final answer>')"),
        2: ("answer", "missing required field 'answer'"),
    }


def test_gsm8k_a_final_line_without_an_answer_is_quarantined() -> None:
    """Was: a last line '#### ' (or '####') with no answer was taken as the final line: the reference solution got
    the step 'A: ' and no final answer, and its synthetic negative outcome 1 (no answer equals no answer) though
    its changed step is labelled -1. Now the record is quarantined, naming the empty answer."""
    data = (b'{"question": "q1", "answer": "2+3 = <<2+3=5>>5\\n#### "}\n'
            b'{"question": "q2", "answer": "2+3 = <<2+3=5>>5\\n####\\n"}\n'
            b'{"question": "q3", "answer": "2+3 = <<2+3=5>>5\\n#### 5"}\n')
    result = read_file(data, "g.jsonl", fmt="gsm8k", step_options=StepOptions(gsm8k_negatives=1))
    reason = ("answer: the final '####' line holds no answer; expected GSM8K's reference solution (steps, then "
              "'#### <final answer>')")
    assert quarantined(result.quarantine) == {1: ("answer", reason), 2: ("answer", reason)}
    assert set(result.solutions["origin_line"].to_pylist()) == {3}
    assert result.solutions["final_answer"].to_pylist() == ["5", "6"]


def test_ingest_accounts_for_step_and_ranking_records_together(tmp_path: Path) -> None:
    config = IngestConfig(sources=[Source(path=str(PRM800K)), Source(path=str(GSM8K), format="gsm8k"),
                                   Source(path=str(FIXTURES / "hh_rlhf_30.jsonl"))],
                          max_quarantine_share=1.0, gsm8k_negatives=2, seed=3)
    metrics = run_ingest(config, tmp_path / "ing")
    assert metrics["rows_in"] == 11 + 20 + 30 == metrics["rows_ok"] + metrics["rows_quarantined"]
    assert metrics["rows_quarantined"] == 6  # the six faulty PRM800K records
    assert metrics["rows_in_by_format"] == {"prm800k": 11, "gsm8k": 20, "hh-rlhf": 30}
    solutions = pq.read_table(tmp_path / "ing" / schema.SOLUTIONS_FILE)
    assert metrics["solutions_ok"] == solutions.num_rows == 5 + 20 + metrics["solutions_synthetic"]
    assert 20 < metrics["solutions_synthetic"] <= 40  # up to 2 negatives per problem
    assert metrics["solution_problems"] == 25 and metrics["rankings"] == 30
    lines = pq.read_table(tmp_path / "ing" / "quarantine.parquet")["origin_line"].to_pylist()
    assert sorted(lines) == [5, 6, 7, 8, 9, 10]


def test_ranking_only_ingest_writes_an_empty_solutions_table(tmp_path: Path) -> None:
    metrics = run_ingest(IngestConfig(sources=[Source(path=str(FIXTURES / "hh_rlhf_30.jsonl"))]), tmp_path / "o")
    solutions = pq.read_table(tmp_path / "o" / schema.SOLUTIONS_FILE)
    assert solutions.num_rows == 0 and solutions.schema.equals(SOLUTIONS) and metrics["solutions_ok"] == 0


def test_solution_ids_are_stable_and_a_record_ingested_twice_is_quarantined() -> None:
    first = solutions_of(SHEPHERD)[0]["solution_id"].to_pylist()
    assert first == solutions_of(SHEPHERD)[0]["solution_id"].to_pylist() and len(set(first)) == 3
    result = read_file(SHEPHERD.read_bytes(), str(SHEPHERD))
    twice = canonicalize_solutions(pa.concat_tables([result.solutions, result.solutions.slice(0, 1)]))
    faults = quarantined(twice.quarantine)
    assert faults[1] == ("solution_id", "duplicate solution: the same source record was ingested twice; expected "
                                        "each record once")
    assert sorted(twice.solutions["line"].to_pylist()) == [2, 3]


@pytest.mark.parametrize("labels", [[1, 0], [1, 0, -1, 1]])
def test_a_label_list_of_another_length_than_the_steps_is_quarantined(labels: list[int]) -> None:
    rows = pa.table({"prompt": ["q"], "steps": [["a", "b", "c"]], "step_labels": [labels], "origin_file": ["f"],
                     "origin_line": [1], "source_format": ["x"]})
    tables = canonicalize_solutions(rows)
    assert tables.solutions.num_rows == 0
    assert tables.quarantine.to_pylist()[0]["reason"] == (f"{len(labels)} step labels for 3 steps; "
                                                          "expected one label per step")


def test_cli_ingest_format_gsm8k_with_negatives_set(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rewardline.cli import app

    out = tmp_path / "ing"
    result = CliRunner().invoke(app, ["ingest", str(GSM8K), "--format", "gsm8k", "--out", str(out),
                                      "--set", "gsm8k_negatives=2", "--set", "seed=5"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["rows_in"], metrics["rows_ok"], metrics["rows_quarantined"]) == (20, 20, 0)
    table = pq.read_table(out / schema.SOLUTIONS_FILE)
    assert metrics["solutions_ok"] == table.num_rows == 20 + metrics["solutions_synthetic"] > 50
    assert table_rows(table_path(out, "rankings")) == 0  # step-only data: empty ranking tables
    bad = CliRunner().invoke(app, ["ingest", str(GSM8K), "--format", "gsm8k", "--out", str(tmp_path / "x"),
                                   "--set", "gsm8k_negatives=-1"])
    assert bad.exit_code == 2 and "gsm8k_negatives" in bad.output


def test_solutions_step_labels_from_the_outcome_for_prm_training() -> None:
    solutions, quarantine = solutions_of(MODEL_SOLUTIONS, "solutions", StepOptions(step_labels="outcome"))
    assert quarantine.num_rows == 0 and solutions.num_rows == 400
    rows = solutions.to_pylist()
    assert {r["outcome"] for r in rows} == {0, 1} and all(r["synthetic"] for r in rows)
    for r in rows:
        if r["outcome"] == 1:  # a correct answer: every step labelled correct
            assert r["step_labels"] == [1] * len(r["steps"])
        else:  # a wrong answer: the last step incorrect, where it went wrong before is unknown
            assert r["step_labels"] == [None] * (len(r["steps"]) - 1) + [-1]
    plain, _ = solutions_of(MODEL_SOLUTIONS, "solutions")  # the default: only the outcome is known
    assert plain["solution_id"].to_pylist() == solutions["solution_id"].to_pylist()
    assert not any(plain["synthetic"].to_pylist())


def test_outcome_step_labels_apply_to_the_solutions_format_only(tmp_path: Path) -> None:
    data = b'{"question": "q", "solutions": [{"solution": "x\\nA: 3", "is_correct": null}]}\n'
    result = read_file(data, "s.jsonl", fmt="solutions", step_options=StepOptions(step_labels="outcome"))
    assert result.solutions.to_pylist()[0]["step_labels"] == [None, None]  # unknown outcome: nothing known
    config = IngestConfig(sources=[Source(path=str(GSM8K), format="gsm8k", step_labels="outcome")])
    with pytest.raises(ValueError, match="step_labels: outcome applies to format solutions only, not gsm8k"):
        run_ingest(config, tmp_path / "ing")
