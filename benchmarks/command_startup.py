"""What every ``dreamtext`` command pays before it does anything: wall time and peak memory of
the commands that only read files or print help, and the import time of each module.

    python benchmarks/command_startup.py                          # this checkout, 5 repeats
    python benchmarks/command_startup.py --code /work/main --code . --root /tmp/startup

Under ``--root`` (kept where it is there already, so that several checkouts are measured on the
same runs) a two-line list is trained once on the built-in prior for 20 steps (``dreamtext
batch``: each run finished with its mesh and turntable) beside a three-line list of those two
lines and one not started. Then, ``--repeats`` times, for each ``--code`` checkout in turn
(interleaved, so that a change in the machine's load falls on every checkout alike), each
command in a process of its own started in that checkout (``python -m`` puts the current folder
first on the path), its wall time and its peak resident memory (``os.wait4``'s
``ru_maxrss``, taken by a small launcher process: see :data:`LAUNCHER`):

- ``batch LIST3 --status --iters 30``: two lines to continue (resumable), one not started;
- ``view RUN --static OUT``: one run's page, into a new folder each time;
- ``text --help`` and ``export --help``.

and for each module of the package, ``python -X importtime -c "import MODULE"``'s cumulative
time of the module in a process of its own, with the heavy libraries each command imported
(``torch``, ``trimesh``, ...). Medians are printed; the machine's load moves every figure, so
compare checkouts measured in one call.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "trimesh", "diffusers", "transformers", "scipy", "numpy", "PIL", "yaml")
LINES = ("a red cube", "a blue sphere")


def environment(code: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}


def run_in(command: list[str], code: Path) -> subprocess.CompletedProcess:
    """``command`` run in ``code``, its output captured: ``python -m`` and ``-c`` put the current
    folder first on the path, so that a run from another checkout imported that one's package."""
    return subprocess.run(command, env=environment(code), cwd=code, capture_output=True, text=True)


def check_checkout(code: Path) -> None:
    """Raise unless ``python`` run as the measures run it imports ``code``'s own package."""
    found = run_in([sys.executable, "-c", "import dreamtext; print(dreamtext.__file__)"], code)
    if Path(found.stdout.strip()).resolve() != (code / "dreamtext" / "__init__.py").resolve():
        raise RuntimeError(f"{code}: python imports {found.stdout.strip() or found.stderr}")


def make_runs(root: Path) -> None:
    """The two trained lines under ``root/runs`` and both lists, unless they are there."""
    (root / "list3.txt").write_text("\n".join([*LINES, "a green cube"]) + "\n")
    if all((root / "runs" / line.replace(" ", "_") / "mesh").is_dir() for line in LINES):
        return
    (root / "list2.txt").write_text("\n".join(LINES) + "\n")
    command = [sys.executable, "-m", "dreamtext", "batch", str(root / "list2.txt")]
    command += ["--model", "builtin:shapes", "--iters", "20", "--workspace", str(root / "runs")]
    subprocess.run(command, env=environment(REPO), cwd=REPO, check=True, stdout=subprocess.DEVNULL)


def commands(root: Path, out: Path) -> dict[str, list[str]]:
    """Each measured command's arguments after ``python -m dreamtext``."""
    runs = str(root / "runs")
    status = ["--model", "builtin:shapes", "--iters", "30", "--workspace", runs, "--status"]
    return {
        "batch --status": ["batch", str(root / "list3.txt"), *status],
        "view --static": ["view", str(root / "runs" / "a_red_cube"), "--static", str(out)],
        "text --help": ["text", "--help"],
        "export --help": ["export", "--help"],
    }


