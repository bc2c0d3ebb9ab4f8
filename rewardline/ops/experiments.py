"""Model selection over DVC experiments: pick the best configuration by val accuracy, apply its run.

The grid runs as DVC experiments (``dvc exp run --queue -S train.lr=... -S train.seed=...``, then
``dvc exp run --run-all``); each experiment's params and metrics come from ``dvc exp show --json``.
Runs that differ only in their seed parameters (``train.seed``) form one *configuration*:

    for configuration c with runs i = 1..n_c:  m_c = mean_i val_accuracy_i,  s_c = sd_i (ddof 1; None when n_c = 1)
    best configuration  c* = argmax_c m_c       (ties: more seeds, then the lexically first name)
    promoted run        i* = argmax_{i in c*} val_accuracy_i   →  ``dvc exp apply <name of i*>``
                        (ties: the lexically first experiment name)

with argmin instead of argmax for a lower-is-better metric (:func:`lower_is_better`: ``val_loss``).

Selecting on the mean over seeds rather than on the single best run keeps a lucky seed of a worse
configuration from winning; the spread s_c says how much one run of that configuration can move.
Only val metrics are read (keys starting ``val_``; any other ``--metric`` is bad input): the test split stays
untouched until the chosen model is evaluated.
``dvc exp apply`` puts the run's params, metrics and outputs (the model) into the workspace, so the
pipeline's next stages (``dvc repro evaluate``) use the promoted model. It also overwrites every tracked
file the experiment's commit holds, so uncommitted edits (:func:`uncommitted_edits`) stop the apply.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewardline.errors import BadInput, TransientError, one_line

#: The metric experiments are ranked by (a key of a metrics file, e.g. ``metrics/train.json``).
DEFAULT_METRIC = "val_accuracy"
#: Only metrics whose key starts with this are validation metrics, the only ones selection may read.
VALIDATION_PREFIX = "val_"
#: Metric keys ending in one of these are lower-is-better (``val_loss``, ``val_nll``); the rest higher-is-better.
LOWER_IS_BETTER_SUFFIXES = ("loss", "nll", "ece", "brier")
#: Params that only change the seed: runs differing in these alone are one configuration.
DEFAULT_SEED_PARAMS = ("train.seed",)
#: Where ``dvc exp apply`` records the experiment it applied last.
APPLIED_REF = "refs/exps/exec/EXEC_APPLY"


@dataclass(frozen=True)
class ExperimentRun:
    """One finished experiment: its name, commit, flattened params (``train.lr``) and metrics."""

    name: str
    rev: str
    params: dict[str, Any]
    metrics: dict[str, Any]


@dataclass
class Configuration:
    """Runs sharing every param but the seed ones; ``key`` is their ``param=value`` list (seeds left out)."""

    key: str
    runs: list[ExperimentRun] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    higher_is_better: bool = True

    @property
    def mean(self) -> float:
        """Mean over seeds; ``fsum`` (exactly rounded) so equal scores tie whatever order the runs came in."""
        return math.fsum(self.scores) / len(self.scores)

    @property
    def sd(self) -> float | None:
        """Sample standard deviation over seeds (ddof 1); None (not measured) for a single run."""
        n = len(self.scores)
        if n < 2:
            return None
        m = self.mean
        return math.sqrt(math.fsum((s - m) ** 2 for s in self.scores) / (n - 1))

    def best_run(self) -> tuple[ExperimentRun, float]:
        """The run with the best score, the highest or the lowest (ties: the lexically first name)."""
        sign = -1 if self.higher_is_better else 1
        i = min(range(len(self.runs)), key=lambda j: (sign * self.scores[j], self.runs[j].name))
        return self.runs[i], self.scores[i]


def lower_is_better(metric: str) -> bool:
    """Whether ``metric``'s key (``FILE:KEY``: KEY) ends in one of :data:`LOWER_IS_BETTER_SUFFIXES`."""
    return metric.rsplit(":", 1)[-1].lower().endswith(LOWER_IS_BETTER_SUFFIXES)


def _flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping):
            out.update(_flatten(item, name + "."))
        else:
            out[name] = item
    return out


