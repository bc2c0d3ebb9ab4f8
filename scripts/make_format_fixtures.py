"""Build the TRL- and RewardBench-shaped test fixtures from real hh-rlhf pairs.

    python scripts/make_format_fixtures.py --shared DIR [--fixtures tests/fixtures]

DIR holds ``hh_rlhf_harmless_base_sample.jsonl.gz`` (anthropics/hh-rlhf, harmless-base test, MIT).
Each hh-rlhf pair (prompt = the shared prefix through the last ``\\n\\nAssistant:``, responses = the
two last Assistant turns) is re-expressed in one of TRL's four preference shapes or as a RewardBench
row; provenance and what is synthetic are listed in tests/fixtures/README.md. Deterministic: rerunning
reproduces the files byte for byte.
"""

from __future__ import annotations

import argparse
import gzip
import re
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

ASSISTANT = "\n\nAssistant:"
RB1_SUBSETS = ("alpacaeval-easy", "mt-bench-med", "llmbar-natural", "mt-bench-hard", "refusals-dangerous",
               "xstest-should-respond", "math-prm", "hep-python")  # fmt: skip  (two per v1 section)
RB2_SUBSETS = ("Factuality", "Precise IF", "Math", "Safety", "Focus")


def hh_pairs(shared: Path) -> list[dict]:
    """Every pair as {prompt, messages, chosen, rejected}: prompt text, its turns, the two responses."""
    lines = gzip.decompress((shared / "hh_rlhf_harmless_base_sample.jsonl.gz").read_bytes()).split(b"\n")
    pairs = []
    for line in filter(bytes.strip, lines):
        row = orjson.loads(line)
        prefix, chosen = row["chosen"].rsplit(ASSISTANT, 1)
        _, rejected = row["rejected"].rsplit(ASSISTANT, 1)
        turns = [t for t in re.split(r"\n\n(?=Human:|Assistant:)", prefix) if t.strip()]
        messages = [{"role": "user" if t.startswith("Human:") else "assistant", "content": t.split(":", 1)[1].strip()}
                    for t in turns]  # fmt: skip
        pairs.append({"prompt": prefix + ASSISTANT, "messages": messages, "chosen": chosen.strip(),
                      "rejected": rejected.strip()})  # fmt: skip
    return pairs


def chat_text(messages: list[dict]) -> str:
    """A chat-template rendering without hh markers: ``<|user|>\\n...\\n<|assistant|>\\n``."""
    return "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages) + "<|assistant|>\n"


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def fixtures(pairs: list[dict]) -> dict[str, list[dict]]:
    """File name -> records; each file takes its own slice of the hh-rlhf pairs (1-based record numbers)."""
    p = {name: pairs[start - 1 : start - 1 + n] for name, start, n in (
        ("se", 51, 10), ("si", 61, 10), ("ce", 71, 10), ("ci", 81, 10), ("m", 91, 10), ("rb1", 101, 24),
        ("rb2", 125, 12))}  # fmt: skip
    extra = pairs[136:160]  # two more rejected per row: pairs 137..160's rejected (other prompts' answers)
    return {
        "trl_standard_explicit.jsonl": [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
                                        for r in p["se"]],
        "trl_standard_implicit.jsonl": [{"chosen": chat_text(r["messages"]) + r["chosen"],
                                         "rejected": chat_text(r["messages"]) + r["rejected"]} for r in p["si"]],
        "trl_conversational_explicit.jsonl": [{"prompt": r["messages"], "chosen": assistant(r["chosen"]),
                                               "rejected": assistant(r["rejected"])} for r in p["ce"]],
        "trl_conversational_implicit.jsonl": [{"chosen": r["messages"] + assistant(r["chosen"]),
                                               "rejected": r["messages"] + assistant(r["rejected"])} for r in p["ci"]],
        "trl_margin.jsonl": [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
                              "margin": 0.5 * (1 + i % 3)} for i, r in enumerate(p["m"])],
        "rewardbench_v1.jsonl": [{"prompt": r["prompt"], "chosen": r["chosen"], "chosen_model": "hh-chosen",
                                  "rejected": r["rejected"], "rejected_model": "hh-rejected",
                                  "subset": RB1_SUBSETS[i // 3], "id": 1000 + i} for i, r in enumerate(p["rb1"])],
        "rewardbench2_bo4.jsonl": [{"id": f"rb2-{i}", "prompt": r["prompt"], "chosen": [r["chosen"]],
                                    "rejected": [r["rejected"], *(x["rejected"] for x in extra[2 * i : 2 * i + 2])],
                                    "num_correct": 1, "num_incorrect": 3, "total_completions": 4,
                                    "subset": RB2_SUBSETS[i % len(RB2_SUBSETS)]} for i, r in enumerate(p["rb2"])],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, required=True)
    parser.add_argument("--fixtures", type=Path, default=Path("tests/fixtures"))
    args = parser.parse_args()
    made = fixtures(hh_pairs(args.shared))
    for name, records in made.items():
        (args.fixtures / name).write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    table = pa.Table.from_pylist(made["trl_conversational_explicit.jsonl"])
    pq.write_table(table, args.fixtures / "trl_conversational_explicit.parquet", compression="zstd")
    print(f"wrote {len(made) + 1} fixtures to {args.fixtures}")


if __name__ == "__main__":
    main()
