"""Scoring built for many candidates: in-process ``rerank`` and the ``rewardline serve`` HTTP server.

``config`` (the ``serve`` section: limits, batching, bind address), ``rerank`` (a loaded model that
scores prompt groups; the JSONL ``rerank`` command), ``batcher`` (dynamic batching of concurrent
requests up to a token budget), ``metrics`` (Prometheus counters and histograms), ``server`` (the
FastAPI app and its uvicorn runner). Nothing here imports mlflow: ``mlflow models serve`` serves the
registered pyfunc (:mod:`rewardline.registry.pyfunc`) on its own.
"""
