"""Structure of ``infra/docker-compose.yml`` (Docker does not run here: the file is checked, not run)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
COMPOSE = INFRA / "docker-compose.yml"
REQUIRED = {"s3", "postgres", "mlflow", "prefect-server", "prefect-worker"}
PUBLISHED = {"s3": 8333, "mlflow": 5000, "prefect-server": 4200}  # container ports; nothing else is published
ONE_SHOT = {"create-buckets"}
SERVICE_KEYS = {
    "image", "build", "command", "entrypoint", "environment", "volumes", "ports", "healthcheck", "depends_on",
    "restart", "profiles", "deploy",
}  # fmt: skip
SECRET_NAMES = re.compile(r"(PASSWORD|SECRET|ACCESS_KEY|TOKEN|AUTH_STRING)", re.IGNORECASE)
VAR = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?::?[-?][^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def test_services_and_keys(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= REQUIRED
    for name, service in services.items():
        assert set(service) <= SERVICE_KEYS, f"{name}: unknown keys {set(service) - SERVICE_KEYS}"
        assert "image" in service or "build" in service, f"{name}: no image or build"
        image = service.get("image", "")
        assert not image.endswith(":latest") and (":" in image or "build" in service), f"{name}: unpinned {image}"


def test_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if name in ONE_SHOT:
            continue
        check = service.get("healthcheck")
        assert check, f"{name}: no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) >= 2
        for key in ("interval", "timeout"):
            assert re.fullmatch(r"\d+(ms|s|m)", check[key]), f"{name}: {key}={check[key]!r}"
        assert int(check["retries"]) > 0


def test_depends_on_conditions(services: dict[str, dict[str, Any]]) -> None:
    allowed = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        for dep, spec in service.get("depends_on", {}).items():
            assert dep in services and dep != name, f"{name} depends on unknown {dep}"
            assert spec["condition"] in allowed
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health, which has no check"
            if spec["condition"] == "service_completed_successfully":
                assert dep in ONE_SHOT
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["prefect-server"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["prefect-worker"]["depends_on"]["prefect-server"]["condition"] == "service_healthy"


def test_volumes_declared_and_mounts_exist(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith((".", "/")):
                assert (INFRA / source).exists(), f"{name}: bind mount {source} missing"
            else:
                assert source in declared, f"{name}: volume {source} not declared"
                used.add(source)
    assert used == declared and {"s3-data", "postgres-data"} <= declared


def test_ports_only_where_intended(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        ports = service.get("ports", [])
        if name not in PUBLISHED:
            assert not ports, f"{name} must not publish ports"
            continue
        [port] = ports
        host, _, container = port.rpartition(":")
        assert int(container) == PUBLISHED[name]
        assert host.startswith("${BIND_ADDRESS:-127.0.0.1}:"), f"{name}: bind address must default to loopback"


def test_backends_and_artifacts(services: dict[str, dict[str, Any]]) -> None:
    mlflow = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri=postgresql" in mlflow and "@postgres:5432/mlflow" in mlflow
    assert "--artifacts-destination=s3://" in mlflow and "--serve-artifacts" in mlflow
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://s3:8333"
    prefect_db = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert prefect_db.startswith("postgresql+asyncpg://") and prefect_db.endswith("@postgres:5432/prefect")
    assert services["prefect-worker"]["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert "prefecthq/prefect:" in services["prefect-server"]["image"] and "3.8" in services["prefect-server"]["image"]
    init = (INFRA / "postgres" / "init-databases.sh").read_text()
    assert "mlflow" in init and "prefect" in init


def test_no_literal_secrets(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        env = service.get("environment", {})
        assert isinstance(env, dict), f"{name}: use the mapping form of environment"
        for key, value in env.items():
            if SECRET_NAMES.search(key):
                assert VAR.fullmatch(str(value)), f"{name}: {key} must come from ${{VAR}}, not a literal"
    for text in _strings(compose):
        for url in re.findall(r"://[^/\s]*@", text):  # user:password@host in a URL
            password = url[3:-1].partition(":")[2]
            assert VAR.fullmatch(password), f"literal password in {text!r}"


def test_env_example_covers_required_vars() -> None:
    required = {m["name"] for m in VAR.finditer(COMPOSE.read_text()) if ":?" in m.group(0)}
    lines = (INFRA / ".env.example").read_text().splitlines()
    example = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    assert required and required <= set(example), required - set(example)
    for key, value in example.items():
        if SECRET_NAMES.search(key):
            assert value.startswith("change-me"), f".env.example: {key} must be a placeholder"
    assert ".env" in (INFRA / ".gitignore").read_text().split()


def test_who_may_promote_and_prefect_api_auth(services: dict[str, dict[str, Any]]) -> None:
    """MLflow runs its basic-auth app with a READ default; Prefect's server and every client share the auth
    string; the worker authenticates to MLflow; all of it from ${VAR}s (infra/.env), none from params."""
    mlflow = services["mlflow"]
    assert "--app-name=basic-auth" in mlflow["command"]
    env = mlflow["environment"]
    ini = INFRA / "mlflow" / "basic_auth.ini"
    assert f"./mlflow/basic_auth.ini:{env['MLFLOW_AUTH_CONFIG_PATH']}:ro" in mlflow["volumes"]
    text = ini.read_text()
    assert "default_permission = READ" in text and "admin_password" not in text.replace("# ", "")
    assert VAR.fullmatch(env["MLFLOW_AUTH_ADMIN_PASSWORD"]) and VAR.fullmatch(env["MLFLOW_FLASK_SERVER_SECRET_KEY"])
    server = services["prefect-server"]["environment"]["PREFECT_SERVER_API_AUTH_STRING"]
    for worker in ("prefect-worker", "prefect-worker-gpu"):
        worker_env = services[worker]["environment"]
        assert worker_env["PREFECT_API_AUTH_STRING"] == server and VAR.fullmatch(server)
        assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= set(worker_env)
