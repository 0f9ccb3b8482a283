"""benchmarks/gpu_paths.py (check ``paths`` of gpu_session.sh) as far as a CPU can run it.

The script runs the CUDA code paths that have never run on a GPU, once each, in the 15 minutes
a GPU is lent: a path whose own checks are wrong there reads as a defect of dreamtext, and one
that hangs eats the others' time. So its CPU mode runs here (every path that a CPU can run, the
CUDA-only ones skipped with their reason), its virtual-CUDA mode runs the CUDA-only paths that
tests/virtual_cuda.py emulates, and its time limits are held to the session check's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from benchmark_scripts import BENCHMARKS, load_benchmark
from test_gpu_session import session_checks

SCRIPT = BENCHMARKS / "gpu_paths.py"
# The paths' time limits are the GPU's; this 2-core machine, loaded by other work, runs them
# several times slower (a dreamtext process's start alone took 10-20 s here).
TIME_SCALE = "12"


def gpu_paths():
    return load_benchmark("gpu_paths", "_gpu_paths")


def run_script(tmp_path: Path, *args: str, device: str) -> tuple[int, list[str]]:
    """The script with ``DREAMTEXT_PATHS_DEVICE=device``; its exit status and its lines."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--time-scale", TIME_SCALE, "--work", str(tmp_path / "work"),
         "--logs", str(tmp_path / "logs"), *args],
        capture_output=True, text=True, timeout=1800,
        env={**os.environ, "DREAMTEXT_PATHS_DEVICE": device},
    )  # fmt: skip
    return result.returncode, result.stdout.splitlines()[1:]  # after the work folder's line


def outcomes(lines: list[str]) -> dict[str, str]:
    """``{path: "ok" | "FAIL" | "skip"}``, each path's line once."""
    found = {}
    for line in lines:
        name, outcome = line.split()[:2]
        assert name not in found, lines
        found[name] = outcome
    return found


def test_the_cpu_mode_runs_every_path_a_cpu_can_and_skips_the_cuda_ones(tmp_path):
    paths = gpu_paths().PATHS
    status, lines = run_script(tmp_path, device="cpu")
    on_cpu = {name: "ok" for name, path in paths.items() if not path.cuda_only}
    skipped = {name: "skip" for name, path in paths.items() if path.cuda_only}
    assert outcomes(lines) == {"models": "ok", **on_cpu, **skipped}, lines
    assert status == 0
    for name, path in paths.items():
        assert (tmp_path / "logs" / f"paths_{name}.log").is_file() != bool(path.cuda_only)
    assert f"fp32 skip needs CUDA: {paths['fp32'].cuda_only}" in lines


def test_the_virtual_cuda_mode_runs_the_cuda_paths_it_emulates(tmp_path):
    """The CUDA-only paths' own checks (their lines' words, config.json's dtypes, the fp16
    loss scaler's log) against dreamtext on CUDA's code paths, before a GPU runs them."""
    paths = gpu_paths().PATHS
    emulated = ["fp32", "descriptor_skips", "field_memory"]
    assert all(not paths[name].not_emulated for name in emulated)
    status, lines = run_script(tmp_path, "--only", *emulated, device="virtual-cuda")
    assert outcomes(lines) == {"models": "ok", **dict.fromkeys(emulated, "ok")}, lines
    assert status == 0
    assert "GPU has 12.9 GB" in next(line for line in lines if line.startswith("field_memory"))


def test_the_paths_limits_fit_the_session_checks_limit():
    """Each path's limit, and the tiny models', end within check ``paths``' own, which kills
    the script: a path started after it would leave no line."""
    module = gpu_paths()
    total = module.MODELS_SECONDS + sum(path.seconds for path in module.PATHS.values())
    assert total + 15 <= session_checks()["paths"]


def fake_path(tmp_path: Path, body: str) -> Path:
    """A stand-in for the script's ``--one NAME`` process: ``body`` in Python."""
    script = tmp_path / "fake_path.py"
    script.write_text(body)
    return script


def test_a_path_that_hangs_is_ended_with_its_children_at_its_limit(tmp_path, monkeypatch):
    module = gpu_paths()
    pid_file = tmp_path / "child.pid"
    body = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(120)\n"
    )
    monkeypatch.setattr(module, "SCRIPT", fake_path(tmp_path, body))
    monkeypatch.setattr(module, "KILL_GRACE_SECONDS", 2)
    ctx = module.Context("cpu", tmp_path)
    start = time.monotonic()
    line = module.run_in_group("adan", 5, ctx, tmp_path / "adan.log")
    assert time.monotonic() - start < 60
    assert line.startswith("FAIL timed out after 5 s"), line
    child = int(pid_file.read_text())
    for _ in range(50):  # the group's SIGTERM reached the grandchild too
        if not Path(f"/proc/{child}").exists() or "Z" in _state(child):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the path's own child outlived it")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "Z"


def test_a_path_that_fails_or_crashes_says_why_in_its_line(tmp_path, monkeypatch):
    module = gpu_paths()
    ctx = module.Context("cpu", tmp_path)
    body = f"print('log line'); print({module.RESULT!r} + ' FAIL exit 1, not 2: why')"
    monkeypatch.setattr(module, "SCRIPT", fake_path(tmp_path, body))
    line = module.run_in_group("adan", 60, ctx, tmp_path / "adan.log")
    assert line.startswith("FAIL exit 1, not 2: why ["), line
    body = "import sys; print('Segmentation fault, say'); sys.exit(139)"
    monkeypatch.setattr(module, "SCRIPT", fake_path(tmp_path, body))
    line = module.run_in_group("adan", 60, ctx, tmp_path / "adan.log")
    assert line == "FAIL exit 139: Segmentation fault, say", line


def test_every_patch_a_path_names_exists():
    module = gpu_paths()
    source = SCRIPT.read_text()
    import re

    named = set(re.findall(r'patch="(\w+)"', source))
    assert named and named <= set(module.PATCHES), named - set(module.PATCHES)


def test_the_compiler_patch_is_on_torch_compiles_own_path(tmp_path):
    """Path ``oom_compile`` runs on a GPU alone: its patch must reach Inductor's compile_fx as
    torch.compile calls it (the inductor backend imports it at each call), or the path fails
    there with "the compiler was never called", one of its few device minutes spent."""
    marker = tmp_path / "reached"
    program = (
        "import sys, torch\n"
        f"sys.path.insert(0, {str(BENCHMARKS)!r})\n"
        "import gpu_paths\n"
        "gpu_paths.patch_compiler_out_of_memory()\n"
        "try:\n"
        "    torch.compile(lambda x: x * 2 + 1)(torch.ones(3))\n"
        "except Exception as error:\n"
        "    print(type(error).__module__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "GPU_PATHS_MARKER": str(marker)},
    )
    assert marker.exists(), result.stderr[-2000:]
    assert result.stdout.strip().startswith("torch._dynamo"), result.stdout  # wrapped, as on CUDA
