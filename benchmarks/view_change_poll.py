"""What a gallery poll costs right after one run changed: bytes sent, cards sent, time; and how
many paths the server stats per poll of a finished sweep.

    python benchmarks/view_change_poll.py 1000                  # 1,000 runs (view_poll.py's)
    python benchmarks/view_change_poll.py 1000 --code /path/to/other/checkout

Writes N runs as ``view_poll.py`` does (a finished sweep: every 33rd failed, running or without
status.json), starts ``dreamtext view`` on them with the code at ``--code``, asks for the gallery
once, then ``--rounds`` times: one finished run's status.json is replaced (its error changes),
and the gallery is polled as the page polls it (taking gzip, naming its last answer's ETag, and,
where the server gives one, sending back its cursor: ``?since=``); each such poll's bytes as sent,
its JSON's size, the cards in it and its time. Then ``--rounds`` polls with nothing changed. The
server's memory (``VmRSS``, peak ``VmHWM``) at the end.

Then, in a process of its own with the same code: ``os.stat`` calls (``os.path.isfile`` and
``exists`` included) of one ``GalleryCache`` poll over the same runs with nothing changed, per
run, after two polls that read them (their files' times settled), and the CPU time of such a poll
(``time.process_time``: less swayed by other jobs on the machine than its wall time).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from view_poll import REPO, memory_kib, start_server, write_runs

# Run by the measuring process with PYTHONPATH at the checkout: stats per poll of a settled sweep.
COUNT_STATS = """
import os, sys, time
from pathlib import Path
import dreamtext.view.workspaces as workspaces
workspaces.STAT_SETTLES_AFTER_S = 0.0
catalog = workspaces.Catalog([Path(sys.argv[1])])
gallery = workspaces.GalleryCache()
for _ in range(2):
    gallery.runs(catalog.runs())
counts, stat = [], os.stat
def counted(path, *a, **k):
    counts[-1] += 1
    return stat(path, *a, **k)
os.stat = counted
for _ in range(30):
    counts.append(0)
    gallery.runs(catalog.runs())
os.stat = stat
cpu = []
for _ in range(30):
    start = time.process_time()
    gallery.runs(catalog.runs())
    cpu.append(time.process_time() - start)
n = len(catalog.runs())
print(f"{min(counts) / n:.1f} {sum(counts) / len(counts) / n:.1f} {max(counts) / n:.1f}")
print(f"{sorted(cpu)[len(cpu) // 2] * 1000:.0f}")
"""


def fetch(url: str, tag: str | None, cursor: str | None, auth: dict[str, str]) -> dict:
    """One poll as the page's browser makes it (``auth``: start_server's headers); the body as
    sent (gzipped) and as JSON."""
    headers = auth | {"Accept-Encoding": "gzip"} | ({"If-None-Match": tag} if tag else {})
    address = url + (f"?since={cursor}" if cursor else "")
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(urllib.request.Request(address, headers=headers)) as answer:
            status, body, etag = answer.status, answer.read(), answer.headers["ETag"]
    except urllib.error.HTTPError as answer:  # a 304
        if answer.code != 304:
            raise
        status, body, etag = 304, answer.read(), tag
    took = time.perf_counter() - start
    text = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
    data = json.loads(text) if text else {}
    cards = data.get("changed", data.get("runs", []))
    return {
        "s": took,
        "status": status,
        "sent": len(body),
        "json": len(text),
        "cards": len(cards),
        "tag": etag,
        "cursor": data.get("cursor", cursor),
    }


def change(workspace: Path, round_: int) -> None:
    """What a run's status.json rewrite looks like (written aside, then renamed over)."""
    status = json.loads((workspace / "status.json").read_text())
    status["error"] = f"changed in round {round_}"
    (workspace / "status.tmp").write_text(json.dumps(status))
    os.replace(workspace / "status.tmp", workspace / "status.json")


def measure(code: Path, root: Path, rounds: int) -> None:
    server, port, auth = start_server(code, root)
    url = f"http://127.0.0.1:{port}/api/runs.json"
    try:
        first = fetch(url, None, None, auth)
        tag, cursor = first["tag"], first["cursor"]
        statuses = root.glob("*/status.json")
        finished = sorted(p.parent for p in statuses if "finished" in p.read_text())
        changed, unchanged = [], []
        for i in range(rounds):
            time.sleep(0.05)
            change(finished[(i * 37) % len(finished)], i)
            answer = fetch(url, tag, cursor, auth)
            tag, cursor = answer["tag"], answer["cursor"]
            changed.append(answer)
        for _ in range(rounds):
            answer = fetch(url, tag, cursor, auth)
            tag, cursor = answer["tag"], answer["cursor"]
            unchanged.append(answer)
        memory = memory_kib(server.pid)
    finally:
        server.terminate()
        server.wait(10)
    med = lambda key, polls: statistics.median(p[key] for p in polls)  # noqa: E731
    print(
        f"{len(finished)} finished of the runs; first answer {first['sent'] / 1024:.1f} KiB sent "
        f"({first['json'] / 1024:.0f} KiB JSON, {first['cards']} cards), {first['s']:.2f} s"
    )
    print(
        f"a poll after one run changed (median of {rounds}): {med('sent', changed):,.0f} bytes "
        f"sent ({med('json', changed):,.0f} bytes JSON, {med('cards', changed):.0f} cards), "
        f"{med('s', changed) * 1000:.0f} ms (slowest {max(p['s'] for p in changed) * 1000:.0f}); "
        f"statuses {sorted({p['status'] for p in changed})}"
    )
    print(
        f"a poll with nothing changed: {med('s', unchanged) * 1000:.0f} ms, "
        f"{sum(p['status'] == 304 for p in unchanged)}/{rounds} were 304"
    )
    print(
        f"server memory at the end {memory['VmRSS'] / 1024:.0f} MiB "
        f"(peak {memory['VmHWM'] / 1024:.0f} MiB)"
    )
    env = dict(os.environ, PYTHONPATH=str(code))
    *counted, cpu = subprocess.run(
        [sys.executable, "-c", COUNT_STATS, str(root)],
        env=env,
        cwd=code,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    print(
        f"os.stat per run per poll, nothing changed (min / mean / max of 30 polls): "
        f"{' / '.join(counted)}; CPU of such a poll (folder scan, stats, statuses; median of "
        f"30): {cpu} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=int)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--log-lines", type=int, default=100, help="lines of a finished run's log")
    parser.add_argument("--code", type=Path, default=REPO, help="checkout whose viewer to run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        write_runs(args.runs, root, args.log_lines)
        measure(args.code.resolve(), root, args.rounds)


if __name__ == "__main__":
    main()
