"""Scoring many candidates: ``rerank`` (in-process, a rows file) and ``serve`` (HTTP, dynamic batching)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rewardline.cli.app import (
    ROWS_LAYOUTS,
    ActorsOpt,
    EngineOpt,
    ModelOpt,
    ParamsOpt,
    RayAddressOpt,
    SetOpt,
    _ray_options,
    _row_limits,
    _run,
    _section,
    app,
)
from rewardline.config import build, parse_overrides


@app.command()
def rerank(
    model: ModelOpt,
    input: Annotated[str, typer.Option("--input", help=f"candidate rows with prompt and response: {ROWS_LAYOUTS}")],
    out: Annotated[str, typer.Option("--out", help="output rows grouped by prompt, best first, with reward, rank, "
                                                    f"beats_others (and win_prob): {ROWS_LAYOUTS}")],
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, help="keep the best K of each prompt")] = None,
    batch_tokens: Annotated[int, typer.Option(min=64, help="token budget of one forward batch")] = 16384,
    params: ParamsOpt = Path("params.yaml"),
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    actors: ActorsOpt = None,
) -> None:
    """Rank each prompt's candidates by reward: grouped by prompt, scored in token-budget batches.

    Input rows as for ``score``: the first malformed row exits 2 naming file, line and field, and so does a row
    over the size bounds (``ingest.max_record_bytes``, ``max_prompt_chars``, ``max_response_chars`` of
    params.yaml, else their defaults). ``--engine ray``: the same output, the rewards scored by model actors on
    a Ray cluster."""
    from rewardline.registry.champion import model_dir

    ray = _ray_options(engine, ray_address, actors)

    def action() -> dict:
        bounds = _row_limits(params)
        with model_dir(model) as path:
            if ray is not None:
                from rewardline.serving.ray_engine import rerank_jsonl_ray

                return rerank_jsonl_ray(path, input, out, top_k, batch_tokens, ray, limits=bounds)
            from rewardline.serving.rerank_file import rerank_jsonl

            return rerank_jsonl(path, input, out, top_k, batch_tokens, limits=bounds)

    _run(action)


@app.command()
def serve(
    model: ModelOpt,
    host: Annotated[str | None, typer.Option(help="bind address (default serve.host: 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default serve.port: 8000)")] = None,
    api_key_file: Annotated[Path | None, typer.Option(
        help="file holding the API key, mode 600 (else $REWARDLINE_API_KEY; neither: no key)")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps")] = "auto",
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Serve /score and /rerank over HTTP with dynamic batching, limits (413 / 422), /healthz, /readyz,
    /metrics (Prometheus). Limits and batching: params.yaml ``serve`` section or --set serve.KEY=VALUE."""
    from rewardline.registry.champion import model_dir, pinned
    from rewardline.serving.config import ServeConfig
    from rewardline.serving.server import serve as run_server

    def action() -> dict:
        overrides = parse_overrides(set_ or [], "serve")
        overrides.update({k: v for k, v in (("host", host), ("port", port)) if v is not None})
        config = build(ServeConfig, _section(params, "serve"), overrides, source=str(params))
        source, label = pinned(model)  # an alias: the version it points to now, loaded and named alike
        with model_dir(source) as path:  # a registry URI's bundle stays downloaded while the server runs
            return run_server(path, config, api_key_file, device, label)

    _run(action)
