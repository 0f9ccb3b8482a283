"""What one open gallery costs the `dreamtext view` server: time per ``api/runs.json`` (the page
polls it every 2 s) and the server's CPU while one client polls.

    python benchmarks/view_poll.py 1000                   # 1,000 runs in a temporary folder
    python benchmarks/view_poll.py 250 --seconds 60 --live 4 --code /path/to/other/checkout
    python benchmarks/view_poll.py 1000 --log-lines 1000 --live 4   # 10,000-step runs

Writes N runs as a finished sweep leaves them (config, a ``--log-lines`` log of lines shaped as
the trainer writes them (~370 bytes, 15 keys), previews every 250 steps,
final preview, mesh files, turntable, checkpoint, status.json, all three hours old; every 33rd
failed, running or without status.json) and a ``batch.jsonl`` naming them, starts ``dreamtext
view`` on them with the code at ``--code`` (this checkout by default) in its own process, then:
the first request, 10 back to back (whole answers), 10 naming the last answer's ETag (as the page
asks when nothing changed: a 304 without a body, where the code has ETags), and polling every 2 s
for ``--seconds`` as the page does (naming its last answer and sending back its cursor, where the
code gives one: the runs that changed since) while ``--live`` of the running runs
get a log line and a new status.json every 2 s. The server's CPU is its process's user + system
time over the polling; KiB/min the answers' bodies as sent (the requests take gzip, as
browsers' do); its memory the process's resident set (``VmRSS``) after the first answer and at the
end, and its peak (``VmHWM``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# A 1x1 PNG: the viewer never decodes pictures, it lists and serves them.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763"
    "f8cfc0000003010100c9fe92ef0000000049454e44ae426082"
)


def log_record(step: int, loss: float) -> dict:
    """A log.jsonl line as the trainer writes it (the keys of a `dreamtext text` run's log)."""
    return {
        "step": step, "loss": loss, "loss_sds": loss, "loss_entropy": 0.12239475548267365,
        "loss_opacity": 0.5059474110603333, "loss_orientation": 0.0, "shading": "lambertian",
        "view": "left side", "backprop": "direct", "samples_per_ray": 5.5224609375,
        "t": 494.0, "w": 0.7141202688217163, "skipped": 0.0, "its": 4.0 + step % 7 / 10,
        "skipped_total": 0, "gpu_mem_mib": 2048.0 + step % 97,
    }  # fmt: skip


def write_runs(n: int, root: Path, log_lines: int = 100) -> None:
    sys.path.insert(0, str(REPO))
    from dreamtext.processes import HOST, process_start

    root.mkdir(parents=True)
    batch = []
    past = time.time() - 3 * 3600
    for i in range(n):
        name = f"prompt_{i:05d}"
        ws = root / name
        (ws / "previews").mkdir(parents=True)
        kind = {1: "failed", 2: "running", 3: "old"}.get(i % 33, "finished")
        iters = log_lines * 10
        last = iters if kind != "running" else iters // 2 - 10
        config = {"prompt": f"prompt number {i}", "workspace": str(ws), "iters": iters}
        (ws / "config.json").write_text(json.dumps(config, indent=2))
        lines = (log_record(s, 1.0 / s) for s in range(10, last + 1, 10))
        (ws / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        for s in range(iters // 4, last + 1, iters // 4):
            (ws / "previews" / f"step_{s:06d}.png").write_bytes(PNG)
        (ws / "checkpoints").mkdir()
        (ws / "checkpoints" / "last.pt").write_bytes(b"x" * 1000)
        status = {"state": kind, "step": last, "iters": iters, "seconds": 250.0, "error": None}
        if kind == "finished":
            (ws / "previews" / "final.png").write_bytes(PNG)
            (ws / "mesh").mkdir()
            for f in ("mesh.glb", "mesh.obj", "mesh.mtl", "albedo.png", "mesh.ply"):
                (ws / "mesh" / f).write_bytes(b"m" * 2000)
            (ws / "mesh" / "mesh.json").write_text(json.dumps({"vertices": 8000}))
            (ws / "video").mkdir()
            (ws / "video" / "turntable.mp4").write_bytes(b"v" * 5000)
            (ws / "video" / "turntable.gif").write_bytes(b"g" * 5000)
        if kind == "failed":
            status["error"] = "CUDA out of memory"
        if kind == "running":  # a live process of this machine: pid 1
            status.update(host=HOST, pid=1, pid_start=process_start(1))
        if kind != "old":
            (ws / "status.json").write_text(json.dumps(status, indent=2))
        if kind != "running":
            for p in [ws, *ws.rglob("*")]:
                os.utime(p, (past, past))
            batch.append({"line": i + 1, "prompt": config["prompt"], "workspace": name,
                          "status": "finished" if kind == "finished" else "failed",
                          "error": status["error"], "seconds": 250.0, "its": 4.0,
                          "started": "2026-11-30T10:00:00+00:00",
                          "finished": "2026-11-30T10:04:10+00:00"})  # fmt: skip
    (root / "batch.jsonl").write_text("".join(json.dumps(r) + "\n" for r in batch))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> dict[str, int]:
    """The process's resident set now (VmRSS) and at its peak (VmHWM), KiB."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}


def keep_running(runs: list[Path], stop: threading.Event) -> None:
    """What a training run does every few seconds: a log line, then status.json replaced."""
    while not stop.wait(2.0):
        for ws in runs:
            status = json.loads((ws / "status.json").read_text())
            status["step"] += 10
            with open(ws / "log.jsonl", "a") as f:
                f.write(json.dumps(log_record(status["step"], 0.1)) + "\n")
            (ws / "status.tmp").write_text(json.dumps(status))
            os.replace(ws / "status.tmp", ws / "status.json")


def start_server(code: Path, root: Path) -> tuple[subprocess.Popen, int, dict[str, str]]:
    """``dreamtext view ROOT`` of the checkout ``code`` on a free port, once it listens; and the
    headers its requests need: the cookie of the token in the address it printed first (none
    for a checkout older than the token, whose address has none)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(code))
    command = [sys.executable, "-m", "dreamtext.cli", "view", str(root), "--port", str(port)]
    server = subprocess.Popen(command, cwd=code, env=env, stdout=subprocess.PIPE, text=True)
    first = server.stdout.readline()  # "dreamtext view: N runs at http://127.0.0.1:PORT/?token=T"
    token = re.search(r"[?&]token=([0-9a-f]+)", first)
    # The cookie the printed address's first answer sets (server.py: one per port).
    headers = {"Cookie": f"dreamtext-view-{port}={token[1]}"} if token else {}
    return server, port, headers


def arguments(description: str) -> argparse.ArgumentParser:
    """The arguments this benchmark and ``view_browser.py`` share."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("runs", type=int)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--live", type=int, default=4, help="running runs that keep writing")
    parser.add_argument("--code", type=Path, default=REPO, help="checkout whose viewer to run")
    return parser


def measure(code: Path, root: Path, seconds: float, live: int) -> None:
    server, port, auth = start_server(code, root)
    try:
        url = f"http://127.0.0.1:{port}/api/runs.json"

        cursor: list[str | None] = [None]  # the last answer's, where the server gives one

        def fetch(tag: str | None = None) -> tuple[float, int, bytes, str | None]:
            """One request, as the page's browser polls: taking gzip, naming the answer it has
            (``tag``) and, after a tagged answer, sending back its cursor (``?since=``). The
            body as it came (gzipped where the server gzips)."""
            headers = auth | {"Accept-Encoding": "gzip"} | ({"If-None-Match": tag} if tag else {})
            since = f"?since={cursor[0]}" if tag and cursor[0] else ""
            request = urllib.request.Request(url + since, headers=headers)
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    status, body, etag = response.status, response.read(), response.headers["ETag"]
            except urllib.error.HTTPError as answer:  # urllib raises on a 304
                if answer.code != 304:
                    raise
                status, body, etag = 304, answer.read(), tag
            took = time.perf_counter() - start
            if body:
                text = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
                cursor[0] = json.loads(text).get("cursor")
            return took, status, body, etag

        first, _, body, tag = fetch()
        memory_first = memory_kib(server.pid)
        burst = [fetch()[0] for _ in range(10)]
        unchanged = [fetch(tag)[:2] for _ in range(10)] if tag else []
        running = sorted(p.parent for p in root.glob("*/status.json") if "running" in p.read_text())
        stop = threading.Event()
        writer = threading.Thread(target=keep_running, args=(running[:live], stop))
        writer.start()
        cpu0, t0, polls, sent, not_modified = cpu_seconds(server.pid), time.monotonic(), [], 0, 0
        while time.monotonic() - t0 < seconds:
            took, status, answer, tag = fetch(tag)
            polls.append(took)
            sent += len(answer)
            not_modified += status == 304
            time.sleep(max(0.0, 2.0 - took))
        cpu1, t1 = cpu_seconds(server.pid), time.monotonic()
        memory = memory_kib(server.pid)
        stop.set()
        writer.join()
        per_min = (cpu1 - cpu0) / (t1 - t0) * 60
        text = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
        n = len(json.loads(text)["runs"])
        conditional = "no ETag"
        if unchanged:
            took = statistics.median(t for t, _ in unchanged) * 1000
            conditional = f"{took:.0f} ms ({sum(s == 304 for _, s in unchanged)}/10 were 304)"
        print(
            f"{n} runs, {len(text) // 1024} KiB ({len(body) // 1024} KiB sent): first "
            f"{first:.2f} s; back to back median "
            f"{statistics.median(burst) * 1000:.0f} ms, naming the last answer {conditional}; "
            f"polled every 2 s for {t1 - t0:.0f} s (median {statistics.median(polls) * 1000:.0f} "
            f"ms, {not_modified}/{len(polls)} were 304, {sent / (t1 - t0) * 60 / 1024:.0f} KiB/min "
            f"of answers): server CPU {per_min:.1f} s/min ({per_min / 60 * 100:.1f} % of a core); "
            f"server memory {memory_first['VmRSS'] / 1024:.0f} MiB after the first answer, "
            f"{memory['VmRSS'] / 1024:.0f} MiB at the end, peak {memory['VmHWM'] / 1024:.0f} MiB"
        )
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--log-lines", type=int, default=100, help="lines of a finished run's log")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        write_runs(args.runs, root, args.log_lines)
        measure(args.code.resolve(), root, args.seconds, args.live)


if __name__ == "__main__":
    main()
