"""The evaluate gates (rewardline.evaluation.gates on rewardline.gates) and rewardline.evaluation.evaluate (outputs)."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from rewardline.data.schema import PAIRS, conform
from rewardline.errors import GateFailed
from rewardline.evaluation.evaluate import EvalConfig, evaluate_scores
from rewardline.evaluation.gates import EVALUATE_GATES, report_markdown
from rewardline.evaluation.metrics import champion_verdict, non_inferiority_power, paired_bootstrap_difference
from rewardline.gates import GateReport, check
from rewardline.gates import evaluate_gates as check_specs

CONFIG = EvalConfig(min_accuracy=0.6, require_ci_above_chance=True, max_ece_calibrated=0.1, max_length_bias=0.1,
                    champion_delta=0.02)
GOOD = {"accuracy": 0.7, "accuracy_ci_low": 0.62, "accuracy_ci_high": 0.78, "ece_calibrated": 0.05,
        "length_bias": 0.03, "champion_accuracy": 0.69, "champion_diff": 0.01, "champion_diff_ci_low": -0.01}


def evaluate_gates(metrics: dict, config: EvalConfig) -> GateReport:
    return check_specs(EVALUATE_GATES, metrics, config, stage="evaluate")


def _by_name(report: GateReport) -> dict:
    return {g.name: g for g in report.gates}


def test_all_gates_pass():
    report = evaluate_gates(GOOD, CONFIG)
    assert report.passed and not report.failed
    assert set(_by_name(report)) == {"min_accuracy", "accuracy_ci_above_chance", "max_ece_calibrated",
                                     "max_ece_absolute", "max_length_bias", "champion_non_inferiority"}
    assert _by_name(report)["max_ece_absolute"].skipped  # GOOD has no anchor comparisons
    check(report)  # does not raise


@pytest.mark.parametrize(
    ("key", "value", "gate"),
    [
        ("accuracy", 0.59, "min_accuracy"),
        ("accuracy_ci_low", 0.5, "accuracy_ci_above_chance"),  # strictly above chance
        ("ece_calibrated", 0.11, "max_ece_calibrated"),
        ("length_bias", 0.1001, "max_length_bias"),
        ("champion_diff_ci_low", -0.021, "champion_non_inferiority"),
        ("accuracy", float("nan"), "min_accuracy"),  # not measurable fails
        ("ece_calibrated", None, "max_ece_calibrated"),
    ],
)
def test_each_gate_fails_alone(key, value, gate):
    report = evaluate_gates({**GOOD, key: value}, CONFIG)
    assert [g.name for g in report.failed] == [gate]


def test_boundaries_are_inclusive_except_chance():
    metrics = {**GOOD, "accuracy": 0.6, "ece_calibrated": 0.1, "length_bias": 0.1, "champion_diff_ci_low": -0.02}
    assert evaluate_gates(metrics, CONFIG).passed


def test_skipped_gates():
    metrics = {**GOOD, "accuracy_ci_low": 0.4, "champion_accuracy": None, "champion_diff_ci_low": None}
    config = EvalConfig(**{**CONFIG.__dict__, "require_ci_above_chance": False})
    gates = _by_name(evaluate_gates(metrics, config))
    assert gates["accuracy_ci_above_chance"].skipped and gates["accuracy_ci_above_chance"].value == 0.4
    assert gates["champion_non_inferiority"].skipped and gates["champion_non_inferiority"].passed
    assert gates["champion_non_inferiority"].reason == "no champion"
    assert gates["accuracy_ci_above_chance"].reason == "require_ci_above_chance is false"


def test_gate_failed_message_names_each_failed_gate_with_value_and_threshold():
    report = evaluate_gates({**GOOD, "accuracy": 0.55, "ece_calibrated": 0.2}, CONFIG)
    with pytest.raises(GateFailed) as err:
        check(report, report_path="out/report.md")
    message = str(err.value)
    assert "min_accuracy: pairwise accuracy 0.5500 is not >= 0.6000" in message
    assert "max_ece_calibrated: ECE after temperature scaling 0.2000 is not <= 0.1000" in message
    assert message.startswith("evaluate gate failed (2 of 6)")
    assert "max_length_bias" not in message and "out/report.md" in message


def test_report_json_round_trip_and_markdown():
    report = evaluate_gates({**GOOD, "accuracy": 0.5}, CONFIG)
    data = json.loads(json.dumps(report.to_dict()))
    again = GateReport.from_dict(data)
    assert again.gates == report.gates and not again.passed
    with pytest.raises(GateFailed, match="min_accuracy"):
        check(data)  # gates.json / metrics.json dicts are accepted too
    md = report_markdown({**GOOD, "accuracy": 0.5}, report)
    assert "| gate | value | threshold | passed |" in md
    assert "| min_accuracy: pairwise accuracy | 0.5000 | >= 0.6000 | FAILED |" in md
    assert "Gates: **FAILED**" in md and "longer-response-wins baseline" in md


# ---------------------------------------------------------------- evaluate_scores


def _pairs(n_prompts: int, split: str, seed: int) -> pa.Table:
    """Four pairs per prompt (responses a0..a3 vs b0..b3), labels 1 / 0.75 / 0.5 / 1, two categories."""
    rows = []
    for i in range(n_prompts):
        for j, p in enumerate([1.0, 0.75, 0.5, 1.0]):
            rows.append({"prompt_id": f"{split}{i}", "response_a_id": f"{split}{i}a{j}",
                         "response_b_id": f"{split}{i}b{j}", "label": p, "n_votes": 4, "margin": 0.0,
                         "category": "math" if i % 2 else None, "split": split})
    return conform(pa.Table.from_pylist(rows), PAIRS)


def test_evaluate_scores_writes_everything(tmp_path):
    test, val = _pairs(30, "test", 0), _pairs(20, "val", 1)
    n = test.num_rows
    # the model is right on 3 of the 4 pairs of each prompt (wrong on the j = 3 pair): accuracy 2/3 on non-ties
    ra = np.tile([1.0, 1.0, 1.0, -1.0], 30)
    rb = np.zeros(n)
    vra, vrb = np.tile([1.0, 1.0, 1.0, -1.0], 20), np.zeros(val.num_rows)
    la, lb = np.tile([100, 50, 80, 80], 30), np.tile([50, 100, 80, 40], 30)
    config = EvalConfig(bootstrap_samples=200, min_accuracy=0.6, max_length_bias=0.5)
    metrics = evaluate_scores(test, ra, rb, val, vra, vrb, la, lb, config, ra, rb, out_dir=tmp_path)

    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["accuracy_ci_low"] == metrics["accuracy_ci_high"] == pytest.approx(2 / 3)  # identical prompts
    assert metrics["ties_excluded"] == 30 and metrics["n_pairs"] == 90
    assert set(metrics["accuracy_by_category"]) == {"math", "(none)"}
    # soft: 1 + 0.75 + 0.5 (Δ > 0 on a tie label) + 0 per prompt
    assert metrics["agreement_aware_accuracy"] == pytest.approx(2.25 / 4)
    # longer wins: pair 0 right (a longer), pair 1 wrong (a shorter), pair 3 right (a longer) -> 2/3
    assert metrics["longer_wins_accuracy"] == pytest.approx(2 / 3)
    # decisive pairs 0, 1, 3: model prefers longer 1, 0, 0; labels 1, 0, 1
    assert metrics["length_bias"] == pytest.approx(1 / 3 - 2 / 3)
    assert metrics["champion_diff"] == 0.0 and metrics["champion_diff_ci_low"] == 0.0
    assert metrics["temperature"] > 0 and not math.isnan(metrics["ece_calibrated"])
    for key in ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "accuracy_by_category", "ece_raw",
                "ece_calibrated", "brier", "nll", "temperature", "length_spearman", "longer_wins_accuracy", "gates"):
        assert key in metrics
    assert metrics["gates"]["min_accuracy"] == {"value": pytest.approx(2 / 3), "threshold": 0.6, "op": ">=",
                                                "passed": True, "skipped": False,
                                                "description": "pairwise accuracy", "reason": ""}

    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["accuracy"] == pytest.approx(2 / 3) and on_disk["gates_passed"] == metrics["gates_passed"]
    gates_json = json.loads((tmp_path / "gates.json").read_text())
    assert gates_json["gates"] == metrics["gates"] and gates_json["passed"] is metrics["gates_passed"] is True
    assert gates_json["stage"] == "evaluate"
    assert "| gate | value | threshold | passed |" in (tmp_path / "report.md").read_text()
    calib = json.loads((tmp_path / "calibration.json").read_text())
    assert set(calib) == {"temperature", "reward_mean", "reward_std"}
    # unique val responses: per prompt rewards 1, 1, 1, −1 (a side) and 0 × 4 (b side): mean 0.25
    assert calib["reward_mean"] == pytest.approx(0.25)
    reference = json.loads((tmp_path / "reference_rewards.json").read_text())
    test_ids = set(test.column("response_a_id").to_pylist()) | set(test.column("response_b_id").to_pylist())
    assert reference["split"] == "test" and len(reference["rewards"]) == len(test_ids)
    prompt_of = dict(zip(test.column("response_a_id").to_pylist() + test.column("response_b_id").to_pylist(),
                         test.column("prompt_id").to_pylist() * 2, strict=True))
    assert reference["prompt_ids"] == [prompt_of[i] for i in sorted(test_ids)]  # aligned with the rewards
    for name in ("reliability", "accuracy_by_category", "reward_histogram", "reward_vs_length"):
        assert (tmp_path / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "plots" / "reliability.json").read_text())[0].keys() >= {"confidence", "observed"}


def test_evaluate_scores_failed_gate_raises_after_outputs(tmp_path):
    test, val = _pairs(4, "test", 0), _pairs(4, "val", 1)
    ra, rb = np.zeros(test.num_rows), np.ones(test.num_rows)  # always wrong
    metrics = evaluate_scores(test, ra, rb, val, np.zeros(val.num_rows), np.ones(val.num_rows),
                              np.ones(test.num_rows), np.ones(test.num_rows), EvalConfig(bootstrap_samples=50),
                              out_dir=tmp_path)
    assert (tmp_path / "metrics.json").exists() and not metrics["gates_passed"]
    assert metrics["gates"]["champion_non_inferiority"]["skipped"]
    with pytest.raises(GateFailed, match=r"min_accuracy: pairwise accuracy 0\.0000 is not >= 0\.5000"):
        check(metrics)


def test_an_empty_or_all_tied_test_split_fails_its_gates_saying_why(tmp_path):
    val = _pairs(4, "val", 1)
    vra, vrb = np.zeros(val.num_rows), np.ones(val.num_rows)
    empty = _pairs(4, "test", 0).slice(0, 0)
    metrics = evaluate_scores(empty, np.zeros(0), np.zeros(0), val, vra, vrb, np.zeros(0), np.zeros(0),
                              EvalConfig(bootstrap_samples=50), out_dir=tmp_path / "empty")
    with pytest.raises(GateFailed, match=r"min_accuracy: pairwise accuracy is not measurable \(the test split has "
                                         r"no pairs: too few prompts"):
        check(metrics)
    assert {name for name, gate in metrics["gates"].items() if gate["reason"].startswith("the test split has no")} \
        == {"min_accuracy", "max_ece_calibrated", "max_length_bias"}
    tied = _pairs(4, "test", 0)
    tied = tied.set_column(tied.schema.get_field_index("label"), "label", pa.array([0.5] * tied.num_rows, pa.float32()))
    n = tied.num_rows
    metrics = evaluate_scores(tied, np.zeros(n), np.ones(n), val, vra, vrb, np.ones(n), np.ones(n),
                              EvalConfig(bootstrap_samples=50), out_dir=tmp_path / "tied")
    assert metrics["gates"]["min_accuracy"]["reason"] == f"every one of the {n} test pairs is a tie"


def test_a_length_bias_not_measurable_on_equal_lengths_says_why(tmp_path):
    """Was: a test split whose decided pairs all had two responses of one length (arena rows "answer 1 by m1" vs
    "answer 1 by m2") failed max_length_bias with the reason "not measured", naming no cause."""
    test, val = _pairs(6, "test", 0), _pairs(4, "val", 1)
    n = test.num_rows
    metrics = evaluate_scores(test, np.ones(n), np.zeros(n), val, np.ones(val.num_rows), np.zeros(val.num_rows),
                              np.full(n, 40), np.full(n, 40), EvalConfig(bootstrap_samples=50), out_dir=tmp_path)
    gate = metrics["gates"]["max_length_bias"]
    assert not gate["passed"] and metrics["n_decisive_pairs"] == 0 and metrics["accuracy"] == 1.0
    assert gate["reason"] == "none of the 18 decided test pairs has two responses of different lengths"
    assert metrics["gates"]["min_accuracy"]["passed"]


def test_evaluate_scores_rejects_misaligned_scores(tmp_path):
    test = _pairs(2, "test", 0)
    with pytest.raises(ValueError, match="reward_b has 3 entries"):
        evaluate_scores(test, np.zeros(8), np.zeros(3), test, np.zeros(8), np.zeros(8), np.zeros(8), np.zeros(8),
                        EvalConfig(), out_dir=tmp_path)


def test_power_analysis_on_a_hand_example():
    # 480 pairs, 20 % discordant, δ = 0.02, 95 % / 80 %: z = 1.95996 + 0.84162 = 2.80158
    mdd, needed = non_inferiority_power(480, 0.2, 0.02, confidence=0.95, power=0.8)
    assert mdd == pytest.approx(2.80158 * math.sqrt(0.2 / 480), rel=1e-5)  # 0.0572
    assert needed == math.ceil(2.80158**2 * 0.2 / 0.02**2) == 3925
    # clustering doubles the variance: twice the pairs
    assert non_inferiority_power(480, 0.2, 0.02, design_effect=2.0)[1] == math.ceil(2.80158**2 * 0.4 / 0.02**2)
    assert non_inferiority_power(480, 0.0, 0.02) == (0.0, 0)  # identical models: nothing to detect


def _champion_case(seed: int, flip_share: float) -> tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray]:
    """120 prompts × 4 pairs, label 1 (a wins). The champion is right on ~65 %; the challenger is the
    champion's scores plus noise that reorders ~10 % of the pairs, then ``flip_share`` of its right pairs flipped."""
    rng = np.random.default_rng(seed)
    rows = [{"prompt_id": f"t{i}", "response_a_id": f"t{i}a{j}", "response_b_id": f"t{i}b{j}", "label": 1.0,
             "n_votes": 1, "margin": 0.0, "category": None, "split": "test"} for i in range(120) for j in range(4)]
    champion = rng.normal(0.4, 1.0, len(rows))  # Δ of the champion
    challenger = champion + rng.normal(0, 0.15, len(rows))
    right = np.flatnonzero(challenger > 0)
    flip = rng.choice(right, int(flip_share * right.size), replace=False)
    challenger[flip] = -challenger[flip]
    return conform(pa.Table.from_pylist(rows), PAIRS), challenger, champion, np.zeros(len(rows))


