"""What `dreamtext view --static` costs on a big workspace: peak memory (``/usr/bin/time -v``'s
"Maximum resident set size") and time of the export of N synthetic runs (``view_poll.py``'s: a
finished sweep's files, ``--log-lines`` lines per finished run's log), and a digest of what it
wrote, to compare two checkouts' output byte for byte.

    python benchmarks/view_static.py 1000
    python benchmarks/view_static.py 1000 --log-lines 1000 --code /path/to/other/checkout

``--root FOLDER`` keeps the runs there (written once, reused by later calls: two checkouts'
exports of the same runs then have the same digest when they write the same bytes, within ten
minutes of the runs' writing: after that their running runs' cards say for how many minutes they
have been quiet, which changes the pages from one minute to the next).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from view_poll import REPO, write_runs


def tree_digest(folder: Path) -> tuple[str, str, int, int]:
    """A digest of every file's path and bytes under ``folder``, one of all but ``static/`` (the
    package's script and style, which differ between checkouts that write the same pages), the
    number of files and their bytes."""
    digest, pages, files, size = hashlib.sha256(), hashlib.sha256(), 0, 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        rel = path.relative_to(folder).as_posix()
        for d in (digest,) if rel.startswith("static/") else (digest, pages):
            d.update(rel.encode() + b"\0" + data + b"\0")
        files, size = files + 1, size + len(data)
    return digest.hexdigest()[:16], pages.hexdigest()[:16], files, size


def export(code: Path, root: Path, out: Path) -> tuple[float, float]:
    """Run the export of checkout ``code`` under ``/usr/bin/time -v``: (peak RSS MiB, wall s)."""
    env = dict(os.environ, PYTHONPATH=str(code))
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "dreamtext.cli", "view", str(root)]
    done = subprocess.run(
        [*command, "--static", str(out)], cwd=code, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"the export failed:\n{done.stderr[-2000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)",
                     done.stderr)  # fmt: skip
    seconds = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    return int(rss.group(1)) / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=int)
    parser.add_argument("--log-lines", type=int, default=100, help="lines of a finished run's log")
    parser.add_argument("--code", type=Path, default=REPO, help="checkout whose viewer to run")
    parser.add_argument("--root", type=Path, help="keep (or reuse) the runs in this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp) / "runs"
        if not root.exists():
            write_runs(args.runs, root, args.log_lines)
        out = Path(tmp) / "site"
        peak, seconds = export(args.code.resolve(), root, out)
        digest, pages, files, size = tree_digest(out)
        print(
            f"{args.code.resolve()}: {args.runs} runs ({args.log_lines}-line logs): peak RSS "
            f"{peak:.0f} MiB, {seconds:.1f} s; wrote {files} files, {size / 2**20:.1f} MiB, "
            f"digest {digest} (without static/: {pages})"
        )


if __name__ == "__main__":
    main()
