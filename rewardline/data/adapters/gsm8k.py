r"""GSM8K reference solutions (openai/grade-school-math): ``{"question", "answer"}`` -> step-labelled solutions.

``answer`` holds one reasoning step a line, each step's arithmetic in calculator annotations
``<<48/2=24>>24``, and a last line ``#### <final answer>``. Blank lines are not steps. The final
line becomes the step ``A: <final answer>`` (the shape of the shared model solutions, so a PRM sees
the same final-answer step in training and in best-of-N evaluation).

Each record gives

* its reference solution: every step correct (label 1), outcome 1, ``synthetic`` false;
* ``StepOptions.gsm8k_negatives`` synthetic negatives (:func:`perturb`), deterministic in
  (``StepOptions.seed``, the question text, the negative's index): one annotated step's result
  ``r`` is changed to ``r' != r`` (its expression still reads the old arithmetic, so the step is
  wrong), and the error is carried forward: every later number equal to a changed result is
  replaced, and every later annotation whose expression used it is recomputed
  (``<<a*b=c>>c`` -> ``<<a*b'=c'>>c'``, c' = a*b'), which changes its own result in turn. Labels:
  steps before the perturbed one 1, the perturbed one -1, later steps that changed -1, later steps
  that did not change null (unknown: locally sound, but on a wrong path). Outcome = the changed
  final answer equals the reference's (almost always 0), ``synthetic`` true.

  ``StepOptions.gsm8k_negative_kind`` says how the step goes wrong: ``result`` (above: the arithmetic is
  miscomputed, so the annotation itself is false) or ``operation`` (the default, chosen by cross-validation over
  the training problems, docs/benchmarks.md; :func:`_operation_change`): one operator
  of the expression is replaced and the result recomputed, ``<<48/2=24>>24`` -> ``<<48*2=96>>96``; the
  annotation is arithmetically right and the step is wrong in its reasoning, like most errors of real model
  solutions (their calculator annotations hold). A solution none of whose annotations admits a clean operator
  change (an integer result stays an integer, a non-negative one non-negative) gets a ``result`` negative.

A record without an annotated step whose expression evaluates to its result gets no negative.
"""

from __future__ import annotations

import ast
import math
import operator
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rewardline.data.adapters.jsonl import Records
from rewardline.data.adapters.native import combined, require
from rewardline.data.hashing import hash64
from rewardline.data.steps import CORRECT, INCORRECT, StepOptions

SCHEMA = pa.schema([("question", pa.string()), ("answer", pa.string())])
FLEXIBLE: tuple[str, ...] = ()
FINAL = re.compile(r"^####\s*(.*?)\s*$")
ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
NUMBER = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?![\w])")
_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
#: Arithmetic written out without an annotation: ``15+30 = 45``, ``0.2 x 50 = $10``.
PLAIN = re.compile(rf"(?<![\w.])((?:[($]*{_NUM}\)*\s*[-+*/x×]\s*)+[($]*{_NUM}\)*)(\s*=\s*\$?)({_NUM})(?![\w])")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
        ast.USub: operator.neg, ast.UAdd: operator.pos}


def evaluate(expression: str) -> float | None:
    """The value of a calculator expression (numbers, + - * / // % **, parentheses); None if it is not one."""
    try:
        tree = ast.parse(expression.replace(",", "").strip(), mode="eval")
    except (SyntaxError, ValueError):
        return None

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ValueError("exponent too large")
            return _OPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.operand))
        raise ValueError("not arithmetic")

    try:
        result = value(tree.body)
    except (ValueError, ZeroDivisionError, OverflowError, TypeError):
        return None
    return result if math.isfinite(result) else None


def number(text: str) -> float | None:
    try:
        return float(text.replace(",", "").strip())
    except ValueError:
        return None


def same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def fmt(value: float) -> str:
    """``24.0`` -> ``24``; ``0.25`` -> ``0.25`` (at most 6 decimals, trailing zeros dropped)."""
    if same(value, round(value)):
        return str(int(round(value)))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _key(value: float) -> float:
    return round(value, 6)


def _sub_numbers(text: str, changed: dict[float, float]) -> tuple[str, bool]:
    """Replace every number token of ``text`` whose value is a changed result by the new value."""
    touched = False

    def swap(match: re.Match) -> str:
        nonlocal touched
        value = number(match.group(0))
        if value is not None and _key(value) in changed:
            touched = True
            return fmt(changed[_key(value)])
        return match.group(0)

    return NUMBER.sub(swap, text), touched


