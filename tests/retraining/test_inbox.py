"""The inbox (a local folder and an S3 prefix alike), the ledger, recovery and de-duplication."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from rewardline.ops import dvc_run, storage
from rewardline.retraining import cycle as rt
from rewardline.retraining import inbox
from rewardline.retraining.ledger import Ledger

FRESH = Path(__file__).parents[1] / "fixtures" / "fresh_batches"
IN_DIST, SHIFTED = "batch-01-in-distribution", "batch-02-shifted-terse"


def submit(root: str, batch_id: str, source: str = IN_DIST) -> inbox.Batch:
    files = FRESH / source
    return inbox.write_batch(root, batch_id, (files / "samples.jsonl").read_bytes(),
                             (files / "rankings.jsonl").read_bytes())


def check_discovery(root: str) -> None:
    """Ready batches only; an unfinished upload and a damaged file are skipped with a reason."""
    a = submit(root, "a")
    submit(root, "b-copy-of-a")
    storage.write_bytes(f"{root}/c-uploading/samples.jsonl", b'{"prompt": "p", "response": "r"}\n')
    submit(root, "d-damaged", SHIFTED)
    storage.write_bytes(f"{root}/d-damaged/rankings.jsonl", b"tampered\n")
    storage.write_bytes(f"{root}/README.txt", b"top-level files are not batches\n")

    ready, skipped = inbox.discover(root)
    assert [b.batch_id for b in ready] == ["a", "b-copy-of-a"]
    assert ready[0] == a and ready[0].labelled
    assert ready[0].content_hash == ready[1].content_hash  # same data, other name
    assert {s.batch_id: s.reason.split()[0] for s in skipped} == {"c-uploading": "no", "d-damaged": "rankings.jsonl"}
    samples = ready[0].samples()
    assert len(samples) == 96 and {"prompt", "response", "prompt_id"} <= set(samples[0])


def test_a_local_inbox(tmp_path: Path):
    assert inbox.discover(str(tmp_path / "not-yet")) == ([], [])
    check_discovery(str(tmp_path / "inbox"))


@pytest.mark.slow
def test_an_s3_inbox_is_the_same_thing(s3_env):
    root = f"s3://{s3_env.bucket}/inbox-{uuid.uuid4().hex[:8]}"
    storage.write_bytes(f"{root}-sibling/x/manifest.json", b"{}")  # a prefix sharing the name: not ours
    check_discovery(root)


@pytest.mark.parametrize(("line", "message"), [
    (b'{"prompt_id": "p1", "prompt": "hi"}', "samples.jsonl:2: field 'response': missing; expected a string"),
    (b'{"prompt_id": "p1", "prompt": "hi", "response": null}',
     "samples.jsonl:2: field 'response': expected a string, got null"),
    (b'{"prompt": "hi", "response": "yo"}', "samples.jsonl:2: field 'prompt_id': expected a string, got nothing"),
    (b'{"prompt_id": "p1", "prompt": "hi", "response": "yo"', "samples.jsonl:2: not valid JSON"),
])
def test_a_malformed_sample_is_bad_input_naming_its_file_line_and_field(tmp_path: Path, line: bytes, message: str):
    """``python -m flows.retrain run`` on such a batch exited 3, ``internal error: KeyError: 'response'``."""
    from rewardline.errors import EXIT_BAD_INPUT, BadInput, exit_code

    good = b'{"prompt_id": "p1", "prompt": "hi", "response": "hello"}\n'
    batch = inbox.write_batch(str(tmp_path / "inbox"), "bad", good + line + b"\n")
    with pytest.raises(BadInput) as err:
        batch.samples()
    assert str(err.value).startswith(f"{tmp_path / 'inbox' / 'bad'}/{message}"), str(err.value)
    assert exit_code(err.value) == EXIT_BAD_INPUT
    assert inbox.parse_samples(good + b"\n" + good, "s.jsonl")[1]["response"] == "hello"  # blank lines skipped


def test_the_batch_fixtures_match_their_manifests():
    ready, skipped = inbox.discover(str(FRESH))
    assert [b.batch_id for b in ready] == [IN_DIST, SHIFTED] and not skipped


def test_ledger_states_and_recovery_of_an_interrupted_batch(tmp_path: Path):
    cfg = rt.RetrainConfig()
    ledger = Ledger(tmp_path / cfg.ledger)
    a, b = submit(str(tmp_path / "inbox"), "a"), submit(str(tmp_path / "inbox"), "b", SHIFTED)
    for state in ("started", "decided", "done"):
        ledger.record(a.batch_id, a.content_hash, state)
    ledger.record(b.batch_id, b.content_hash, "started")
    rt.append_batch(tmp_path, cfg, b)
    ledger.record(b.batch_id, b.content_hash, "appended")
    assert ledger.finished("a") and not ledger.finished("b") and ledger.interrupted() == ["b"]

    assert rt.recover(tmp_path, cfg, ledger) == ["b"]
    assert not rt.fresh_path(tmp_path, cfg, "b").exists()  # the half-processed batch's data is gone
    assert ledger.interrupted() == [] and ledger.last_state()["b"] == "rolled_back"
    assert rt.recover(tmp_path, cfg, ledger) == []

    copy = submit(str(tmp_path / "inbox"), "a-again")
    todo, duplicates = rt.pending([a, b, copy], ledger)
    assert [t.batch_id for t in todo] == ["b"]  # a is done, b is redone, a-again is a's data
    assert duplicates == [{"batch_id": "a-again", "duplicate_of": "a"}]
    assert rt.pending([copy], ledger) == ([], [])  # recorded once, then final
    lines = (tmp_path / cfg.ledger).read_text().splitlines()
    assert len(lines) == 7 and all(line.startswith("{") and line.endswith("}") for line in lines)


def test_fault_injection_raises_after_the_named_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    batch = submit(str(tmp_path / "inbox"), "a")
    ledger = Ledger(tmp_path / "ledger.jsonl")
    monkeypatch.setenv(rt.FAIL_AT_ENV, "decided")
    rt.mark(ledger, batch, "started")
    with pytest.raises(rt.InjectedFailure, match="decided"):
        rt.mark(ledger, batch, "decided")
    assert ledger.last_state() == {"a": "decided"}


def test_summary_and_gate_table():
    report = ("x\n\n| gate | value | threshold | passed |\n| --- | --- | --- | --- |\n"
              "| min_accuracy | 0.6 | >= 0.5 | passed |\n\nend")
    assert dvc_run.gate_table(report).splitlines()[-1] == "| min_accuracy | 0.6 | >= 0.5 | passed |"
    result = rt.BatchResult("a", "local", {"psi": 0.31, "ks": 0.25, "accuracy_drop": float("nan"), "psi_pvalue": 0.01,
                                           "ks_perm_pvalue": 0.2},
                            {"retrain": True, "reasons": ["psi 0.3100 > 0.25 (permutation p 0.0100 <= 0.05)"],
                             "within_noise": ["ks 0.2500 > 0.2 but permutation p 0.2000 > 0.05"]}, outcome="retrained")
    md = rt.summary_markdown([result], rt.RetrainConfig(), ["b"], [{"batch_id": "c", "duplicate_of": "a"}], [])
    assert "| check | value | threshold | permutation p (alpha 0.05) | crossed |" in md
    assert "| PSI (reward distribution) | 0.3100 | 0.25 | 0.0100 | yes |" in md and "Decision: **retrain**" in md
    assert "| KS statistic | 0.2500 | 0.2 | 0.2000 | yes |" in md
    assert "Within sampling noise, not counted: ks 0.2500 > 0.2 but permutation p 0.2000 > 0.05." in md
    assert "accuracy drop (test − batch) | n/a" in md and "c = a" in md and "redone" in md


def test_no_retrain_outcome_says_when_a_threshold_was_crossed_within_noise():
    """The in-distribution batch (PSI 1.02 > 0.25, KS 0.25 > 0.2, both p > 0.05) was reported
    "no retrain (below every threshold)" in the ledger and the summary's heading."""
    assert rt.no_retrain_outcome({"retrain": False, "reasons": [], "within_noise": []}) == \
        "no retrain (below every threshold)"
    noise = ["psi 1.0157 > 0.25 but permutation p 0.1528 > 0.05", "ks 0.2533 > 0.2 but permutation p 0.1169 > 0.05"]
    outcome = rt.no_retrain_outcome({"retrain": False, "reasons": [], "within_noise": noise})
    assert outcome == "no retrain (PSI, KS crossed within sampling noise)"


