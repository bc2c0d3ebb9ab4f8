"""`rewardline serve` as a real uvicorn process on a free loopback port with the tiny model: scores equal
in-process scoring, rerank order, API key, 413 / 422 with messages, batching of concurrent requests,
metrics, and the server still serving after each bad request."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import _free_ports, save_tiny_reward_model
from test_rerank import alpaca_candidates

from rewardline.errors import ConfigError
from rewardline.modeling.score import score_texts
from rewardline.serving.server import load_api_key

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]
KEY = "test-key-1234"
AUTH = {"Authorization": f"Bearer {KEY}"}
LIMITS = {"max_request_bytes": 65536, "max_candidates": 16, "max_rows": 64, "max_chars": 4000, "max_wait_ms": 30}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_reward_model(tmp_path_factory.mktemp("serve"), max_length=64, reward_mean=0.25)


@contextlib.contextmanager
def serving(model_dir: Path, home: Path) -> Iterator[str]:
    """``rewardline serve`` of ``model_dir`` in its own process group; the URL once /readyz answers 200."""
    port = _free_ports(1)[0]
    env = {"PYTHONPATH": str(ROOT), "PATH": os.environ["PATH"], "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HOME": str(home), "REWARDLINE_API_KEY": KEY}
    sets = [arg for key, value in LIMITS.items() for arg in ("--set", f"{key}={value}")]
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "rewardline.cli", "serve", "--model", str(model_dir),
                             "--port", str(port), *sets], cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            assert proc.poll() is None, (home / "server.log").read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server not ready in 180 s: " + (home / "server.log").read_text()
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tiny model served for the module's tests."""
    with serving(model_dir, tmp_path_factory.mktemp("serve-home")) as url:
        yield url


def alive(url: str) -> None:
    """The server still scores after whatever came before."""
    got = httpx.post(f"{url}/score", json={"rows": [{"prompt": "hi", "response": "hello"}]}, headers=AUTH, timeout=30)
    assert got.status_code == 200 and len(got.json()["rewards"]) == 1


def assert_422(server: str, cases: dict[bytes, str]) -> None:
    """Each raw body gets 422 with its message in ``error`` (``/rerank`` when it has candidates, else ``/score``),
    and the server still answers afterwards."""
    for body, message in cases.items():
        path = "/rerank" if b"candidates" in body else "/score"
        got = httpx.post(f"{server}{path}", content=body, headers={**AUTH, "Content-Type": "application/json"})
        assert got.status_code == 422, (body, got.text)
        assert message in got.json()["error"], (body, got.json())
    alive(server)


def test_score_equals_in_process_scoring(server: str, model_dir: Path):
    rows = alpaca_candidates()[:30]
    got = httpx.post(f"{server}/score", json={"rows": [{"prompt": r["prompt"], "response": r["response"]}
                                                       for r in rows]}, headers=AUTH, timeout=60)
    assert got.status_code == 200, got.text
    expected = score_texts(model_dir, [r["prompt"] for r in rows], [r["response"] for r in rows])
    np.testing.assert_allclose(got.json()["rewards"], expected, atol=1e-5)
    messages = [{"role": "user", "content": "What is 2+2?"}]
    got = httpx.post(f"{server}/score", json={"rows": [{"prompt": messages, "response": "4"}]}, headers=AUTH)
    np.testing.assert_allclose(got.json()["rewards"], score_texts(model_dir, [messages], ["4"]), atol=1e-5)


def test_rerank_order_equals_sorting_by_reward(server: str, model_dir: Path):
    rows = alpaca_candidates()
    prompt = rows[0]["prompt"]
    candidates = [r["response"] for r in rows if r["prompt"] == prompt]
    expected = score_texts(model_dir, [prompt] * len(candidates), candidates)
    got = httpx.post(f"{server}/rerank", json={"prompt": prompt, "candidates": candidates},
                     headers={"X-API-Key": KEY}, timeout=60)
    assert got.status_code == 200, got.text
    results = got.json()["results"]
    assert [r["index"] for r in results] == np.argsort(-expected, kind="stable").tolist()
    assert [r["rank"] for r in results] == [1, 2, 3, 4]
    np.testing.assert_allclose([r["reward"] for r in results], np.sort(expected)[::-1], atol=1e-5)
    top = httpx.post(f"{server}/rerank", json={"prompt": prompt, "candidates": candidates, "top_k": 1},
                     headers=AUTH).json()["results"]
    assert [r["index"] for r in top] == [results[0]["index"]]


def test_api_key_is_required_except_for_health(server: str):
    body = {"rows": [{"prompt": "hi", "response": "hello"}]}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}):
        got = httpx.post(f"{server}/score", json=body, headers=headers)
        assert got.status_code == 401 and "API key" in got.json()["error"]
    assert httpx.get(f"{server}/metrics").status_code == 401
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server}/readyz").status_code == 200
    alive(server)