def _sub_text(text: str, changed: dict[float, float]) -> tuple[str, bool]:
    """Plain text under ``changed``: numbers replaced, and written-out arithmetic (``15+30 = 45``) whose
    operands changed recomputed (its result then counts as changed too)."""
    out, pos, touched = [], 0, False
    for match in PLAIN.finditer(text):
        before, hit = _sub_numbers(text[pos:match.start()], changed)
        expression, used = _sub_numbers(match.group(1), changed)
        result = match.group(3)
        old = number(result)
        new = evaluate(re.sub(r"[x×]", "*", expression.replace("$", ""))) if used else None
        if used and old is not None and new is not None and not same(new, old):
            changed[_key(old)] = new
            result = fmt(new)
        elif not used:
            result, used = _sub_numbers(result, changed)
        out.append(f"{before}{expression}{match.group(2)}{result}")
        touched |= hit or used
        pos = match.end()
    tail, hit = _sub_numbers(text[pos:], changed)
    return "".join(out) + tail, touched or hit


def _carry(step: str, changed: dict[float, float]) -> tuple[str, bool]:
    """One later step rewritten under ``changed`` (updated in place with the results it changes)."""
    out, pos, touched = [], 0, False
    for match in ANNOTATION.finditer(step):
        text, hit = _sub_text(step[pos:match.start()], changed)
        expression, used = _sub_numbers(match.group(1), changed)
        result = match.group(2)
        old, new = number(result), evaluate(expression) if used else None
        if used and old is not None and new is not None and not same(new, old):
            changed[_key(old)] = new
            result = fmt(new)
        out.append(f"{text}<<{expression}={result}>>")
        touched |= hit or used
        pos = match.end()
    tail, hit = _sub_text(step[pos:], changed)
    return "".join(out) + tail, touched or hit


def _candidates(steps: list[str]) -> list[tuple[int, re.Match]]:
    """Annotations whose expression evaluates to their result: the arithmetic a negative may change."""
    found = []
    for i, step in enumerate(steps):
        for match in ANNOTATION.finditer(step):
            value, result = evaluate(match.group(1)), number(match.group(2))
            if value is not None and result is not None and abs(value - result) <= 0.01 * max(1.0, abs(result)):
                found.append((i, match))
    return found


def _wrong_value(old: float, rng: np.random.Generator) -> float:
    """A visibly different result: ±1..10 for small numbers, ±10-50 % for larger ones; integers stay integers,
    non-negative results stay non-negative."""
    if abs(old) < 50:
        delta = float(rng.choice([1, 2, 3, 5, 10]))
    else:
        delta = float(max(1, round(abs(old) * float(rng.choice([0.1, 0.2, 0.25, 0.5])))))
    sign = -1.0 if rng.random() < 0.5 and old - delta > 0 else 1.0  # never 0: a later division must stay defined
    return old + sign * delta


#: A binary operator of a calculator expression: after a number or ``)``, so a sign is not one.
BINARY_OPERATOR = re.compile(r"(?<=[\d)\s])\s*([-+*/])\s*(?=[\d(.])")


WRITTEN_OPERATOR = {"+": r"\+", "-": r"[-−]", "*": r"[*x×]", "/": r"[/÷]"}  # how the text writes each operator


def _operation_change(expression: str, old: float,
                      rng: np.random.Generator) -> tuple[str, float, int, str] | None:
    """``(expression with its k-th binary operator replaced by op, its value, k, op)``, drawn at random among the
    changes to another of ``+ - * /`` whose value differs from ``old``, is finite, stays an integer when ``old`` is
    one and stays non-negative when ``old`` is; None when there is no such change."""
    options = []
    for k, match in enumerate(BINARY_OPERATOR.finditer(expression)):
        for op in "+-*/":
            if op != match.group(1):
                changed = f"{expression[:match.start(1)]}{op}{expression[match.end(1):]}"
                value = evaluate(changed)
                if value is not None and not same(value, old) and (old < 0 or value >= 0) and \
                        (not same(old, round(old)) or same(value, round(value))):
                    options.append((changed, value, k, op))
    return options[int(rng.integers(len(options)))] if options else None


def _rewrite_written(text: str, expression: str, k: int, op: str) -> str:
    """``text`` with operator ``k`` of the last written-out copy of ``expression`` (``10/2 =``, ``40 x 20 =``,
    ``$4.50 x 100``) replaced by ``op``, so the words before an annotation show the changed operation too."""
    parts = BINARY_OPERATOR.split(expression.strip())  # operand, operator, operand, ...
    pattern = r"\$?\s*".join(
        rf"\s*({WRITTEN_OPERATOR[part]})\s*" if i % 2 else re.escape(part.strip()).replace(r"\,", ",?")
        for i, part in enumerate(parts))
    found = list(re.finditer(pattern, text))
    if not found:
        return text
    start, end = found[-1].span(k + 1)
    return f"{text[:start]}{op}{text[end:]}"


def _operation_negative(steps: list[str], found: list[tuple[int, re.Match]],
                        rng: np.random.Generator) -> tuple[int, re.Match, str, str, float] | None:
    """``(step index, annotation, words before it, new expression, new result)`` of an operator change at the first
    annotation, in a random order of ``found``, that admits one (:func:`_operation_change`); None when none does."""
    for i in rng.permutation(len(found)):
        index, match = found[int(i)]
        change = _operation_change(match.group(1), number(match.group(2)), rng)
        if change is not None:
            expression, value, k, op = change
            words = _rewrite_written(steps[index][:match.start()], match.group(1), k, op)
            return index, match, words, expression, value
    return None


