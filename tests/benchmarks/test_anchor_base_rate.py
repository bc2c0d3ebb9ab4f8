"""benchmarks/bench_anchor_base_rate.py: the level error |ȳ_test − ȳ_rest| of random splits by prompt."""

from __future__ import annotations

import gzip
import json

import numpy as np
from conftest import load_benchmark

base_rate = load_benchmark("bench_anchor_base_rate")


def test_per_prompt_sums_read_every_file_and_skip_unjudged_records(tmp_path):
    records = [{"instruction": "a", "preference": 2.0}, {"instruction": "b", "preference": 1.0},
               {"instruction": "a", "preference": None}]
    for i, chunk in enumerate((records, [{"instruction": "a", "preference": 1.5}])):
        with gzip.open(tmp_path / f"m.{i}.json.gz", "wt", encoding="utf-8") as handle:
            json.dump(chunk, handle)
    sums, counts = base_rate.per_prompt_sums(tmp_path)
    np.testing.assert_allclose(sums, [1.5, 0.0])     # prompts in sorted order: a, b
    np.testing.assert_allclose(counts, [2, 1])


def test_level_error_is_the_gap_between_the_test_and_the_other_prompts():
    # Two prompts, one in test: every split's gap is |1 − 0| = 1, whichever prompt is drawn.
    np.testing.assert_allclose(base_rate.level_errors(np.array([3.0, 0.0]), np.array([3.0, 5.0]), 1, 50, 0), 1.0)
    # Every prompt with the same share: no split has a gap.
    sums, counts = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 6.0, 8.0])
    np.testing.assert_allclose(base_rate.level_errors(sums, counts, 2, 50, 0), 0.0, atol=1e-12)
    # Three prompts with shares 0, 1/2, 1 and equal counts, one in test: gaps 3/4, 0, 3/4 (the rest's mean).
    errors = base_rate.level_errors(np.array([0.0, 1.0, 2.0]), np.array([2.0, 2.0, 2.0]), 1, 3000, 1)
    assert set(np.round(errors, 9)) == {0.0, 0.75}
    assert 0.6 < np.mean(errors == 0.75) < 0.73