def test_oversize_requests_get_413_and_the_server_stays_up(server: str):
    big = {"rows": [{"prompt": "p", "response": "x" * 3999}] * 20}  # ~80 kB > max_request_bytes
    got = httpx.post(f"{server}/score", json=big, headers=AUTH, timeout=30)
    assert got.status_code == 413 and "max_request_bytes = 65536" in got.json()["error"]
    alive(server)
    got = httpx.post(f"{server}/rerank", json={"prompt": "p", "candidates": ["a"] * 17}, headers=AUTH)
    assert got.status_code == 413 and got.json()["error"].startswith("candidates: 17 candidates, more than")
    got = httpx.post(f"{server}/score", json={"rows": [{"prompt": "p", "response": "a"}] * 65}, headers=AUTH)
    assert got.status_code == 413 and "max_rows = 64" in got.json()["error"]
    got = httpx.post(f"{server}/rerank", json={"prompt": "p", "candidates": ["a", "y" * 4001]}, headers=AUTH)
    assert got.status_code == 413 and got.json()["error"] == ("candidates.1: 4001 characters, more than "
                                                              "serve.max_chars = 4000")
    alive(server)


def test_malformed_requests_get_422_naming_the_field(server: str):
    cases = {
        b'{"rows": [': "body: not valid JSON",
        # arrays nested 30,000 deep, under max_request_bytes (was a 500: RecursionError in the JSON parser)
        b'{"rows": ' + b"[" * 30_000 + b"]" * 30_000 + b"}": "body: not valid JSON (nested too deeply",
        b'{"rows": [{"prompt": "hi"}]}': "rows.0.response: Field required",
        b'{"rows": [{"prompt": "hi", "response": 3}]}': "rows.0.response: Input should be a valid string",
        b'{"rows": []}': "rows: List should have at least 1 item",
        b'{"prompt": "p", "candidates": ["a"], "top_k": 0}': "top_k: Input should be greater than or equal to 1",
        # was accepted as top_k 1 / 2 (pydantic's lax coercion): a JSON integer only
        b'{"prompt": "p", "candidates": ["a", "b"], "top_k": true}': "top_k: Input should be a valid integer",
        b'{"prompt": "p", "candidates": ["a", "b"], "top_k": "2"}': "top_k: Input should be a valid integer",
        b'{"prompt": "p", "candidates": ["a", "b"], "top_k": 2.0}': "top_k: Input should be a valid integer",
        # a role no chat template knows (was scored, rendered as a "Robot:" turn), as ingest and score refuse it
        b'{"rows": [{"prompt": [{"role": "robot", "content": "hi"}], "response": "r"}]}':
            "rows.0.prompt.list[Message].0.role: Value error, expected one of assistant, system, user, got 'robot'",
        # an empty prompt, as score and ingest refuse it ("" was refused as "at least 1 item", "  " was scored)
        b'{"rows": [{"prompt": "", "response": "r"}]}': "rows.0.prompt: Value error, empty prompt text; expected a "
                                                        "non-empty string",
        b'{"rows": [{"prompt": " \\n", "response": "r"}]}': "rows.0.prompt: Value error, empty prompt text",
        b'{"rows": [{"prompt": [{"role": "user", "content": ""}], "response": "r"}]}':
            "rows.0.prompt: Value error, empty prompt text",
        b'{"prompt": " ", "candidates": ["a"]}': "prompt: Value error, empty prompt text",
        b'{"prompt": [], "candidates": ["a"]}': "prompt: Value error, expected a string or a list of {role, content} "
                                                "messages, got an empty array",
    }
    assert_422(server, cases)


def test_a_lone_surrogate_gets_422_naming_the_field(server: str):
    """Half a surrogate pair as a JSON escape (was a 500 "Internal Server Error" from the tokenizer)."""
    surrogate = "not valid Unicode (a lone surrogate \\ud800 at character 2); expected text that UTF-8 can encode"
    cases = {
        b'{"rows": [{"prompt": "hi", "response": "ab\\ud800"}]}': f"rows.0.response: Value error, {surrogate}",
        b'{"rows": [{"prompt": "ab\\ud800", "response": "r"}]}': f"rows.0.prompt: Value error, {surrogate}",
        b'{"rows": [{"prompt": [{"role": "user", "content": "ab\\ud800"}], "response": "r"}]}':
            f"rows.0.prompt.list[Message].0.content: Value error, {surrogate}",
        b'{"prompt": "p", "candidates": ["a", "ab\\ud800"]}': f"candidates.1: Value error, {surrogate}",
    }
    assert_422(server, cases)


def test_an_unknown_path_or_method_gets_the_error_body(server: str):
    """Were FastAPI's own {"detail": "Not Found"} / {"detail": "Method Not Allowed"}, without the "error" key every
    other error answer has."""
    got = httpx.post(f"{server}/scores", json={"rows": []}, headers=AUTH)
    assert got.status_code == 404
    assert got.json()["error"] == "POST /scores: no such endpoint; expected POST /score, POST /rerank, GET /healthz, " \
                                  "GET /readyz or GET /metrics"
    got = httpx.get(f"{server}/score", headers=AUTH)
    assert got.status_code == 405 and got.headers["allow"] == "POST"
    assert got.json()["error"] == "GET /score: method not allowed; expected POST"
    alive(server)