def perturb(steps: list[str], rng: np.random.Generator,
            kind: str = "operation") -> tuple[list[str], list[int | None], int] | None:
    """(steps, labels, perturbed step index) of one synthetic negative, or None when no step can be changed.
    ``kind``: ``result`` (a miscomputed result) or ``operation`` (:func:`_operation_change`, else ``result``)."""
    found = _candidates(steps)
    if not found:
        return None
    change = _operation_negative(steps, found, rng) if kind == "operation" else None
    if change is None:  # a miscomputed result: the words and the expression stay, the result changes
        index, match = found[int(rng.integers(len(found)))]
        change = index, match, steps[index][:match.start()], match.group(1), _wrong_value(number(match.group(2)), rng)
    index, match, words, expression, new = change
    old = number(match.group(2))
    step = steps[index]
    head = words + f"<<{expression}={fmt(new)}>>"
    rest = step[match.end():]
    changed = {_key(old): new}
    rest, _ = _carry(rest, changed)
    out = [*steps[:index], head + rest]
    labels: list[int | None] = [CORRECT] * index + [INCORRECT]
    for later in steps[index + 1:]:
        rewritten, touched = _carry(later, changed)
        out.append(rewritten)
        labels.append(INCORRECT if touched else None)
    return out, labels, index


def split_steps(answer: str) -> tuple[list[str], str | None]:
    """(steps with the final line as ``A: <answer>``, the final answer) of a reference solution; answer None
    when the last non-blank line is not ``#### <answer>``."""
    lines = [line.strip() for line in answer.split("\n") if line.strip()]
    final = FINAL.match(lines[-1]) if lines else None
    if final is None:
        return lines, None
    return [*lines[:-1], f"A: {final.group(1)}"], final.group(1)


def _seed(options: StepOptions, questions: pa.Array) -> np.ndarray:
    return hash64(questions) ^ np.uint64(options.seed & 0xFFFFFFFFFFFFFFFF)


def to_solutions(records: Records, options: StepOptions) -> tuple[pa.Table, Records]:
    """One all-correct solution per record plus ``options.gsm8k_negatives`` synthetic negatives."""
    records = require(records, ["question", "answer"])
    answers = combined(records.table, "answer")
    no_final = pc.invert(pc.match_substring_regex(answers, r"(^|\n)[ \t]*####[^\n]*\s*$"))
    no_answer = pc.match_substring_regex(answers, r"(^|\n)[ \t]*####\s*$")
    expected = "expected GSM8K's reference solution (steps, then '#### <final answer>')"
    records = records.reject_many([(no_final, "answer", f"answer: no final '#### <answer>' line; {expected}"),
                                   (no_answer, "answer", f"answer: the final '####' line holds no answer; {expected}")])
    questions, answers = combined(records.table, "question"), combined(records.table, "answer").to_pylist()
    seeds = _seed(options, questions)
    rows: dict[str, list] = {k: [] for k in ("prompt", "steps", "step_labels", "outcome", "final_answer",
                                             "synthetic", "candidate", "origin_line")}

    def add(prompt: str, steps: list[str], labels: list, outcome: int, final: str | None, synthetic: bool,
            candidate: int, line: int) -> None:
        for key, value in zip(rows, (prompt, steps, labels, outcome, final, synthetic, candidate, line), strict=True):
            rows[key].append(value)

    for question, answer, seed, line in zip(questions.to_pylist(), answers, seeds, records.line, strict=True):
        steps, final = split_steps(answer)
        add(question, steps, [CORRECT] * len(steps), 1, final, False, 0, int(line))
        for k in range(options.gsm8k_negatives):
            negative = perturb(steps, np.random.default_rng([int(seed), k]), options.gsm8k_negative_kind)
            if negative is None:
                break
            wrong, labels, _ = negative
            wrong_final = wrong[-1][3:] if wrong[-1].startswith("A: ") else None
            outcome = int(wrong_final is not None and final is not None and _same_answer(wrong_final, final))
            add(question, wrong, labels, outcome, wrong_final, True, k + 1, int(line))
    table = pa.table(rows, schema=pa.schema([
        ("prompt", pa.large_string()), ("steps", pa.list_(pa.large_string())), ("step_labels", pa.list_(pa.int64())),
        ("outcome", pa.int64()), ("final_answer", pa.string()), ("synthetic", pa.bool_()),
        ("candidate", pa.int32()), ("origin_line", pa.int64())]))
    return table, records


def _same_answer(a: str, b: str) -> bool:
    x, y = number(a.replace("$", "")), number(b.replace("$", ""))
    return same(x, y) if x is not None and y is not None else a.strip() == b.strip()
