"""Faults in a training step, for tests: ``dreamtext.trainer.train_step`` patched to fail, or to
send this process signals, at one step, or ``optimizer_step`` to overflow the field's weights;
every other step is the real one."""

from __future__ import annotations

import copy
import signal
from collections.abc import Callable

import torch

from dreamtext import trainer


def raise_at_step(monkeypatch, step: int, error: BaseException | type[BaseException]) -> Callable:
    """Raise ``error`` (an exception or its class) in place of the step that starts at ``step``
    (``run.step == step`` before it: the run has finished ``step`` steps). Returns the real
    ``train_step``. An instance is raised as a copy: the instance itself, raised from this
    closure, would hold its traceback, whose frames hold the run (field, optimizer, the step's
    tensors) and this closure's cell, which holds the instance: a reference cycle that kept the
    run in memory until the collector's next full pass (0.34 GB of a test worker's RSS)."""
    real_step = trainer.train_step

    def step_or_fail(run):
        if run.step == step:
            raise error if isinstance(error, type) else copy.copy(error)
        return real_step(run)

    monkeypatch.setattr(trainer, "train_step", step_or_fail)
    return real_step


def signal_after_step(monkeypatch, step: int, *signals: signal.Signals) -> Callable:
    """Send ``signals`` to this process, one after the other, once the step that ends at
    ``step`` is done (a Ctrl-C is ``SIGINT``; two stop at once). Returns the real
    ``train_step``."""
    real_step = trainer.train_step

    def step_then_signals(run):
        record = real_step(run)
        if run.step == step:
            for signum in signals:
                signal.raise_signal(signum)
        return record

    monkeypatch.setattr(trainer, "train_step", step_then_signals)
    return real_step


def weights_overflow_in_step(monkeypatch, step: int) -> None:
    """Make the update of step ``step`` overflow the field's weights as ``--lr 1e8`` does: they
    stay finite (each times 1e30), but the MLP's activations overflow float32, and from step
    ``step + 1`` on the field renders NaN and its gradients are NaN (no update moves it back)."""
    real = trainer.optimizer_step

    def overflowing(run, finite):
        updated = real(run, finite)
        if run.step + 1 == step:  # run.step is still the step before
            with torch.no_grad():
                for parameter in run.field.parameters():
                    parameter.mul_(1e30)
        return updated

    monkeypatch.setattr(trainer, "optimizer_step", overflowing)