def test_a_processed_batch_put_back_with_other_content_is_reported_not_ignored(tmp_path: Path):
    """An annotated or corrected batch dropped back under its processed id was skipped without a word
    ("1 ready, 0 new", "No new batch in the inbox."): now it is listed, with what to do."""
    root, ledger = str(tmp_path / "inbox"), Ledger(tmp_path / "ledger.jsonl")
    a = submit(root, "a")
    same = submit(root, "same", SHIFTED)
    for batch in (a, same):
        ledger.record(batch.batch_id, batch.content_hash, "done")
    changed = submit(root, "a", SHIFTED)  # other content, same id
    ready, _ = inbox.discover(root)
    assert rt.pending(ready, ledger) == ([], [])
    [skipped] = rt.resubmitted(ready, ledger)
    assert skipped.batch_id == "a" and changed.content_hash != a.content_hash
    assert skipped.reason.startswith("changed since it was processed (done on ") and "new batch id" in skipped.reason
    md = rt.summary_markdown([], rt.RetrainConfig(), [], [], [skipped])
    assert "Skipped: a (changed since it was processed" in md


SHAPE = '{"batch_id": ..., "files": {"samples.jsonl": "<sha256>", ...}}'


@pytest.mark.parametrize(("manifest", "reason"), [
    (b'{"files": {', "manifest.json is not valid JSON (unexpected end of data"),
    (b'{"batch_id": "m"}', f"manifest.json: expected {SHAPE}, got no field 'files'"),
    (b"[1, 2]", f"manifest.json: expected {SHAPE}, got an array"),
    (b'{"files": ["samples.jsonl"]}', f"manifest.json: expected {SHAPE}, got an array"),
    (b'{"files": {"samples.jsonl": 7}}', "manifest.json: field 'files.samples.jsonl': expected a sha256 hex "
                                         "string, got a number"),
    # a folder copied or renamed without its manifest: was read as batch m, the manifest naming another batch
    (b'{"batch_id": "batch-01", "files": {}}', "manifest.json: field 'batch_id': expected 'm' (the batch's folder "
                                               "name), got 'batch-01'"),
    (b'{"batch_id": 7, "files": {}}', "manifest.json: field 'batch_id': expected 'm' (the batch's folder name), "
                                      "got a number"),
])
def test_a_malformed_manifest_is_skipped_with_what_is_expected(tmp_path: Path, manifest: bytes, reason: str):
    """The reasons were Python's: "unreadable manifest.json: 'files'", "... list indices must be integers or
    slices, not str"."""
    root = str(tmp_path / "inbox")
    storage.write_bytes(f"{root}/m/samples.jsonl", b'{"prompt_id": "p", "prompt": "p", "response": "r"}\n')
    storage.write_bytes(f"{root}/m/manifest.json", manifest)
    ready, [skipped] = inbox.discover(root)
    assert not ready and skipped.batch_id == "m" and skipped.reason.startswith(reason), skipped.reason


