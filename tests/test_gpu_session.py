"""benchmarks/gpu_session.sh and gpu_wheels.sh, as far as a machine without a GPU can run them.

A GPU is lent for 15 minutes of device time, one prepared call at a time: a check whose command
line no longer parses, a check name mistyped, or a wheel missing there costs a whole session.
The session script runs here with a stand-in ``python3`` on the PATH that records each command
line and exits; every recorded command is then parsed by the parser of the program it names.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
from importlib.metadata import requires
from pathlib import Path

import pytest
from benchmark_scripts import BENCHMARKS, load_benchmark
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = BENCHMARKS.parent
SESSION = BENCHMARKS / "gpu_session.sh"
WHEELS = BENCHMARKS / "gpu_wheels.sh"
# The lent machine's Python (/work/.library/device/KINDS.md): requirement markers evaluate there.
DEVICE_PYTHON = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}
# One device call runs for at most 600 s; the wheels' install and the environment probe come first.
DEVICE_CALL_SECONDS = 600
BEFORE_THE_CHECKS_SECONDS = 15

# Records its command line (NUL-separated, one file a call, in call order) and, for ``python3 -``,
# the program on its stdin; exits with $FAKE_STATUS (the wheels' install, where there is a .whl/
# folder, with 0).
FAKE_PYTHON = """#!/bin/sh
n=$(ls "$RECORD" | wc -l)
file="$RECORD/$(printf %04d "$n")"
printf '%s\\0' "$@" > "$file"
if [ "$1" = "-" ]; then cat > "$file.stdin"; fi
if [ "$1 $2" = "-m pip" ]; then exit 0; fi
exit "${FAKE_STATUS:-0}"
"""


def session_checks() -> dict[str, int]:
    """``{name: timeout seconds}`` of every ``check`` line in the session script."""
    found = re.findall(r"^check (\w+) (\d+) ", SESSION.read_text(), flags=re.MULTILINE)
    return {name: int(seconds) for name, seconds in found}


def default_checks() -> list[str]:
    match = re.search(r'CHECKS=" \$\{\*:-([^}]*)\} "', SESSION.read_text())
    assert match, "the session script's default set of checks"
    return match.group(1).split()


def run_session(
    tmp_path: Path, *checks: str, status: int = 0
) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """The session script with the stand-in ``python3``; returns the result and the recorded
    command lines."""
    bin_dir, record, out = tmp_path / "bin", tmp_path / "record", tmp_path / "out"
    for folder in (bin_dir, record):
        folder.mkdir(exist_ok=True)
    fake = bin_dir / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "RECORD": str(record),
        "OUT": str(out),
        "FAKE_STATUS": str(status),
    }
    result = subprocess.run(
        ["bash", str(SESSION), *checks],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    calls = [
        [arg.decode() for arg in path.read_bytes().split(b"\0")[:-1]]
        for path in sorted(record.iterdir())
        if not path.name.endswith(".stdin")
    ]
    # The wheels' install, where a .whl/ folder is here (bash benchmarks/gpu_wheels.sh)
    return result, [call for call in calls if call[:2] != ["-m", "pip"]]


class Parsed(Exception):
    """Raised by the patched ``parse_args`` once a command line has parsed."""


def parse_with_main(main, argv: list[str], monkeypatch) -> None:
    """Run ``main(argv)`` up to its argument parsing: a bad command line exits 2 there."""
    real = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        real(self, args, namespace)
        raise Parsed

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
        patch.setattr("sys.argv", ["script", *argv])
        with pytest.raises(Parsed):
            main(argv)


def argv_main(main):
    """``main`` as a function of the argument list (one that reads ``sys.argv`` ignores it)."""
    if "argv" in main.__code__.co_varnames[: main.__code__.co_argcount]:
        return main
    return lambda argv: main()


def test_both_scripts_are_valid_bash():
    for script in (SESSION, WHEELS):
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_every_check_runs_a_command_line_its_program_accepts(tmp_path, monkeypatch):
    checks = session_checks()
    result, calls = run_session(tmp_path, *checks)
    assert result.returncode == 0, result.stderr
    logs = sorted(path.stem for path in (tmp_path / "out").glob("*.log"))
    assert logs == sorted([*checks, "environment"])
    scripts = {}
    programs = set()
    for call in calls:
        if call[0] == "-":  # the environment probe, its program on stdin
            continue
        if call[:2] == ["-m", "pytest"]:
            files = [arg for arg in call[2:] if arg.endswith(".py")]
            assert all((ROOT / name).is_file() for name in files), call
            programs.add("pytest")
        elif call[:2] == ["-m", "dreamtext.cli"]:
            from dreamtext.cli import build_parser

            build_parser().parse_args(call[2:])
            programs.add(f"dreamtext {call[2]}")
        else:
            script = Path(call[0])
            assert script.parent.name == "benchmarks" and script.suffix == ".py", call
            if script.stem not in scripts:
                scripts[script.stem] = load_benchmark(script.stem, f"_session_{script.stem}")
            parse_with_main(argv_main(scripts[script.stem].main), call[1:], monkeypatch)
            programs.add(script.stem)
    assert {"pytest", "sds_step", "encoding_speed", "field_cost", "phase_peaks"} <= programs


def test_the_environment_probe_is_python_that_imports_what_exists(tmp_path):
    _, calls = run_session(tmp_path, "tests")
    probes = sorted((tmp_path / "record").glob("*.stdin"))
    assert len(probes) == 1 and calls[0] == ["-"]
    source = probes[0].read_text()
    compile(source, "probe", "exec")
    import dreamtext.devices

    for name in re.findall(r"from dreamtext\.devices import (.+)", source)[0].split(","):
        assert hasattr(dreamtext.devices, name.strip())


def test_a_failed_check_leaves_the_later_checks_running(tmp_path):
    _, calls = run_session(tmp_path, status=1)
    for name in default_checks():
        log = (tmp_path / "out" / f"{name}.log").read_text()
        assert log.rstrip().endswith("exit 1"), (name, log)
    assert calls[-1][:2] == ["benchmarks/phase_peaks.py", "text"]  # the last check started


def test_a_check_name_that_does_not_exist_is_refused_before_anything_runs(tmp_path):
    result, calls = run_session(tmp_path, "trainer", "trainer_512")
    assert result.returncode == 2
    assert calls == []
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "trainer_512" in lines[0] and "trainer512" in lines[0]
    assert not (tmp_path / "out" / "trainer.log").exists()


def test_the_default_checks_fit_one_device_call():
    checks = session_checks()
    assert set(default_checks()) <= set(checks)
    total = sum(checks[name] for name in default_checks())
    assert total + BEFORE_THE_CHECKS_SECONDS <= DEVICE_CALL_SECONDS


# The suite check (benchmarks/RESULTS.md, 2026-12-03): the whole suite in one process on this
# machine kind, loaded (1,656 of 1,974 tests in 22:08); its slowest tests (test_virtual_cuda's CLI
# runs, under load); a worker's start on the GPU machine (torch's import, collection, CUDA).
SUITE_ONE_CORE_SECONDS = 1600
SLOWEST_TEST_SECONDS = 200
WORKER_START_SECONDS = 60
DEVICE_CORES = 16


def test_every_check_fits_one_device_call_on_its_own():
    for name, seconds in session_checks().items():
        assert seconds + BEFORE_THE_CHECKS_SECONDS <= DEVICE_CALL_SECONDS, name


def test_the_suite_is_spread_over_workers_that_can_end_it_within_its_timeout(tmp_path):
    """In one process the suite takes ~26 min, over two device calls' worth: it runs in
    pytest-xdist workers, one core each, with cores to spare for the CLI tests' children."""
    _, calls = run_session(tmp_path, "suite")
    (call,) = [call for call in calls if call[:2] == ["-m", "pytest"]]
    workers = int(call[call.index("-n") + 1])
    assert 2 <= workers <= DEVICE_CORES - 2 and "worksteal" in call
    share = SUITE_ONE_CORE_SECONDS / workers
    assert share + SLOWEST_TEST_SECONDS + WORKER_START_SECONDS <= session_checks()["suite"]


