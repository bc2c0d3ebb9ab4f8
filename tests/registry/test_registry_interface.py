"""The :class:`ModelRegistry` interface on the MLflow backend, against a real sqlite store in a temp dir.

One module-scoped store holds two versions of a tiny (random, seeded) reward model bundle:
version 1 with passed gates, version 2 with a failed one. Also: the champion reference helpers,
the pyfunc model under its old ``loader_module`` (``rewardline.tracking``), and the import
boundaries (only ``rewardline/registry`` imports MLflow; training and evaluation import no registry).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rewardline.errors import ConfigError, GateFailed
from rewardline.registry import ModelRegistry, open_registry
from rewardline.registry.base import parse_model_uri, promote, registry_summary
from rewardline.registry.champion import resolved_model_dir, split_champion
from rewardline.registry.mlflow_backend import MlflowRegistry, experiment_id
from rewardline.registry.names import CHALLENGER, CHAMPION, MODEL_NAME, model_uri

PACKAGE = Path(__file__).parents[2] / "rewardline"
PASSED = {"gates_passed": "true", "gate.min_accuracy.passed": "true", "git_commit": "abc1234"}
FAILED = {"gates_passed": "false", "gate.min_accuracy.passed": "false", "gate.max_ece.passed": "true"}
ROWS = pd.DataFrame({"prompt": ["How do I boil an egg?", "Name a prime number.", "Say hi."],
                     "response": ["Boil it for nine minutes.", "7", "Hi!"],
                     "response_b": ["Eggs are food.", None, "Go away."]})


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reward model directory from the seeded tiny BERT, with a calibration (T = 1.7) as a bundle has."""
    from transformers import AutoTokenizer

    from rewardline.modeling.formatting import FormatConfig
    from rewardline.modeling.model import RewardModel
    from rewardline.modeling.tiny import build_tiny_bert

    root = tmp_path_factory.mktemp("bundle")
    tokenizer = AutoTokenizer.from_pretrained(build_tiny_bert(root / "backbone"))
    model = RewardModel.from_backbone(str(root / "backbone"), format_config=FormatConfig(max_length=48))
    model.config.reward_mean = 0.25
    model.save(root / "bundle", tokenizer)
    (root / "bundle" / "calibration.json").write_text(json.dumps({"temperature": 1.7, "reward_mean": 0.25}))
    (root / "bundle" / "evaluate_metrics.json").write_text(json.dumps({"accuracy": 0.5}))
    return root / "bundle"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, bundle: Path) -> Iterator[tuple[MlflowRegistry, Path]]:
    """The project's embedded store (no ``MLFLOW_TRACKING_URI``) with versions 1 (gates passed) and 2 (failed)."""
    project = tmp_path_factory.mktemp("project")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        registry = open_registry(project)
        assert isinstance(registry, MlflowRegistry) and isinstance(registry, ModelRegistry)
        assert registry.tracking_uri == f"sqlite:///{project.resolve() / 'mlflow.db'}"
        # looking at a store that was never written answers "nothing" and does not create it
        assert registry.resolve_alias(MODEL_NAME, CHAMPION) is None and registry.list_versions(MODEL_NAME) == []
        assert registry.load(model_uri()) is None and registry.get_version(MODEL_NAME, 1) is None
        assert not (project / "mlflow.db").exists()

        first = registry.register(MODEL_NAME, bundle, PASSED, description="gate report 1")
        second = registry.register(MODEL_NAME, bundle, FAILED, description="gate report 2")
        assert (first.version, second.version) == ("1", "2")
        registry.set_alias(MODEL_NAME, CHAMPION, first.version)
        registry.set_alias(MODEL_NAME, CHALLENGER, second.version)
        yield registry, project


