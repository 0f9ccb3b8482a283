"""benchmarks/slurm_local.sh on a machine without Slurm: its commands that run Slurm's tools."""

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "slurm_local.sh"


@pytest.mark.parametrize("command", [["status"], ["up"], ["up2"], ["revive", "node1"]])
def test_a_command_without_slurm_installed_says_to_install_it_first(tmp_path, command):
    """``bash benchmarks/slurm_local.sh status`` printed ``sinfo: command not found`` and exited
    127 (``up``: ``slurmd: command not found``): one line naming the script's own ``install``, exit
    2, and nothing written (an empty PATH: no Slurm, whatever this machine has)."""
    env = {"PATH": str(tmp_path / "bin"), "SLURM_LOCAL": str(tmp_path / "state")}
    done = subprocess.run(
        ["/bin/bash", str(SCRIPT), *command], env=env, capture_output=True, text=True
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "slurm_local.sh: no sinfo here (Slurm's and munge's commands): run "
        "'bash benchmarks/slurm_local.sh install' first (as root)\n"
    )
    assert not (tmp_path / "state").exists()
