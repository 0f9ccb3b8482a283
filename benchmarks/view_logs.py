"""What a growing log costs `dreamtext view`, in-process: a gallery poll of N runs (view_poll.py's
synthetic runs with 1,000-line logs, shaped as the trainer's) right after K running runs appended
a log line, against a poll with no change; and a run page's read (what ``api/run/<id>.json``
reads at each poll) of a 1,000-line log right after it grew a line.

    PYTHONPATH=. python benchmarks/view_logs.py 1000 --grown 8
    PYTHONPATH=/path/to/other/checkout python benchmarks/view_logs.py 1000 --grown 8

The viewer measured is the ``dreamtext`` on ``PYTHONPATH`` (printed first). Medians of 10 polls
and 30 reads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from view_poll import log_record, write_runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=int)
    parser.add_argument("--grown", type=int, default=8, help="running runs that append a line")
    args = parser.parse_args()
    import dreamtext
    from dreamtext.view.workspaces import Catalog, GalleryCache, read_run

    print(f"dreamtext from {Path(dreamtext.__file__).parent.parent}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        write_runs(args.runs, root, log_lines=1000)
        catalog, gallery = Catalog([root]), GalleryCache()
        gallery.runs(catalog.runs())
        running = sorted(p.parent for p in root.glob("*/status.json") if "running" in p.read_text())
        grown = running[: args.grown]
        quiet, after = [], []
        for i in range(10):
            start = time.perf_counter()
            gallery.runs(catalog.runs())
            quiet.append(time.perf_counter() - start)
            for ws in grown:
                with open(ws / "log.jsonl", "a") as f:
                    f.write(json.dumps(log_record(100_000 + 10 * i, 0.1)) + "\n")
            start = time.perf_counter()
            gallery.runs(catalog.runs())
            after.append(time.perf_counter() - start)
        q, a = statistics.median(quiet), statistics.median(after)
        print(
            f"gallery poll of {args.runs} runs: {q * 1e3:.0f} ms with no change, {a * 1e3:.0f} ms "
            f"after {len(grown)} logs grew a line ({(a - q) / max(1, len(grown)) * 1e3:.1f} ms "
            "a grown run)"
        )
        finished = catalog.find("prompt_00000")
        read_run(finished)
        took = []
        for i in range(30):
            with open(root / "prompt_00000" / "log.jsonl", "a") as f:
                f.write(json.dumps(log_record(200_000 + 10 * i, 0.1)) + "\n")
            start = time.perf_counter()
            run = read_run(finished)
            took.append(time.perf_counter() - start)
        print(
            f"run page read of a {run.log_lines}-line log after a line: "
            f"{statistics.median(took) * 1e3:.1f} ms"
        )


if __name__ == "__main__":
    main()
