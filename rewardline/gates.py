"""Quality gates as data: each gated stage declares its gates next to its config; one function checks them.

A gate is ``value op threshold`` with

* ``value = metrics[spec.metric_key]`` (the stage's ``metrics.json``),
* ``threshold = config.<spec.threshold_field>`` (a number in its place is a fixed threshold;
  ``negate`` gives ``−config.<field>``, a margin below zero),
* ``op`` one of ``>=``, ``>``, ``<=``, ``<``, ``==``.

Each gate ends *passed*, *failed* or *skipped* (shown with the reason, and not failing):

* skipped when ``enabled_field`` names a config flag that is false (the value is still shown);
* a value that is not measurable (absent, None, NaN or ±inf) fails the gate: an unmeasured number
  is never taken as good. With ``skip_if_missing`` it skips instead, with the reason from
  ``metrics[why_missing_key]`` or ``why_missing`` (the champion gate with no champion), unless
  ``strict_field`` names a config flag that is true (``validate.require_overlap``);
* otherwise passed iff ``value op threshold``; except that a comparison that fails while
  ``metrics[inconclusive_key]`` is true (the measurement could not tell: e.g. a champion comparison
  whose interval straddles the margin) *passes* as ``inconclusive``, with the note
  ``metrics[inconclusive_note_key]`` as reason, unless ``conclusive_field`` names a config flag
  that is true: then it fails, saying so.

A report passes iff no gate failed. One convention for every gated stage (ingest, validate,
evaluate): ``run_*`` computes its metrics, :func:`evaluate_gates` on its specs, writes
``metrics.json`` (with :meth:`GateReport.metrics_entries`: ``gates_passed`` and the ``gates``
table), ``gates.json`` (:meth:`GateReport.to_dict`) and ``report.md``, and returns the metrics
without raising; the caller (stage script through :mod:`rewardline.stage`, the CLI) calls
:func:`check` (:func:`check_output` on the output directory), which raises
:class:`~rewardline.errors.GateFailed` naming each failed gate (exit 1).
"""

from __future__ import annotations

import json
import math
import numbers
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rewardline.errors import GateFailed
from rewardline.paths import GATES_FILE, REPORT_FILE
from rewardline.report import fmt, md_cell

OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}