def _files_data(section: Mapping[str, Any] | None, qualified: bool = False) -> dict[str, Any]:
    """``{"params.yaml": {"data": {...}}, ...}`` (dvc exp show) → one flat dict over the files: a key the files
    share is the first file's (dvc.yaml order); with ``qualified`` each is also there as ``FILE:KEY``, as
    ``dvc exp show --sort-by`` names it (``metrics/prm_train.json:val_accuracy``)."""
    out: dict[str, Any] = {}
    for name, content in (section or {}).items():
        for key, value in _flatten((content or {}).get("data") or {}).items():
            out.setdefault(key, value)
            if qualified:
                out[f"{name}:{key}"] = value
    return out


def parse_exp_show(rows: list[dict[str, Any]]) -> tuple[list[ExperimentRun], dict[str, Any] | None, list[str]]:
    """The finished experiments in ``dvc exp show --json`` output, the baseline commit's metrics, and the
    experiments left out (failed, queued or running, or without data) as ``"name (why)"``."""
    runs: list[ExperimentRun] = []
    baseline: dict[str, Any] | None = None
    left_out: list[str] = []
    for row in rows:
        if row.get("rev") == "workspace":
            continue
        if baseline is None and row.get("data"):
            baseline = _files_data(row["data"].get("metrics"), qualified=True)
        for exp in row.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state")
            if state not in (None, "success"):
                left_out.append(f"{exp.get('name') or '?'} ({state})")
                continue
            for rev in exp.get("revs") or []:
                data = rev.get("data")
                if rev.get("error") or not data:
                    left_out.append(f"{rev.get('name') or rev.get('rev', '?')[:7]} (no data)")
                    continue
                runs.append(ExperimentRun(name=rev.get("name") or exp.get("name") or rev["rev"][:7],
                                          rev=rev["rev"], params=_files_data(data.get("params")),
                                          metrics=_files_data(data.get("metrics"), qualified=True)))
    return runs, baseline, left_out


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"did you mean 'X'? "`` for the closest of ``known`` to ``name``, else ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _check_seed_params(runs: list[ExperimentRun], seeds: set[str]) -> None:
    """:class:`BadInput` naming the first of ``seeds`` that is no param of any of ``runs`` (none: no check)."""
    known = sorted({key for run in runs for key in run.params})
    for seed in sorted(seeds):
        if runs and seed not in known:
            raise BadInput("--seed-param", detail=f"{seed!r} is not a param of the experiments; "
                                                  f"{_did_you_mean(seed, known)}expected "
                                                  "a param that only changes the seed (e.g. train.seed)")


def _check_metric(runs: list[ExperimentRun], metric: str) -> None:
    """:class:`BadInput` listing the runs' metrics when ``metric`` is none of them (no runs: no check)."""
    names = {key for run in runs for key in run.metrics}
    if not runs or metric in names:
        return
    known = sorted(key for key in names if ":" not in key)  # FILE:KEY names: listed by file
    files = list(dict.fromkeys(key.rsplit(":", 1)[0] for run in runs for key in run.metrics if ":" in key))
    hint = _did_you_mean(metric.rsplit(":", 1)[-1], known)  # for a FILE:KEY, the closest key
    shown = ", ".join(known[:30]) + (f" and {len(known) - 30} more" if len(known) > 30 else "")
    qualified = f" (or FILE:KEY: {', '.join(f'{name}:KEY' for name in files)})" if files else ""
    raise BadInput("--metric", detail=f"{metric!r} is not a metric of the finished experiments; {hint}"
                                      f"expected one of: {shown or '(none: no experiment wrote metrics)'}{qualified}")


def _check_validation_metric(runs: list[ExperimentRun], metric: str) -> None:
    """:class:`BadInput` naming ``metric``'s file and the runs' val metrics when ``metric``'s key does not start
    with :data:`VALIDATION_PREFIX`: selecting on a test metric (``metrics/evaluate.json``'s ``accuracy``) or a
    training one would leak the split that is meant to judge the chosen model."""
    file, _, key = metric.rpartition(":")
    if key.startswith(VALIDATION_PREFIX):
        return
    if not file:  # a bare key: the first file holding it, as the ranking would read it
        file = next((name.rsplit(":", 1)[0] for run in runs for name in run.metrics if name.endswith(f":{key}")), "")
    named = f"{key!r} of {file}" if file else repr(key)
    allowed = sorted({name for run in runs for name in run.metrics
                      if ":" not in name and name.startswith(VALIDATION_PREFIX)})
    raise BadInput("--metric", detail=f"{named} is not a validation metric: selection reads only "
                                      f"{VALIDATION_PREFIX}* metrics, so the test split stays untouched until the "
                                      "chosen model is evaluated; expected one of: "
                                      f"{', '.join(allowed) or '(none: no experiment wrote one)'}")


