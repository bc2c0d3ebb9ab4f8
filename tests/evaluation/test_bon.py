"""Best-of-N: exact order-statistic expectations vs brute force, KL, the fit, gates, loaders and the CLI."""

from __future__ import annotations

import gzip
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import save_tiny_reward_model
from typer.testing import CliRunner

from rewardline.cli import app
from rewardline.evaluation.bon import (
    BonConfig,
    bon_curves,
    check_bon_gates,
    fit_bon,
    kl_bon,
    log_n_for_kl,
    n_for_kl,
    order_statistic_weights,
    summarize,
)
from rewardline.evaluation.candidates import BadInput, load_candidates
from rewardline.modeling.score import score_texts

runner = CliRunner()


def brute_force(proxy: np.ndarray, gold: np.ndarray, n: int) -> tuple[float, float, float]:
    """Mean over all N-subsets of (gold of the proxy's pick, uniformly random among tied maxima;
    proxy of the pick; max gold)."""
    picks, proxies, oracles = [], [], []
    for subset in itertools.combinations(range(len(proxy)), n):
        idx = np.array(subset)
        top = idx[proxy[idx] == proxy[idx].max()]
        picks.append(gold[top].mean())
        proxies.append(proxy[idx].max())
        oracles.append(gold[idx].max())
    return float(np.mean(picks)), float(np.mean(proxies)), float(np.mean(oracles))


def test_exact_expectations_equal_brute_force_enumeration_with_ties():
    rng = np.random.default_rng(7)
    sizes = [1, 2, 3, 5, 6, 6, 8, 9, 4, 7]  # unequal k: several size groups, prompts excluded at large N
    prompt_index = np.repeat(np.arange(len(sizes)), sizes)
    rng.shuffle(prompt_index)  # candidates of a prompt need not be contiguous
    proxy = rng.integers(0, 3, prompt_index.size).astype(float)  # 3 levels: many ties
    gold = np.round(rng.normal(size=prompt_index.size), 1)
    gold[::4] = 0.5  # ties in gold too
    curves = bon_curves(prompt_index, proxy, gold)
    assert curves.pick_gold.shape == (len(sizes), max(sizes))
    assert curves.proxy_tied > 0
    for p, k in enumerate(sizes):
        mine = prompt_index == p
        for n in range(1, max(sizes) + 1):
            if n > k:
                assert np.isnan(curves.pick_gold[p, n - 1]) and np.isnan(curves.oracle_gold[p, n - 1])
                continue
            want = brute_force(proxy[mine], gold[mine], n)
            got = (curves.pick_gold[p, n - 1], curves.pick_proxy[p, n - 1], curves.oracle_gold[p, n - 1])
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
        assert curves.mean_gold[p] == pytest.approx(gold[mine].mean(), abs=1e-12)


def test_weights_are_the_order_statistic_distribution():
    w = order_statistic_weights(10, 12)
    np.testing.assert_allclose(w[:10].sum(1), 1.0, atol=1e-12)  # hockey-stick identity
    assert (w[10:] == 0).all()
    assert w[0] == pytest.approx(np.full(10, 0.1)) and w[9, 9] == pytest.approx(1.0)
    assert w[2, 5] == pytest.approx(math.comb(5, 2) / math.comb(10, 3), rel=1e-12)


def test_kl_bon_formula_and_inverse():
    assert kl_bon(1) == 0.0
    assert float(kl_bon(2)) == pytest.approx(math.log(2) - 0.5)
    assert float(kl_bon(16)) == pytest.approx(math.log(16) - 15 / 16)
    assert np.all(np.diff(kl_bon(np.arange(1, 200))) > 0)
    for n in (1.0, 2.0, 7.5, 1000.0):
        assert n_for_kl(float(kl_bon(n))) == pytest.approx(n, rel=1e-9)
    assert n_for_kl(1e30) is None and log_n_for_kl(1e30) == pytest.approx(1e30 + 1)  # no overflow


