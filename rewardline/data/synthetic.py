"""Synthetic ranking data: Thurstone annotators over real texts, and bulk tables for benchmarks.

Thurstone (case V) annotator model. Response j of a prompt has a latent utility u_j;
an annotator with noise sigma perceives ``u_j + eps_j, eps_j ~ N(0, sigma^2)`` i.i.d. and
ranks the responses by perceived utility (rank 1 = highest). sigma -> 0 reproduces the
utility order; a *careless* annotator ranks uniformly at random (sigma -> infinity).
For two responses, ``P(j above i) = Phi((u_j - u_i) / (sigma * sqrt(2)))``.

``synthetic_rankings_table`` builds large native nested ranking tables quickly (texts are
slices of one random word buffer, tagged with a unique base-32 id), for scale tests.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from rewardline.data.adapters.native import RESPONSE

#: Annotator id -> Thurstone sigma; None = careless (uniformly random rankings).
ANNOTATORS: dict[str, float | None] = {
    "synth-a": 0.3,
    "synth-b": 0.6,
    "synth-c": 1.0,
    "synth-d": 1.5,
    "synth-e": None,
}


def thurstone_ranks(
    utility: np.ndarray, sigma: np.ndarray, careless: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Ranks (1 = best) of each row of ``utility`` (m, K) as seen by annotators with noise ``sigma`` (m,).

    Careless rows get a uniformly random permutation. Ties have probability zero.
    """
    utility = np.asarray(utility, dtype=np.float64)
    noise = rng.standard_normal(utility.shape)
    perceived = utility + np.asarray(sigma, dtype=np.float64)[:, None] * noise
    perceived = np.where(np.asarray(careless, bool)[:, None], rng.random(utility.shape), perceived)
    order = np.argsort(-perceived, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, utility.shape[1] + 1)[None, :], axis=1)
    return ranks.astype(np.int32)


def assign_annotators(n_prompts: int, n_annotators: int, per_prompt: int, rng: np.random.Generator) -> np.ndarray:
    """(n_prompts, per_prompt) distinct annotator indices per prompt, drawn uniformly at random."""
    if per_prompt > n_annotators:
        raise ValueError(f"per_prompt={per_prompt} exceeds the number of annotators ({n_annotators})")
    return np.argsort(rng.random((n_prompts, n_annotators)), axis=1)[:, :per_prompt]


def multiannotator_rankings(
    prompts: pa.Table,
    utility: np.ndarray,
    annotators: dict[str, float | None] = ANNOTATORS,
    per_prompt: int = 3,
    seed: int = 0,
) -> pa.Table:
    """Native nested ranking records: each prompt ranked by ``per_prompt`` random annotators.

    ``prompts`` has columns prompt, category and responses (list of {response_id, text,
    source}, K per prompt); ``utility`` is (n_prompts, K), aligned with the responses.
    """
    rng = np.random.default_rng(seed)
    n, k = utility.shape
    names = list(annotators)
    sigmas = np.array([0.0 if s is None else s for s in annotators.values()])
    careless = np.array([s is None for s in annotators.values()])
    who = assign_annotators(n, len(names), per_prompt, rng)  # (n, per_prompt)
    prompt_idx = np.repeat(np.arange(n), per_prompt)
    ann = who.ravel()
    ranks = thurstone_ranks(utility[prompt_idx], sigmas[ann], careless[ann], rng)

    responses = prompts.column("responses").combine_chunks()
    flat = responses.flatten()
    rows = (prompt_idx[:, None] * k + np.arange(k)[None, :]).ravel()  # response row of each output item
    items = pa.StructArray.from_arrays(
        [
            flat.field("response_id").take(rows),
            flat.field("text").take(rows),
            flat.field("source").take(rows),
            pa.array(ranks.ravel().astype(np.int64)),
            pa.nulls(len(rows), pa.float64()),
        ],
        fields=list(RESPONSE),
    )
    take = pa.array(prompt_idx)
    columns = {
        "prompt": prompts.column("prompt").take(take),
        "category": prompts.column("category").take(take),
        "annotator_id": pa.array(np.array(names, dtype=object)[ann], pa.string()),
        "responses": pa.ListArray.from_arrays(pa.array(np.arange(0, len(rows) + 1, k, dtype=np.int32)), items),
    }
    if "prompt_id" in prompts.column_names:
        columns = {"prompt_id": prompts.column("prompt_id").take(take), **columns}
    return pa.table(columns)