def test_register_sets_tags_description_and_run(store: tuple[MlflowRegistry, Path]):
    registry, project = store
    version = registry.get_version(MODEL_NAME, "1")
    assert version is not None and version.version == "1" and version.aliases == (CHAMPION,)
    calibration = {"calibration.objective": "bt", "calibration.temperature": "1.7"}  # from the bundle; no link
    assert dict(version.tags) == {**PASSED, **calibration} and version.description == "gate report 1"
    assert version.gates_passed
    assert version.uri == "models:/reward-model/1" and version.created is not None
    from mlflow import MlflowClient

    run = MlflowClient(registry.tracking_uri).get_run(version.run_id)  # a run of its own, in `rewardline`
    assert run.info.run_name == "register" and run.info.experiment_id == experiment_id(
        "rewardline", registry.tracking_uri)
    assert (project / "mlartifacts" / "rewardline").is_dir()  # artifacts next to the store, not in the cwd


def test_aliases_resolve_and_move(store: tuple[MlflowRegistry, Path]):
    registry, _ = store
    assert registry.resolve_alias(MODEL_NAME, CHAMPION) == "1"
    assert registry.resolve_alias(MODEL_NAME, CHALLENGER) == "2"
    assert registry.resolve_alias(MODEL_NAME, "staging") is None
    assert registry.resolve_alias("no-such-model", CHAMPION) is None
    registry.set_alias(MODEL_NAME, "staging", 2)
    assert registry.resolve_alias(MODEL_NAME, "staging") == "2"
    registry.set_alias(MODEL_NAME, "staging", "1")
    assert registry.resolve_alias(MODEL_NAME, "staging") == "1"


def test_list_versions_with_their_aliases_and_tags(store: tuple[MlflowRegistry, Path]):
    registry, _ = store
    registry.set_alias(MODEL_NAME, "staging", "1")
    versions = registry.list_versions(MODEL_NAME)
    assert [(v.version, v.aliases, v.gates_passed) for v in versions] == [
        ("1", (CHAMPION, "staging"), True), ("2", (CHALLENGER,), False)]
    assert versions[1].failed_gates() == ["min_accuracy"]
    assert registry.list_versions("no-such-model") == [] and registry.get_version(MODEL_NAME, 9) is None
    summary = registry_summary(registry, MODEL_NAME)
    assert summary["aliases"] == {CHALLENGER: 2, CHAMPION: 1, "staging": 1}
    assert [(v["version"], v["gates_passed"], v["git_commit"]) for v in summary["versions"]] == [
        (1, True, "abc1234"), (2, False, None)]


def test_load_by_alias_version_or_directory(store: tuple[MlflowRegistry, Path], bundle: Path, tmp_path: Path):
    registry, _ = store
    by_alias = registry.load(model_uri(MODEL_NAME, CHAMPION), tmp_path / "alias")
    by_version = registry.load(model_uri(MODEL_NAME, version=2), tmp_path / "version")
    for local in (by_alias, by_version):
        assert local is not None and local.is_relative_to(tmp_path)
        assert sorted(p.name for p in local.iterdir()) == sorted(p.name for p in bundle.iterdir())
        assert (local / "model.safetensors").read_bytes() == (bundle / "model.safetensors").read_bytes()
    assert registry.load(model_uri(MODEL_NAME, "nobody"), tmp_path / "x") is None
    assert registry.load(model_uri(MODEL_NAME, version=7), tmp_path / "x") is None
    assert registry.load(model_uri("no-such-model"), tmp_path / "x") is None
    assert registry.load(str(bundle)) == bundle  # a plain model directory: as it is
    with pytest.raises(ConfigError, match="not a reward model directory"):
        registry.load(str(tmp_path))


def test_promote_checks_gates_and_returns_the_previous_version(store: tuple[MlflowRegistry, Path]):
    registry, _ = store
    registry.set_alias(MODEL_NAME, "prod", "1")
    with pytest.raises(GateFailed, match=r"gates_passed tag is 'false' \(failed: min_accuracy\)"):
        promote(registry, MODEL_NAME, "2", alias="prod")
    assert registry.resolve_alias(MODEL_NAME, "prod") == "1"
    with pytest.raises(ConfigError, match="has no version 5"):
        promote(registry, MODEL_NAME, 5, alias="prod")
    assert promote(registry, MODEL_NAME, "2", alias="prod", require_gates=False) == "1"
    assert registry.resolve_alias(MODEL_NAME, "prod") == "2"
    assert promote(registry, MODEL_NAME, "1", alias="new-alias") is None