def test_fit_recovers_alpha_beta_from_synthetic_curve():
    d = np.sqrt(kl_bon(np.arange(1, 65)))
    alpha, beta = 0.3, 0.12
    fit = fit_bon(d, d * (alpha - beta * d))
    assert fit["alpha"] == pytest.approx(alpha, abs=1e-10) and fit["beta"] == pytest.approx(beta, abs=1e-10)
    assert fit["d_peak"] == pytest.approx(alpha / (2 * beta))
    assert float(kl_bon(fit["n_peak"])) == pytest.approx(fit["d_peak"] ** 2)
    noisy = fit_bon(d, d * (alpha - beta * d) + np.random.default_rng(0).normal(0, 1e-3, d.size))
    assert noisy["alpha"] == pytest.approx(alpha, abs=0.01) and noisy["beta"] == pytest.approx(beta, abs=0.01)
    rising = fit_bon(d, 0.2 * d)  # no over-optimisation: β = 0, no interior peak
    assert rising["beta"] == pytest.approx(0.0, abs=1e-10) and rising["d_peak"] is None
    assert fit_bon(d[:2], d[:2]) is None  # one point with d > 0


def _metrics(proxy: np.ndarray, gold: np.ndarray, k: int) -> dict:
    prompt_index = np.repeat(np.arange(proxy.size // k), k)
    return summarize(bon_curves(prompt_index, proxy, gold), BonConfig(bootstrap_samples=300))


def test_gates_pass_on_a_good_proxy_and_fail_on_a_bad_or_overoptimised_one():
    rng = np.random.default_rng(1)
    k, prompts = 8, 200
    gold = rng.normal(size=k * prompts)
    good = _metrics(gold + rng.normal(0, 0.3, gold.size), gold, k)
    gates = check_bon_gates(good, min_bon_gain=0.0, max_overoptimization=0.05)
    assert gates["min_bon_gain"]["passed"] and gates["max_overoptimization"]["passed"]
    assert gates["max_overoptimization"]["value"] == pytest.approx(0.0)  # monotone: peak at N_max
    assert not check_bon_gates(good, min_bon_gain=5.0, max_overoptimization=0.05)["min_bon_gain"]["passed"]

    bad = _metrics(-gold, gold, k)  # anti-correlated proxy: gold falls with N
    gates = check_bon_gates(bad, 0.0, 0.05)
    assert not gates["min_bon_gain"]["passed"] and gates["min_bon_gain"]["value"] < 0
    assert not gates["max_overoptimization"]["passed"]

    # Over-optimised: the proxy likes gold up to a point and then likes extreme responses whose gold is bad.
    proxy = np.where(gold > 1.0, 5.0 + gold, gold)
    hacked_gold = np.where(gold > 1.0, -1.0, gold)
    hacked = _metrics(proxy, hacked_gold, k)
    assert hacked["observed_peak"]["peaked_before_n_max"]
    gates = check_bon_gates(hacked, -1.0, 0.05)
    assert gates["min_bon_gain"]["passed"] and not gates["max_overoptimization"]["passed"]
    assert gates["max_overoptimization"]["value"] == pytest.approx(
        hacked["observed_peak"]["gold_peak"] - hacked["gold_by_n"][str(k)])
    assert check_bon_gates(hacked, -1.0, 10.0)["max_overoptimization"]["passed"]


def test_summary_means_ci_and_exclusion_counts():
    rng = np.random.default_rng(3)
    sizes = np.array([2, 4, 4, 4])
    prompt_index = np.repeat(np.arange(4), sizes)
    gold = rng.normal(size=prompt_index.size)
    curves = bon_curves(prompt_index, gold, gold)  # perfect proxy: pick = oracle
    m = summarize(curves, BonConfig(bootstrap_samples=200, seed=5))
    assert m["prompts_by_n"] == {"1": 4, "2": 4, "3": 3, "4": 3}
    assert m["gold_by_n"] == pytest.approx(m["oracle_gold"])
    assert m["gold_by_n"]["1"] == pytest.approx(m["random_gold"]["1"])
    assert m["gold_by_n"]["3"] == pytest.approx(np.nanmean(curves.pick_gold[1:, 2]))
    for n, (lo, hi) in m["gold_ci"].items():
        assert lo <= m["gold_by_n"][n] + 1e-12 and m["gold_by_n"][n] <= hi + 1e-12
    assert m["kl_bon"]["4"] == pytest.approx(math.log(4) - 0.75)
    assert summarize(curves, BonConfig(bootstrap_samples=200, seed=5))["gold_ci"] == m["gold_ci"]  # seeded


# -- loaders -------------------------------------------------------------------------------------
def test_loaders_read_the_three_shapes(tmp_path):
    alpaca = [{"instruction": "Say hi", "output_1": "ref", "output_2": f"hi {i}", "preference": 1.0 + i / 4,
               "annotator": "judge", "generator_2": f"m.{i}"} for i in range(3)]
    (tmp_path / "ann.json.gz").write_bytes(gzip.compress(json.dumps(alpaca).encode()))
    gsm = {"question": "1+1?", "ground_truth": "A: 2",
           "solutions": [{"solver": "a", "solution": "A: 2", "is_correct": True},
                         {"solver": "b", "solution": "A: 3", "is_correct": False}]}
    (tmp_path / "gsm.jsonl").write_text(json.dumps(gsm) + "\n")
    c = load_candidates([tmp_path / "ann.json.gz", tmp_path / "gsm.jsonl"])
    assert c.gold.tolist() == [0.0, 0.25, 0.5, 1.0, 0.0]
    assert c.prompt_index.tolist() == [0, 0, 0, 1, 1] and c.responses[1] == "hi 1"
    assert load_candidates([tmp_path], fmt="auto").gold.size == 5  # a directory: its files


@pytest.mark.parametrize(("line", "field"), [
    ('{"prompt": "p", "response": "r"}', "gold"),
    ('{"prompt": "p", "response": "r", "gold": "high"}', "gold"),
    ('{"prompt": "p", "response": "", "gold": 1}', "response"),
    ('{"prompt": "p", "response": "r", "gold": 1', None),
    # were scored: a "Robot:" turn (score, serve and ingest refuse the role); a lone surrogate reached the tokenizer
    # ("internal error: TypeError: TextEncodeInput ...", exit 3)
    ('{"prompt": [{"role": "robot", "content": "p"}], "response": "r", "gold": 1}', "prompt[0].role"),
    ('{"prompt": "p", "response": "r\\ud800", "gold": 1}', "response"),
    ('{"prompt": [{"role": "user", "content": "\\udfff"}], "response": "r", "gold": 1}', "prompt[0].content"),
    ('{"prompt": "\\ud83d", "response": "r", "gold": 1}', "prompt"),
])
def test_malformed_jsonl_row_names_file_line_and_field(tmp_path, line, field):
    path = tmp_path / "c.jsonl"
    path.write_text('{"prompt": "p", "response": "a", "gold": 0.5}\n' + line + "\n")
    with pytest.raises(BadInput) as err:
        load_candidates([path], fmt="jsonl")
    assert f"{path}:2:" in str(err.value)
    assert (f"field '{field}'" in str(err.value)) if field else ("JSON" in str(err.value))


# -- CLI end to end with a tiny model ------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_reward_model(tmp_path_factory.mktemp("bon-model"), max_length=32)


def _tiny_rows() -> list[dict]:
    words = ["apple", "river", "stone", "cloud", "music", "paper", "light", "green", "quick", "silver"]
    rng = np.random.default_rng(0)
    return [{"prompt": f"question {p}: tell me about {words[p]}",
             "response": " ".join(rng.choice(words, size=int(rng.integers(2, 9)))), "gold": 0.0}
            for p in range(6) for _ in range(5)]


def _write(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cli_end_to_end_exit_codes_and_files(tiny_model, tmp_path):
    rows = _tiny_rows()
    proxy = score_texts(tiny_model, [r["prompt"] for r in rows], [r["response"] for r in rows])
    good = _write([{**r, "gold": float(s)} for r, s in zip(rows, proxy, strict=True)], tmp_path / "good.jsonl")
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("from before")  # --out is replaced whole, as a stage's (was: kept)
    params = tmp_path / "none.yaml"  # absent: BonConfig defaults (min_bon_gain 0, max_overoptimization 0.05)
    result = runner.invoke(app, ["bon", "--model", str(tiny_model), "--data", str(good), "--out", str(out),
                                 "--params", str(params), "--set", "bootstrap_samples=200"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"metrics.json", "gates.json", "report.md", "bon.png", "bon.csv"}
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["gold_by_n"]) == ["1", "2", "3", "4", "5"] and m["prompts_by_n"]["5"] == 6
    assert m["gold_by_n"] == pytest.approx(m["proxy_by_n"], abs=1e-6)  # gold = proxy: the pick is the oracle
    assert m["gold_by_n"] == pytest.approx(m["oracle_gold"], abs=1e-6)
    assert m["gates_passed"] and set(m) >= {"random_gold", "kl_bon", "gold_ci", "fit", "gain_by_n"}
    assert (out / "bon.csv").read_text().splitlines()[0].startswith("n,prompts,kl,sqrt_kl,gold")
    assert "| N | prompts | KL | gold | CI | random | oracle | proxy |" in (out / "report.md").read_text()
    assert (out / "bon.png").read_bytes()[:4] == b"\x89PNG"

    # Gold = a second model's score: the same model as gold reproduces the perfect-proxy curves.
    random_gold = _write(rows, tmp_path / "zeros.jsonl")
    same = tmp_path / "same"
    result = runner.invoke(app, ["bon", "--model", str(tiny_model), "--data", str(random_gold), "--out", str(same),
                                 "--gold-model", str(tiny_model), "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert json.loads((same / "metrics.json").read_text())["gold_by_n"] == pytest.approx(m["gold_by_n"], abs=1e-6)

    # Gold = −proxy: best-of-N makes gold worse, the gain gate fails: exit 1, files still written.
    bad = _write([{**r, "gold": -float(s)} for r, s in zip(rows, proxy, strict=True)], tmp_path / "bad.jsonl")
    result = runner.invoke(app, ["bon", "--model", str(tiny_model), "--data", str(bad), "--out", str(tmp_path / "b"),
                                 "--params", str(params)])
    assert result.exit_code == 1, result.output
    assert "min_bon_gain" in result.output and (tmp_path / "b" / "metrics.json").exists()


def test_cli_exit_2_on_malformed_row(tiny_model, tmp_path):
    lines = [json.dumps(r) for r in _tiny_rows()[:4]] + ['{"prompt": "q", "response": "r", "gold": null}']
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["bon", "--model", str(tiny_model), "--data", str(path), "--out", str(tmp_path / "o"),
                                 "--params", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2, result.output
    assert f"{path}:5: field 'gold'" in result.output


def test_cli_exit_2_when_out_is_a_file(tiny_model, tmp_path):
    """--out naming an existing file: exit 2 naming it, the file untouched (was exit 3, ``[Errno 17] File exists``)."""
    data, out = _write(_tiny_rows(), tmp_path / "rows.jsonl"), _write([], tmp_path / "notes.txt")
    out.write_text("keep")
    result = runner.invoke(app, ["bon", "--model", str(tiny_model), "--data", str(data), "--out", str(out),
                                 "--params", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2, result.output
    assert f"{out}: exists and is not a directory" in result.output and out.read_text() == "keep"
    inside = runner.invoke(app, ["bon", "--model", str(tiny_model), "--data", str(data), "--out",
                                 str(tiny_model / "bon"), "--params", str(tmp_path / "none.yaml")])
    assert inside.exit_code == 2 and f"is inside the input folder {tiny_model}" in inside.output, inside.output
    assert not (tiny_model / "bon").exists()


def test_overoptimization_compares_every_n_on_the_same_prompts():
    """With uneven candidate counts, gold(N) at each N averages a different set of prompts: a prompt with 2
    candidates and high gold counts at N = 1, 2 and not at N = 4. The drop past the peak was taken between those
    unpaired means, so a proxy that never hurt any prompt failed max_overoptimization. It is now measured on the
    prompts that reach N_max, where every N sees the same prompts."""
    prompt_index = np.repeat(np.arange(3), [2, 4, 4])
    gold = np.array([9.0, 9.0, 0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0])  # the 2-candidate prompt: gold 9 both
    curves = bon_curves(prompt_index, gold, gold)  # a perfect proxy: gold of the pick rises with N on every prompt
    m = summarize(curves, BonConfig(bootstrap_samples=50))
    assert m["gold_by_n"]["2"] > m["gold_by_n"]["4"]  # the unpaired means still dip (what the table shows) ...
    peak = m["observed_peak"]
    assert peak["n_peak"] == 4 and peak["overoptimization"] == pytest.approx(0.0)  # ... but no prompt got worse
    assert peak["gold_n_max"] == pytest.approx(3.0)
    gates = check_bon_gates(m, min_bon_gain=-1.0, max_overoptimization=0.05)
    assert gates["max_overoptimization"]["passed"]


def test_max_n_of_one_is_refused_it_measures_nothing():
    """``--set max_n=1`` passed both gates: gain(1) ≡ 0, CI [0, 0]. Best-of-1 is a random pick."""
    with pytest.raises(ValueError, match="max_n"):
        BonConfig(max_n=1)
    assert BonConfig(max_n=0).max_n == 0 and BonConfig(max_n=2).max_n == 2
