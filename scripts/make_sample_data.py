"""Build the shipped sample data (data/raw) and the test fixtures (tests/fixtures) from real data.

    python scripts/make_sample_data.py --shared DIR [--raw data/raw] [--fixtures tests/fixtures]

DIR holds the two public extracts described in data/README.md:
``hh_rlhf_harmless_base_sample.jsonl.gz`` (anthropics/hh-rlhf, MIT) and ``alpacaeval_bon/``
(allenai/reward-bench @ 4319b31, bon_eval/alpaca_eval_n=16, Apache-2.0). The output is
deterministic: rerunning the script reproduces the files byte for byte.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from rewardline.data.synthetic import ANNOTATORS, multiannotator_rankings

ALPACA_FIELDS = ("id", "instruction", "dataset", "output_1", "generator_1", "output_2", "generator_2", "preference",
                 "annotator")  # fmt: skip
SEED = 20240611


def load_json_gz(path: Path) -> list[dict]:
    return orjson.loads(gzip.decompress(path.read_bytes()))


def annotations(shared: Path, sample: int) -> list[dict]:
    """AlpacaEval annotations of policy sample ``sample``, only the fields the adapter reads."""
    rows = load_json_gz(shared / "alpacaeval_bon" / "annotations" / f"tulu-2-dpo-13b.{sample}.json.gz")
    return [{k: r[k] for k in ALPACA_FIELDS} for r in rows]


def hh_lines(shared: Path) -> list[bytes]:
    return [line for line in gzip.decompress((shared / "hh_rlhf_harmless_base_sample.jsonl.gz").read_bytes())
            .split(b"\n") if line.strip()]  # fmt: skip


def jsonl(records: list[dict]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


# ------------------------------------------------------------------ data/raw


def synthetic_multiannotator(shared: Path, n_prompts: int = 150) -> pa.Table:
    """Thurstone annotators (see rewardline.data.synthetic) over real AlpacaEval samples 3..6.

    Utility u = logit(clip(preference - 1, 0.01, 0.99)). Prompts are drawn (seeded) among
    instructions whose 4 samples the judge separated (max u - min u >= 1).
    """
    per_sample = [{r["id"]: r for r in annotations(shared, s)} for s in (3, 4, 5, 6)]
    ids = sorted(per_sample[0])
    pref = np.array([[ps[i]["preference"] for ps in per_sample] for i in ids])
    utility = logit(np.clip(pref - 1.0, 0.01, 0.99))
    eligible = np.flatnonzero(utility.max(1) - utility.min(1) >= 1.0)
    chosen = np.sort(np.random.default_rng(SEED).choice(eligible, size=n_prompts, replace=False))
    prompts = pa.table(
        {
            "prompt": [per_sample[0][ids[i]]["instruction"] for i in chosen],
            "category": [per_sample[0][ids[i]]["dataset"] for i in chosen],
            "responses": [
                [
                    {
                        "response_id": ps[ids[i]]["generator_2"],
                        "text": ps[ids[i]]["output_2"],
                        "source": ps[ids[i]]["generator_2"],
                    }
                    for ps in per_sample
                ]  # fmt: skip
                for i in chosen
            ],
        }
    )
    table = multiannotator_rankings(prompts, utility[chosen], ANNOTATORS, per_prompt=3, seed=SEED)
    return table.append_column("batch_id", pa.array(["synthetic_multiannotator"] * table.num_rows))


def make_raw(shared: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    bon = annotations(shared, 0) + annotations(shared, 1) + annotations(shared, 2)
    (out / "alpacaeval_bon_k4.json").write_bytes(orjson.dumps(bon))
    (out / "hh_rlhf_harmless.jsonl").write_bytes(b"\n".join(hh_lines(shared)) + b"\n")
    synth = synthetic_multiannotator(shared)
    (out / "synthetic_multiannotator.jsonl").write_bytes(jsonl(synth.to_pylist()))
    for path in sorted(out.iterdir()):
        print(f"{path}: {path.stat().st_size / 1e6:.2f} MB")


# ------------------------------------------------------------------ tests/fixtures


def alpaca_rankings(rows: list[list[dict]]) -> list[dict]:
    """Nested native records from AlpacaEval rows of one instruction each (reference + samples)."""
    records = []
    for group in rows:
        scores = [0.5] + [r["preference"] - 1 for r in group]
        distinct = sorted(set(scores), reverse=True)
        texts = [(group[0]["generator_1"], group[0]["output_1"])] + [(r["generator_2"], r["output_2"]) for r in group]
        records.append(
            {
                "prompt_id": f"alpaca-{group[0]['id']}",
                "prompt": group[0]["instruction"],
                "category": group[0]["dataset"],
                "annotator_id": group[0]["annotator"],
                "responses": [
                    {"response_id": g, "text": t, "source": g, "rank": distinct.index(s) + 1, "score": round(s, 6)}
                    for (g, t), s in zip(texts, scores, strict=True)
                ],
            }
        )
    return records


def hh_turns(dialogue: str) -> list[dict]:
    """Message list of an hh-rlhf transcript (for the conversation-style fixtures)."""
    out = []
    for part in dialogue.split("\n\n")[1:]:
        for label, role in (("Human:", "user"), ("Assistant:", "assistant")):
            if part.startswith(label):
                out.append({"role": role, "content": part[len(label) :].strip()})
                break
        else:
            out[-1]["content"] += "\n\n" + part
    return out


def make_fixtures(shared: Path, out: Path) -> None:  # noqa: PLR0915 - one block per fixture file
    out.mkdir(parents=True, exist_ok=True)
    hh = hh_lines(shared)
    bon = [annotations(shared, s) for s in (0, 1, 2)]

    # hh-rlhf: the first 30 pairs, as published.
    (out / "hh_rlhf_30.jsonl").write_bytes(b"\n".join(hh[:30]) + b"\n")

    # AlpacaEval: the first 20 instructions x samples 0, 1, 2 (a JSON list, as AlpacaEval writes it).
    (out / "alpacaeval_20x3.json").write_bytes(orjson.dumps([r for s in bon for r in s[:20]]))

    # Pairwise (arena-style) re-expression of real AlpacaEval rows 20..49 of sample 0.
    pairs = []
    for r in bon[0][20:50]:
        winner = "model_b" if r["preference"] > 1.5 else "model_a" if r["preference"] < 1.5 else "tie"
        pairs.append({"question_id": r["id"], "model_a": r["generator_1"], "model_b": r["generator_2"],
                      "winner": winner, "prompt": r["instruction"], "response_a": r["output_1"],
                      "response_b": r["output_2"], "judge": r["annotator"], "category": r["dataset"]})  # fmt: skip
    (out / "pairwise_alpaca.jsonl").write_bytes(jsonl(pairs))

    # lmsys-style conversations from real multi-turn hh-rlhf pairs 30..39 (chosen = model_a wins).
    convs = []
    for i, line in enumerate(hh[30:40]):
        rec = orjson.loads(line)
        convs.append({"question_id": f"hh-{30 + i}", "model_a": "hh-chosen", "model_b": "hh-rejected",
                      "winner": "model_a", "judge": "hh-rlhf-crowdworker", "conversation_a": hh_turns(rec["chosen"]),
                      "conversation_b": hh_turns(rec["rejected"])})  # fmt: skip
    (out / "pairwise_conversations.jsonl").write_bytes(jsonl(convs))

    # Native rankings over real texts: AlpacaEval instructions 50..59 (reference + 3 samples) plus
    # two multi-turn prompts given as messages (hh-rlhf pairs 40, 41).
    nested = alpaca_rankings([[bon[s][i] for s in range(3)] for i in range(50, 60)])
    for i in (40, 41):
        rec = orjson.loads(hh[i])
        turns = hh_turns(rec["chosen"])
        nested.append({"messages": turns[:-1], "annotator_id": "hh-rlhf-crowdworker",
                       "responses": [{"text": turns[-1]["content"], "rank": 1},
                                     {"text": hh_turns(rec["rejected"])[-1]["content"], "rank": 2}]})  # fmt: skip
    (out / "rankings_nested.jsonl").write_bytes(jsonl(nested))
    table = pa.Table.from_pylist(nested[:10])
    pq.write_table(table, out / "rankings_nested.parquet")

    # Long CSV: the same 10 AlpacaEval rankings, one row per ranked response.
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["prompt_id", "prompt", "category", "annotator_id", "response_id", "response", "source", "rank",
                     "score"])  # fmt: skip
    for rec in nested[:10]:
        for resp in rec["responses"]:
            writer.writerow([rec["prompt_id"], rec["prompt"], rec["category"], rec["annotator_id"], resp["response_id"],
                             resp["text"], resp["source"], resp["rank"], resp["score"]])  # fmt: skip
    long_csv = buf.getvalue()
    (out / "rankings_long.csv").write_text(long_csv)

    make_corrupt(out, hh, bon, nested, long_csv)


def make_corrupt(out: Path, hh: list[bytes], bon: list[list[dict]], nested: list[dict], long_csv: str) -> None:
    """Corrupted variants: real records with one known fault each (see tests/fixtures/README.md)."""
    good = hh[:8]
    no_prefix = orjson.loads(hh[8])
    no_prefix["rejected"] = orjson.loads(hh[9])["rejected"]  # another dialogue's rejected turn
    lines = [
        good[0], good[1],
        b"",  # blank: not a record
        b'{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: hello", "rejected": ',  # 4: bad JSON (truncated)
        good[2],
        good[3].replace(b"Assistant:", b"Assistant:\xff\xfe", 1),  # 6: invalid UTF-8 bytes
        orjson.dumps({"chosen": orjson.loads(good[4])["chosen"]}),  # 7: missing rejected
        orjson.dumps({"chosen": 5, "rejected": orjson.loads(good[5])["rejected"]}),  # 8: wrong type
        orjson.dumps(no_prefix),  # 9: no shared prefix
        good[6], b"   ", good[7],  # 10, (11 blank), 12
    ]  # fmt: skip
    (out / "hh_rlhf_corrupt.jsonl").write_bytes(b"\n".join(lines) + b"\n")

    rows = [dict(r) for r in bon[0][:6]]
    rows[1]["preference"] = 2.5  # item 2: out of [1, 2]
    rows[2]["preference"] = "strong"  # item 3: wrong type
    del rows[3]["instruction"]  # item 4: missing field
    (out / "alpacaeval_corrupt.json").write_bytes(orjson.dumps(rows))

    recs = [dict(r) for r in nested[:6]]
    recs[1] = {**recs[1], "responses": [{**recs[1]["responses"][0], "rank": 1.5}, *recs[1]["responses"][1:]]}
    recs[2] = {k: v for k, v in recs[2].items() if k != "annotator_id"}
    recs[3] = {**recs[3], "responses": [{**recs[3]["responses"][0], "text": None}, *recs[3]["responses"][1:]]}
    recs[4] = {**recs[4], "responses": [{**recs[4]["responses"][0], "rank": "1"}, *recs[4]["responses"][1:]]}
    (out / "rankings_corrupt.jsonl").write_bytes(jsonl(recs))

    pairs = [orjson.loads(x) for x in (out / "pairwise_alpaca.jsonl").read_bytes().splitlines()[:5]]
    pairs[1]["winner"] = "model_c"
    del pairs[2]["model_b"]
    pairs[3]["winner"] = None
    (out / "pairwise_corrupt.jsonl").write_bytes(jsonl(pairs))

    rows_csv = list(csv.reader(io.StringIO(long_csv)))
    rows_csv[2][7] = "first"  # data row 2: rank not an integer
    rows_csv[5][5] = ""  # data row 5: empty response cell = missing
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows_csv[:9])
    (out / "rankings_long_corrupt.csv").write_text(buf.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, required=True, help="directory with the real data extracts")
    parser.add_argument("--raw", type=Path, default=Path("data/raw"))
    parser.add_argument("--fixtures", type=Path, default=Path("tests/fixtures"))
    args = parser.parse_args()
    make_raw(args.shared, args.raw)
    make_fixtures(args.shared, args.fixtures)


if __name__ == "__main__":
    main()