def test_champion_reference_is_split_from_the_evaluate_section_and_resolved(
        store: tuple[MlflowRegistry, Path], bundle: Path):
    registry, _ = store
    section = {"champion_model": model_uri(), "min_accuracy": 0.55}
    assert split_champion(section) == (model_uri(), {"min_accuracy": 0.55})
    assert section == {"champion_model": model_uri(), "min_accuracy": 0.55}  # the caller's dict is kept
    assert split_champion({"champion_model": "", "x": 1}) == (None, {"x": 1})
    assert split_champion(None) == (None, {})
    with resolved_model_dir(model_uri(), registry) as champion:
        assert champion is not None and (champion / "reward_config.json").exists()
    assert not champion.exists()  # the download lives for the block only
    with resolved_model_dir(model_uri(MODEL_NAME, "nobody"), registry) as missing:
        assert missing is None
    with resolved_model_dir(bundle) as local, resolved_model_dir(None) as none:
        assert local == bundle and none is None


def test_model_uris_parse():
    assert parse_model_uri("models:/reward-model@champion") == ("reward-model", None, "champion")
    assert parse_model_uri("models:/reward-model/12") == ("reward-model", "12", None)
    assert parse_model_uri("runs:/abc/reward_model") is None and parse_model_uri("/a/dir") is None


def test_a_model_logged_with_the_old_loader_module_loads_and_predicts_the_same(
        store: tuple[MlflowRegistry, Path], bundle: Path):
    """Versions registered before the registry package name ``loader_module: rewardline.tracking``."""
    import mlflow
    import yaml

    from rewardline.registry.pyfunc import LOADER_MODULE, RewardScorer, log_model_bundle

    registry, _ = store
    mlflow.set_tracking_uri(registry.tracking_uri)
    with mlflow.start_run(experiment_id=experiment_id("rewardline", registry.tracking_uri)):
        old = log_model_bundle(bundle, loader_module="rewardline.tracking")
        new = log_model_bundle(bundle)
    predictions = {}
    for label, info in (("old", old), ("new", new)):
        local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
        flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
        assert flavor["loader_module"] == {"old": "rewardline.tracking", "new": LOADER_MODULE}[label]
        predictions[label] = mlflow.pyfunc.load_model(info.model_uri).predict(ROWS)  # <loader_module>._load_pyfunc
    direct = RewardScorer(bundle).predict(ROWS)
    assert list(predictions["old"].columns) == ["reward", "reward_b", "p_prefer"]
    old_values, new_values, direct_values = (frame.to_numpy(dtype=float, na_value=np.nan)
                                             for frame in (predictions["old"], predictions["new"], direct))
    np.testing.assert_allclose(old_values, new_values, rtol=1e-6)
    np.testing.assert_allclose(old_values, direct_values, rtol=1e-6)
    # no response_b in row 1: missing (pandas' NA, null in served JSON), not NaN
    assert predictions["old"]["p_prefer"].isna().tolist() == [False, True, False]
    assert direct["reward_b"].dtype == "Float64" and '"reward_b":null' in direct.to_json(orient="records")