@pytest.mark.parametrize("seed", range(4))
def test_an_equal_challenger_on_a_small_test_set_is_never_worse(seed):
    test, challenger, champion, zeros = _champion_case(seed, 0.0)
    diff = paired_bootstrap_difference(challenger, zeros, champion, zeros, test.column("label").to_numpy(),
                                       test.column("prompt_id").to_pylist(), samples=500, seed=seed)
    verdict = champion_verdict(diff, 0.02)
    assert verdict.verdict in ("inconclusive", "non-inferior")
    assert diff.ci_high - diff.ci_low > 0.02 and verdict.pairs_needed > 0 and verdict.min_detectable_difference > 0
    metrics = {**GOOD, "champion_diff_ci_low": diff.ci_low, "champion_inconclusive": verdict.verdict == "inconclusive",
               "champion_power_note": f"needs {verdict.pairs_needed} test pairs"}
    gate = _by_name(evaluate_gates(metrics, CONFIG))["champion_non_inferiority"]
    assert gate.passed
    if verdict.verdict == "inconclusive":
        assert gate.status == f"inconclusive (needs {verdict.pairs_needed} test pairs)"
        strict = _by_name(evaluate_gates(metrics, CONFIG.replace(champion_require_conclusive=True)))
        assert not strict["champion_non_inferiority"].passed
        assert "inconclusive: needs" in strict["champion_non_inferiority"].failure_message()


