"""What a live run's page costs per poll when its log is long: the bytes of ``api/run/<id>.json``
(as sent, gzipped, and unzipped) and the server's time to answer, for one running run whose
``log.jsonl`` holds N lines shaped as the trainer's (``view_poll.log_record``), each poll right
after the run appended a line (a live run changes at every log line, so its page's polls get
answers, not 304s). Each poll sends back the last answer's cursor where the code gives one (as
the page does: it is then answered with what changed since), and its ETag.

    python benchmarks/view_run_poll.py 100000
    python benchmarks/view_run_poll.py 100000 --code /path/to/other/checkout
    python benchmarks/view_run_poll.py 100000 --runs 64   # the server's memory, 64 pages read
    python benchmarks/view_run_poll.py 1000 --polls 200 --previews 38   # a 10,000-step run's

``--runs N``: N runs with such logs (the others finished: hard links to one file), each run's
``api/run/<id>.json`` asked for once before the polls (the server keeps the curves of the 64
logs asked for last), then the server's resident memory (``VmRSS``, and its peak ``VmHWM``).

Then as many polls with nothing new (the run's files as they were: a 304 where the code has
ETags), and for both kinds the server process's CPU per poll (user + system from
``/proc/PID/stat``, over all the polls: its clock ticks are 10 ms, so give 100 or more).

``--previews N``: the run has N step previews (``previews/step_XXXXXX.png``, one every 250
steps), which each poll lists.

Also the run page itself (its first load) and the curve points in the answer. Medians of
``--polls`` polls. The server runs the checkout at ``--code`` in its own process.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
from view_poll import PNG, REPO, log_record, memory_kib, start_server

AUTH: dict[str, str] = {}  # the cookie of the viewer's token, once it started


def fetch(url: str, tag: str | None = None) -> tuple[float, int, bytes, str | None]:
    """One request as a browser's poll: taking gzip, naming its last answer, with the viewer's
    token (AUTH: start_server's headers). (seconds, status, body as sent, ETag)."""
    headers = AUTH | {"Accept-Encoding": "gzip"} | ({"If-None-Match": tag} if tag else {})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as response:
            status, body, etag = response.status, response.read(), response.headers["ETag"]
    except urllib.error.HTTPError as answer:  # a 304
        status, body, etag = answer.code, answer.read(), tag
    return time.perf_counter() - start, status, body, etag


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far, user + system (Linux's /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def unzipped(body: bytes) -> bytes:
    return gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lines", type=int)
    parser.add_argument("--polls", type=int, default=5)
    parser.add_argument("--code", type=Path, default=REPO, help="checkout whose viewer to run")
    parser.add_argument("--runs", type=int, default=1, help="runs whose page data is read once")
    parser.add_argument("--previews", type=int, default=0, help="step previews of the run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "runs" / "long_run"
        ws.mkdir(parents=True)
        iters = args.lines * 20
        config = {"prompt": "a long run", "iters": iters}
        (ws / "config.json").write_text(json.dumps(config))
        records = (log_record(s, 1.0 / s) for s in range(10, args.lines * 10 + 1, 10))
        (ws / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        (ws / "previews").mkdir()
        for s in range(250, 250 * args.previews + 1, 250):
            (ws / "previews" / f"step_{s:06d}.png").write_bytes(PNG)
        others = []
        for i in range(1, args.runs):
            other = ws.parent / f"finished_{i:03d}"
            other.mkdir()
            (other / "config.json").write_text(json.dumps(config))
            os.link(ws / "log.jsonl", other / "log.jsonl")
            others.append(other.name)
        server, port, headers = start_server(args.code.resolve(), ws.parent)
        AUTH.update(headers)
        try:
            base = f"http://127.0.0.1:{port}/"
            memory = memory_kib(server.pid)
            start = time.perf_counter()
            for name in others:
                fetch(base + f"api/run/{name}.json")
            if others:
                memory = memory_kib(server.pid)
                print(
                    f"{len(others)} other runs' data read in {time.perf_counter() - start:.1f} "
                    f"s: server memory {memory['VmRSS'] / 1024:.0f} MiB (peak "
                    f"{memory['VmHWM'] / 1024:.0f} MiB)"
                )
            took, _, page, _ = fetch(base + "run/long_run/")
            page_text = unzipped(page)
            url = base + "api/run/long_run.json"
            fetch(url)
            step, tag, polls, texts = args.lines * 10, None, [], []
            cursor = json.loads(unzipped(fetch(url)[2])).get("cursor")
            cpu = cpu_seconds(server.pid)
            for _ in range(args.polls):
                step += 10
                with open(ws / "log.jsonl", "a") as f:
                    f.write(json.dumps(log_record(step, 1.0 / step)) + "\n")
                polls.append(fetch(url + (f"?since={quote(cursor)}" if cursor else ""), tag))
                tag = polls[-1][3]
                texts.append(unzipped(polls[-1][2]))
                cursor = json.loads(texts[-1]).get("cursor")
            new_line_cpu = (cpu_seconds(server.pid) - cpu) / args.polls
            cpu, same = cpu_seconds(server.pid), []
            for _ in range(args.polls):
                same.append(fetch(url + (f"?since={quote(cursor)}" if cursor else ""), tag))
            same_cpu = (cpu_seconds(server.pid) - cpu) / args.polls
            same_statuses = sorted({status for _, status, _, _ in same})
            same_sent = statistics.median(len(body) for _, _, body, _ in same)
            statuses = {status for _, status, _, _ in polls}
            sent = statistics.median(len(body) for _, _, body, _ in polls)
            text = statistics.median(len(text) for text in texts)
            points = len(json.loads(unzipped(fetch(url)[2]))["run"]["series"]["step"])
            seconds = statistics.median(t for t, _, _, _ in polls)
            memory = memory_kib(server.pid)
            print(
                f"{args.code.resolve()}: a {args.lines}-line log: run page {len(page) / 1024:.0f} "
                f"KiB sent ({len(page_text) / 1024:.0f} KiB unzipped, {took:.2f} s); a poll after "
                f"a new line: HTTP {sorted(statuses)}, {sent / 1024:.1f} KiB sent "
                f"({text / 1024:.1f} KiB unzipped; {points} curve points in the run), "
                f"{seconds * 1000:.0f} ms (median of {len(polls)}, slowest "
                f"{max(t for t, _, _, _ in polls) * 1000:.0f} ms), server CPU "
                f"{new_line_cpu * 1000:.1f} ms a poll; a poll with nothing new: HTTP "
                f"{same_statuses}, {same_sent / 1024:.1f} KiB sent, server CPU "
                f"{same_cpu * 1000:.1f} ms a poll; {args.runs} runs' pages read: "
                f"server memory {memory['VmRSS'] / 1024:.0f} MiB (peak "
                f"{memory['VmHWM'] / 1024:.0f} MiB)"
            )
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
