"""Thurstone / Bradley-Terry utility targets: recovery, anchoring, agreement with a per-prompt fit."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from scipy.optimize import minimize
from scipy.special import log_expit, log_ndtr, ndtr

from rewardline.data import schema
from rewardline.data.tables import TARGETS, read_split, read_table, table_path, write_table
from rewardline.errors import ConfigError
from rewardline.pairs.expand import (
    PairsConfig,
    aggregate_pairs,
    annotator_vote_weights,
    build_pairs,
    run_pairs,
)
from rewardline.pairs.thurstone import fit_targets, fit_utilities
from rewardline.validation.agreement import measure_agreement


def thurstone_rankings(n_prompts: int, k: int, n_annotators: int, seed: int, noisy_scale: float = 3.0,
                       tie_step: float = 0.05, full: bool = False) -> tuple[pa.Table, pa.Table, dict[str, float]]:
    """Case V annotators: each ranks a random subset of 2..4 (``full``: all) of a prompt's ``k`` responses by
    ``u_i + ε_i``, ``ε ~ N(0, s²/2)`` (so ``P(a ≻ b) = Φ((u_a − u_b)/s)``); ``s = 1`` except annotator 0,
    whose noise is ``noisy_scale`` times larger. Perceptions are rounded to ``tie_step`` (ties)."""
    rng = np.random.default_rng(seed)
    rows, truth = [], {}
    for p in range(n_prompts):
        u = rng.normal(0.0, 1.0, k)
        truth.update({f"p{p}-r{i}": float(u[i]) for i in range(k)})
        for annotator in range(n_annotators):
            items = np.arange(k) if full else rng.choice(k, int(rng.integers(2, 5)), replace=False)
            scale = noisy_scale if annotator == 0 else 1.0
            seen = np.round((u[items] + rng.normal(0.0, np.sqrt(0.5) * scale, items.size)) / tie_step) * tie_step
            rank = 1 + (seen[None, :] > seen[:, None]).sum(axis=1)  # 1 = best, ties share the rank
            rows += [{"ranking_id": f"p{p}|a{annotator}", "prompt_id": f"p{p}", "annotator_id": f"a{annotator}",
                      "response_id": f"p{p}-r{i}", "rank": int(r)} for i, r in zip(items, rank, strict=True)]
    rankings = schema.conform(pa.Table.from_pylist(rows), schema.RANKINGS)
    prompts = schema.conform(pa.Table.from_pylist([{"prompt_id": f"p{p}", "prompt": f"prompt {p}"}
                                                   for p in range(n_prompts)]), schema.PROMPTS)
    return rankings, prompts, truth


def test_known_utilities_are_recovered_within_their_standard_errors():
    rankings, prompts, truth = thurstone_rankings(n_prompts=400, k=6, n_annotators=5, seed=3)
    pairs, counts = build_pairs(rankings, prompts, PairsConfig(ties="half"))
    assert float(pa.compute.sum(pa.compute.equal(pairs["label"], 0.5)).as_py()) > 0  # ties are in the data
    targets, stats = fit_targets(pairs, None, "thurstone", prior_sd=2.0)
    assert stats["max_gradient"] < 1e-8 and not any(targets["anchored"].to_pylist())
    prompt = np.array(targets["prompt_id"].to_pylist())
    true_u = np.array([truth[r] for r in targets["response_id"].to_pylist()])
    _, prompt_code = np.unique(prompt, return_inverse=True)
    true_centred = true_u - (np.bincount(prompt_code, true_u) / np.bincount(prompt_code))[prompt_code]
    fitted, se = targets["utility"].to_numpy(), targets["se"].to_numpy()
    np.testing.assert_allclose(np.bincount(prompt_code, fitted), 0.0, atol=1e-9)  # centred per prompt
    z = (fitted - true_centred) / se
    assert np.mean(np.abs(z) <= 2.0) >= 0.90
    assert 0.85 <= z.std() <= 1.15 and abs(z.mean()) < 0.1  # calibrated z-scores
    assert np.corrcoef(fitted, true_centred)[0, 1] > 0.6


def test_annotator_weights_are_the_squared_agreement_relative_to_the_best():
    weights = annotator_vote_weights({"a": 0.8, "b": 0.4, "c": -0.1, "d": None})
    assert weights == pytest.approx({"a": 1.0, "b": 0.25, "c": 0.0, "d": 1.0})  # d: no overlap, no evidence
    assert annotator_vote_weights({"a": None, "b": -0.2}) == {"a": 1.0, "b": 1.0}  # nothing to weigh against


def test_weighted_votes_give_the_weighted_share_and_count_their_weight():
    rows = [("p|A", "A", "x", 1), ("p|A", "A", "y", 2), ("p|B", "B", "x", 2), ("p|B", "B", "y", 1),
            ("q|C", "C", "s", 1), ("q|C", "C", "t", 2)]
    rankings = schema.conform(pa.Table.from_pylist(
        [{"ranking_id": r, "prompt_id": r[0], "annotator_id": a, "response_id": f"{r[0]}-{i}", "rank": k}
         for r, a, i, k in rows]), schema.RANKINGS)
    prompts = schema.conform(pa.Table.from_pylist([{"prompt_id": "p", "prompt": "P"}, {"prompt_id": "q",
                                                                                      "prompt": "Q"}]), schema.PROMPTS)
    plain, _, plain_votes = aggregate_pairs(rankings, prompts, PairsConfig())
    weighted, _, votes = aggregate_pairs(rankings, prompts, PairsConfig(), annotator_weight={"A": 1.0, "B": 0.25,
                                                                                             "C": 0.0})
    by_prompt = {r["prompt_id"]: r for r in weighted.to_pylist()}
    assert plain["label"].to_pylist() == [0.5, 1.0] and plain_votes.tolist() == [2.0, 1.0]
    assert by_prompt["p"]["response_a_id"] == "p-x" and by_prompt["p"]["label"] == pytest.approx(0.8)  # 1/1.25
    assert by_prompt["p"]["n_votes"] == 2 and votes.tolist() == [1.25, 1.0]  # q: every vote weighs 0: plain
    assert by_prompt["q"]["label"] == 1.0


def test_weighting_annotators_by_agreement_recovers_utilities_better_with_a_noisy_annotator():
    """Full 6-way rankings by 5 Case V annotators, annotator 0 five times noisier: validate's agreement gives it
    the smallest weight, and the weighted fit is closer to the true (centred) utilities than the unweighted, with
    standard errors that cover them."""
    rankings, prompts, truth = thurstone_rankings(n_prompts=300, k=6, n_annotators=5, seed=5, noisy_scale=5.0,
                                                  full=True)
    weights = annotator_vote_weights(measure_agreement(rankings).annotator_agreement)
    assert weights["a0"] < 0.5 * min(w for a, w in weights.items() if a != "a0")
    errors = {}
    for name, weighting in (("plain", None), ("weighted", weights)):
        pairs, _, votes = aggregate_pairs(rankings, prompts, PairsConfig(ties="half"), annotator_weight=weighting)
        targets, _ = fit_targets(pairs, None, "thurstone", prior_sd=2.0, votes=votes)
        prompt = np.unique(np.array(targets["prompt_id"].to_pylist()), return_inverse=True)[1]
        true_u = np.array([truth[r] for r in targets["response_id"].to_pylist()])
        true_centred = true_u - (np.bincount(prompt, true_u) / np.bincount(prompt))[prompt]
        error = targets["utility"].to_numpy() - true_centred
        z = error / targets["se"].to_numpy()
        errors[name] = (float(np.sqrt(np.mean(error**2))), float(np.mean(np.abs(z) <= 2)))
    # measured: rmse 0.461 → 0.429; share of |z| ≤ 2 0.76 → 0.90 (the noisy votes no longer overstate certainty)
    assert errors["weighted"][0] < 0.95 * errors["plain"][0], errors
    assert errors["weighted"][1] >= 0.88 > errors["plain"][1], errors


def per_prompt_reference(a, b, wins, votes, n_items, anchor, link, prior_sd, prior_centre="anchor"):
    """One prompt's MAP with scipy.optimize (BFGS on the free utilities), centred when unanchored; the prior
    Σ (u_i − m)² / 2σ² has m = 0, or m = the prompt's mean utility (anchor included) with ``prior_centre="prompt"``
    on an anchored prompt."""
    log_cdf = log_ndtr if link == "probit" else log_expit
    free = np.flatnonzero(~anchor)
    centred = prior_centre == "prompt" and anchor.any()

    def negative_log_posterior(x):
        u = np.zeros(n_items)
        u[free] = x
        d = u[a] - u[b]
        deviation = u - u.mean() if centred else u
        return -(wins * log_cdf(d) + (votes - wins) * log_cdf(-d)).sum() + (deviation**2).sum() / (2 * prior_sd**2)

    x = minimize(negative_log_posterior, np.zeros(free.size), method="BFGS", options={"gtol": 1e-10}).x
    u = np.zeros(n_items)
    u[free] = x
    return u if anchor.any() else u - u.mean()


@pytest.mark.parametrize(("link", "prior_centre"), [("probit", "anchor"), ("logit", "anchor"), ("probit", "prompt")])
def test_the_joint_fit_equals_per_prompt_scipy_fits(link, prior_centre):
    rng = np.random.default_rng(7)
    sizes = [2, 3, 5, 3, 4]  # prompts of different block sizes, one anchored, one disconnected, one unanimous
    item_prompt = np.repeat(np.arange(len(sizes)), sizes)
    offsets = np.r_[0, np.cumsum(sizes)[:-1]]
    a, b = [], []
    for p, k in enumerate(sizes):
        i, j = np.triu_indices(k, 1)
        keep = np.ones(i.size, bool) if p != 2 else (i < 2) == (j < 2)  # prompt 2: {0,1} and {2,3,4}
        a += list(offsets[p] + i[keep])
        b += list(offsets[p] + j[keep])
    a, b = np.array(a), np.array(b)
    votes = rng.integers(1, 6, a.size).astype(float)
    wins = np.round(rng.uniform(0, 1, a.size) * votes * 2) / 2  # half votes: ties
    wins[item_prompt[a] == 0] = votes[item_prompt[a] == 0]  # prompt 0: unanimous (MLE at infinity)
    anchor = np.zeros(item_prompt.size, bool)
    anchor[offsets[3] + 1] = True
    fit = fit_utilities(item_prompt, a, b, wins, votes, anchor, link, prior_sd=1.5, prior_centre=prior_centre)
    for p, k in enumerate(sizes):
        rows = item_prompt[a] == p
        ref = per_prompt_reference(a[rows] - offsets[p], b[rows] - offsets[p], wins[rows], votes[rows], k,
                                   anchor[item_prompt == p], link, 1.5, prior_centre)
        np.testing.assert_allclose(fit.utility[item_prompt == p], ref, atol=1e-5)
    assert fit.utility[offsets[3] + 1] == 0.0 and fit.se[offsets[3] + 1] == 0.0
    assert fit.anchored.tolist() == (item_prompt == 3).tolist()


@pytest.mark.parametrize("prior_centre", ["anchor", "prompt"])
def test_standard_errors_are_the_inverse_hessian_of_the_reference_objective(prior_centre):
    """se² = diag of (−∇²L)⁻¹ over the free utilities, here by finite differences of the reference."""
    a, b = np.array([0, 0, 1, 2]), np.array([1, 2, 2, 3])
    votes, wins = np.array([4.0, 2, 3, 1]), np.array([3.0, 1.5, 2, 1])
    anchor = np.array([False, True, False, False])
    fit = fit_utilities(np.zeros(4, int), a, b, wins, votes, anchor, "probit", prior_sd=2.0,
                        prior_centre=prior_centre)
    free = np.flatnonzero(~anchor)

    def nlp(x):
        u = np.zeros(4)
        u[free] = x
        d = u[a] - u[b]
        deviation = u - u.mean() if prior_centre == "prompt" else u
        return -(wins * log_ndtr(d) + (votes - wins) * log_ndtr(-d)).sum() + (deviation**2).sum() / 8

    x0, h = fit.utility[free], 1e-4
    eye = np.eye(free.size) * h
    hess = np.array([[(nlp(x0 + ei + ej) - nlp(x0 + ei - ej) - nlp(x0 - ei + ej) + nlp(x0 - ei - ej)) / (4 * h * h)
                      for ej in eye] for ei in eye])
    np.testing.assert_allclose(fit.se[free], np.sqrt(np.diag(np.linalg.inv(hess))), rtol=1e-4)


def test_an_anchor_response_gets_utility_zero_exactly_and_others_are_measured_against_it():
    rankings, prompts, _ = thurstone_rankings(n_prompts=20, k=4, n_annotators=3, seed=1)
    pairs, _ = build_pairs(rankings, prompts, PairsConfig(ties="half"))
    anchors = [f"p{p}-r0" for p in range(10)]  # prompts 0..9 anchored at their response 0
    ids = sorted(set(pairs["response_a_id"].to_pylist()) | set(pairs["response_b_id"].to_pylist()))
    responses = pa.table({"response_id": ids, "is_anchor": [r in anchors for r in ids]})
    targets, stats = fit_targets(pairs, responses, "thurstone")
    rows = targets.to_pylist()
    anchored_prompts = {f"p{p}" for p in range(10)}
    for row in rows:
        assert row["anchored"] == (row["prompt_id"] in anchored_prompts)
        if row["response_id"] in anchors:
            assert row["utility"] == 0.0 and row["se"] == 0.0
        else:
            assert row["se"] > 0.0
    present = {r["prompt_id"] for r in rows if r["response_id"] in anchors}
    assert stats["anchored_prompts"] == len(present) > 0
    assert targets.schema.metadata[b"link"] == b"probit"
    # without the is_anchor column: nothing is anchored (older responses tables)
    plain, _ = fit_targets(pairs, responses.drop_columns(["is_anchor"]), "bt")
    assert not any(plain["anchored"].to_pylist()) and plain.schema.metadata[b"link"] == b"logit"


def test_a_soft_anchor_judgement_is_recovered_as_the_probability_of_beating_the_anchor():
    """One comparison per prompt, sample vs anchor, with the judge's p: the MAP solves p·λ(u) − (1 − p)·λ(−u)
    = (prior term), so Φ(u) → p as the prior widens; the prompt-centred prior shrinks towards Φ = p less."""
    p = np.array([0.03, 0.2, 0.5, 0.74, 0.97])
    prompts = [f"q{i}" for i in range(p.size)]
    rows = [{"ranking_id": f"{q}|j", "prompt_id": q, "annotator_id": "j", "response_id": rid, "rank": rank,
             "score": score} for q, pi in zip(prompts, p, strict=True)
            for rid, rank, score in ((f"{q}-s", 1 if pi >= 0.5 else 2, pi), (f"{q}-ref", 1 if pi <= 0.5 else 2, 0.5))]
    rankings = schema.conform(pa.Table.from_pylist(rows), schema.RANKINGS)
    prompt_table = schema.conform(pa.table({"prompt_id": prompts, "prompt": prompts}), schema.PROMPTS)
    responses = pa.table({"response_id": [f"{q}{x}" for q in prompts for x in ("-s", "-ref")],
                          "is_anchor": [x == "-ref" for q in prompts for x in ("-s", "-ref")]})
    pairs, _ = build_pairs(rankings, prompt_table, PairsConfig(), responses)

    def win_prob(prior_sd, prior_centre):
        targets, _ = fit_targets(pairs, responses, "thurstone", prior_sd, prior_centre)
        u = dict(zip(targets["response_id"].to_pylist(), targets["utility"].to_numpy(), strict=True))
        return ndtr(np.array([u[f"{q}-s"] for q in prompts]))

    for centre in ("anchor", "prompt"):
        np.testing.assert_allclose(win_prob(200.0, centre), p, atol=2e-4)
    shrunk_anchor, shrunk_prompt = np.abs(win_prob(2.0, "anchor") - 0.5), np.abs(win_prob(2.0, "prompt") - 0.5)
    assert np.all(shrunk_anchor[p != 0.5] < np.abs(p - 0.5)[p != 0.5])  # the prior pulls towards Φ = 1/2
    assert np.all(shrunk_anchor[p != 0.5] < shrunk_prompt[p != 0.5])
    assert np.all(shrunk_prompt <= np.abs(p - 0.5) + 1e-12)
    hard, _ = build_pairs(rankings, prompt_table, PairsConfig(anchor_labels="rank"), responses)
    assert set(hard["label"].to_pylist()) == {1.0} and hard.num_rows == p.size - 1  # rank labels: 0/1, tie dropped


def test_a_pointless_prompt_set_gives_an_empty_table():
    empty = schema.empty(schema.PAIRS)
    targets, stats = fit_targets(empty, None)
    assert targets.num_rows == 0 and stats["responses"] == 0


def test_the_pairs_stage_writes_targets_only_when_asked(tmp_path):
    rankings, prompts, _ = thurstone_rankings(n_prompts=30, k=4, n_annotators=3, seed=2)
    ids = sorted(set(rankings["response_id"].to_pylist()))
    responses = schema.conform(pa.table({"response_id": ids, "prompt_id": [r.split("-")[0] for r in ids],
                                         "response": ids}), schema.RESPONSES)
    validated = tmp_path / "validated"
    for name, table in (("rankings", rankings), ("prompts", prompts), ("responses", responses)):
        write_table(table, validated / f"{name}.parquet")  # the one-file layout of older stage directories
    metrics = run_pairs(validated, tmp_path / "pairs", PairsConfig(targets="thurstone", target_prior_sd=1.5))
    targets = read_table(tmp_path / "pairs" / TARGETS)
    assert targets.schema.remove_metadata() == schema.TARGETS and targets.schema.metadata[b"prior_sd"] == b"1.5"
    assert metrics["targets"]["responses"] == targets.num_rows == len(ids)
    pairs = pa.concat_tables(read_split(tmp_path / "pairs", s) for s in schema.SPLITS)
    split_of = dict(zip(pairs["prompt_id"].to_pylist(), pairs["split"].to_pylist(), strict=True))
    assert all(split_of[p] == s for p, s in zip(targets["prompt_id"].to_pylist(), targets["split"].to_pylist(),
                                                strict=True))
    write_table(targets, tmp_path / "pairs" / "targets.parquet")  # and a fit in the older one-file layout
    off = run_pairs(validated, tmp_path / "pairs", PairsConfig())
    assert "targets" not in off and not list((tmp_path / "pairs").glob("targets*"))  # the stale fits are gone
    with pytest.raises(ConfigError, match="targets"):
        PairsConfig(targets="elo")
    with pytest.raises(ConfigError, match=r"annotator_weights=agreement: expected the validate stage's .*metrics"):
        run_pairs(validated, tmp_path / "weighted", PairsConfig(annotator_weights="agreement"))
    (validated / "metrics.json").write_text('{"annotator_agreement": {"a0": 0.2, "a1": 0.4, "a2": null}}')
    weighted = run_pairs(validated, tmp_path / "weighted", PairsConfig(annotator_weights="agreement"))
    assert weighted["annotator_weights"] == pytest.approx({"a0": 0.25, "a1": 1.0, "a2": 1.0})
    anchors = responses.set_column(responses.schema.get_field_index("is_anchor"), "is_anchor",
                                   pa.array([r.endswith("-r0") for r in ids]))
    write_table(anchors, table_path(validated, "responses"))  # an optional column of responses
    run_pairs(validated, tmp_path / "anchored", PairsConfig(targets="bt"))
    anchored = read_table(tmp_path / "anchored" / TARGETS).to_pylist()
    with_r0 = {r["prompt_id"] for r in anchored if r["response_id"].endswith("-r0")}
    assert with_r0 and all(r["anchored"] == (r["prompt_id"] in with_r0) for r in anchored)
    assert all(r["utility"] == 0.0 for r in anchored if r["response_id"].endswith("-r0"))


@pytest.mark.parametrize("prior_sd", ["1e200", "1e-300"])
def test_a_prior_sd_whose_precision_overflows_is_refused_naming_the_setting(tmp_path, prior_sd):
    """Was: ``rewardline pairs --set target_prior_sd=1e200`` (or 1e-300) crashed in the fit, 1/sd² out of
    range: exit 3, "internal error: OverflowError" (ZeroDivisionError) and no word of the setting."""
    from typer.testing import CliRunner

    from rewardline.cli import app

    rankings, prompts, _ = thurstone_rankings(n_prompts=4, k=4, n_annotators=2, seed=0)
    ids = sorted(set(rankings["response_id"].to_pylist()))
    responses = schema.conform(pa.table({"response_id": ids, "prompt_id": [r.split("-")[0] for r in ids],
                                         "response": ids}), schema.RESPONSES)
    for name, table in (("rankings", rankings), ("prompts", prompts), ("responses", responses)):
        write_table(table, tmp_path / "validated" / f"{name}.parquet")
    result = CliRunner().invoke(app, ["pairs", str(tmp_path / "validated"), "--out", str(tmp_path / "pairs"),
                                      "--params", "absent.yaml", "--set", "targets=thurstone",
                                      "--set", f"target_prior_sd={prior_sd}"])
    assert result.exit_code == 2, result.output
    assert "pairs.target_prior_sd" in result.output and "expected" in result.output
    for extreme in (1e-6, 1e6):  # the ends of the accepted range fit finite utilities
        fit = fit_utilities(np.zeros(2, np.int64), [0], [1], [3.0], [3.0], prior_sd=extreme)
        assert np.isfinite(fit.utility).all() and np.isfinite(fit.se).all()
