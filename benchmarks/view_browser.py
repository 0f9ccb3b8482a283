"""What an open gallery of N runs costs the browser: Chromium (Playwright) on `dreamtext view`'s
gallery of ``view_poll.py``'s synthetic runs.

    python benchmarks/view_browser.py 1000 --seconds 60 --live 4 --code /path/to/checkout

Prints the time from opening the page to its cards drawn, the page's height, then, over
``--seconds`` of the page polling every 2 s while ``--live`` running runs write a log line and a
new status.json every 2 s: the renderer's main-thread time per minute (Chrome DevTools'
Performance metrics: all tasks, of which script, style and layout) and the bytes of the polls'
answers. Needs Playwright and a Chromium (``DREAMTEXT_CHROMIUM``, else ``/usr/bin/chromium``).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from view_poll import arguments, keep_running, start_server, write_runs

CHROMIUM = os.environ.get("DREAMTEXT_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
METRICS = ("TaskDuration", "ScriptDuration", "RecalcStyleDuration", "LayoutDuration")


def measure(code: Path, root: Path, seconds: float, live: int) -> None:
    from playwright.sync_api import sync_playwright

    server, port, auth = start_server(code, root)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(
                viewport={"width": 1280, "height": 900}, extra_http_headers=auth
            )
            answers = []
            page.on("response", lambda r: "api/runs.json" in r.url and answers.append(r))
            start = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector(".card")
            drawn = time.perf_counter() - start
            height = page.evaluate("() => document.documentElement.scrollHeight")
            cards = page.locator(".card").count()
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")

            def metrics() -> dict[str, float]:
                got = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
                return {name: got.get(name, 0.0) for name in METRICS}

            running = sorted(
                p.parent for p in root.glob("*/status.json") if "running" in p.read_text()
            )
            stop = threading.Event()
            writer = threading.Thread(target=keep_running, args=(running[:live], stop))
            writer.start()
            answers.clear()
            before, t0 = metrics(), time.monotonic()
            page.wait_for_timeout(seconds * 1000)
            after, t1 = metrics(), time.monotonic()
            stop.set()
            writer.join()
            sizes = [r.request.sizes()["responseBodySize"] for r in answers]  # as sent
            browser.close()
        per_min = {k: (after[k] - before[k]) / (t1 - t0) * 60 for k in METRICS}
        print(
            f"{cards} cards, page {height:,} px, drawn {drawn:.2f} s after opening; over "
            f"{t1 - t0:.0f} s: {len(answers)} polls, {sum(r.status == 304 for r in answers)} "
            f"were 304, {sum(sizes) / (t1 - t0) * 60 / 1024:.0f} KiB/min; renderer main thread "
            f"{per_min['TaskDuration']:.2f} s/min (script {per_min['ScriptDuration']:.2f}, "
            f"style {per_min['RecalcStyleDuration']:.2f}, layout {per_min['LayoutDuration']:.2f})"
        )
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    args = arguments(__doc__.split("\n\n")[0]).parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        write_runs(args.runs, root)
        measure(args.code.resolve(), root, args.seconds, args.live)


if __name__ == "__main__":
    main()
