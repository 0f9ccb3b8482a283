"""Ctrl-C / SIGTERM outside the training loops: a signal whose KeyboardInterrupt a library
swallowed is still recorded, and a write can hold signals back until it is whole."""

import signal

import pytest

from dreamtext.interrupts import (
    StepStopped,
    raise_if_stop_in_step,
    signals_held,
    sigterm_interrupts,
    stop_on_signal,
    stop_requested,
)


class _SwallowsASignal:
    """A finalizer the signal lands in: the handler's KeyboardInterrupt is raised inside
    ``__del__``, which Python prints as "Exception ignored" and drops."""

    def __del__(self):
        signal.raise_signal(signal.SIGTERM)


pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def test_a_swallowed_signal_is_recorded_until_the_outermost_block_ends():
    with sigterm_interrupts():
        with sigterm_interrupts():  # an image run's describe stage, inside the command's block
            _SwallowsASignal()
        assert stop_requested()
    assert not stop_requested()  # the next command in this process starts afresh


def test_a_signal_lost_before_a_training_loop_stops_it_after_its_first_step():
    """A SIGTERM swallowed while Stable Diffusion loaded was forgotten by the loop's handler:
    the descriptor (or text→3D) trained on to its end."""
    with sigterm_interrupts():
        _SwallowsASignal()
        with stop_on_signal() as stop:
            assert stop["stop"]


@pytest.mark.parametrize("drop", [False, True])
def test_a_held_signal_arrives_after_the_block_or_is_dropped(drop):
    done = []
    with sigterm_interrupts():
        try:
            with signals_held(drop=drop):
                signal.raise_signal(signal.SIGTERM)
                done.append("the write")  # not cut short
        except KeyboardInterrupt:
            done.append("interrupted")
    assert done == ["the write"] if drop else ["the write", "interrupted"]


def test_a_stop_in_a_training_loop_stops_the_chunks_of_its_step_and_nothing_outside_it():
    """The renderer's chunk loops call raise_if_stop_in_step: inside a training loop a first
    Ctrl-C / SIGTERM ends the step at its next chunk; outside one (an export) it is a no-op."""
    with sigterm_interrupts():
        with stop_on_signal():
            raise_if_stop_in_step()  # nothing asked yet
            signal.raise_signal(signal.SIGTERM)
            with pytest.raises(StepStopped):
                raise_if_stop_in_step()
        raise_if_stop_in_step()  # the loop is over: its flag no longer applies


def test_a_sigterm_while_the_libraries_load_is_an_interrupt_that_leaves_nothing(tmp_path):
    """Loading torch and diffusers takes seconds, before the command's own SIGTERM handler can
    be set (it imports torch): a SIGTERM then killed the process with no line (exit -15) and
    left an export's progress record, written before those imports, for the viewer to show.
    Here the libraries' loading is held (a stand-in that sleeps) and SIGTERM sent once the
    record is there: exit 130, the export's interrupted line, the record removed."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from dreamtext.exportprogress import PROGRESS_FILE

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"not read before the signal")
    code = (
        "import sys, time\n"
        "import dreamtext.cli as cli\n"
        "cli.quiet_libraries = lambda: time.sleep(120)\n"
        f"sys.exit(cli.main(['export', '--workspace', {str(run)!r}]))\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / PROGRESS_FILE).exists() and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        assert (run / PROGRESS_FILE).exists()
        time.sleep(0.5)  # into the loading
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err.decode()
    assert err.decode().strip().splitlines()[-1].startswith("dreamtext export: interrupted")
    assert "Traceback" not in err.decode()
    assert not (run / PROGRESS_FILE).exists()
