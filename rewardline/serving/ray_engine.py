"""Scoring on a Ray cluster: ``rewardline score --engine ray`` and ``rewardline rerank --engine ray``.

The driver streams the input exactly as in-process scoring does (:func:`rewardline.modeling.score.score_jsonl`,
:func:`rewardline.serving.rerank_file.rerank_jsonl`): every row is checked first (the first malformed row stops
it, exit 2, before any cluster starts), then the file is read ``RayOptions.chunk_rows`` rows at a time, and each
chunk is mapped over a Ray Data pipeline (:class:`RayScorer`)::

    chunk ──from_items──▶ blocks ──map_batches(RewardActor, one actor per GPU, else per CPU)──▶ (row, reward)

Each actor loads the reward model once per chunk and scores its batches with
:func:`rewardline.modeling.score.score_texts`, so row ``i`` gets the in-process reward

    r_i = f_θ(prompt_i, response_i) − reward_mean     (no shift for an absolute-scale model)

whatever batch it lands in (batches differ only in padding, which the attention mask removes: equal to
float32 rounding). Results come back keyed by row index and are put back in input order; the output is
written by the in-process writers, so rows, order and columns are those of ``--engine local``, and the
driver's memory holds one chunk, not the file.

The cluster: ``address`` joins a running one (``ray start --head`` / ``auto`` / ``ray://host:port``; the model
directory must then be readable at the same path on every node), otherwise a local one is started on
127.0.0.1 with this machine's CPUs and GPUs and shut down afterwards. ``ray`` is the optional extra
``rewardline[ray]``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rewardline.data.limits import Limits
from rewardline.errors import ConfigError
from rewardline.modeling.score import reward_columns, score_jsonl, score_texts, scored_rows
from rewardline.serving.rerank import read_scale, read_temperature
from rewardline.serving.rerank_file import rerank_jsonl


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to score: ``address`` of a running cluster (None: start a local one), ``actors``
    (None: one per GPU of the cluster, else one per CPU), ``batch_rows`` rows per ``map_batches`` call,
    ``chunk_rows`` rows of the file per Ray dataset (the driver holds one chunk; a dataset starts its own actors,
    each loading the model, so chunks are large)."""

    address: str | None = None
    actors: int | None = None
    batch_rows: int = 256
    chunk_rows: int = 65536  # rows of the file per Ray dataset: the driver holds one chunk; each starts the actors


class RewardActor:
    """Ray Data callable class: the reward model loaded once per actor, scoring ``{row, prompt, response}``
    batches (``prompt`` JSON-encoded: text or a message list) into ``{row, reward}`` (``normalize``:
    as :func:`~rewardline.modeling.score.score_texts`)."""

    def __init__(self, model_dir: str, batch_tokens: int, normalize: bool = True) -> None:
        from rewardline.modeling.device import select_runtime
        from rewardline.modeling.model import RewardModel

        self.model_dir, self.batch_tokens, self.normalize, self.error = model_dir, batch_tokens, normalize, None
        try:
            self.model, self.tokenizer = RewardModel.load(model_dir, select_runtime("auto", "auto").device)
        except Exception as err:  # noqa: BLE001 - raised by the first batch, where Ray keeps the exception itself:
            self.error = err  # an actor that dies in __init__ reaches the driver as an ActorDiedError's text only

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.error is not None:
            raise self.error
        prompts = [json.loads(p) for p in batch["prompt"]]
        rewards = score_texts(self.model_dir, prompts, [str(r) for r in batch["response"]], self.batch_tokens,
                              self.normalize, model=self.model, tokenizer=self.tokenizer)
        return {"row": batch["row"], "reward": rewards}


@contextmanager
def ray_cluster(address: str | None) -> Iterator[Any]:
    """The ``ray`` module connected to a cluster: the one already initialised in this process, the one at
    ``address``, or a new local one on 127.0.0.1 (no dashboard) that is shut down on exit."""
    level = logging.getLogger().level  # Ray's INFO lines as other third-party libraries' (-vv: rewardline.stage)
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", logging.getLevelName(level))  # read when Ray Data sets up logging
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray: pip install 'rewardline[ray]' "
                          "(-c requirements/constraints.txt)") from None
    logging.getLogger("ray").setLevel(level)
    started = not ray.is_initialized()
    if started and address:
        ray.init(address=address, log_to_driver=False, logging_level=level)
    elif started:
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False, logging_level=level)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _actor_resources(ray: Any, actors: int | None) -> tuple[int, dict[str, float]]:
    """``(actor count, per-actor resources)``: one GPU each when the cluster has GPUs, else one CPU each;
    as many actors as those slots unless ``actors`` says."""
    total = ray.cluster_resources()
    gpus, cpus = int(total.get("GPU", 0)), int(total.get("CPU", 1))
    resources = {"num_gpus": 1.0} if gpus else {"num_cpus": 1.0}
    return max(1, actors or gpus or cpus), resources