def test_a_clearly_worse_challenger_fails_and_the_report_says_why(tmp_path):
    test, challenger, champion, zeros = _champion_case(0, 0.5)  # half its right pairs flipped
    val = _pairs(20, "val", 1)
    lengths = np.full(test.num_rows, 10)
    config = EvalConfig(bootstrap_samples=300, min_accuracy=0.0, max_ece_calibrated=1.0, max_length_bias=1.0)
    metrics = evaluate_scores(test, challenger, zeros, val, np.ones(val.num_rows), np.zeros(val.num_rows),
                              lengths, lengths, config, champion, zeros, out_dir=tmp_path)
    assert metrics["champion_verdict"] == "worse" and metrics["champion_diff_ci_high"] < -0.02
    assert metrics["gates"]["champion_non_inferiority"]["passed"] is False
    assert "inconclusive" not in metrics["gates"]["champion_non_inferiority"]
    assert metrics["champion_pairs_needed"] > 0 and metrics["champion_n_pairs"] == 480
    assert not metrics["temperature_applied"] and "min_calibration_pairs" in metrics["temperature_reason"]
    report = (tmp_path / "report.md").read_text()
    assert "champion verdict at δ = 0.0200 | worse: needs" in report and "temperature applied | no" in report


def test_a_missing_champion_s_reason_is_the_champion_gate_s_reason():
    metrics = {**GOOD, "champion_accuracy": None, "champion_diff_ci_low": None,
               "champion_missing_reason": "no champion: no registered model 'x'; did you mean 'y'?"}
    gate = _by_name(evaluate_gates(metrics, CONFIG))["champion_non_inferiority"]
    assert gate.skipped and gate.passed and gate.reason == "no champion: no registered model 'x'; did you mean 'y'?"
