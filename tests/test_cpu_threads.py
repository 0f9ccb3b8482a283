"""How many CPU threads torch gets, and how OpenMP's idle threads wait: one thread per CPU the
process may use (a SLURM task's share, its affinity), a short spin count, the user's choice
(--threads, DREAMTEXT_THREADS, OMP_NUM_THREADS, OMP_WAIT_POLICY, GOMP_SPINCOUNT) kept, and what
ran recorded in config.json's ``ran_on``."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_early import run_without_torch
from tiny_models import TINY_SIZES

from dreamtext import inputs
from dreamtext.errors import DreamtextError
from dreamtext.inputs import cgroup_cpu_limit, cpu_threads, spin_briefly, usable_cpus

# The variables that choose threads or the wait policy, unset in the runs below but for the
# ones a test sets.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "DREAMTEXT_THREADS",
    "SLURM_CPUS_PER_TASK",
)


@pytest.fixture(autouse=True)
def no_cgroup_quota(tmp_path_factory, monkeypatch):
    """The in-process cases read a cgroup folder with no CPU quota, whatever this machine has."""
    monkeypatch.setattr(inputs, "CGROUP_ROOT", tmp_path_factory.mktemp("cgroup"))


def test_threads_default_to_the_cpus_of_the_process_affinity():
    assert cpu_threads(None, {}, affinity=3) == (3, "affinity")
    assert usable_cpus({}) == (len(os.sched_getaffinity(0)), "affinity")


def test_a_slurm_task_gets_its_cpus_per_task_not_the_nodes_cores():
    assert cpu_threads(None, {"SLURM_CPUS_PER_TASK": "4"}, affinity=64) == (
        4,
        "SLURM_CPUS_PER_TASK",
    )


def test_slurm_cpus_per_task_is_capped_by_the_affinity():
    assert cpu_threads(None, {"SLURM_CPUS_PER_TASK": "8"}, affinity=2) == (
        2,
        "SLURM_CPUS_PER_TASK",
    )


def test_an_unreadable_slurm_cpus_per_task_falls_back_to_the_affinity():
    assert cpu_threads(None, {"SLURM_CPUS_PER_TASK": "2(x3)"}, affinity=6) == (6, "affinity")


def test_the_users_omp_num_threads_is_left_to_torch():
    environ = {"OMP_NUM_THREADS": "3", "SLURM_CPUS_PER_TASK": "8"}
    assert cpu_threads(None, environ, affinity=64) == (None, "OMP_NUM_THREADS")


def test_dreamtext_threads_and_the_flag_come_first_the_flag_before_all():
    environ = {"DREAMTEXT_THREADS": "5", "OMP_NUM_THREADS": "3", "SLURM_CPUS_PER_TASK": "8"}
    assert cpu_threads(None, environ, affinity=64) == (5, "DREAMTEXT_THREADS")
    assert cpu_threads(2, environ, affinity=64) == (2, "--threads")


@pytest.mark.parametrize("text", ["0", "two", "-1", "", "²"])  # "²".isdigit(), not int()
def test_a_bad_dreamtext_threads_is_a_user_error(text):
    with pytest.raises(DreamtextError, match=f"DREAMTEXT_THREADS must be .*got '{text}'"):
        cpu_threads(None, {"DREAMTEXT_THREADS": text}, affinity=2)


def test_idle_openmp_threads_spin_briefly_unless_the_user_chose_how_they_wait():
    environ: dict[str, str] = {"OMP_NUM_THREADS": "2"}
    assert spin_briefly(environ)
    assert environ == {"OMP_NUM_THREADS": "2", "GOMP_SPINCOUNT": "1000"}
    for chosen in (
        {"OMP_WAIT_POLICY": "ACTIVE"},
        {"OMP_WAIT_POLICY": "PASSIVE"},
        {"GOMP_SPINCOUNT": "10000"},
    ):
        environ = dict(chosen)
        assert not spin_briefly(environ) and environ == chosen


def tiny_sizes(folder: Path) -> list[str]:
    """``--config`` of :data:`TINY_SIZES`, written in ``folder``: these runs check what
    ``ran_on`` records, not what the preset's 32 px renders make."""
    path = folder / "tiny_sizes.yaml"
    path.write_text(yaml.safe_dump(TINY_SIZES))
    return ["--config", str(path)]