# Run by a small Python of its own, which starts the command and reports its wall time, peak
# RSS and exit code. Linux's ru_maxrss of a child counts the address space it was forked (or
# vforked) from until its exec: a command started by a large process (a pytest worker holding
# torch and the test models, 1.3 GB) read as that large. Started from this small one, it reads
# the command's own peak above the launcher's ~10 MB.
LAUNCHER = """
import os, subprocess, sys, time
start = time.perf_counter()
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, usage = os.wait4(process.pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def run_command(argv: list[str], code: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS in KiB of ``python -m dreamtext argv`` in a process of its own,
    started by a small launcher (:data:`LAUNCHER`), so that the peak is the command's whatever
    the size of the process that measures it."""
    launched = run_in(
        [sys.executable, "-c", LAUNCHER, sys.executable, "-m", "dreamtext", *argv], code
    )
    wall, rss, code_ = launched.stdout.split()
    if int(code_) not in (0, 1):  # batch --status: 1 where a line is unfinished
        raise RuntimeError(f"dreamtext {' '.join(argv)} exited {code_}")
    return float(wall), int(rss)


def heavy_imports(argv: list[str], code: Path) -> set[str]:
    """The libraries of :data:`HEAVY` that ``python -m dreamtext argv`` imports."""
    command = [sys.executable, "-X", "importtime", "-m", "dreamtext", *argv]
    err = run_in(command, code).stderr
    imported = set(re.findall(r"\|\s*(\w+)$", err, re.MULTILINE))
    return {name for name in HEAVY if name in imported}


def module_names(code: Path) -> list[str]:
    """Every module of ``code``'s package (``dreamtext.view.static``), but ``__main__``."""
    package = code / "dreamtext"
    names = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(code).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def import_time(module: str, code: Path) -> float:
    """Seconds ``import module`` takes, by ``-X importtime``'s cumulative column."""
    command = [sys.executable, "-X", "importtime", "-c", f"import {module}"]
    err = run_in(command, code).stderr
    match = re.search(rf"\|\s*(\d+)\s*\|\s*{re.escape(module)}$", err, re.MULTILINE)
    return int(match.group(1)) / 1e6 if match else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, help="where the runs are kept (default: a temp dir)")
    parser.add_argument("--code", type=Path, action="append", help="a checkout (repeatable)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-modules", action="store_true", help="skip the modules' imports")
    parser.add_argument("--no-commands", action="store_true", help="skip the commands")
    parser.add_argument("--modules", nargs="+", help="these modules alone (default: every one)")
    args = parser.parse_args()
    codes = [c.resolve() for c in (args.code or [REPO])]
    for code in codes:
        check_checkout(code)
    root = args.root or Path(tempfile.mkdtemp(prefix="startup-"))
    root.mkdir(parents=True, exist_ok=True)
    make_runs(root.resolve())
    results: dict[tuple[str, Path], list[tuple[float, int]]] = {}
    imported: dict[tuple[str, Path], set[str]] = {}
    for _ in range(0 if args.no_commands else args.repeats):
        for code in codes:
            out = Path(tempfile.mkdtemp(prefix="startup-static-"))
            shutil.rmtree(out)
            for name, argv in commands(root.resolve(), out).items():
                results.setdefault((name, code), []).append(run_command(argv, code))
                if (name, code) not in imported:
                    shutil.rmtree(out, ignore_errors=True)
                    imported[name, code] = heavy_imports(argv, code)
            shutil.rmtree(out, ignore_errors=True)
    if results:
        print(f"{'command':16} {'checkout':28} {'wall s':>7} {'peak RSS MiB':>12}  imports")
    for (name, code), rows in results.items():
        wall = statistics.median(w for w, _ in rows)
        rss = statistics.median(r for _, r in rows) / 1024
        heavy = ", ".join(sorted(imported[name, code])) or "-"
        print(f"{name:16} {str(code)[-28:]:28} {wall:7.2f} {rss:12.0f}  {heavy}")
    if args.no_modules:
        return
    print(f"\n{'module':32} " + " ".join(f"{str(c)[-14:]:>14}" for c in codes) + "  (import s)")
    for module in args.modules or module_names(codes[-1]):
        samples: dict[Path, list[float]] = {code: [] for code in codes}
        for _ in range(args.repeats):  # interleaved, as the commands
            for code in codes:
                samples[code].append(import_time(module, code))
        times = [statistics.median(samples[code]) for code in codes]
        print(f"{module:32} " + " ".join(f"{t:14.2f}" for t in times), flush=True)


if __name__ == "__main__":
    main()