def group_configurations(runs: Iterable[ExperimentRun], metric: str = DEFAULT_METRIC,
                         seed_params: Iterable[str] = DEFAULT_SEED_PARAMS,
                         higher_is_better: bool | None = None) -> list[Configuration]:
    """Group runs by every param except ``seed_params``; runs without a finite number (not a bool) as ``metric``
    are left out. ``higher_is_better`` None: the metric's own direction (:func:`lower_is_better`).
    Sorted best first (mean score, then more seeds, then key). A seed param no run has is :class:`BadInput`
    (a typo would make every seed its own configuration), and so are a ``metric`` no run has and one that is
    no validation metric (:func:`_check_validation_metric`)."""
    runs, seeds = list(runs), set(seed_params)
    higher = not lower_is_better(metric) if higher_is_better is None else higher_is_better
    _check_seed_params(runs, seeds)
    _check_metric(runs, metric)
    _check_validation_metric(runs, metric)
    groups: dict[str, Configuration] = {}
    for run in runs:
        score = run.metrics.get(metric)
        if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
            continue  # bool is an int: true/false would rank as 1/0
        key = " ".join(f"{k}={v}" for k, v in sorted(run.params.items()) if k not in seeds)
        config = groups.setdefault(key, Configuration(key, higher_is_better=higher))
        config.runs.append(run)
        config.scores.append(float(score))
    sign = -1 if higher else 1
    return sorted(groups.values(), key=lambda c: (sign * c.mean, -len(c.scores), c.key))


def _differing(configs: list[Configuration]) -> list[str]:
    """The params whose value differs between runs (what the grid varied), seeds included."""
    values: dict[str, set[str]] = {}
    for config in configs:
        for run in config.runs:
            for key, value in run.params.items():
                values.setdefault(key, set()).add(json.dumps(value, sort_keys=True))
    return sorted(k for k, v in values.items() if len(v) > 1)


def summarize(configs: list[Configuration], metric: str, baseline: Mapping[str, Any] | None,
              seed_params: Iterable[str] = DEFAULT_SEED_PARAMS, left_out: Iterable[str] = ()) -> dict[str, Any]:
    """The selection as a result dict: the promoted run, each configuration's mean / sd / n, and the
    experiments ``left_out`` of the ranking (``"name (why)"``)."""
    left_out = sorted(left_out)
    if not configs:
        why = f" (left out: {', '.join(left_out)})" if left_out else ""
        raise BadInput("dvc exp show", field=metric,
                       detail=f"no finished experiment has a numeric {metric!r}{why}: run the grid first "
                              "(dvc exp run --queue -S train.lr=... ; dvc exp run --run-all)")
    varied, seeds = _differing(configs), set(seed_params)
    best = configs[0]
    run, score = best.best_run()
    rows = []
    for config in configs:
        first = config.runs[0].params
        rows.append({**{k: str(first.get(k)) for k in varied if k not in seeds},  # str: 1e-05 stays 1e-05
                     "n_seeds": len(config.scores), f"{metric}_mean": round(config.mean, 4),
                     f"{metric}_sd": None if config.sd is None else round(config.sd, 4),
                     f"{metric}_min": round(min(config.scores), 4), f"{metric}_max": round(max(config.scores), 4),
                     "runs": ",".join(r.name for r in config.runs)})
    base = (baseline or {}).get(metric)
    label = " ".join(f"{k}={run.params.get(k)}" for k in varied if k not in seeds)  # what the grid varied
    direction = "higher is better" if best.higher_is_better else "lower is better"
    return {"selected": run.name, "selected_rev": run.rev, "metric": metric, "direction": direction,
            f"selected_{metric}": score,
            "configuration": label, f"configuration_{metric}_mean": best.mean,
            f"configuration_{metric}_sd": best.sd, "configuration_n_seeds": len(best.scores),
            f"baseline_{metric}": base, "varied_params": varied, "left_out": left_out, "configurations": rows}


def _command(argv: list[str], project: Path, expected: str = "") -> str:
    """``argv`` run in ``project``: its stdout, or :class:`BadInput` quoting its stderr (``expected``: a hint)."""
    try:
        proc = subprocess.run(argv, cwd=project, capture_output=True, text=True, check=False)
    except FileNotFoundError as err:  # dvc / git not on PATH
        raise TransientError(f"{argv[0]} not found: {err}") from err
    if proc.returncode != 0:
        hint = f"; expected {expected}" if expected else ""
        error = BadInput(project, detail=f"`{' '.join(argv)}` exited with {proc.returncode} "
                                         f"({one_line(proc.stderr)[-500:]}){hint}")
        error.stderr = proc.stderr  # type: ignore[attr-defined]  # for callers that read what failed
        raise error
    return proc.stdout