def test_a_batchs_files_at_the_inbox_top_level_are_reported(tmp_path: Path):
    """samples.jsonl and manifest.json copied into the inbox itself (not into <inbox>/<batch_id>/) were ignored
    without a word: "0 ready, 0 not ready", "No new batch in the inbox."."""
    root = str(tmp_path / "inbox")
    for name in ("samples.jsonl", "rankings.jsonl", "manifest.json"):
        storage.write_bytes(f"{root}/{name}", (FRESH / IN_DIST / name).read_bytes())
    storage.write_bytes(f"{root}/README.txt", b"other top-level files are not batches\n")
    ready, skipped = inbox.discover(root)
    assert not ready
    assert {s.batch_id: s.reason for s in skipped} == {
        name: f"{name} is at the inbox's top level; a batch goes in its own folder: {root}/<batch_id>/{name}"
        for name in ("samples.jsonl", "rankings.jsonl", "manifest.json")}


def test_the_same_data_under_two_names_in_one_cycle_is_processed_once(tmp_path: Path):
    """Only copies of a done batch counted as duplicates: two copies dropped before the same run were both
    processed, their rankings appended twice to data/raw/fresh."""
    root, ledger = str(tmp_path / "inbox"), Ledger(tmp_path / "ledger.jsonl")
    submit(root, "a")
    submit(root, "a-copy")
    submit(root, "b", SHIFTED)
    ready, _ = inbox.discover(root)
    todo, duplicates = rt.pending(ready, ledger)
    assert [t.batch_id for t in todo] == ["a", "b"]
    assert duplicates == [{"batch_id": "a-copy", "duplicate_of": "a"}]
    assert ledger.last_state() == {"a-copy": "duplicate"}