def shell_words(script: Path, variable: str) -> list[str]:
    """The words of ``VARIABLE="..."`` (which may span lines) in ``script``."""
    match = re.search(rf'^{variable}="([^"]*)"', script.read_text(), flags=re.MULTILINE)
    assert match, variable
    return shlex.split(match.group(1))


def test_the_wheels_carry_every_requirement_the_machine_lacks():
    """Each carried package's requirements (those that apply on the machine's Python 3.12) are
    carried too or are among the machine's own packages: pip's --no-deps fetches none, and a
    missing one shows only when the package is imported there (inflect needs jaraco.functools)."""
    carried = {canonicalize_name(name) for name in shell_words(WHEELS, "NAMES")}
    device = {
        canonicalize_name(name)
        for variable in ("DEVICE_HAS", "NOT_IMPORTED")
        for name in shell_words(WHEELS, variable)
    }
    missing = {}
    for name in shell_words(WHEELS, "NAMES"):
        for line in requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate(DEVICE_PYTHON):
                continue
            wanted = canonicalize_name(requirement.name)
            if wanted not in carried | device:
                missing.setdefault(name, []).append(wanted)
    assert missing == {}


def test_phase_peaks_reads_the_steps_peak_from_the_log_and_the_runs_from_its_status(tmp_path):
    phase_peaks = load_benchmark("phase_peaks", "_phase_peaks")
    assert phase_peaks.recorded_peaks(tmp_path) == {"steps": None, "run": None}
    records = [{"step": 1, "gpu_mem_mib": 700.0}, {"step": 2, "gpu_mem_mib": 900.0}, {"step": 3}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "status.json").write_text(json.dumps({"state": "finished", "gpu_mem_mib": 1400.0}))
    peaks = {**phase_peaks.recorded_peaks(tmp_path), "process": None}
    assert peaks == {"steps": 900.0, "run": 1400.0, "process": None}
    assert (
        phase_peaks.peaks_line(peaks)
        == "phase peaks (MiB reserved): steps 900, run 1400, process -"
    )


def test_phase_peaks_of_a_resume_leave_out_the_earlier_attempts_log_lines(tmp_path):
    """After `phase_peaks.py text ... --resume`, "steps" was the largest figure of the whole
    log.jsonl, the first attempt's lines included (another process, maybe another batch size):
    a resumed attempt's own preview or export above its steps was hidden under it."""
    phase_peaks = load_benchmark("phase_peaks", "_phase_peaks")
    first = [{"step": 10, "gpu_mem_mib": 900.0}, {"step": 20, "gpu_mem_mib": 900.0}]
    before = [json.dumps(r) for r in first]
    # The resume from step 10's checkpoint dropped step 20's line and appended its own.
    after = [before[0], json.dumps({"step": 20, "gpu_mem_mib": 500.0})]
    (tmp_path / "log.jsonl").write_text("".join(line + "\n" for line in after))
    assert phase_peaks.recorded_peaks(tmp_path, before)["steps"] == 500.0
    # A command that adds no line (an export) reads the run's whole log.
    assert phase_peaks.recorded_peaks(tmp_path, after)["steps"] == 900.0
    assert phase_peaks.recorded_peaks(tmp_path)["steps"] == 900.0
