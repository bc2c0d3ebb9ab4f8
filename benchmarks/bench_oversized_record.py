"""Peak memory and time of reading a JSONL file that holds one oversized record (issue 12, "Bounds").

    python benchmarks/bench_oversized_record.py [--huge-mb 100] [--records 10000] [--dir /tmp]

Writes ``records`` ordinary rankings plus, in the middle, one record whose response is ``huge-mb`` MB,
then reads it once with :func:`rewardline.data.adapters.read_file` (default limits) in a fresh process
and prints the record accounting, the seconds and the process's peak RSS (``ru_maxrss``). Run it with
``PYTHONPATH`` at another checkout to compare.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

READ = """
import json, resource, sys, time
from pathlib import Path
from rewardline.data.adapters import read_file
data = Path(sys.argv[1]).read_bytes()
t = time.perf_counter()
r = read_file(data, sys.argv[1], fmt="rankings")
seconds = time.perf_counter() - t
print(json.dumps({"records_in": r.records_in, "quarantined": r.quarantine.num_rows,
                  "reasons": sorted({x[:40] for x in r.quarantine["reason"].to_pylist()}),
                  "ranked_rows": r.ranked.num_rows, "read_file_s": round(seconds, 2),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def write_input(path: Path, records: int, huge_mb: int) -> None:
    def ranking(i: int, text: str) -> bytes:
        return orjson.dumps({"prompt": f"p{i}", "annotator_id": "a",
                             "responses": [{"text": text, "rank": 1}, {"text": "y" * 200, "rank": 2}]})

    with path.open("wb") as f:
        for i in range(records):
            f.write(ranking(i, "x" * 200) + b"\n")
            if i == records // 2:
                f.write(ranking(-1, "z" * (huge_mb * 1_000_000)) + b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--huge-mb", type=int, default=100)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    path = args.dir / f"oversized_{args.huge_mb}mb.jsonl"
    write_input(path, args.records, args.huge_mb)
    out = subprocess.run([sys.executable, "-c", READ, str(path)], capture_output=True, text=True, check=True,
                         cwd=args.dir)  # not the checkout: PYTHONPATH picks the code measured
    result = {"file_mb": round(path.stat().st_size / 1e6, 1), **json.loads(out.stdout)}
    path.unlink()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
