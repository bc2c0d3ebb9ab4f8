"""Prometheus metrics of ``rewardline serve`` (text format at ``GET /metrics``).

One :class:`prometheus_client.CollectorRegistry` per server (not the process-global one), so two
servers in one process (tests) do not share counts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class ServerMetrics:
    """Requests (by endpoint and status), request latency, batch sizes (requests, rows, tokens), forward time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("rewardline_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("rewardline_request_latency_seconds", "Request latency, arrival to response",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_requests = Histogram("rewardline_batch_requests", "Requests merged into one forward batch",
                                        buckets=COUNT_BUCKETS, registry=r)
        self.batch_rows = Histogram("rewardline_batch_rows", "Rows (candidates) in one forward batch",
                                    buckets=COUNT_BUCKETS, registry=r)
        self.batch_tokens = Histogram("rewardline_batch_tokens", "Unpadded tokens in one forward batch",
                                      buckets=tuple(64 * 2**i for i in range(12)), registry=r)
        self.batch_seconds = Histogram("rewardline_batch_seconds", "Forward time of one batch",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.rows_scored = Counter("rewardline_rows_scored", "Rows (candidates) scored", registry=r)
        self.queue_rows = Gauge("rewardline_queue_rows", "Rows waiting for the model", registry=r)
        self.ready = Gauge("rewardline_ready", "1 once the model is loaded and the batcher runs", registry=r)

    def observe_batch(self, requests: int, rows: int, tokens: int, seconds: float) -> None:
        self.batch_requests.observe(requests)
        self.batch_rows.observe(rows)
        self.batch_tokens.observe(tokens)
        self.batch_seconds.observe(seconds)
        self.rows_scored.inc(rows)

    def text(self) -> bytes:
        """The Prometheus text exposition format (version 0.0.4)."""
        return generate_latest(self.registry)
