"""The ranking tables' expectation suites as exact Arrow counts, bucket by bucket (out-of-core validate).

Out of core (:mod:`rewardline.data.buckets`), Great Expectations runs on a documented sample, the first
prompt bucket (:func:`rewardline.validation.validate.run_validate`), and every expectation of the
``prompts`` / ``responses`` / ``rankings`` suites (:func:`rewardline.validation.expectations.build_suites`)
is also counted on every bucket here, with GX's definition of an unexpected row:

* ``expect_column_values_to_not_be_null``: null values;
* ``expect_column_values_to_be_unique``: non-null values that occur more than once (every occurrence);
* ``expect_compound_columns_to_be_unique``: rows whose column combination occurs more than once;
* ``expect_column_value_lengths_to_be_between`` (min 1): non-null empty strings;
* ``expect_column_values_to_be_between`` (rank in 1..max_k): non-null values outside;
* ``expect_column_values_to_be_in_set`` ([True], the foreign-key flags): non-null values not true;
* ``expect_table_row_count_to_be_between`` (min 1): the table's row count (the observed value).

The counts add over buckets exactly: a prompt's rows are in one bucket, and every uniqueness key holds
its prompt's id (``prompt_id``; ``response_id`` = ``<prompt_id>/…`` or a hash of it; ``ranking_id`` =
``<prompt_id>|…``), as do both sides of the foreign-key flags. (A producer other than ingest that gave two
prompts one response id would have the duplicate missed when the two prompts fall in different buckets.)
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rewardline.data.keys import key_codes
from rewardline.validation.expectations import ExpectationFailure, ExpectationReport

#: (table, expectation type, column or "a,b" for a compound key)
CheckKey = tuple[str, str, str]
ROW_COUNT = "expect_table_row_count_to_be_between"


def _duplicated(*columns: pa.ChunkedArray) -> int:
    """Rows whose (non-null) key occurs more than once."""
    valid = np.ones(len(columns[0]), bool)
    for column in columns:
        valid &= np.asarray(pc.is_valid(column), bool)
    if not valid.any():
        return 0
    codes = key_codes(*(c.filter(pa.array(valid)) for c in columns))
    counts = np.bincount(codes)
    return int(counts[counts > 1].sum())


def _count(values: pa.ChunkedArray | pa.Array, mask: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.sum(pc.and_(pc.is_valid(values), pc.fill_null(mask, False))).as_py() or 0)


def count_unexpected(name: str, table: pa.Table, flags: dict[str, pa.ChunkedArray], max_k: int) -> Counter:
    """Unexpected rows per expectation of table ``name``'s suite on this bucket (module docstring)."""
    out: Counter = Counter()
    not_null = {"prompts": ("prompt_id", "prompt"), "responses": ("response_id", "prompt_id", "response"),
                "rankings": ("ranking_id", "prompt_id", "annotator_id", "response_id", "rank", "batch_id")}[name]
    out[(name, ROW_COUNT, "")] += table.num_rows
    for column in not_null:
        out[(name, "expect_column_values_to_not_be_null", column)] += table[column].null_count
    unique = {"prompts": "prompt_id", "responses": "response_id"}.get(name)
    if unique:
        out[(name, "expect_column_values_to_be_unique", unique)] += _duplicated(table[unique])
    text = {"prompts": "prompt", "responses": "response"}.get(name)
    if text:
        out[(name, "expect_column_value_lengths_to_be_between", text)] += _count(
            table[text], pc.equal(pc.binary_length(table[text]), 0))
    if name == "rankings":
        rank = table["rank"]
        out[(name, "expect_column_values_to_be_between", "rank")] += _count(
            rank, pc.or_(pc.less(rank, 1), pc.greater(rank, max_k)))
        out[(name, "expect_compound_columns_to_be_unique", "ranking_id,response_id")] += _duplicated(
            table["ranking_id"], table["response_id"])
    for flag, values in flags.items():
        out[(name, "expect_column_values_to_be_in_set", flag)] += _count(values, pc.invert(values))
    return out


def _key(failure: ExpectationFailure) -> CheckKey:
    columns = failure.kwargs.get("column_list")
    column = ",".join(columns) if columns else (failure.column or "")
    return failure.table, failure.expectation, column


def merge_full_counts(sample: ExpectationReport, counts: Counter) -> ExpectationReport:
    """The sample's GX report with the full-table counts: a failure the full table does not have is dropped
    (the sample alone was empty), its ``unexpected_count`` is the full table's; an expectation that passed on
    the sample but fails on the full table is added (no example rows: they are outside the sample)."""
    failed: list[ExpectationFailure] = []
    seen: set[CheckKey] = set()
    for failure in sample.failed:
        key = _key(failure)
        seen.add(key)
        if key not in counts or failure.error:
            failed.append(failure)
            continue
        if key[1] == ROW_COUNT:
            if counts[key] == 0:
                failure.observed_value = 0
                failed.append(failure)
        elif counts[key] > 0:
            failure.unexpected_count = counts[key]
            failed.append(failure)
    for key, count in sorted(counts.items()):
        bad = count == 0 if key[1] == ROW_COUNT else count > 0
        if bad and key not in seen:
            table, expectation, column = key
            failed.append(ExpectationFailure(
                table=table, expectation=expectation, column=column or None,
                kwargs={"column": column} if column else {},
                unexpected_count=None if key[1] == ROW_COUNT else count, examples=[],
                observed_value=0 if key[1] == ROW_COUNT else None))
    return ExpectationReport(success=not failed, evaluated=sample.evaluated, failed=failed,
                             data_docs_index=sample.data_docs_index)
