"""``rewardline serve``: the reward model over HTTP (FastAPI on uvicorn), with dynamic batching.

Endpoints (JSON bodies; prompts are text or a list of ``{role, content}`` messages):

    POST /score   {"rows": [{"prompt": P, "response": "..."}, ...]}
                  → {"rewards": [r, ...]} (+ "win_prob": [...] for an absolute-scale model); rewards equal
                  ``rewardline score``'s
    POST /rerank  {"prompt": P, "candidates": ["...", ...], "top_k": K (optional)}
                  → {"results": [{"index": i, "reward": r, "rank": 1, "beats_others": p (, "win_prob": w)}, ...]}
                  best first (fields as in :mod:`rewardline.serving.rerank`)
    GET /healthz  200 while the process serves; GET /readyz 200 once the batcher runs (503 before / while stopping)
    GET /metrics  Prometheus text: requests by endpoint and status, latency, batch requests / rows / tokens

Errors: 401 (API key missing or wrong), 413 (body over ``max_request_bytes``, more rows or candidates
than ``max_rows`` / ``max_candidates``, a text over ``max_chars``), 422 (not JSON, or a field missing or
of the wrong type: the message names the field; no coercion: ``"top_k": true`` is not 1), 503 (not ready,
or the queue is over ``max_queue_rows``), 500 (the model failed, e.g. non-finite rewards: ``"internal error: ..."``,
logged with its traceback).
Every error body is ``{"error": "<what and where>", "detail": ...}``; the server keeps serving.

Security: binds 127.0.0.1 unless ``--host`` says otherwise. With an API key (``REWARDLINE_API_KEY`` or a 0600
``--api-key-file``) every endpoint except /healthz and /readyz needs ``Authorization: Bearer <key>`` or
``X-API-Key: <key>`` (compared in constant time).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from rewardline.data.messages import EMPTY_PROMPT, MESSAGE_ROLES, PROMPT_EXPECTED, blank_prompt, unicode_problem
from rewardline.errors import ConfigError, TransientError
from rewardline.serving.batcher import DynamicBatcher, QueueFull
from rewardline.serving.config import ServeConfig
from rewardline.serving.metrics import ServerMetrics
from rewardline.serving.rerank import RewardScorer, rank_group

log = logging.getLogger(__name__)
API_KEY_ENV = "REWARDLINE_API_KEY"
OPEN_PATHS = ("/healthz", "/readyz")
ENDPOINTS = {"/score": "POST", "/rerank": "POST", "/healthz": "GET", "/readyz": "GET", "/metrics": "GET"}  # method
INLINE_TOKENIZE_CHARS = 200_000  # requests up to this many characters are tokenised on the event loop (~ms)


def _valid_unicode(text: str) -> str:
    """``text`` when valid Unicode; a lone surrogate (a JSON ``\\ud800`` escape without its pair) is a 422 naming
    the field, as ``rewardline score`` refuses the row, not a tokenizer error (500)."""
    problem = unicode_problem(text)
    if problem is not None:
        raise ValueError(f"{problem}; expected text that UTF-8 can encode")
    return text


#: A prompt, message content, response or candidate: a string that UTF-8 can encode.
Text = Annotated[str, AfterValidator(_valid_unicode)]


class Message(BaseModel):
    role: str  # one of MESSAGE_ROLES, case-blind (as ingest and score)
    content: Text

    @field_validator("role")
    @classmethod
    def _known_role(cls, role: str) -> str:
        if role.lower() not in MESSAGE_ROLES:
            raise ValueError(f"expected one of {', '.join(MESSAGE_ROLES)}, got {role[:60]!r}")
        return role


def _valid_prompt(prompt: str | list[Message]) -> str | list[Message]:
    """A prompt that is valid Unicode and stands for text that is not blank, as ``rewardline score`` and ingest
    require (:data:`~rewardline.data.messages.EMPTY_PROMPT`)."""
    if isinstance(prompt, str):
        _valid_unicode(prompt)
    elif not prompt:
        raise ValueError(f"expected {PROMPT_EXPECTED}, got an empty array")
    if blank_prompt(_plain(prompt)):
        raise ValueError(EMPTY_PROMPT)
    return prompt


#: A prompt: text or messages (checked after the union so that an error names ``prompt``).
Prompt = Annotated[str | list[Message], AfterValidator(_valid_prompt)]


class ScoreRow(BaseModel):
    model_config = ConfigDict(extra="ignore")
    prompt: Prompt
    response: Text


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: list[ScoreRow] = Field(min_length=1)


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: Prompt
    candidates: list[Text] = Field(min_length=1)
    top_k: StrictInt | None = Field(None, ge=1)  # a JSON integer: true, "2" or 2.0 are refused, not coerced


class ApiError(Exception):
    """An error answer: HTTP ``status`` and a message that names what was wrong and where."""

    def __init__(self, status: int, message: str, detail: Any = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.detail, self.headers = status, message, detail, headers


def load_api_key(key_file: Path | None) -> str | None:
    """The API key: from ``key_file`` (must not be readable by group or others: chmod 600), else the
    ``REWARDLINE_API_KEY`` environment variable, else None (no authentication)."""
    if key_file is not None:
        if not key_file.is_file():
            raise ConfigError(f"--api-key-file {key_file}: no such file")
        mode = key_file.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(f"--api-key-file {key_file}: mode {mode:o} lets others read it; expected 600 "
                              f"(chmod 600 {key_file})")
        key = key_file.read_text().strip()
        if not key:
            raise ConfigError(f"--api-key-file {key_file}: empty; expected the key on its first line")
        return key
    return os.environ.get(API_KEY_ENV) or None


def _prompt_chars(prompt: str | list[Message]) -> int:
    return len(prompt) if isinstance(prompt, str) else sum(len(m.content) + len(m.role) for m in prompt)


def _plain(prompt: str | list[Message]) -> str | list[dict]:
    return prompt if isinstance(prompt, str) else [m.model_dump() for m in prompt]


def _check_chars(field: str, chars: int, config: ServeConfig) -> None:
    if chars > config.max_chars:
        raise ApiError(413, f"{field}: {chars} characters, more than serve.max_chars = {config.max_chars}")


async def _read_json(request: Request, limit: int) -> Any:
    """The body parsed as JSON; 413 beyond ``limit`` bytes (by Content-Length, before reading, or while
    streaming), 422 when it is not JSON."""
    too_large = f"request body over serve.max_request_bytes = {limit} bytes"
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"{too_large} (Content-Length {length})")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, too_large)
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise ApiError(422, "body: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise ApiError(422, f"body: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    except RecursionError:  # arrays or objects nested about a thousand deep: the parser recurses per level
        raise ApiError(422, "body: not valid JSON (nested too deeply for the parser); expected a request of "
                            "the documented shape") from None


def _validate(model: type[BaseModel], value: Any) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as err:
        errors = err.errors(include_url=False, include_context=False, include_input=False)
        where = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors[:5])
        raise ApiError(422, f"invalid request: {where}", errors) from None


class ServerState:
    """What the endpoints share: the scorer, the batcher (set while running), metrics, limits, key."""

    def __init__(self, scorer: RewardScorer, config: ServeConfig, api_key: str | None) -> None:
        self.scorer, self.config, self.api_key = scorer, config, api_key
        self.metrics = ServerMetrics()
        self.batcher: DynamicBatcher | None = None
        self.tokenize_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rewardline-tokenize")

    def authorize(self, request: Request) -> None:
        if self.api_key is None or request.url.path in OPEN_PATHS:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key")
        if given is None or not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                           headers={"WWW-Authenticate": "Bearer"})

    async def rewards(self, prompts: list[Any], responses: list[str], group: bool, chars: int) -> np.ndarray:
        """Tokenise (a request under :data:`INLINE_TOKENIZE_CHARS` on the event loop: a thread hop costs more
        than its tokenisation; a larger one in the tokenizer thread), then wait for the batcher's forward pass."""
        if self.batcher is None:
            raise ApiError(503, "not ready: the model is loading or the server is stopping")
        encode = functools.partial(self.scorer.encode_group, prompts[0], responses) if group else \
            functools.partial(self.scorer.encode_rows, prompts, responses)
        if chars <= INLINE_TOKENIZE_CHARS:
            encoded = encode()
        else:
            encoded = await asyncio.get_running_loop().run_in_executor(self.tokenize_pool, encode)
        try:
            return await self.batcher.submit(encoded)
        except QueueFull as err:
            raise ApiError(503, str(err), headers={"Retry-After": "1"}) from None