def text_process(folder: Path, environ: dict[str, str], *flags: str):
    """``dreamtext text`` for one step of the built-in prior (at :data:`TINY_SIZES`) in a fresh
    interpreter with the thread variables unset but ``environ``, in ``folder / "run"``: the
    finished process."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(Path(__file__).parents[1]), **environ)
    argv = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "1", "--no-export"]
    argv += tiny_sizes(folder)
    return subprocess.run(
        [sys.executable, "-m", "dreamtext.cli", *argv, "--workspace", str(folder / "run"), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_text(folder: Path, environ: dict[str, str], *flags: str) -> dict:
    """:func:`text_process`'s run's config.json's ``ran_on``."""
    result = text_process(folder, environ, *flags)
    assert result.returncode == 0, result.stderr
    return json.loads((folder / "run" / "config.json").read_text())["ran_on"]


def test_a_blank_omp_num_threads_is_unset_before_libgomp_reads_it(tmp_path):
    """`OMP_NUM_THREADS=` (set, empty) counts as unset, but libgomp printed "Invalid value for
    environment variable OMP_NUM_THREADS" twice at every command."""
    result = text_process(tmp_path, {"OMP_NUM_THREADS": " ", "SLURM_CPUS_PER_TASK": "1"})
    assert result.returncode == 0, result.stderr
    assert "OMP_NUM_THREADS" not in result.stderr
    ran_on = json.loads((tmp_path / "run" / "config.json").read_text())["ran_on"]
    assert (ran_on["cpu_threads"], ran_on["cpu_threads_from"]) == (1, "SLURM_CPUS_PER_TASK")


def test_a_run_records_its_threads_and_wait_policy(tmp_path):
    ran_on = run_text(tmp_path, {"SLURM_CPUS_PER_TASK": "1"})
    assert ran_on["cpu_threads"] == 1
    assert ran_on["cpu_threads_from"] == "SLURM_CPUS_PER_TASK"
    assert (ran_on["omp_wait_policy"], ran_on["gomp_spincount"]) == (None, "1000")
    assert ran_on["device_name"].endswith("CPU, 1 threads")


def test_a_run_keeps_the_users_openmp_settings(tmp_path):
    ran_on = run_text(tmp_path, {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "ACTIVE"})
    assert ran_on["cpu_threads"] == 1
    assert ran_on["cpu_threads_from"] == "OMP_NUM_THREADS"
    assert (ran_on["omp_wait_policy"], ran_on["gomp_spincount"]) == ("ACTIVE", None)


def test_the_threads_flag_sets_torchs_threads(tmp_path):
    ran_on = run_text(tmp_path, {"OMP_NUM_THREADS": "2"}, "--threads", "1")
    assert (ran_on["cpu_threads"], ran_on["cpu_threads_from"]) == (1, "--threads")


def test_a_bad_dreamtext_threads_is_refused_before_torch_loads(tmp_path):
    argv = ["text", "a red cube", "--model", "builtin:shapes", "--workspace", "run"]
    result = run_without_torch(tmp_path, argv, {"DREAMTEXT_THREADS": "all"})
    assert result.returncode == 2
    assert result.stderr == (
        "dreamtext: error: DREAMTEXT_THREADS must be a whole number of CPU threads, at least 1; "
        "got 'all' (unset it for one thread per CPU this process may use)\n"
    )
    assert result.stdout == "[]\n" and not (tmp_path / "run").exists()


def test_the_threads_flag_takes_only_a_positive_count(capsys):
    from dreamtext.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["text", "a red cube", "--threads", "0"])
    assert exit_.value.code == 2
    assert "--threads" in capsys.readouterr().err


