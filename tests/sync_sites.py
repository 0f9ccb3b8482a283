"""Where the host syncs that :mod:`virtual_cuda` counts come from, and how many rounds the marcher
made: the counting shared by tests/test_host_syncs.py and benchmarks/host_syncs.py.

:func:`sync_sites` files every sync :class:`~virtual_cuda.VirtualCuda` counts under the line of
dreamtext's code that made it (the innermost frame in the package, ``"samplers.py:412"``; ``"?"``
for a sync made outside it); :func:`by_file` sums those by file. :func:`march_rounds` counts the
rounds of :class:`~dreamtext.samplers.OccupancySampler` (each round composites its steps' optical
depths once).
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

from virtual_cuda import VirtualCuda

import dreamtext.samplers as samplers

PACKAGE = f"{Path(samplers.__file__).resolve().parent}/"


@contextlib.contextmanager
def sync_sites(mode: VirtualCuda) -> Iterator[Counter[str]]:
    """Inside, each sync ``mode`` counts is also counted by the dreamtext line that made it."""
    sites: Counter[str] = Counter()
    counted = mode._count_sync

    def count_where(*args) -> None:
        before = sum(mode.syncs.values())
        counted(*args)
        if sum(mode.syncs.values()) > before:
            ours = [f for f in traceback.extract_stack() if f.filename.startswith(PACKAGE)]
            sites[f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"] += 1

    mode._count_sync = count_where
    try:
        yield sites
    finally:
        mode._count_sync = counted


def by_file(sites: Counter[str]) -> Counter[str]:
    """``{"samplers.py": n, ...}`` from :func:`sync_sites`' ``{"samplers.py:412": n, ...}``."""
    files: Counter[str] = Counter()
    for site, n in sites.items():
        files[site.rsplit(":", 1)[0]] += n
    return files


@contextlib.contextmanager
def march_rounds() -> Iterator[Counter[str]]:
    """Inside, ``rounds["rounds"]`` counts the occupancy marcher's rounds (its calls of
    ``optical_depths``, one a round; the dense sampler's are not counted)."""
    rounds: Counter[str] = Counter()
    composite = samplers.optical_depths

    def counted(*args, **kwargs):
        if sys._getframe(1).f_code is samplers.OccupancySampler._march.__code__:
            rounds["rounds"] += 1
        return composite(*args, **kwargs)

    with mock.patch.object(samplers, "optical_depths", counted):
        yield rounds