class RayScorer:
    """Model actors on a Ray cluster (a context manager: the cluster is joined or started on entry, and a started
    one shut down on exit), scoring chunks of ``{prompt, response}`` rows (:meth:`rewards`). ``link``,
    ``residual_sd`` and ``temperature`` are the model's, as :class:`~rewardline.serving.rerank.RewardScorer` has
    them, so ``score`` and ``rerank`` stream their files through either (``options.chunk_rows`` rows a chunk)."""

    def __init__(self, model_dir: Path | str, batch_tokens: int = 16384, options: RayOptions | None = None,
                 normalize: bool = True) -> None:
        local = Path(model_dir).exists()
        self.model_dir = str(Path(model_dir).resolve()) if local else str(model_dir)  # else an HF id
        self.batch_tokens, self.options, self.normalize = batch_tokens, options or RayOptions(), normalize
        self.link, self.residual_sd = read_scale(Path(model_dir))  # the driver never imports torch
        self.temperature = read_temperature(Path(model_dir))
        self._cluster: contextlib.ExitStack | None = None

    def __enter__(self) -> RayScorer:
        with contextlib.ExitStack() as stack:
            self.ray = stack.enter_context(ray_cluster(self.options.address))
            from ray.data import DataContext

            context = DataContext.get_current()
            context.enable_progress_bars = False
            context.raise_original_map_exception = True  # the actor's exception, not a UserCodeException without it
            self.actors, self.resources = _actor_resources(self.ray, self.options.actors)
            self._cluster = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._cluster is not None:
            self._cluster.close()

    def rewards(self, rows: list[dict]) -> np.ndarray:
        """Rewards (float32, row order) of ``rows``: one Ray dataset, mapped over :class:`RewardActor` actors
        (each loads the model once per dataset), results put back in row order by index."""
        if not rows:
            return np.zeros(0, np.float32)
        ray = self.ray
        items = [{"row": i, "prompt": json.dumps(r["prompt"]), "response": r["response"]} for i, r in enumerate(rows)]
        blocks = max(1, min(len(items), self.actors * 4))
        scored = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
            RewardActor, fn_constructor_args=(self.model_dir, self.batch_tokens, self.normalize),
            batch_size=self.options.batch_rows, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.actors), **self.resources)
        index, rewards = [], []
        try:
            for batch in scored.iter_batches(batch_format="numpy", batch_size=None):
                index.append(batch["row"])
                rewards.append(batch["reward"])
        except ray.exceptions.RayTaskError as err:  # an actor's error (bad model, non-finite rewards): its own
            raise (err.cause if isinstance(err.cause, Exception) else err) from err  # exit code, as in-process
        index_all = np.concatenate(index).astype(np.int64)
        if not np.array_equal(np.sort(index_all), np.arange(len(rows))):
            raise RuntimeError(f"the Ray pipeline returned {len(index_all)} rewards for {len(rows)} rows")
        out = np.empty(len(rows), np.float32)
        out[index_all] = np.concatenate(rewards)
        return out


def ray_rewards(model_dir: Path | str, rows: list[dict], batch_tokens: int = 16384,
                options: RayOptions | None = None, normalize: bool = True) -> tuple[np.ndarray, str | None]:
    """``(rewards float32 [n] in row order, the model's link or None)`` of ``{prompt, response}`` rows held in
    memory, scored by model actors on a Ray cluster (:class:`RayScorer`); ``normalize=False``: raw f_θ."""
    with RayScorer(model_dir, batch_tokens, options, normalize) as scorer:
        return scorer.rewards(rows), scorer.link


def score_jsonl_ray(model_dir: Path | str, in_path: Path | str, out_path: Path | str, batch_tokens: int = 16384,
                    limits: Limits | None = None, options: RayOptions | None = None) -> int:
    """``rewardline score --engine ray``: :func:`rewardline.modeling.score.score_jsonl` (each row plus reward, and
    win_prob for an absolute-scale model; the file streamed, ``options.chunk_rows`` rows a chunk), each chunk
    scored on a Ray cluster."""
    from rewardline.modeling.step_scores import refuse_process_model

    refuse_process_model(model_dir, "--engine ray")
    options = options or RayOptions()

    @contextlib.contextmanager
    def scoring() -> Iterator[tuple[Callable[[list[dict]], list[dict]], dict[str, Any]]]:
        with RayScorer(model_dir, batch_tokens, options) as scorer:
            yield (lambda rows: scored_rows(rows, scorer.rewards(rows), scorer.link, scorer.residual_sd),
                   reward_columns(scorer.link))

    return score_jsonl(model_dir, in_path, out_path, batch_tokens, limits=limits, chunk_rows=options.chunk_rows,
                       scoring=scoring)


def rerank_jsonl_ray(model_dir: Path | str, in_path: Path | str, out_path: Path | str, top_k: int | None = None,
                     batch_tokens: int = 16384, options: RayOptions | None = None, limits: Limits | None = None,
                     ) -> dict[str, Any]:
    """``rewardline rerank --engine ray``: the output and counts of
    :func:`rewardline.serving.rerank_file.rerank_jsonl` (the file streamed, ``options.chunk_rows`` rows a chunk),
    each chunk's rewards scored on a Ray cluster."""
    from rewardline.modeling.step_scores import refuse_process_model

    refuse_process_model(model_dir, "rerank")
    options = options or RayOptions()
    return rerank_jsonl(model_dir, in_path, out_path, top_k, batch_tokens, limits, options.chunk_rows,
                        open_scorer=lambda: RayScorer(model_dir, batch_tokens, options))
