"""Peak memory of a snippet, measured in a process of its own (for tests that a step or a save
makes no copy of a large tensor): :data:`PRELUDE` gives the snippet ``rss(key)``, the process's
``VmRSS`` or ``VmHWM`` in bytes, and ``reset_peak()``, from which ``VmHWM`` counts again
(Linux's ``/proc/self/clear_refs``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PRELUDE = (
    "def rss(key):\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith(key):\n"
    "            return int(line.split()[1]) * 1024\n"
    "def reset_peak():\n"
    "    open('/proc/self/clear_refs', 'w').write('5')\n"
)


def run_measured(script: str, *args: str) -> str:
    """The standard output of ``script`` (with :data:`PRELUDE` before it) run by this Python
    with ``args``; the test is skipped where there is no such ``/proc`` (macOS, the BSDs)."""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("Linux's VmHWM and its reset (/proc/self/status, /proc/self/clear_refs)")
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + script, *args], capture_output=True, text=True, check=True
    ).stdout