def create_app(scorer: RewardScorer, config: ServeConfig, api_key: str | None = None,  # long: routes
               model_name: str | None = None) -> FastAPI:
    """The FastAPI app around a loaded :class:`RewardScorer` (module docstring for the endpoints); ``model_name``:
    what /readyz calls the model (default: its directory)."""
    state = ServerState(scorer, config, api_key)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher = DynamicBatcher(scorer.forward, config.batch_tokens, config.max_wait_ms / 1000,
                                 config.max_queue_rows, state.metrics)
        batcher.start()
        state.batcher = batcher
        state.metrics.ready.set(1)
        try:
            yield
        finally:
            state.metrics.ready.set(0)
            state.batcher = None
            await batcher.stop()
            state.tokenize_pool.shutdown(wait=False)

    app = FastAPI(title="rewardline", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.rewardline = state

    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        return JSONResponse({"error": err.message, "detail": err.detail}, err.status, headers=err.headers)

    @app.exception_handler(404)
    @app.exception_handler(405)
    async def routing_error(request: Request, err: Any) -> JSONResponse:  # Starlette's HTTPException
        """FastAPI's own errors (no such path, wrong method) in the same ``{"error", "detail"}`` body."""
        where = f"{request.method} {request.url.path}"
        if err.status_code == 404:
            routes = [f"{method} {path}" for path, method in ENDPOINTS.items()]
            message = f"{where}: no such endpoint; expected {', '.join(routes[:-1])} or {routes[-1]}"
        elif err.status_code == 405 and request.url.path in ENDPOINTS:
            message = f"{where}: method not allowed; expected {ENDPOINTS[request.url.path]}"
        else:
            message = f"{where}: {err.detail}"
        return JSONResponse({"error": message, "detail": None}, err.status_code, headers=err.headers)

    @app.middleware("http")
    async def count_and_time(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        endpoint = request.url.path if request.url.path in ENDPOINTS else "other"
        try:
            state.authorize(request)
            response = await call_next(request)
        except ApiError as err:
            response = await api_error(request, err)
        except Exception as err:  # noqa: BLE001 - the model or a bug: a 500 in the error format, counted, logged
            log.exception("%s %s failed", request.method, request.url.path)
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            response = await api_error(request, ApiError(500, f"internal error: {message}", type(err).__name__))
        state.metrics.requests.labels(endpoint, str(response.status_code)).inc()
        state.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready = state.batcher is not None
        return JSONResponse({"ready": ready, "model": model_name or str(scorer.model_dir)}, 200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/score")
    async def score(request: Request) -> dict:
        body = _validate(ScoreRequest, await _read_json(request, config.max_request_bytes))
        if len(body.rows) > config.max_rows:
            raise ApiError(413, f"rows: {len(body.rows)} rows, more than serve.max_rows = {config.max_rows}")
        for i, row in enumerate(body.rows):
            _check_chars(f"rows.{i}.prompt", _prompt_chars(row.prompt), config)
            _check_chars(f"rows.{i}.response", len(row.response), config)
        chars = sum(_prompt_chars(r.prompt) + len(r.response) for r in body.rows)
        rewards = await state.rewards([_plain(r.prompt) for r in body.rows], [r.response for r in body.rows], False,
                                      chars)
        out: dict[str, Any] = {"rewards": rewards.astype(float).tolist()}
        win = scorer.win_prob(rewards)
        if win is not None:
            out["win_prob"] = win.tolist()
        return out

    @app.post("/rerank")
    async def rerank(request: Request) -> dict:
        body = _validate(RerankRequest, await _read_json(request, config.max_request_bytes))
        if len(body.candidates) > config.max_candidates:
            raise ApiError(413, f"candidates: {len(body.candidates)} candidates, more than serve.max_candidates "
                                f"= {config.max_candidates}")
        _check_chars("prompt", _prompt_chars(body.prompt), config)
        for i, text in enumerate(body.candidates):
            _check_chars(f"candidates.{i}", len(text), config)
        chars = _prompt_chars(body.prompt) * len(body.candidates) + sum(map(len, body.candidates))
        rewards = await state.rewards([_plain(body.prompt)], body.candidates, True, chars)
        rank, beats = rank_group(rewards, scorer.temperature)
        win = scorer.win_prob(rewards)
        results = []
        for i in np.argsort(rank)[: body.top_k or len(rank)]:
            item = {"index": int(i), "reward": float(rewards[i]), "rank": int(rank[i]), "beats_others": float(beats[i])}
            if win is not None:
                item["win_prob"] = float(win[i])
            results.append(item)
        return {"results": results}

    return app


def check_listen(host: str, port: int) -> None:
    """Fail before the model loads where uvicorn could not listen (it logs a bare ``ERROR:`` line and exits 3): a
    host that is no address of this machine is :class:`~rewardline.errors.ConfigError` (exit 2), a port in use
    :class:`~rewardline.errors.TransientError` (exit 3: free later). The port is bound and released at once."""
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise ConfigError(f"serve.host {host!r}: not an address ({err.strerror}); expected an address of this "
                          "machine such as 127.0.0.1 or 0.0.0.0") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise TransientError(f"serve.port {port}: already in use on {host}; expected a free port "
                                     "(stop what holds it, or give another --port)") from None
            raise ConfigError(f"serve.host {host!r}, port {port}: cannot listen there ({err.strerror}); expected "
                              "an address of this machine and a port this user may open") from None


def serve(model_dir: Path | str, config: ServeConfig, api_key_file: Path | None = None,
          device: str = "auto", model_name: str | None = None) -> dict[str, Any]:
    """Load the model, then serve until interrupted (SIGINT / SIGTERM); returns what was served. ``model_name``:
    how /readyz, the log and the result name the model (a registry URI and its version; default: the directory)."""
    import uvicorn

    check_listen(config.host, config.port)
    api_key = load_api_key(api_key_file)
    if api_key is None and config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without an API key: anyone who reaches the port can use the model "
                    "(set %s or --api-key-file)", config.host, API_KEY_ENV)
    if config.torch_threads > 0:
        import torch

        torch.set_num_threads(config.torch_threads)  # process-wide: the forward thread's OpenMP team too
    scorer = RewardScorer(model_dir, device, config.batch_tokens)
    model_name = model_name or str(model_dir)
    app = create_app(scorer, config, api_key, model_name)
    log.info("serving %s on http://%s:%d (API key: %s)", model_name, config.host, config.port,
             "required" if api_key else "none")
    uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                                  access_log=False)).run()
    scored = app.state.rewardline.metrics.registry.get_sample_value("rewardline_rows_scored_total") or 0
    return {"model": model_name, "url": f"http://{config.host}:{config.port}", "rows_scored": int(scored)}
