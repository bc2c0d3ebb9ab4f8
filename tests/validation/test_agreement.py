"""Tests for rewardline.validation.agreement against hand-worked values and reference implementations."""

from __future__ import annotations

import json

import krippendorff
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr

from rewardline.data.schema import RANKINGS, conform
from rewardline.validation.agreement import (
    NO_OVERLAP,
    annotators_to_exclude,
    kendall_w,
    measure_agreement,
)

# ---------------------------------------------------------------- helpers


def table_from(rankings: dict[tuple[str, str], dict[str, int]], ranking_ids: dict | None = None) -> pa.Table:
    """RANKINGS table from {(prompt_id, annotator_id): {response_id: rank}}."""
    rows = [
        {
            "ranking_id": (ranking_ids or {}).get((p, a), f"{p}|{a}"),
            "prompt_id": p,
            "annotator_id": a,
            "response_id": r,
            "rank": rank,
        }
        for (p, a), ranks in rankings.items()
        for r, rank in ranks.items()
    ]
    return conform(pa.Table.from_pylist(rows), RANKINGS)


def synthetic_rankings(
    n_prompts: int,
    sigmas: list[float],
    k: int = 4,
    per_prompt: int = 3,
    overlap_share: float = 1.0,
    seed: int = 0,
) -> pa.Table:
    """Thurstone-simulated RANKINGS table (vectorised, also used to time the 1M-ranking scale).

    Response j of prompt p has utility u_pj ~ N(0, 1); annotator a ranks by
    u_pj + sigma_a * eps (eps ~ N(0, 1)); sigma = inf ranks uniformly at random. A share
    ``overlap_share`` of prompts gets ``per_prompt`` distinct annotators, the rest one.
    """
    rng = np.random.default_rng(seed)
    pool = len(sigmas)
    n_overlap = int(round(n_prompts * overlap_share))
    multi = rng.random((n_overlap, pool)).argpartition(per_prompt - 1, axis=1)[:, :per_prompt]
    single = rng.integers(pool, size=n_prompts - n_overlap)
    ranking_prompt = np.concatenate([np.repeat(np.arange(n_overlap), per_prompt), np.arange(n_overlap, n_prompts)])
    ranking_annot = np.concatenate([multi.ravel(), single])
    utility = rng.standard_normal((n_prompts, k))
    sigma = np.asarray(sigmas, dtype=np.float64)[ranking_annot, None]
    noise = rng.standard_normal((len(ranking_prompt), k))
    seen = np.where(np.isinf(sigma), noise, utility[ranking_prompt] + np.where(np.isinf(sigma), 0, sigma) * noise)
    rank = np.empty_like(ranking_prompt, shape=seen.shape)
    np.put_along_axis(rank, np.argsort(-seen, axis=1), np.arange(1, k + 1), axis=1)

    prompt_ids = pa.array([f"p{i:07d}" for i in range(n_prompts)])
    annot_ids = pa.array([f"a{i:03d}" for i in range(pool)])
    response_ids = pa.array([f"p{i:07d}-r{j}" for i in range(n_prompts) for j in range(k)])
    row_prompt = np.repeat(ranking_prompt, k)
    prompt = prompt_ids.take(row_prompt)
    annotator = annot_ids.take(np.repeat(ranking_annot, k))
    columns = {
        "ranking_id": pc.binary_join_element_wise(prompt, annotator, "|"),
        "prompt_id": prompt,
        "annotator_id": annotator,
        "response_id": response_ids.take(row_prompt * k + np.tile(np.arange(k), len(ranking_prompt))),
        "rank": pa.array(rank.ravel(), pa.int32()),
    }
    return conform(pa.table(columns), RANKINGS)


# Three judges, four items, with ties (dense ranks):
#   J1: 1 2 3 4   -> mid-ranks 1   2   3   4
#   J2: 1 1 2 3   -> mid-ranks 1.5 1.5 3   4
#   J3: 2 1 3 3   -> mid-ranks 2   1   3.5 3.5
# R = (4.5, 4.5, 9.5, 11.5), mean m(n+1)/2 = 7.5, S = 9 + 9 + 4 + 16 = 38,
# T = (2^3 - 2) + (2^3 - 2) = 12, W = 12 * 38 / (3^2 (4^3 - 4) - 3 * 12) = 456 / 504 = 19/21.
TIED = {
    ("q", "J1"): {"r1": 1, "r2": 2, "r3": 3, "r4": 4},
    ("q", "J2"): {"r1": 1, "r2": 1, "r3": 2, "r4": 3},
    ("q", "J3"): {"r1": 2, "r2": 1, "r3": 3, "r4": 3},
}