def _number(value: Any) -> float | int | None:
    """A measurable number (integers kept as ``int``), or None for absent / None / NaN / ±inf / non-numbers."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    number = float(value)
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class GateSpec:
    """One gate, declared as data: ``metrics[metric_key] op config.<threshold_field>`` (see the module docstring)."""

    name: str
    metric_key: str
    threshold_field: str | float  # config attribute holding the threshold, or the threshold itself
    op: str
    description: str  # what the value is, for people: "pairwise accuracy"
    negate: bool = False  # threshold = −config.<threshold_field>
    enabled_field: str | None = None  # config flag: false → the gate is shown, skipped
    skip_if_missing: bool = False  # an unmeasurable value skips the gate instead of failing it
    why_missing: str = "not measured"  # the reason shown for an unmeasurable value ...
    why_missing_key: str | None = None  # ... or this metric's text, when present
    strict_field: str | None = None  # config flag: true → an unmeasurable value fails despite skip_if_missing
    inconclusive_key: str | None = None  # metric: true → a failed comparison is only inconclusive (passes)
    inconclusive_note_key: str | None = None  # metric: the reason shown for an inconclusive result
    conclusive_field: str | None = None  # config flag: true → an inconclusive result fails

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"gate {self.name}: op {self.op!r} is not one of {', '.join(OPS)}")

    def threshold(self, config: Any) -> float | int:
        """The threshold this gate compares against under ``config`` (an integer stays one: a count)."""
        raw = getattr(config, self.threshold_field) if isinstance(self.threshold_field, str) else self.threshold_field
        value = _number(raw)
        if value is None:
            raise ValueError(f"gate {self.name}: threshold {self.threshold_field!r} is {raw!r}, not a finite number")
        return -value if self.negate else value


@dataclass(frozen=True)
class GateResult:
    """One checked gate: a row of the gate table. Skipped gates count as passed."""

    name: str
    value: float | int | None  # None: not measurable
    threshold: float | int
    op: str
    description: str
    passed: bool
    skipped: bool = False
    reason: str = ""  # why skipped, or why an unmeasurable value failed
    inconclusive: bool = False  # the comparison failed, but the measurement could not tell (passes unless strict)

    @property
    def status(self) -> str:
        """``passed``, ``FAILED``, ``skipped`` or ``inconclusive`` (passed), with the reason when there is one."""
        word = "skipped" if self.skipped else ("FAILED" if not self.passed else
                                               "inconclusive" if self.inconclusive else "passed")
        return f"{word} ({self.reason})" if self.reason else word

    def failure_message(self) -> str:
        """E.g. ``min_accuracy: pairwise accuracy 0.5123 is not >= 0.5500``."""
        if self.value is None:
            return f"{self.name}: {self.description} is not measurable ({self.reason or 'not measured'})"
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.name}: {self.description} {fmt(self.value)} is not {self.op} {fmt(self.threshold)}{why}"


def check_gate(spec: GateSpec, metrics: Mapping[str, Any], config: Any) -> GateResult:
    """The rules of the module docstring for one gate."""
    value = _number(metrics.get(spec.metric_key))
    threshold = spec.threshold(config)
    row = {"name": spec.name, "value": value, "threshold": threshold, "op": spec.op,
           "description": spec.description}
    if spec.enabled_field is not None and not getattr(config, spec.enabled_field):
        return GateResult(**row, passed=True, skipped=True, reason=f"{spec.enabled_field} is false")
    if value is None:
        reason = str((metrics.get(spec.why_missing_key) if spec.why_missing_key else None) or spec.why_missing)
        strict = spec.strict_field is not None and bool(getattr(config, spec.strict_field))
        if spec.skip_if_missing and not strict:
            return GateResult(**row, passed=True, skipped=True, reason=reason)
        if strict:
            reason += f"; {spec.strict_field} is true"
        return GateResult(**row, passed=False, reason=reason)
    passed = bool(OPS[spec.op](value, threshold))
    if not passed and spec.inconclusive_key is not None and metrics.get(spec.inconclusive_key):
        note = str((metrics.get(spec.inconclusive_note_key) if spec.inconclusive_note_key else None) or "")
        if spec.conclusive_field is not None and bool(getattr(config, spec.conclusive_field)):
            return GateResult(**row, passed=False, inconclusive=True,
                              reason=f"inconclusive{f': {note}' if note else ''}; {spec.conclusive_field} is true")
        return GateResult(**row, passed=True, inconclusive=True, reason=note)
    return GateResult(**row, passed=passed)


@dataclass
class GateReport:
    """The checked gates of one stage."""

    stage: str
    gates: list[GateResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    def table(self) -> dict[str, dict[str, Any]]:
        """``{name: {value, threshold, op, passed, skipped, description, reason}}`` (and ``inconclusive: true``
        on a gate whose measurement could not tell; the key is left out otherwise)."""
        return {g.name: {k: v for k, v in asdict(g).items() if k != "name" and not (k == "inconclusive" and not v)}
                for g in self.gates}

    def metrics_entries(self) -> dict[str, Any]:
        """What every gated stage adds to its ``metrics.json``: ``gates_passed`` and the ``gates`` table."""
        return {"gates_passed": self.passed, "gates": self.table()}

    def to_dict(self) -> dict[str, Any]:
        """``gates.json``: ``{stage, passed, gates}`` (the registry reads ``passed`` and ``gates``)."""
        return {"stage": self.stage, "passed": self.passed, "gates": self.table()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], stage: str | None = None) -> GateReport:
        """Inverse of :meth:`to_dict`; also reads a ``metrics.json`` dict (its ``gates`` table)."""
        gates = [GateResult(name=name, **row) for name, row in (data.get("gates") or {}).items()]
        return cls(stage=stage or str(data.get("stage") or "stage"), gates=gates)

    def write_json(self, path: Path) -> Path:
        """Write :meth:`to_dict` as JSON (``gates.json``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    def summary_markdown(self) -> str:
        """``Gates: **passed**`` or ``Gates: **FAILED**``."""
        return f"Gates: **{'passed' if self.passed else 'FAILED'}**"

    def table_markdown(self) -> str:
        """The gate table: ``| gate | value | threshold | passed |``, one row per gate."""
        lines = ["| gate | value | threshold | passed |", "| --- | --- | --- | --- |"]
        for g in self.gates:
            lines.append(f"| {md_cell(g.name)}: {md_cell(g.description)} | {fmt(g.value)} | "
                         f"{g.op} {fmt(g.threshold)} | {md_cell(g.status)} |")
        return "\n".join(lines)

    def to_markdown(self, title: str | None = None) -> str:
        """Optional ``# title``, the summary line and the gate table."""
        head = [f"# {title}", ""] if title else []
        return "\n".join([*head, self.summary_markdown(), "", self.table_markdown()]) + "\n"


def evaluate_gates(specs: Iterable[GateSpec], metrics: Mapping[str, Any], config: Any, stage: str) -> GateReport:
    """Check each spec against ``metrics`` with thresholds from ``config``; never raises on a failed gate."""
    return GateReport(stage=stage, gates=[check_gate(spec, metrics, config) for spec in specs])


def check(report: GateReport | Mapping[str, Any], report_path: Path | str | None = None) -> None:
    """Raise :class:`GateFailed` naming each failed gate with value and threshold; return if all passed.

    ``report`` is a :class:`GateReport`, its ``to_dict()`` (``gates.json``) or a stage's
    ``metrics.json`` dict (its ``gates`` table). ``report_path`` (the Markdown report) is named
    in the message. The message starts ``<stage> gate failed``: the text the flows look for.
    """
    if not isinstance(report, GateReport):
        report = GateReport.from_dict(report)
    if report.passed:
        return
    lines = [f"{report.stage} gate failed ({len(report.failed)} of {len(report.gates)}):"]
    lines += [f"  - {g.failure_message()}" for g in report.failed]
    if report_path:
        lines.append(f"report: {report_path}")
    raise GateFailed("\n".join(lines))


def read_output_report(out_dir: Path) -> GateReport | None:
    """The :class:`GateReport` a gated stage left in ``out_dir`` (its ``gates.json``), or None when it has none."""
    path = out_dir / GATES_FILE
    return GateReport.from_dict(json.loads(path.read_text())) if path.is_file() else None


def check_output(out_dir: Path) -> None:
    """:func:`check` on a gated stage's output directory: its ``gates.json``, naming its ``report.md``."""
    report = read_output_report(out_dir)
    if report is None:
        raise FileNotFoundError(f"{out_dir / GATES_FILE} does not exist: the stage wrote no gate report")
    check(report, report_path=out_dir / REPORT_FILE)
