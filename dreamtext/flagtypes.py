"""argparse ``type=`` functions shared by the commands' flags (the CLI's and the export
table's, :mod:`dreamtext.exportflags`), so that every flag words its refusal the same way.
Torch-free: flags are checked before the libraries load."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from typing import Any

# Every value ``--device`` takes, as its help and its refusals name them.
DEVICE_FORMS = "auto, cpu, cuda or cuda:N"


def positive(convert: type, what: str) -> Callable[[str], Any]:
    """An argparse ``type=`` that accepts values of ``convert`` above zero."""
    return _finite(convert, what, False, "positive and finite")


def non_negative(convert: type, what: str) -> Callable[[str], Any]:
    """An argparse ``type=`` that accepts finite values of ``convert`` of zero or more."""
    return _finite(convert, what, True, "0 or more and finite")


def _finite(convert: type, what: str, zero: bool, bounds: str) -> Callable[[str], Any]:
    """Finite values of ``convert`` above zero, or from zero where ``zero``; NaN refused."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None
        above = value >= 0 if zero else value > 0  # NaN fails both
        if not (above and value < math.inf):
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    return parse


def within(convert: type, low: int, high: float, what: str) -> Callable[[str], Any]:
    """An argparse ``type=`` that accepts values of ``convert`` from ``low`` to ``high``
    (``math.inf``: no upper bound), NaN refused; ``what`` names what it expects."""
    bounds = f"at least {low}" if high == math.inf else f"from {low} to {high}"

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None
        if not low <= value <= high:  # NaN fails this too
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    return parse


SHARD_FORM = "K/N with 0 ≤ K < N (e.g. 0/4 for the first of four shares)"
"""What ``--shard`` takes, in its refusals."""


def shard_pair(text: str) -> tuple[int, int] | None:
    """``"K/N"`` → ``(K, N)`` where ``0 ≤ K < N``, else ``None``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None or not int(match[1]) < int(match[2]):
        return None
    return int(match[1]), int(match[2])


def shard(text: str) -> str:
    """``--shard``'s argparse ``type=``: a share :func:`shard_pair` reads, kept as typed."""
    if shard_pair(text) is None:
        raise argparse.ArgumentTypeError(f"must be {SHARD_FORM}, got '{text}'")
    return text
