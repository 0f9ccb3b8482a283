"""Ctrl-C or SIGTERM sent again and again while a command stops ends it with the README's exit
status, 130: a third one that landed in Python's shutdown (which puts handled signals back to
their default action) killed it with -2 / -15 (a shell's 130 by chance, or 143)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _sigint_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_signals_sent_until_a_training_command_has_exited_end_it_with_130(tmp_path, signum):
    workspace = tmp_path / "run"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "100000"]
    process = subprocess.Popen(
        [sys.executable, "-m", "dreamtext", *command, "--no-export", "--workspace", workspace],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_as_in_a_terminal,
    )
    try:
        deadline = time.monotonic() + 240
        while not (workspace / "log.jsonl").exists():  # training has started
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # The first signal asks for a stop after the step, the second stops at once, and every
        # later one lands somewhere in the stopping: the checkpoint, the line, the shutdown.
        sent = 0
        while process.poll() is None:
            process.send_signal(signum)
            sent += 1
            time.sleep(0.02)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert sent >= 3
    assert process.returncode == 130, (process.returncode, err)
    assert "Traceback" not in err, err
    assert "interrupted" in err.strip().splitlines()[-1]
