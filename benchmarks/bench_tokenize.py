"""Tokenising (prompt, response) rows: special tokens from the learned layout vs the tokenizer's ``post_process``.

    python benchmarks/bench_tokenize.py [--pairs data/pairs] [--max-lengths 8 64 192 512] [--repeats 3]

Two row sets, each encoded by :class:`rewardline.modeling.formatting.Formatter` twice in one process: once as
shipped (``SpecialLayout``: the cut id lists joined with the post-processor's special tokens) and once with the
layout switched off (``post_process`` on encodings cut by ``Encoding.truncate``, the code before). Rows: every
response of the pairs directory with its prompt, and 200 synthetic rows of ≈ 300 prompt + 1,500 response tokens.
Prints, per set and ``max_length``, the best of ``--repeats`` wall seconds of each and whether the ids, type ids
and truncation flags are identical (one JSON line each).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from transformers import AutoTokenizer

from rewardline.data.tables import read_table, table_path
from rewardline.modeling.backbones import resolve_backbone
from rewardline.modeling.formatting import FormatConfig, Formatter


def pairs_rows(pairs_dir: Path) -> tuple[list[str], list[str]]:
    """Every response of a pairs directory, with its prompt's text."""
    responses = read_table(table_path(pairs_dir, "responses"))
    prompts = read_table(table_path(pairs_dir, "prompts"))
    text = dict(zip(prompts["prompt_id"].to_pylist(), prompts["prompt"].to_pylist(), strict=True))
    return [text[i] for i in responses["prompt_id"].to_pylist()], responses["response"].to_pylist()


def timed(formatter: Formatter, prompts: list[str], responses: list[str], repeats: int) -> tuple[float, dict]:
    """(best wall seconds of ``repeats`` encodes, the last encoding)."""
    best, out = float("inf"), {}
    for _ in range(repeats):
        start = time.perf_counter()
        out = formatter.encode(prompts, responses)
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, default=Path("data/pairs"))
    parser.add_argument("--backbone", default="all-MiniLM-L6-v2")
    parser.add_argument("--max-lengths", type=int, nargs="+", default=[8, 64, 192, 512])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(args.backbone))
    sets = {"pairs": pairs_rows(args.pairs),
            "long": ([f"question {i} " + "word " * 300 for i in range(200)],
                     [f"answer {i} " + "token " * 1500 for i in range(200)])}
    for name, (prompts, responses) in sets.items():
        for max_length in args.max_lengths:
            layout = Formatter(tokenizer, FormatConfig(max_length=max_length))
            before = Formatter(tokenizer, FormatConfig(max_length=max_length))
            before.layout = None
            layout_s, layout_out = timed(layout, prompts, responses, args.repeats)
            before_s, before_out = timed(before, prompts, responses, 1 if max_length < 64 else args.repeats)
            print(json.dumps({"rows": name, "n": len(prompts), "max_length": max_length, "template": layout.template,
                              "post_process_s": round(before_s, 3), "layout_s": round(layout_s, 3),
                              "identical": layout_out == before_out}), flush=True)


if __name__ == "__main__":
    main()
