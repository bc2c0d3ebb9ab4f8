"""Dynamic batching: concurrent requests merged into one forward pass up to a token budget.

Requests are queued on the event loop. One worker coroutine takes the oldest request, then keeps
taking queued ones while the batch's tokens stay within ``batch_tokens`` (a request that would
exceed it waits for the next batch; one larger than the budget alone forms its own batch), waiting
at most ``max_wait_s`` after the first for more to arrive. The batch runs as one call of ``forward``
in a single worker thread (the event loop keeps accepting and tokenising requests meanwhile), and
each request gets its slice of the rewards. Under load the queue fills while the model runs, so
batches grow without any wait: throughput approaches that of one big in-process call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from rewardline.serving.metrics import ServerMetrics
from rewardline.serving.rerank import Encoded


class QueueFull(RuntimeError):
    """More rows are waiting than ``max_queue_rows``: the server answers 503 (retry later)."""


@dataclass
class _Job:
    encoded: Encoded
    future: asyncio.Future = field(repr=False)
    tokens: int = 0


class DynamicBatcher:
    """Merge concurrent :meth:`submit` calls into batches for ``forward`` (module docstring)."""

    def __init__(self, forward: Callable[[Encoded], np.ndarray], batch_tokens: int, max_wait_s: float,
                 max_queue_rows: int, metrics: ServerMetrics) -> None:
        self.forward, self.batch_tokens, self.max_wait_s = forward, batch_tokens, max_wait_s
        self.max_queue_rows, self.metrics = max_queue_rows, metrics
        self.waiting_rows = 0
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._carry: _Job | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rewardline-forward")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, encoded: Encoded) -> np.ndarray:
        """The rewards of ``encoded``'s rows, computed in some batch; :class:`QueueFull` when over the limit."""
        if self.waiting_rows + len(encoded) > self.max_queue_rows:
            raise QueueFull(f"{self.waiting_rows} rows are waiting (limit {self.max_queue_rows}); retry later")
        job = _Job(encoded, asyncio.get_running_loop().create_future(), encoded.tokens)
        self.waiting_rows += len(encoded)
        self.metrics.queue_rows.set(self.waiting_rows)
        self._queue.put_nowait(job)
        return await job.future

    async def _next_batch(self) -> list[_Job]:
        """The carried-over job or the oldest queued one, plus queued jobs within the token budget."""
        first = self._carry or await self._queue.get()
        self._carry = None
        jobs, tokens = [first], first.tokens
        deadline = time.monotonic() + self.max_wait_s
        while tokens < self.batch_tokens:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if tokens + job.tokens > self.batch_tokens:
                self._carry = job  # first of the next batch
                break
            jobs.append(job)
            tokens += job.tokens
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._next_batch()
            rows = sum(len(j.encoded) for j in jobs)
            self.waiting_rows -= rows
            self.metrics.queue_rows.set(self.waiting_rows)
            live = [j for j in jobs if not j.future.done()]  # a client that went away was cancelled
            if not live:
                continue
            started = time.perf_counter()
            try:
                rewards = await loop.run_in_executor(self._executor, self.forward,
                                                     Encoded.concat([j.encoded for j in live]))
            except Exception as err:  # noqa: BLE001 - every waiting request gets the error, the loop goes on
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            self.metrics.observe_batch(len(live), sum(len(j.encoded) for j in live),
                                       sum(j.tokens for j in live), time.perf_counter() - started)
            start = 0
            for job in live:
                if not job.future.done():
                    job.future.set_result(rewards[start : start + len(job.encoded)])
                start += len(job.encoded)