def _imports(path: Path) -> set[str]:
    """The modules ``path`` imports (``import a.b`` and ``from a.b import c`` → ``a.b``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(("prompt", "response", "message"), [
    # were scored: a "Robot:" turn, an empty transcript, and a TypeError from the tokenizer; score and serve refuse them
    ([{"role": "robot", "content": "hi"}], "r", "row 2: field 'prompt[0].role': expected one of assistant, system, "
                                               "user, got 'robot'"),
    ([], "r", "row 2: field 'prompt': expected a string or a list of {role, content} messages, got an array"),
    ("hi", "ab\ud800", "row 2: field 'response': not valid Unicode (a lone surrogate \\ud800 at character 2); "
                        "expected text that UTF-8 can encode"),
    (None, "r", "field 'prompt': null in row 2; expected a string in every row"),
])
def test_the_pyfunc_model_refuses_rows_that_score_refuses_naming_row_and_field(bundle: Path, prompt: object,
                                                                                response: str, message: str):
    from rewardline.errors import BadInput
    from rewardline.registry.pyfunc import RewardScorer

    rows = pd.DataFrame({"prompt": pd.Series(["Say hi.", prompt], dtype=object),
                         "response": pd.Series(["Hi!", response], dtype=object)})
    with pytest.raises(BadInput) as err:
        RewardScorer(bundle).predict(rows)
    assert str(err.value) == message


def test_the_pyfunc_model_counts_rows_from_1_as_score_does(bundle: Path):
    """The first row is "row 1" (was "row 0": score counts rows and lines from 1); a process reward model's rows too
    (they were named by a bare line number that the message dropped)."""
    from rewardline.errors import BadInput
    from rewardline.registry.pyfunc import RewardScorer

    with pytest.raises(BadInput, match=r"^row 1: field 'prompt\[0\]\.role': expected one of"):
        RewardScorer(bundle).predict(pd.DataFrame({"prompt": [[{"role": "robot", "content": "hi"}]],
                                                   "response": ["r"]}))
    with pytest.raises(BadInput, match=r"^field 'response': null in row 1; expected a string in every row$"):
        RewardScorer(bundle).predict(pd.DataFrame({"prompt": ["q"], "response": [None]}))
    process = RewardScorer.__new__(RewardScorer)  # the rows are checked before the model is used
    with pytest.raises(BadInput, match=r"^row 2: field 'steps': expected a non-empty list of step strings, got an "
                                       r"empty array$"):
        process._predict_steps(pd.DataFrame({"prompt": ["q", "q"], "steps": [["a"], []]}), None)


def test_the_pyfunc_model_reads_message_prompts_of_a_frame_read_from_parquet(bundle: Path):
    """pyarrow's to_pandas gives a list column as NumPy arrays; such a prompt was scored as its repr text."""
    import pyarrow as pa

    from rewardline.registry.pyfunc import RewardScorer

    messages = [{"role": "user", "content": "Name a prime number."}]
    conversation = [*messages, {"role": "assistant", "content": "7"}, {"role": "user", "content": "Another?"}]
    frame = pa.table({"prompt": [messages, conversation], "response": ["7", "11"]}).to_pandas()
    assert isinstance(frame["prompt"][0], np.ndarray)
    scorer = RewardScorer(bundle)
    as_lists = scorer.predict(pd.DataFrame({"prompt": pd.Series([messages, conversation], dtype=object),
                                            "response": ["7", "11"]}))
    np.testing.assert_allclose(scorer.predict(frame)["reward"], as_lists["reward"], rtol=1e-6)
    text = scorer.predict(pd.DataFrame({"prompt": ["Name a prime number."], "response": ["7"]}))
    np.testing.assert_allclose(as_lists["reward"][:1], text["reward"], rtol=1e-6)  # a lone user message: its text


def test_only_the_registry_package_imports_mlflow_and_training_imports_no_registry():
    outside = {str(p.relative_to(PACKAGE)): sorted(m for m in _imports(p) if m.split(".")[0] == "mlflow")
               for p in PACKAGE.rglob("*.py") if "registry" not in p.relative_to(PACKAGE).parts}
    assert {p: m for p, m in outside.items() if m} == {}
    for package in ("training", "evaluation"):
        for path in (PACKAGE / package).rglob("*.py"):
            assert not {m for m in _imports(path) if m.startswith("rewardline.registry")}, path
    # the compatibility loader in tracking.py forwards by name: no static import of the registry
    assert not {m for m in _imports(PACKAGE / "tracking.py") if m.startswith(("rewardline.registry", "mlflow"))}


