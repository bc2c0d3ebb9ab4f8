"""Quality gates of the evaluate stage, and the gate report (Markdown for people, JSON for machines).

Gates (thresholds from ``params.yaml: evaluate``, :class:`rewardline.evaluation.evaluate.EvalConfig`):

| gate | value (``metrics.json`` key) | passes when |
| --- | --- | --- |
| ``min_accuracy`` | ``accuracy`` | ``accuracy ≥ min_accuracy`` |
| ``accuracy_ci_above_chance`` | ``accuracy_ci_low`` | ``accuracy_ci_low > 0.5`` (only if ``require_ci_above_chance``) |
| ``max_ece_calibrated`` | ``ece_calibrated`` | ``ece_calibrated ≤ max_ece_calibrated`` |
| ``max_length_bias`` | ``length_bias`` | ``model_prefers_longer − labels_prefer_longer ≤ max_length_bias`` |
| ``champion_non_inferiority`` | ``champion_diff_ci_low`` | ``ci_low(challenger − champion) ≥ −champion_delta`` |

The champion gate reads the lower end of the two-sided 95 % paired prompt-bootstrap interval
of the accuracy difference (:func:`rewardline.evaluation.metrics.paired_bootstrap_difference`), i.e. a
one-sided 97.5 % non-inferiority test with margin δ. It is *skipped* (reported, not failing)
when there is no champion; the CI gate is skipped when ``require_ci_above_chance`` is false.
A value that could not be measured (NaN / None, e.g. an empty test split) fails its gate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rewardline.errors import GateFailed

if TYPE_CHECKING:
    from rewardline.evaluation.evaluate import EvalConfig

_COMPARE = {
    ">=": lambda v, t: v >= t,
    ">": lambda v, t: v > t,
    "<=": lambda v, t: v <= t,
}


def _measurable(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


@dataclass(frozen=True)
class Gate:
    """One check: ``value op threshold``; ``skipped`` gates pass and are shown as skipped."""

    name: str
    value: float | None
    threshold: float
    op: str  # ">=", ">" or "<="
    description: str
    passed: bool
    skipped: bool = False

    @classmethod
    def check(cls, name: str, value: float | None, threshold: float, op: str, description: str) -> Gate:
        """Evaluate ``value op threshold``; an unmeasurable value fails."""
        value = None if value is None else float(value)
        passed = _measurable(value) and bool(_COMPARE[op](value, threshold))
        return cls(name, None if not _measurable(value) else value, float(threshold), op, description, passed)

    @classmethod
    def skip(cls, name: str, value: float | None, threshold: float, op: str, description: str) -> Gate:
        """A gate that is shown (with its value, if any) but not enforced."""
        value = float(value) if _measurable(value) else None
        return cls(name, value, float(threshold), op, description, passed=True, skipped=True)

    @property
    def status(self) -> str:
        return "skipped" if self.skipped else ("passed" if self.passed else "FAILED")

    def failure_message(self) -> str:
        """E.g. ``min_accuracy: accuracy 0.5123 is not >= 0.55``."""
        return f"{self.name}: {self.description} {_fmt(self.value)} is not {self.op} {_fmt(self.threshold)}"


@dataclass
class GateReport:
    """All gates plus the headline numbers shown above the gate table."""

    gates: list[Gate]
    headline: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def failed(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    def gates_dict(self) -> dict[str, dict[str, Any]]:
        """``{name: {value, threshold, op, passed, skipped, description}}`` (the ``metrics.json`` ``gates`` key)."""
        return {g.name: {k: v for k, v in asdict(g).items() if k != "name"} for g in self.gates}

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "gates": self.gates_dict(), "headline": self.headline}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateReport:
        """Inverse of :meth:`to_dict`; also accepts a ``metrics.json`` dict (reads its ``gates``)."""
        gates = [Gate(name=name, **g) for name, g in data["gates"].items()]
        return cls(gates=gates, headline=dict(data.get("headline", {})))

    def to_markdown(self) -> str:
        h = self.headline
        lines = [
            "# Reward model evaluation",
            "",
            f"Gates: **{'passed' if self.passed else 'FAILED'}**",
            "",
            "| | value |",
            "| --- | --- |",
            f"| pairwise accuracy (95 % CI by prompt) | {_fmt(h.get('accuracy'))} "
            f"[{_fmt(h.get('accuracy_ci_low'))}, {_fmt(h.get('accuracy_ci_high'))}] |",
            f"| longer-response-wins baseline | {_fmt(h.get('longer_wins_accuracy'))} |",
            "| random | 0.5000 |",
            f"| agreement-aware accuracy | {_fmt(h.get('agreement_aware_accuracy'))} |",
            f"| ECE raw → calibrated (T = {_fmt(h.get('temperature'), 3)}) | {_fmt(h.get('ece_raw'))} → "
            f"{_fmt(h.get('ece_calibrated'))} |",
            f"| test pairs (ties excluded) | {_fmt(h.get('n_pairs'))} ({_fmt(h.get('ties_excluded'))}) |",
        ]
        if h.get("champion_accuracy") is not None:
            lines.append(f"| champion accuracy; challenger − champion (95 % CI) | {_fmt(h.get('champion_accuracy'))}; "
                         f"{_fmt(h.get('champion_diff'))} [{_fmt(h.get('champion_diff_ci_low'))}, "
                         f"{_fmt(h.get('champion_diff_ci_high'))}] |")
        lines += ["", "| gate | value | threshold | passed |", "| --- | --- | --- | --- |"]
        for g in self.gates:
            lines.append(f"| {g.name}: {g.description} | {_fmt(g.value)} | {g.op} {_fmt(g.threshold)} | {g.status} |")
        return "\n".join(lines) + "\n"


def evaluate_gates(metrics: Mapping[str, Any], config: EvalConfig) -> GateReport:
    """The gates of the module docstring from a metrics dict (keys as in ``metrics.json``)."""
    gates = [Gate.check("min_accuracy", metrics.get("accuracy"), config.min_accuracy, ">=", "pairwise accuracy")]
    ci_desc = "lower end of the accuracy's 95 % CI, above chance"
    if config.require_ci_above_chance:
        gates.append(Gate.check("accuracy_ci_above_chance", metrics.get("accuracy_ci_low"), 0.5, ">", ci_desc))
    else:
        gates.append(Gate.skip("accuracy_ci_above_chance", metrics.get("accuracy_ci_low"), 0.5, ">", ci_desc))
    gates.append(Gate.check("max_ece_calibrated", metrics.get("ece_calibrated"), config.max_ece_calibrated, "<=",
                            "ECE after temperature scaling"))
    gates.append(Gate.check("max_length_bias", metrics.get("length_bias"), config.max_length_bias, "<=",
                            "share of pairs where the model prefers the longer response − share where the labels do"))
    champ_desc = "lower end of the 95 % paired-bootstrap CI of accuracy(challenger) − accuracy(champion)"
    if metrics.get("champion_accuracy") is not None:
        gates.append(Gate.check("champion_non_inferiority", metrics.get("champion_diff_ci_low"),
                                -config.champion_delta, ">=", champ_desc))
    else:
        gates.append(Gate.skip("champion_non_inferiority", None, -config.champion_delta, ">=",
                               champ_desc + " (no champion)"))
    headline_keys = ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "agreement_aware_accuracy",
                     "longer_wins_accuracy", "ece_raw", "ece_calibrated", "temperature", "n_pairs", "ties_excluded",
                     "champion_accuracy", "champion_diff", "champion_diff_ci_low", "champion_diff_ci_high")
    return GateReport(gates=gates, headline={k: metrics.get(k) for k in headline_keys})


def check_gates(report: GateReport | Mapping[str, Any], report_path: str | None = None) -> None:
    """Raise :class:`GateFailed` naming each failed gate with value and threshold; do nothing if all pass.

    ``report`` is a :class:`GateReport`, its ``to_dict()`` (``gates.json``) or a ``metrics.json`` dict.
    """
    if not isinstance(report, GateReport):
        report = GateReport.from_dict(report)
    if report.passed:
        return
    lines = [f"evaluate gate failed ({len(report.failed)} of {len(report.gates)}):"]
    lines += [f"  - {g.failure_message()}" for g in report.failed]
    if report_path:
        lines.append(f"report: {report_path}")
    raise GateFailed("\n".join(lines))
