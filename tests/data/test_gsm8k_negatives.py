"""GSM8K synthetic step-level negatives: the changed step is really wrong, the error is carried forward
through the later steps that use it, and the negatives are a deterministic function of the seed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from rewardline.data import schema
from rewardline.data.adapters import read_file
from rewardline.data.adapters.gsm8k import ANNOTATION, evaluate, number, perturb, same
from rewardline.data.adapters.gsm8k import _carry as carry
from rewardline.data.ingest import IngestConfig, Source, run_ingest
from rewardline.data.steps import StepOptions, canonicalize_solutions

GSM8K = Path(__file__).parents[1] / "fixtures" / "gsm8k_train_20.jsonl"
NATALIA = ["Natalia sold 48/2 = <<48/2=24>>24 clips in May.",
           "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.", "A: 72"]


def consistent(step: str) -> list[bool]:
    """Per calculator annotation of ``step``: does its expression evaluate to its result?"""
    out = []
    for match in ANNOTATION.finditer(step):
        value, result = evaluate(match.group(1)), number(match.group(2))
        out.append(value is not None and result is not None and abs(value - result) <= 0.01 * max(1.0, abs(result)))
    return out


def test_carrying_an_error_forward_recomputes_the_steps_that_use_it() -> None:
    changed = {24.0: 27.0}
    step, touched = carry(NATALIA[1], changed)
    assert (step, touched) == ("Natalia sold 48+27 = <<48+27=75>>75 clips altogether in April and May.", True)
    assert changed == {24.0: 27.0, 72.0: 75.0}  # the recomputed result is carried on in turn
    assert carry("A: 72", changed) == ("A: 75", True)
    assert carry("She has 3 * 4 = <<3*4=12>>12 pens.", changed) == ("She has 3 * 4 = <<3*4=12>>12 pens.", False)
    # written-out arithmetic (no annotation) is recomputed too
    assert carry("They hold 15+30 = 45 gallons.", {15.0: 17.25}) == ("They hold 17.25+30 = 47.25 gallons.", True)
    assert carry("That is $1,200 x 2 = $2,400.", {1200.0: 1000.0}) == ("That is $1000 x 2 = $2000.", True)


@pytest.mark.parametrize("seed", range(8))
def test_a_negative_changes_one_result_and_carries_it_to_the_answer(seed: int) -> None:
    wrong, labels, index = perturb(NATALIA, np.random.default_rng(seed), "result")
    assert labels[:index] == [1] * index and labels[index] == -1
    assert consistent(wrong[index]) == [False]  # the changed step's arithmetic is wrong
    assert wrong[-1] != NATALIA[-1] and labels[-1] == -1  # ... and the final answer follows it
    assert all(consistent(step) == [True] for step in wrong[index + 1:-1])  # later steps recomputed, not broken


def test_every_negative_of_real_problems_is_wrong_at_its_first_error_and_carried_forward() -> None:
    options = StepOptions(gsm8k_negatives=3, gsm8k_negative_kind="result")
    result = read_file(GSM8K.read_bytes(), str(GSM8K), fmt="gsm8k", step_options=options)
    rows = canonicalize_solutions(result.solutions).solutions.to_pylist()
    reference = {r["prompt_id"]: r for r in rows if not r["synthetic"]}
    negatives = [r for r in rows if r["synthetic"]]
    assert len(reference) == 20 and 40 <= len(negatives) <= 60
    changed_final = 0
    for neg in negatives:
        ref = reference[neg["prompt_id"]]
        labels, steps = neg["step_labels"], neg["steps"]
        first = labels.index(-1)
        assert len(steps) == len(ref["steps"]) and neg["outcome"] in (0, 1)
        assert steps[:first] == ref["steps"][:first] and labels[:first] == [1] * first
        assert steps[first] != ref["steps"][first] and not all(consistent(steps[first]))
        for label, step, ref_step in zip(labels[first + 1:], steps[first + 1:], ref["steps"][first + 1:], strict=True):
            assert label in (-1, None)
            assert (step != ref_step) == (label == -1)  # changed later steps are the incorrect ones, only those
            if label == -1:  # a carried step keeps its arithmetic right wherever the reference had it right
                assert all(c for c, r in zip(consistent(step), consistent(ref_step), strict=True) if r)
        assert neg["outcome"] == int(same(float(neg["final_answer"]), float(ref["final_answer"])))
        changed_final += neg["outcome"] == 0
    assert changed_final >= 0.85 * len(negatives)  # the error usually reaches the final answer


def _ingest_hash(tmp_path: Path, name: str, seed: int) -> str:
    config = IngestConfig(sources=[Source(path=str(GSM8K), format="gsm8k")], gsm8k_negatives=2, seed=seed)
    run_ingest(config, tmp_path / name)
    return hashlib.sha256((tmp_path / name / schema.SOLUTIONS_FILE).read_bytes()).hexdigest()


def test_negatives_are_deterministic_for_a_seed(tmp_path: Path) -> None:
    assert _ingest_hash(tmp_path, "a", 0) == _ingest_hash(tmp_path, "b", 0)
    assert _ingest_hash(tmp_path, "c", 1) != _ingest_hash(tmp_path, "a", 0)
    table = pq.read_table(tmp_path / "a" / schema.SOLUTIONS_FILE)
    assert table["synthetic"].to_pylist().count(True) > 20  # two negatives for most problems


@pytest.mark.parametrize("seed", range(8))
def test_an_operation_negative_changes_an_operator_and_keeps_the_arithmetic_right(seed: int) -> None:
    wrong, labels, index = perturb(NATALIA, np.random.default_rng(seed), "operation")
    assert labels[:index] == [1] * index and labels[index] == -1 and labels[-1] == -1
    assert consistent(wrong[index]) == [True]  # the annotation holds: the error is the operation, not the sum
    before, after = ANNOTATION.search(NATALIA[index]).group(1), ANNOTATION.search(wrong[index]).group(1)
    assert len(before) == len(after) and sum(a != b for a, b in zip(before, after, strict=True)) == 1  # one operator
    written = wrong[index].split("=")[0].split("sold ")[1].strip()  # "48/2 " -> the words show the new operation
    assert written.replace(" ", "") == after
    assert wrong[-1] != NATALIA[-1] and all(consistent(step) == [True] for step in wrong[index + 1:-1])


def test_operation_negatives_of_real_problems_hold_their_arithmetic_and_fall_back_when_no_operator_fits() -> None:
    options = StepOptions(gsm8k_negatives=2, gsm8k_negative_kind="operation")
    rows = canonicalize_solutions(read_file(GSM8K.read_bytes(), str(GSM8K), fmt="gsm8k",
                                            step_options=options).solutions).solutions.to_pylist()
    reference = {r["prompt_id"]: r for r in rows if not r["synthetic"]}
    negatives = [r for r in rows if r["synthetic"]]
    assert len(negatives) == 40  # as many as the result kind: a solution without a clean operator change gets one
    sound = [all(consistent(neg["steps"][neg["step_labels"].index(-1)])) for neg in negatives]
    assert sum(sound) >= 0.8 * len(negatives)  # most wrong steps are arithmetically right
    for neg in negatives:
        first = neg["step_labels"].index(-1)
        assert neg["steps"][:first] == reference[neg["prompt_id"]]["steps"][:first]
        assert neg["steps"][first] != reference[neg["prompt_id"]]["steps"][first]


def test_the_operation_kind_is_the_default_everywhere() -> None:
    for seed in range(8):
        assert perturb(NATALIA, np.random.default_rng(seed)) == perturb(NATALIA, np.random.default_rng(seed),
                                                                        "operation")
    assert IngestConfig(sources=[Source(path=str(GSM8K), format="gsm8k")]).gsm8k_negative_kind == "operation"
    assert StepOptions().gsm8k_negative_kind == "operation"