def _metric(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M))


def test_concurrent_requests_are_batched_and_metrics_count_them(server: str):
    rows = alpaca_candidates()
    prompts = list(dict.fromkeys(r["prompt"] for r in rows))
    before = httpx.get(f"{server}/metrics", headers=AUTH).text

    def call(prompt: str) -> int:
        body = {"prompt": prompt, "candidates": [r["response"] for r in rows if r["prompt"] == prompt]}
        return httpx.post(f"{server}/rerank", json=body, headers=AUTH, timeout=60).status_code

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(call, prompts[:16])) == [200] * 16
    after = httpx.get(f"{server}/metrics", headers=AUTH).text
    batches = _metric(after, "rewardline_batch_requests_count") - _metric(before, "rewardline_batch_requests_count")
    requests = _metric(after, "rewardline_batch_requests_sum") - _metric(before, "rewardline_batch_requests_sum")
    assert requests == 16 and batches < 16  # some forward pass served more than one request
    assert 'rewardline_requests_total{endpoint="/rerank",status="200"}' in after
    assert _metric(after, "rewardline_ready") == 1.0
    assert "rewardline_request_latency_seconds_bucket" in after


def test_a_model_failing_at_serving_time_gets_a_500_with_an_error_body_counted_in_metrics(model_dir: Path,
                                                                                           tmp_path: Path):
    """A model whose rewards are NaN (was a bare text/plain "Internal Server Error", absent from
    rewardline_requests_total); the server keeps serving."""
    import torch

    from rewardline.modeling.model import RewardModel

    model, tokenizer = RewardModel.load(model_dir)
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    model.save(tmp_path / "nan-model", tokenizer)
    with serving(tmp_path / "nan-model", tmp_path) as url:
        for _ in range(2):
            got = httpx.post(f"{url}/score", json={"rows": [{"prompt": "hi", "response": "r"}]}, headers=AUTH,
                             timeout=60)
            assert got.status_code == 500, got.text
            assert got.json()["error"].startswith("internal error: ") and "1 of 1 rewards are not finite" in \
                got.json()["error"], got.json()
        metrics = httpx.get(f"{url}/metrics", headers=AUTH).text
        assert _metric(metrics, 'rewardline_requests_total{endpoint="/score",status="500"}') == 2.0
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_api_key_file_must_be_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    key = tmp_path / "key"
    key.write_text("s3cret\n")
    key.chmod(0o644)
    with pytest.raises(ConfigError, match="mode 644 lets others read it; expected 600"):
        load_api_key(key)
    key.chmod(0o600)
    assert load_api_key(key) == "s3cret"
    monkeypatch.setenv("REWARDLINE_API_KEY", "from-env")
    assert load_api_key(None) == "from-env"
    monkeypatch.delenv("REWARDLINE_API_KEY")
    assert load_api_key(None) is None


@pytest.mark.parametrize(("device", "message"), [
    ("tpu", "error: device 'tpu': not a device name; expected auto, cpu, cuda, cuda:N or mps"),
    ("cuda:99", "error: device 'cuda:99': this machine has "),
])
def test_a_device_the_machine_lacks_exits_2_naming_it(model_dir: Path, tmp_path: Path, device: str, message: str):
    """--device that is no device name, or one this machine lacks: exit 2 before the port opens (was exit 3:
    ``internal error: RuntimeError: Expected one of cpu, cuda, ...`` / ``AttributeError: ... _cuda_setDevice``)."""
    done = subprocess.run([sys.executable, "-m", "rewardline.cli", "serve", "--model", str(model_dir), "--device",
                           device, "--port", str(_free_ports(1)[0]), "--params", str(tmp_path / "none.yaml")],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


def test_where_serve_cannot_listen_it_says_so_before_loading_the_model(model_dir: Path, tmp_path: Path):
    """A port in use: exit 3 (free later), a host that is no address: exit 2, each with one ``error:`` line naming
    it (was: the model loaded, then uvicorn's bare ``ERROR: [Errno 98] ...`` / ``[Errno -2] ...``, exit 3)."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    cases = {("127.0.0.1", port): (3, f"error: serve.port {port}: already in use on 127.0.0.1"),
             ("999.1.1.1", 8123): (2, "error: serve.host '999.1.1.1': not an address")}
    with held:
        for (host, port_given), (code, message) in cases.items():
            done = subprocess.run([sys.executable, "-m", "rewardline.cli", "serve", "--model", str(model_dir),
                                   "--host", host, "--port", str(port_given), "--params", str(tmp_path / "none.yaml")],
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                                  timeout=120)
            assert done.returncode == code and message in done.stderr, done.stderr
            assert "serving " not in done.stderr  # refused before the model loaded