def test_python_that_imported_torch_first_keeps_its_threads_unless_the_flag_asks(
    tmp_path, monkeypatch
):
    """``main`` called in-process (a notebook, these tests: conftest sets one thread) leaves the
    caller's thread count and OpenMP settings; ``--threads`` still sets it."""
    import torch

    from dreamtext.cli import main

    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    argv = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "1", "--no-export"]
    argv += tiny_sizes(tmp_path)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert main([*argv, "--workspace", str(tmp_path / "a")]) == 0
        assert torch.get_num_threads() == 1
        assert "GOMP_SPINCOUNT" not in os.environ
        ran_on = json.loads((tmp_path / "a" / "config.json").read_text())["ran_on"]
        assert (ran_on["cpu_threads"], ran_on["cpu_threads_from"]) == (1, "caller")
        assert main([*argv, "--workspace", str(tmp_path / "b"), "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
        ran_on = json.loads((tmp_path / "b" / "config.json").read_text())["ran_on"]
        assert (ran_on["cpu_threads"], ran_on["cpu_threads_from"]) == (2, "--threads")
    finally:
        torch.set_num_threads(before)


def test_python_that_imported_torch_first_has_no_cpus_counted_for_threads_it_keeps(monkeypatch):
    """Where the caller's thread count stands (torch imported first, neither ``--threads`` nor
    ``DREAMTEXT_THREADS``), the CPUs this process may use (its affinity, cgroup files) are not
    worked out for a count that would be dropped; a bad ``DREAMTEXT_THREADS`` is still said."""
    from dreamtext.cli import build_parser, choose_cpu_threads

    def counted(*args, **kwargs):
        pytest.fail("the CPUs were counted for threads the caller keeps")

    monkeypatch.setattr(inputs, "usable_cpus", counted)
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    args = build_parser().parse_command_line(["text", "a red cube"])
    choose_cpu_threads(args)
    assert args.cpu_threads == (None, "caller")
    monkeypatch.setenv("DREAMTEXT_THREADS", "3")
    choose_cpu_threads(args)
    assert args.cpu_threads == (3, "DREAMTEXT_THREADS")
    monkeypatch.setenv("DREAMTEXT_THREADS", "all")
    with pytest.raises(DreamtextError, match="DREAMTEXT_THREADS must be"):
        choose_cpu_threads(args)
    assert "GOMP_SPINCOUNT" not in os.environ


TEXT_RUN = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "1", "--no-export"]


def test_the_wait_settings_libgomp_read_are_recorded_not_those_set_after_it_loaded(tmp_path):
    """libgomp reads OMP_WAIT_POLICY and GOMP_SPINCOUNT once, when torch loads it: a second run
    in the process records what the first run's environment held then (GOMP_SPINCOUNT=1000),
    not a spin count set since, which nothing in the process runs with."""
    code = (
        "import os, sys\nfrom dreamtext.cli import main\nargv = sys.argv[1:]\n"
        "assert main([*argv, '--workspace', 'a']) == 0\n"
        "os.environ.update(GOMP_SPINCOUNT='5', OMP_WAIT_POLICY='ACTIVE')\n"
        "sys.exit(main([*argv, '--workspace', 'b']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(Path(__file__).parents[1]), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", code, *TEXT_RUN, *tiny_sizes(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for run in ("a", "b"):
        ran_on = json.loads((tmp_path / run / "config.json").read_text())["ran_on"]
        assert (ran_on["omp_wait_policy"], ran_on["gomp_spincount"]) == (None, "1000")


def test_python_that_imported_torch_first_records_the_wait_settings_it_started_with(
    tmp_path, monkeypatch
):
    """Python that imported torch before ``main`` (a notebook, these tests) loaded libgomp with
    the environment it had then: a GOMP_SPINCOUNT set since (by hand, by an earlier dreamtext
    call's ``spin_briefly``) is not what libgomp runs with, and the record does not repeat it.
    It records the settings this process started with, which it still had when dreamtext was
    first imported, where it recorded ``unknown``."""
    import torch

    from dreamtext.cli import main

    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOMP_SPINCOUNT", "1000")  # after conftest's import of torch loaded libgomp
    threads = torch.get_num_threads()
    try:
        assert main([*TEXT_RUN, *tiny_sizes(tmp_path), "--workspace", str(tmp_path / "a")]) == 0
    finally:
        torch.set_num_threads(threads)
    ran_on = json.loads((tmp_path / "a" / "config.json").read_text())["ran_on"]
    started = inputs.start_environment()
    assert started is not None
    assert (ran_on["omp_wait_policy"], ran_on["gomp_spincount"]) == (
        started.get("OMP_WAIT_POLICY"),
        started.get("GOMP_SPINCOUNT"),
    )


@pytest.mark.parametrize(
    ("started", "seen", "read"),
    [
        ({"GOMP_SPINCOUNT": "1000"}, {"GOMP_SPINCOUNT": "1000"}, "1000"),  # exported before
        ({}, {}, None),  # set nowhere: libgomp's default
        ({}, {"GOMP_SPINCOUNT": "1000"}, "unknown"),  # set in Python: before torch, or after?
        ({"GOMP_SPINCOUNT": "1000"}, {"GOMP_SPINCOUNT": "5"}, "unknown"),  # changed likewise
        ({"GOMP_SPINCOUNT": "1000"}, {}, "unknown"),  # removed likewise
        (None, {"GOMP_SPINCOUNT": "1000"}, "unknown"),  # no /proc: nothing to compare with
    ],
)
def test_the_wait_settings_of_torch_loaded_first_are_those_it_started_with_where_unchanged(
    monkeypatch, started, seen, read
):
    """Torch imported before dreamtext: libgomp read the environment between the process's start
    (``/proc/self/environ``) and dreamtext's first look (its first import); a setting that holds
    the same at both ends is the one it read, one that differs is ``unknown``."""
    import dreamtext

    monkeypatch.setattr(inputs, "_openmp_wait_at_load", None)
    monkeypatch.setattr(inputs, "start_environment", lambda: started)
    monkeypatch.setattr(dreamtext, "ENVIRON_AT_IMPORT", seen)
    assert inputs.openmp_wait_read() == {
        "OMP_WAIT_POLICY": None if started is not None else "unknown",
        "GOMP_SPINCOUNT": read,
    }


def test_the_start_environment_is_read_as_getenv_reads_it(tmp_path):
    """``/proc/self/environ``: NUL-separated ``NAME=value`` entries (a value may hold ``=``; of a
    name given twice getenv finds the first); none where it cannot be read (not Linux)."""
    environ = tmp_path / "environ"
    environ.write_bytes(b"GOMP_SPINCOUNT=1000\0A=b=c\0GOMP_SPINCOUNT=5\0EMPTY=\0junk\0")
    assert inputs.start_environment(environ) == {"GOMP_SPINCOUNT": "1000", "A": "b=c", "EMPTY": ""}
    assert inputs.start_environment(tmp_path / "absent") is None


SPIN_FIX = "set os.environ['GOMP_SPINCOUNT'] = '1000' before the first `import torch`"


@pytest.mark.parametrize(
    ("read", "environ", "threads", "said"),
    [
        ("unknown", {}, 2, True),  # torch imported first, nothing chosen: libgomp's default spin
        (None, {}, 4, True),  # loaded with neither set
        ("unknown", {}, 1, False),  # one thread waits for no team
        ("unknown", {"GOMP_SPINCOUNT": "1000"}, 2, False),  # set since the start: maybe before
        ("unknown", {"OMP_WAIT_POLICY": "PASSIVE"}, 2, False),
        ("1000", {}, 2, False),  # the CLI's spin_briefly, read when it imported torch
    ],
)
def test_the_spin_line_is_for_python_whose_libgomp_spins_by_default_on_several_threads(
    monkeypatch, read, environ, threads, said
):
    monkeypatch.setattr(inputs, "_openmp_wait_at_load", None)
    monkeypatch.setattr(inputs, "start_environment", lambda: None)  # not known: "unknown"
    if read != "unknown":
        monkeypatch.setattr(
            inputs, "_openmp_wait_at_load", {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": read}
        )
    line = inputs.default_spin_line(threads, environ)
    assert (line is not None and SPIN_FIX in line and f"its {threads} CPU threads" in line) == said


def test_a_script_that_imported_torch_first_is_told_once_how_to_stop_threads_spinning(tmp_path):
    """Python that imported torch before dreamtext (a notebook, a script) keeps libgomp's
    default spin count, which dreamtext cannot change after: each thread that waits spins 300,000
    checks, 5-7 times the CPU time of the CLI's run under load. Its first run on 2 threads says
    once what to set; a second run in the process, and a process that set it, say nothing."""
    code = (
        "import sys, torch\nfrom dreamtext.cli import main\nargv = sys.argv[1:]\n"
        "assert main([*argv, '--workspace', 'a']) == 0\n"
        "sys.exit(main([*argv, '--workspace', 'b']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(Path(__file__).parents[1]))
    argv = [sys.executable, "-c", code, *TEXT_RUN, *tiny_sizes(tmp_path), "--threads", "2"]
    for environ, lines in (({}, 1), ({"GOMP_SPINCOUNT": "1000"}, 0)):
        shutil.rmtree(tmp_path / "a", ignore_errors=True)
        shutil.rmtree(tmp_path / "b", ignore_errors=True)
        done = subprocess.run(
            argv, cwd=tmp_path, env={**env, **environ}, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        said = [line for line in done.stderr.splitlines() if SPIN_FIX in line]
        assert len(said) == lines, (environ, done.stderr)
        # What libgomp read, though torch loaded it first: the environment the process
        # started with (it recorded "unknown").
        ran_on = json.loads((tmp_path / "a" / "config.json").read_text())["ran_on"]
        spin = environ.get("GOMP_SPINCOUNT")
        assert (ran_on["omp_wait_policy"], ran_on["gomp_spincount"]) == (None, spin), environ


def test_the_cli_which_sets_the_spin_count_itself_says_nothing_of_it(tmp_path):
    result = text_process(tmp_path, {}, "--threads", "2")
    assert result.returncode == 0, result.stderr
    assert "GOMP_SPINCOUNT" not in result.stderr


def write_files(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"cpu.max": "200000 100000\n"}, 2),  # cgroup v2, docker run --cpus 2
        ({"cpu.max": "150000 100000\n"}, 2),  # --cpus 1.5: rounded up
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu.max": "max 100000\n"}, None),  # no quota
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu.max": "garbage"}, None),
        ({}, None),
    ],
)
def test_a_cgroup_cpu_quota_is_read_from_v2_or_v1_files(tmp_path, files, limit):
    assert cgroup_cpu_limit(write_files(tmp_path, files)) == limit


def test_a_container_cpu_quota_caps_the_threads_of_the_affinity_and_slurm(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "CGROUP_ROOT", write_files(tmp_path, {"cpu.max": "200000 100000"}))
    assert cpu_threads(None, {}, affinity=64) == (2, "cgroup quota")
    assert cpu_threads(None, {"SLURM_CPUS_PER_TASK": "8"}, affinity=64) == (2, "cgroup quota")
    assert cpu_threads(None, {"SLURM_CPUS_PER_TASK": "1"}, affinity=64) == (
        1,
        "SLURM_CPUS_PER_TASK",
    )
    assert cpu_threads(None, {}, affinity=1) == (1, "affinity")
    assert cpu_threads(4, {}, affinity=64) == (4, "--threads")


def test_a_slurm_cpu_count_that_is_no_number_is_not_taken():
    """``"²".isdigit()`` is true and ``int("²")`` raises: a traceback before any run."""
    assert cpu_threads(None, {"SLURM_CPUS_PER_TASK": "²"}, affinity=2) == (2, "affinity")


@pytest.mark.parametrize("text", ["0", "abc", "-1", "2.5", "4,0", "²", str(2**63)])
def test_an_omp_num_threads_openmp_ignores_is_a_user_error(text):
    """`OMP_NUM_THREADS=0 dreamtext text ...`: libgomp said "Invalid value" and ignored it, torch
    took one thread per CPU of the machine (a SLURM task's count was not used), and ran_on said
    OMP_NUM_THREADS had chosen them."""
    environ = {"OMP_NUM_THREADS": text, "SLURM_CPUS_PER_TASK": "1"}
    with pytest.raises(DreamtextError, match=f"OMP_NUM_THREADS must be .*got '{text}'"):
        cpu_threads(None, environ, affinity=2)


@pytest.mark.parametrize("text", ["3", " 3 ", "+3", "03", "4,2"])  # as libgomp takes them
def test_an_omp_num_threads_openmp_takes_is_left_to_torch(text):
    environ = {"OMP_NUM_THREADS": text, "SLURM_CPUS_PER_TASK": "1"}
    assert cpu_threads(None, environ, affinity=2) == (None, "OMP_NUM_THREADS")
    assert cpu_threads(1, environ, affinity=2) == (1, "--threads")  # the flag: not read


def test_a_bad_omp_num_threads_is_refused_before_torch_loads(tmp_path):
    argv = ["text", "a red cube", "--model", "builtin:shapes", "--workspace", "run"]
    result = run_without_torch(tmp_path, argv, {"OMP_NUM_THREADS": "0"})
    assert result.returncode == 2
    assert result.stderr == (
        "dreamtext: error: OMP_NUM_THREADS must be a whole number of CPU threads, at least 1; "
        "got '0' (OpenMP ignores it; unset it for one thread per CPU this process may use, or "
        "pass --threads N)\n"
    )
    assert result.stdout == "[]\n" and not (tmp_path / "run").exists()