# ---------------------------------------------------------------- Kendall's W


def test_kendall_w_perfect_agreement_is_one():
    ranks = np.tile(np.arange(1.0, 5.0), (3, 1))  # 3 judges x 4 items, identical
    assert kendall_w(ranks) == pytest.approx(1.0)
    perfect = {("q", j): {"r1": 1, "r2": 2, "r3": 3, "r4": 4} for j in ("J1", "J2", "J3")}
    report = measure_agreement(table_from(perfect))
    assert report.kendall_w == pytest.approx(1.0)
    assert report.krippendorff_alpha == pytest.approx(1.0)
    assert report.pairwise_agreement == 1.0


def test_kendall_w_tie_corrected_hand_example():
    mid = np.array([[1, 2, 3, 4], [1.5, 1.5, 3, 4], [2, 1, 3.5, 3.5]])
    assert kendall_w(mid) == pytest.approx(19 / 21)
    assert measure_agreement(table_from(TIED)).kendall_w == pytest.approx(19 / 21)


def test_kendall_w_is_mean_over_prompts_and_skips_all_tied_prompts():
    data = dict(TIED)
    data |= {("z", j): {"r1": 1, "r2": 2, "r3": 3, "r4": 4} for j in ("J1", "J2")}  # W = 1
    data |= {("t", j): {"r1": 1, "r2": 1} for j in ("J1", "J2")}  # everyone tied: W undefined
    assert measure_agreement(table_from(data)).kendall_w == pytest.approx((19 / 21 + 1) / 2)


def test_everything_tied_gives_none_with_reason():
    report = measure_agreement(table_from({("t", j): {"r1": 1, "r2": 1, "r3": 1} for j in ("a", "b")}))
    assert report.kendall_w is None and report.krippendorff_alpha is None
    assert report.pairwise_agreement == 1.0  # both annotators tie every pair: they agree
    assert "kendall_w" in report.reason and "krippendorff_alpha" in report.reason


# ---------------------------------------------------------------- pairwise agreement


def test_pairwise_agreement_counted_by_hand():
    # Directions sign(rank_i - rank_j) over pairs (12, 13, 14, 23, 24, 34):
    #   J1: - - - - - -     J2: 0 - - - - -     J3: + - - - - 0
    # J1/J2 agree on 5, J1/J3 on 4, J2/J3 on 4 -> 13 of 3 * 6 = 18.
    assert measure_agreement(table_from(TIED)).pairwise_agreement == pytest.approx(13 / 18)


# ---------------------------------------------------------------- Krippendorff's alpha