# ------------------------------------------------------------------ bulk benchmark tables

_WORDS = tuple(
    [
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "was",
        "for",
        "on",
        "that",
        "with",
        "as",
        "by",
        "at",
        "from",
        "this",
        "be",
        "are",
        "have",
        "it",
        "an",
        "or",
        "not",
        "which",
        "but",
        "model",
        "answer",
        "user",
        "prompt",
        "reward",
        "rank",
        "data",
        "train",
        "value",
        "good",
        "better",
        "best",
        "response",
        "annotator",
        "text",
        "question",
        "explain",
        "because",
        "example",
        "first",
        "second",
        "result",
        "method",
        "simple",
        "clear",
        "helpful",
        "safe",
        "correct",
    ]
)
_B32 = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz234567", dtype=np.uint8)
_TAG = 8  # characters of the unique base-32 tag at the start of every generated text
CATEGORIES = ("helpful_base", "koala", "oasst", "selfinstruct", "vicuna")


def _word_buffer(n_bytes: int, rng: np.random.Generator) -> np.ndarray:
    """~n_bytes of random space-separated words, as uint8."""
    words = np.array(_WORDS)
    chosen = words[rng.integers(0, len(words), size=n_bytes // 4 + 16)]
    return np.frombuffer(" ".join(chosen.tolist()).encode(), dtype=np.uint8)[:n_bytes]


def _tags(ids: np.ndarray) -> np.ndarray:
    """(n, 8) uint8 base-32 digits of ``ids`` (unique for ids < 32**8)."""
    powers = np.uint64(32) ** np.arange(_TAG - 1, -1, -1, dtype=np.uint64)
    return _B32[(ids.astype(np.uint64)[:, None] // powers[None, :]) % np.uint64(32)]


def _texts(ids: np.ndarray, chars: int, buffer: np.ndarray, prefix: bytes = b"", salt: int = 0) -> pa.Array:
    """One ASCII text of exactly ``len(prefix) + chars`` bytes per id: prefix + tag + ' ' + buffer slice.

    The slice start is a fixed hash of the id, so equal ids give equal texts.
    """
    body = max(chars - _TAG - 1, 1)
    windows = np.lib.stride_tricks.sliding_window_view(buffer, body)
    starts = ((ids.astype(np.uint64) + np.uint64(salt)) * np.uint64(2654435761)) % np.uint64(len(windows))
    parts = [np.broadcast_to(np.frombuffer(prefix, np.uint8), (len(ids), len(prefix))), _tags(ids)]
    parts += [np.full((len(ids), 1), ord(" "), np.uint8), windows[starts.astype(np.int64)]]
    matrix = np.ascontiguousarray(np.concatenate(parts, axis=1))
    width = matrix.shape[1]
    offsets = np.arange(0, (len(ids) + 1) * width, width, dtype=np.int64)
    return pa.Array.from_buffers(pa.large_string(), len(ids), [None, pa.py_buffer(offsets), pa.py_buffer(matrix)]).cast(
        pa.string()
    )


def synthetic_rankings_table(
    n_rankings: int,
    k: int = 4,
    response_chars: int = 200,
    multi_annotator_share: float = 0.2,
    annotators_per_multi: int = 3,
    n_annotators: int = 50,
    seed: int = 0,
) -> pa.Table:
    """``n_rankings`` native nested ranking records over random-ish texts (for scale tests).

    A share ``multi_annotator_share`` of the *prompts* is ranked by ``annotators_per_multi``
    distinct annotators (same K responses); the rest are single-annotator prompts, so
    n_prompts = n_rankings / (1 − s + s·a). Every prompt has K unique responses of
    ``response_chars`` characters. Ranks follow a Thurstone model: each response has a
    latent utility u ~ N(0, 1), each annotator a noise level σ ~ U(0.3, 1.5), and an
    annotator ranks by u + N(0, σ²), so agreement is realistic rather than zero.
    prompt_id is set (``p`` + tag); response_id is left null.
    """
    if annotators_per_multi > n_annotators:
        raise ValueError(f"annotators_per_multi={annotators_per_multi} exceeds n_annotators={n_annotators}")
    rng = np.random.default_rng(seed)
    share = multi_annotator_share
    n_multi = int(round(n_rankings * share / (1 - share + share * annotators_per_multi)))
    n_multi = min(n_multi, n_rankings // annotators_per_multi)
    n_single = n_rankings - n_multi * annotators_per_multi
    prompt = np.concatenate([np.repeat(np.arange(n_multi), annotators_per_multi), n_multi + np.arange(n_single)])
    n_prompts = n_multi + n_single
    first = rng.integers(0, n_annotators, size=n_prompts)
    slot = np.concatenate([np.tile(np.arange(annotators_per_multi), n_multi), np.zeros(n_single, np.int64)])
    annotator = (first[prompt] + slot) % n_annotators  # distinct within a multi-annotator prompt

    buffer = _word_buffer(1 << 22, rng)
    utility = rng.standard_normal((n_prompts, k))
    sigma = rng.uniform(0.3, 1.5, n_annotators)
    perceived = utility[prompt] + rng.standard_normal((n_rankings, k)) * sigma[annotator][:, None]
    ranks = np.argsort(np.argsort(-perceived, axis=1), axis=1).astype(np.int64) + 1
    sources = rng.integers(0, 3, (n_rankings, k)).astype(np.int32)
    columns = (prompt, annotator, ranks, sources)
    bounds = [*range(0, n_rankings, _BATCH_RANKINGS), n_rankings] if n_rankings else [0, 0]
    batches = [_ranking_batch(columns, lo, hi, response_chars, n_annotators, buffer)
               for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    return pa.Table.from_batches(batches)


#: Rankings per record batch of :func:`synthetic_rankings_table`: every string array of a batch stays far
#: below the 2 GiB that 32-bit Arrow string offsets address (500,000 × K = 4 × 200 characters = 400 MB).
_BATCH_RANKINGS = 500_000


def _ranking_batch(columns: tuple[np.ndarray, ...], lo: int, hi: int, response_chars: int, n_annotators: int,
                   buffer: np.ndarray) -> pa.RecordBatch:
    """Rankings ``lo:hi`` of :func:`synthetic_rankings_table` as one record batch. Texts are a pure function
    of the ids, so the batches concatenate to the same rows as a table built in one piece."""
    prompt, annotator, ranks, sources = (column[lo:hi] for column in columns)
    n, k = ranks.shape
    response_ids = (prompt[:, None] * k + np.arange(k)[None, :]).ravel()
    items = pa.StructArray.from_arrays(
        [
            pa.nulls(n * k, pa.string()),
            _texts(response_ids, response_chars, buffer),
            pa.DictionaryArray.from_arrays(
                pa.array(sources.ravel()), pa.array(["policy-a", "policy-b", "policy-c"])
            ).cast(pa.string()),
            pa.array(ranks.ravel()),
            pa.nulls(n * k, pa.float64()),
        ],
        fields=list(RESPONSE),
    )
    prompt_id = pa.array(
        np.concatenate([np.full((n, 1), ord("p"), np.uint8), _tags(prompt)], axis=1).view(f"S{_TAG + 1}").ravel()
    ).cast(pa.string())
    annotator_names = pa.array([f"annotator-{i:04d}" for i in range(n_annotators)])
    category = pa.array(list(CATEGORIES))
    return pa.record_batch(
        {
            "prompt_id": prompt_id,
            "prompt": _texts(prompt, 80, buffer, prefix=b"Prompt ", salt=12345),
            "category": pa.DictionaryArray.from_arrays(
                pa.array((prompt % len(CATEGORIES)).astype(np.int32)), category
            ).cast(pa.string()),
            "annotator_id": pa.DictionaryArray.from_arrays(pa.array(annotator.astype(np.int32)), annotator_names).cast(
                pa.string()
            ),
            "responses": pa.ListArray.from_arrays(pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)), items),
        }
    )