def _dvc(args: list[str], project: Path, expected: str = "") -> str:
    """``dvc ARGS`` in ``project`` (:func:`_command`)."""
    return _command(["dvc", *args], project, expected)


def uncommitted_edits(project: Path, selected_rev: str) -> list[str]:
    """Tracked files (repository paths) with uncommitted changes that ``dvc exp apply selected_rev`` would lose.

    Left out: changes that are exactly the content of the run to apply (a failed apply leaves its params and
    metrics behind) or of the experiment applied last (:data:`APPLIED_REF`, the previous selection, which a
    second ``rewardline select`` may replace)."""
    changed = set(_command(["git", "diff", "--name-only", "HEAD"], project).splitlines())
    applied = subprocess.run(["git", "rev-parse", "--verify", "-q", f"{APPLIED_REF}^{{commit}}"], cwd=project,
                             capture_output=True, text=True, check=False).stdout.strip()
    for rev in (selected_rev, applied):
        if changed and rev:
            changed &= set(_command(["git", "diff", "--name-only", rev], project).splitlines())
    return sorted(changed)


def _apply(project: Path, name: str) -> None:
    """``dvc exp apply NAME``; when outputs are not in the cache, a message naming them and saying that dvc
    has already written the run's params and metrics (the model may not be the run's)."""
    try:
        _dvc(["exp", "apply", name], project)
    except BadInput as err:
        lines = [line.strip() for line in getattr(err, "stderr", "").splitlines()]
        start = next((i for i, line in enumerate(lines) if "Checkout failed for following targets" in line), None)
        if start is None:
            raise
        targets = itertools.takewhile(lambda line: not line.startswith("Is your cache"), lines[start + 1:])
        missing = ", ".join(line for line in targets if line) or "its outputs"
        raise BadInput(project, detail=f"`dvc exp apply {name}` wrote the run's params and metrics but could not "
                                       f"check out {missing} (not in the DVC cache), so the workspace lacks them; "
                                       "`dvc pull` them (or `dvc repro` their stages), then select again") from None


def exp_show(project: Path) -> list[dict[str, Any]]:
    """``dvc exp show --json`` in ``project`` (the experiments of the current commit)."""
    out = _dvc(["exp", "show", "--json"], project, expected="a DVC project with experiments (`dvc exp run`)")
    try:
        return json.loads(out)
    except json.JSONDecodeError as err:
        raise BadInput(project, detail=f"`dvc exp show --json` printed no JSON ({one_line(out)[:200]})") from err


def select_experiment(project: Path | str = ".", metric: str = DEFAULT_METRIC,
                      seed_params: Iterable[str] = DEFAULT_SEED_PARAMS, apply: bool = True,
                      higher_is_better: bool | None = None) -> dict[str, Any]:
    """Rank the project's finished experiments (:func:`group_configurations`; ``higher_is_better`` None: the
    metric's own direction) and, with ``apply``, ``dvc exp apply`` the best configuration's best run."""
    project = Path(project)
    if not project.is_dir():  # else subprocess's cwd error read as "dvc not found" (exit 3)
        what = "not a directory" if project.exists() else "no such directory"
        raise BadInput(project, detail=f"{what}; expected the DVC project's directory (--project)")
    runs, baseline, left_out = parse_exp_show(exp_show(project))
    seed_params = tuple(seed_params)
    configs = group_configurations(runs, metric, seed_params, higher_is_better)
    ranked = {run.name for config in configs for run in config.runs}
    left_out += [f"{run.name} (no {metric})" for run in runs if run.name not in ranked]
    result = summarize(configs, metric, baseline, seed_params, left_out)
    if apply:
        edits = uncommitted_edits(project, result["selected_rev"])
        if edits:  # dvc exp apply would replace them with the experiment's versions, without a word
            shown = ", ".join(edits[:10]) + (f" and {len(edits) - 10} more" if len(edits) > 10 else "")
            raise BadInput(project, detail=f"uncommitted changes to {shown}: `dvc exp apply {result['selected']}` "
                                           "would overwrite them; commit or stash them first (rank only: --dry-run)")
        _apply(project, result["selected"])
    result["applied"] = apply
    return result
