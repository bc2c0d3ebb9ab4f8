"""Synthetic data: the Thurstone annotator model and the bulk nested-ranking generator."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy.stats import kendalltau

from rewardline.data.adapters import read_file
from rewardline.data.synthetic import assign_annotators, synthetic_rankings_table, thurstone_ranks


def test_thurstone_sigma_zero_reproduces_utility_order() -> None:
    rng = np.random.default_rng(0)
    utility = rng.normal(size=(200, 5))
    ranks = thurstone_ranks(utility, np.full(200, 1e-9), np.zeros(200, bool), rng)
    expected = np.argsort(np.argsort(-utility, axis=1), axis=1) + 1
    assert np.array_equal(ranks, expected)


def test_thurstone_noise_lowers_agreement_and_careless_is_random() -> None:
    rng = np.random.default_rng(1)
    m, k = 4000, 4
    utility = rng.normal(scale=2.0, size=(m, k))

    def mean_tau(sigma: float, careless: bool) -> float:
        ranks = thurstone_ranks(utility, np.full(m, sigma), np.full(m, careless), rng)
        return float(np.mean([kendalltau(-utility[i], ranks[i]).statistic for i in range(0, m, 10)]))

    taus = [mean_tau(s, False) for s in (0.3, 1.0, 3.0)]
    assert taus[0] > taus[1] > taus[2] > 0.2
    assert abs(mean_tau(0.3, True)) < 0.06  # careless ignores utility
    # careless rankings: every response equally likely to be ranked first
    ranks = thurstone_ranks(utility, np.zeros(m), np.ones(m, bool), rng)
    firsts = Counter(np.argmax(ranks == 1, axis=1).tolist())
    assert all(abs(c / m - 1 / k) < 0.03 for c in firsts.values())
    assert np.all(np.sort(ranks, axis=1) == np.arange(1, k + 1))


def test_assign_annotators_distinct_and_balanced() -> None:
    who = assign_annotators(3000, 5, 3, np.random.default_rng(2))
    assert who.shape == (3000, 3) and all(len(set(row)) == 3 for row in who.tolist())
    share = np.bincount(who.ravel(), minlength=5) / 3000
    assert np.allclose(share, 3 / 5, atol=0.04)  # every annotator, the careless one too, ranks ~60 %


def test_synthetic_rankings_table_shape_and_read_back() -> None:
    n, k = 1000, 4
    table = synthetic_rankings_table(n, k=k, response_chars=120, multi_annotator_share=0.3, seed=3)
    assert table.num_rows == n
    assert set(pc.list_value_length(table["responses"]).to_pylist()) == {k}
    texts = pc.struct_field(pc.list_flatten(table["responses"]), "text")
    assert set(pc.utf8_length(texts).to_pylist()) == {120}
    per_prompt = table.group_by("prompt_id").aggregate([("annotator_id", "count_distinct"), ("annotator_id", "count")])
    counts = Counter(
        zip(
            per_prompt["annotator_id_count"].to_pylist(),
            per_prompt["annotator_id_count_distinct"].to_pylist(),
            strict=True,
        )
    )
    # 30 % of the prompts are triple-annotated: 188 / (188 + 436) prompts, 188 * 3 + 436 = 1000 rankings
    assert counts == {(3, 3): 188, (1, 1): 436}

    buf = io.BytesIO()
    pq.write_table(table, buf)
    result = read_file(buf.getvalue(), "bench/synthetic.parquet", fmt="rankings")
    assert result.records_in == n and result.quarantine.num_rows == 0
    ranked = result.ranked
    assert ranked.num_rows == n * k
    assert sorted(ranked["rank"].to_numpy().reshape(n, k)[0].tolist()) == [1, 2, 3, 4]
    # a multi-annotated prompt shows the same K texts to each annotator
    first = ranked.filter(pc.equal(ranked["prompt_id"], ranked["prompt_id"][0]))
    assert first.num_rows == 3 * k and len(set(first["response"].to_pylist())) == k
    assert len(set(ranked["response"].to_pylist())) == (188 + 436) * k  # texts unique across prompts
    assert set(ranked["batch_id"].to_pylist()) == {"synthetic"}