def test_an_absolute_scale_model_serves_win_prob_and_its_version_carries_the_calibration(
        bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """objective thurstone, link probit, residual_sd s: the pyfunc adds win_prob = Φ(reward/√(1+s²)); tags
    calibration.* (residual_sd included); the summary shows it."""
    import shutil

    import mlflow
    from scipy.special import ndtr

    from rewardline.registry.pyfunc import RewardScorer, model_signature

    absolute = tmp_path / "absolute"
    shutil.copytree(bundle, absolute)
    config = json.loads((absolute / "reward_config.json").read_text())
    config.update(objective="thurstone", link="probit", anchored=True, residual_sd=0.75)
    (absolute / "reward_config.json").write_text(json.dumps(config))

    direct = RewardScorer(absolute).predict(ROWS)
    assert list(direct.columns) == ["reward", "win_prob", "reward_b", "p_prefer"]
    np.testing.assert_allclose(direct["win_prob"], ndtr(direct["reward"] / 1.25), rtol=1e-12)  # √(1 + 0.75²)
    assert "win_prob" not in RewardScorer(bundle).predict(ROWS).columns  # a BT model has no absolute scale
    assert "win_prob" in model_signature().outputs.input_names()

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    registry = open_registry(tmp_path / "project")
    version = registry.register(MODEL_NAME, absolute, PASSED)
    assert {k: v for k, v in version.tags.items() if k.startswith("calibration.")} == {
        "calibration.objective": "thurstone", "calibration.link": "probit", "calibration.anchored": "true",
        "calibration.residual_sd": "0.75", "calibration.temperature": "1.7"}
    served = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{version.version}").predict(ROWS)
    np.testing.assert_allclose(served["win_prob"], direct["win_prob"], rtol=1e-6)
    row = registry_summary(registry, MODEL_NAME)["versions"][0]
    assert row["calibration"] == {"anchored": True, "link": "probit", "objective": "thurstone",
                                  "residual_sd": 0.75, "temperature": 1.7}  # the tags' strings, typed


@pytest.mark.parametrize("value", [5, 0.5, True, ["models:/reward-model@champion"]])
def test_a_champion_reference_that_is_not_a_string_names_its_params_key(value):
    """``evaluate.champion_model: 5`` said "5 is not a reward model directory", naming neither the key nor the file."""
    with pytest.raises(ConfigError) as err:
        split_champion({"champion_model": value, "min_accuracy": 0.5}, source="my-params.yaml")
    assert str(err.value).startswith(f"my-params.yaml: evaluate.champion_model: {value!r} is not a string (expected "
                                     "a registry URI such as models:/reward-model@champion, or a model directory)")


def test_a_champion_directory_that_is_not_there_names_its_params_key_and_the_close_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``evaluate.champion_model: models/reward-modle`` (``models/reward-model`` beside it) said only "models/
    reward-modle is not a reward model directory (no reward_config.json ...)": no key, no hint. It stays exit 2 (a
    directory has no "not registered yet" state, unlike a models:/ name) and now says which key and which folder."""
    from rewardline.registry.champion import resolved_champion

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "reward-model").mkdir(parents=True)
    (tmp_path / "models" / "reward-model" / "reward_config.json").write_text("{}")
    (tmp_path / "models" / "empty").mkdir()
    with pytest.raises(ConfigError) as err, resolved_champion("models/reward-modle"):
        pass
    assert str(err.value) == ("evaluate.champion_model: 'models/reward-modle': no such model directory; did you mean "
                              "'models/reward-model'? (expected a model directory or a registry URI such as "
                              "models:/reward-model@champion)")
    with pytest.raises(ConfigError, match=r"^--champion: 'elsewhere/x': no such model directory \(expected"), \
            resolved_champion("elsewhere/x", "--champion"):
        pass  # no folder beside it: no hint
    with pytest.raises(ConfigError, match=r"^evaluate.champion_model: models/empty is not a reward model directory"), \
            resolved_champion("models/empty"):
        pass
    with resolved_champion("models/reward-model") as (found, why):
        assert found == Path("models/reward-model") and why is None