def test_alpha_matches_krippendorff_on_hand_built_matrix():
    data = {
        ("p1", "a"): {"x1": 1, "x2": 2, "x3": 3},
        ("p1", "b"): {"x1": 1, "x2": 3, "x3": 2},
        ("p1", "c"): {"x1": 2, "x2": 1, "x3": 3},
        ("p2", "a"): {"y1": 1, "y2": 1, "y3": 2},
        ("p2", "b"): {"y1": 2, "y3": 1},  # b skipped y2
        ("p3", "a"): {"z1": 1, "z2": 4},  # nobody else ranked p3: no pairable units
    }
    # annotators x units (x1 x2 x3 y1 y2 y3 z1 z2), NaN = not ranked.
    nan = np.nan
    reliability = np.array(
        [
            [1, 2, 3, 1, 1, 2, 1, 4],
            [1, 3, 2, 2, nan, 1, nan, nan],
            [2, 1, 3, nan, nan, nan, nan, nan],
        ]
    )
    expected = krippendorff.alpha(reliability_data=reliability, level_of_measurement="ordinal")
    report = measure_agreement(table_from(data))
    assert report.krippendorff_alpha == pytest.approx(expected, rel=1e-12)
    assert report.n_prompts == 3 and report.n_overlap_prompts == 2
    # W and pairwise use p2's common responses (y1, y3) only: a says y1 > y3, b says y3 > y1.
    assert report.annotator_overlap_prompts == {"a": 2, "b": 2, "c": 1}
    assert report.annotator_prompts == {"a": 3, "b": 2, "c": 1}


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(2, 4), st.integers(2, 5))
def test_alpha_matches_krippendorff_on_random_rankings(seed, n_prompts, n_annotators, n_responses):
    """Random rank values (ties, gaps) with annotators skipping responses: the same ordinal alpha as the
    reference package fed the annotators x units matrix (NaN = not ranked)."""
    rng = np.random.default_rng(seed)
    data, columns = {}, []
    for p in range(n_prompts):
        ranks = rng.integers(1, n_responses + 1, size=(n_annotators, n_responses)).astype(float)
        ranks[rng.random(ranks.shape) < 0.25] = np.nan
        columns.append(ranks)
        for a in range(n_annotators):
            kept = {f"p{p}r{r}": int(v) for r, v in enumerate(ranks[a]) if not np.isnan(v)}
            if kept:
                data[(f"p{p}", f"a{a}")] = kept
    reliability = np.concatenate(columns, axis=1)
    report = measure_agreement(table_from(data))
    pairable = (~np.isnan(reliability)).sum(axis=0) >= 2
    values = np.unique(reliability[:, pairable][~np.isnan(reliability[:, pairable])])
    if not pairable.any() or len(values) < 2:
        assert report.krippendorff_alpha is None
        return
    expected = krippendorff.alpha(reliability_data=reliability, level_of_measurement="ordinal")
    assert report.krippendorff_alpha == pytest.approx(expected, rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------- leave-one-out consensus


def test_loo_agreement_is_spearman_against_mean_rank_of_the_others():
    mid = {"J1": [1, 2, 3, 4], "J2": [1.5, 1.5, 3, 4], "J3": [2, 1, 3.5, 3.5]}
    report = measure_agreement(table_from(TIED))
    for judge, ranks in mid.items():
        others = np.mean([r for j, r in mid.items() if j != judge], axis=0)
        assert report.annotator_agreement[judge] == pytest.approx(spearmanr(ranks, others).statistic)
        assert report.annotator_scored_prompts[judge] == 1


def test_reverser_gets_strongly_negative_agreement():
    rng = np.random.default_rng(1)
    data = {}
    for p in range(20):
        order = rng.permutation(5) + 1
        for a in ("good1", "good2"):
            data[(f"p{p}", a)] = {f"p{p}r{i}": int(order[i]) for i in range(5)}
        data[(f"p{p}", "reverser")] = {f"p{p}r{i}": int(6 - order[i]) for i in range(5)}
    report = measure_agreement(table_from(data))
    assert report.annotator_agreement["reverser"] == pytest.approx(-1.0)
    assert annotators_to_exclude(report, 0.3) == {"reverser": "agreement -1.00 < 0.3 over 20 prompts"}


@pytest.fixture(scope="module")
def thurstone() -> pa.Table:
    # a000..a002 careful with sigma 0.3 / 0.6 / 1.0, a003 uniformly random.
    return synthetic_rankings(2000, [0.3, 0.6, 1.0, np.inf], k=4, per_prompt=3, seed=7)


def test_thurstone_annotators_ordered_and_careless_one_excluded(thurstone):
    report = measure_agreement(thurstone)
    agreement = report.annotator_agreement
    assert agreement["a000"] > agreement["a001"] > agreement["a002"] > 0.35
    assert abs(agreement["a003"]) < 0.1  # random: ~0 over ~1500 prompts
    # scored <= overlapping: rho is undefined where the two others exactly cancel out.
    assert report.annotator_overlap_prompts["a003"] >= report.annotator_scored_prompts["a003"] > 1400
    excluded = annotators_to_exclude(report, min_agreement=0.3)
    assert list(excluded) == ["a003"]
    assert excluded["a003"].startswith("agreement ") and excluded["a003"].endswith(" prompts")
    assert 0 < report.krippendorff_alpha < 1 and 0 < report.kendall_w < 1
    assert report.n_prompts == report.n_overlap_prompts == 2000
    json.dumps(report.to_dict())


def test_row_order_changes_nothing(thurstone):
    shuffled = thurstone.take(np.random.default_rng(3).permutation(thurstone.num_rows))
    a, b = measure_agreement(thurstone).to_dict(), measure_agreement(shuffled).to_dict()
    assert list(a["annotator_agreement"]) == list(b["annotator_agreement"])
    assert _approx_equal(a, b)


def _approx_equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_approx_equal(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return b == pytest.approx(a, rel=1e-12)
    return a == b


# ---------------------------------------------------------------- missing overlap and odd input


def test_no_overlap_gives_none_with_reason():
    data = {(f"p{i}", f"a{i % 2}"): {f"p{i}r1": 1, f"p{i}r2": 2} for i in range(10)}
    report = measure_agreement(table_from(data))
    assert (report.krippendorff_alpha, report.kendall_w, report.pairwise_agreement) == (None, None, None)
    assert report.reason == NO_OVERLAP
    assert report.annotator_agreement == {"a0": None, "a1": None}
    assert report.annotator_prompts == {"a0": 5, "a1": 5}
    assert report.n_prompts == 10 and report.n_overlap_prompts == 0
    assert annotators_to_exclude(report, 0.3) == {}
    assert json.loads(json.dumps(report.to_dict()))["reason"] == NO_OVERLAP


def test_empty_table():
    report = measure_agreement(RANKINGS.empty_table())
    assert report.n_prompts == 0 and report.kendall_w is None and report.reason


def test_annotator_without_overlap_is_none_and_kept():
    data = dict(TIED) | {(f"solo{i}", "loner"): {"s1": 1, "s2": 2} for i in range(9)}
    report = measure_agreement(table_from(data))
    assert report.annotator_agreement["loner"] is None
    assert report.annotator_prompts["loner"] == 9 and report.annotator_overlap_prompts["loner"] == 0
    assert "loner" not in annotators_to_exclude(report, min_agreement=2.0, min_overlap_prompts=0)


def test_too_few_overlap_prompts_is_not_excluded():
    report = measure_agreement(table_from(TIED))  # every annotator has 1 scored prompt
    assert annotators_to_exclude(report, min_agreement=2.0) == {}
    assert set(annotators_to_exclude(report, min_agreement=2.0, min_overlap_prompts=1)) == {"J1", "J2", "J3"}


def test_partial_response_sets_use_common_responses():
    data = {("p", "a"): {"r1": 1, "r2": 2, "r3": 3}, ("p", "b"): {"r3": 1, "r1": 2, "r2": 3}}
    report = measure_agreement(table_from(data))
    # (r1, r2): both r1 first; (r1, r3), (r2, r3): a and b disagree -> 1/3.
    # Now b skips r3: common = (r1, r2), and both say r1 > r2.
    data[("p", "b")] = {"r1": 1, "r2": 2}
    partial = measure_agreement(table_from(data))
    assert report.pairwise_agreement == pytest.approx(1 / 3)
    assert partial.pairwise_agreement == 1.0 and partial.kendall_w == pytest.approx(1.0)


def test_duplicate_ranking_of_a_prompt_keeps_smallest_ranking_id():
    base = table_from(TIED)
    redo = table_from({("q", "J3"): {"r1": 4, "r2": 3, "r3": 2, "r4": 1}}, {("q", "J3"): "q|J3|redo"})
    doubled = pa.concat_tables([redo, base])  # "q|J3" < "q|J3|redo": the original is kept
    assert measure_agreement(doubled).to_dict() == measure_agreement(base).to_dict()


def test_duplicate_response_row_does_not_crash():
    doubled = pa.concat_tables([table_from(TIED), table_from({("q", "J1"): {"r4": 4}})])
    assert measure_agreement(doubled).kendall_w == pytest.approx(19 / 21)


def _naive(data: dict[tuple[str, str], dict[str, int]]) -> dict:
    """Per-prompt loop reference (complete response sets only), straight from the definitions."""
    from scipy.stats import rankdata

    prompts = sorted({p for p, _ in data})
    ws, agree, total, rhos = [], 0, 0, {}
    for p in prompts:
        judges = sorted(a for q, a in data if q == p)
        if len(judges) < 2:
            continue
        items = sorted(data[(p, judges[0])])
        r = np.array([rankdata([data[(p, a)][i] for i in items]) for a in judges])
        m, n = r.shape
        s = ((r.sum(0) - m * (n + 1) / 2) ** 2).sum()
        t = sum(((c**3 - c).sum() for c in (np.unique(row, return_counts=True)[1] for row in r)), 0)
        if m * m * (n**3 - n) - m * t > 0:
            ws.append(12 * s / (m * m * (n**3 - n) - m * t))
        for x in range(m):
            for y in range(x + 1, m):
                for i in range(n):
                    for j in range(i + 1, n):
                        agree += np.sign(r[x, i] - r[x, j]) == np.sign(r[y, i] - r[y, j])
                        total += 1
            rho = spearmanr(r[x], np.delete(r, x, axis=0).mean(0)).statistic
            if np.isfinite(rho):
                rhos.setdefault(judges[x], []).append(rho)
    units = sorted({(p, i) for (p, _), ranks in data.items() for i in ranks})
    coders = sorted({a for _, a in data})
    matrix = np.full((len(coders), len(units)), np.nan)
    for (p, a), ranks in data.items():
        for i, rank in ranks.items():
            matrix[coders.index(a), units.index((p, i))] = rank
    return {
        "kendall_w": float(np.mean(ws)),
        "pairwise_agreement": agree / total,
        "krippendorff_alpha": krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal"),
        "annotator_agreement": {a: (np.mean(rhos[a]) if a in rhos else None) for a in coders},
    }


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
def test_matches_naive_reference_on_mixed_shapes_with_ties():
    rng = np.random.default_rng(11)
    data = {}
    for p in range(80):
        n, m = rng.integers(2, 7), rng.integers(1, 5)
        for a in rng.choice(6, size=m, replace=False):
            data[(f"p{p}", f"a{a}")] = {f"p{p}r{i}": int(rng.integers(1, n + 1)) for i in range(n)}
    report = measure_agreement(table_from(data)).to_dict()
    expected = _naive(data)
    assert _approx_equal({k: report[k] for k in expected}, expected)
    assert not _approx_equal({k: report[k] for k in expected}, expected | {"kendall_w": 0.5})


def test_disjoint_response_sets_of_one_prompt_are_separate_items():
    # A judge ranked samples x*, three annotators ranked other samples y* of the same prompt.
    data = {
        ("p", "judge"): {"x1": 1, "x2": 2, "x3": 3},
        ("p", "a"): {"y1": 1, "y2": 2, "y3": 3},
        ("p", "b"): {"y1": 1, "y2": 2, "y3": 3},
        ("p", "c"): {"y1": 1, "y2": 3, "y3": 2},
    }
    report = measure_agreement(table_from(data))
    assert report.n_overlap_prompts == 1
    assert report.kendall_w is not None and report.pairwise_agreement is not None
    assert report.annotator_agreement["judge"] is None and report.annotator_overlap_prompts["judge"] == 0


def test_validate_fails_when_annotator_exclusion_leaves_no_ranking(tmp_path):
    """Was: two arena judges who always disagree were both excluded (agreement −1 < 0.2); validate exited 0 with
    gates passed, rankings_out 0 and the α gate skipped ("no usable rows"), so pairs wrote 0 pairs and train
    failed later on an empty train split. Now the rankings_left gate fails: exit 1 naming it."""
    from typer.testing import CliRunner

    from rewardline.cli import app

    rows = [{"question_id": q, "model_a": "m1", "model_b": "m2", "judge": judge, "prompt": f"question {q}",
             "response_a": f"a{q}", "response_b": f"b{q}", "winner": winner}
            for q in range(8) for judge, winner in (("j1", "model_a"), ("j2", "model_b"))]
    (tmp_path / "arena.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    runner = CliRunner()
    common = ["--params", "absent.yaml"]
    ingest = runner.invoke(app, ["ingest", str(tmp_path / "arena.jsonl"), "--format", "pairwise", "--out",
                                 str(tmp_path / "in"), *common])
    assert ingest.exit_code == 0, ingest.output
    result = runner.invoke(app, ["validate", str(tmp_path / "in"), "--out", str(tmp_path / "v"), *common])
    metrics = json.loads((tmp_path / "v" / "metrics.json").read_text())
    assert metrics["annotators_excluded"] == ["j1", "j2"] and metrics["rankings_out"] == 0
    assert result.exit_code == 1, result.output
    assert "rankings_left" in result.output and not metrics["gates"]["rankings_left"]["passed"]
    kept = runner.invoke(app, ["validate", str(tmp_path / "in"), "--out", str(tmp_path / "v2"), *common,
                               "--set", "min_annotator_agreement=-1", "--set", "min_alpha=-1"])  # nobody excluded
    assert kept.exit_code == 0, kept.output
    assert json.loads((tmp_path / "v2" / "metrics.json").read_text())["gates"]["rankings_left"]["passed"]