@pytest.mark.parametrize(("line", "message"), [
    (b'{"batch_id": "x", "state": "done"', ":2: not valid JSON (unexpected end of data"),
    (b'{"batch_id": "x", "state": "done"}', ":2: field 'content_hash': expected a string, got nothing (missing)"),
    (b'{"batch_id": "x", "content_hash": "h", "state": null}', ":2: field 'state': expected a string, got null"),
    (b'["x", "done"]', ":2: expected an event {batch_id, content_hash, state, time, ...}, got an array"),
])
def test_a_damaged_ledger_line_is_bad_input_naming_the_ledger_and_line(tmp_path: Path, line: bytes, message: str):
    """`python -m flows.retrain run` on such a ledger said "error: unexpected end of data: line 1 column 34"
    (no file; the line of the JSON text, not of the ledger) or "internal error: KeyError: 'content_hash'" (exit 3,
    retried)."""
    from rewardline.errors import EXIT_BAD_INPUT, BadInput, exit_code

    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.record("a", "h", "done")
    ledger.path.write_bytes(ledger.path.read_bytes() + line + b"\n")
    with pytest.raises(BadInput) as err:
        ledger.done_by_hash()
    assert str(err.value).startswith(f"{ledger.path}{message}"), str(err.value)
    assert exit_code(err.value) == EXIT_BAD_INPUT


def test_a_batch_whose_own_data_is_bad_input_is_rejected_for_good_not_retried(tmp_path: Path):
    """A bad batch's BadInput failed the run after ``started``; the next run rolled it back and met it again, so every
    batch after it (by id) waited until a person deleted its folder. Its data is now :class:`inbox.Rejected` (exit 2,
    the same message), ``rejected`` is final: not rolled back, not pending; the same id with other content is
    reported like a done batch's; only the content rejects (a failed read raises as itself)."""
    from rewardline.errors import EXIT_BAD_INPUT, BadInput, exit_code
    from rewardline.ops.storage import StorageError

    root, cfg = str(tmp_path / "inbox"), rt.RetrainConfig()
    ledger = Ledger(tmp_path / cfg.ledger)
    bad = inbox.write_batch(root, "b-bad", b'{"prompt_id": "p1", "prompt": "hi"}\n')
    good = submit(root, "c-good")
    with pytest.raises(inbox.Rejected) as err:
        bad.samples()
    assert isinstance(err.value, BadInput) and exit_code(err.value) == EXIT_BAD_INPUT
    assert str(err.value) == f"{bad.file_uri('samples.jsonl')}:1: field 'response': missing; expected a string"
    assert (err.value.batch_id, err.value.line, err.value.field) == ("b-bad", 1, "response")
    unread = inbox.Batch("gone", f"{root}/gone", {"samples.jsonl": "0" * 64}, "h")
    with pytest.raises(StorageError):  # an outage or a vanished file: not the batch's content, retried
        unread.samples()

    ledger.record(bad.batch_id, bad.content_hash, "started")
    ledger.record(bad.batch_id, bad.content_hash, "rejected", reason=str(err.value))
    assert ledger.finished("b-bad") and ledger.interrupted() == [] and rt.recover(tmp_path, cfg, ledger) == []
    ready, _ = inbox.discover(root)
    todo, duplicates = rt.pending(ready, ledger)
    assert [b.batch_id for b in todo] == ["c-good"] and duplicates == [] and good in todo
    inbox.write_batch(root, "b-bad", b'{"prompt_id": "p1", "prompt": "hi", "response": "yo"}\n')  # fixed, same id
    [skipped] = rt.resubmitted(inbox.discover(root)[0], ledger)
    assert skipped.batch_id == "b-bad" and skipped.reason.startswith("changed since it was processed (rejected on ")

    result = rt.BatchResult("b-bad", outcome=f"rejected: {err.value}", rejected=str(err.value))
    md = rt.summary_markdown([result], cfg, [], [], [])
    assert f"## Batch `b-bad`: rejected: {bad.file_uri('samples.jsonl')}:1: field 'response'" in md
    assert "not retried" in md and "new batch id" in md and "| check |" not in md
