"""The tests' step faults (tests/step_faults.py) leave nothing of a failed run alive."""

import gc
import weakref
from types import SimpleNamespace

import pytest
from step_faults import raise_at_step

from dreamtext import trainer


class Held:
    """Stands for what a training step's frames hold (the run's field, its tensors)."""


@pytest.mark.parametrize("error", [MemoryError(), MemoryError], ids=["instance", "class"])
def test_an_error_raised_at_a_step_frees_the_frames_it_passed_through(monkeypatch, error):
    """Without the cycle collector, what a frame the error went through held is freed once the
    error is handled and the patch undone: a given instance, raised as it was, held its own
    traceback through the patched step's closure, and the run with it."""

    def step_holding(held: Held) -> None:
        trainer.train_step(SimpleNamespace(step=1))

    raise_at_step(monkeypatch, 1, error)
    held = Held()
    freed = weakref.ref(held)
    gc.disable()
    try:
        with pytest.raises(MemoryError):
            step_holding(held)
        del held
        monkeypatch.undo()
        assert freed() is None
    finally:
        gc.enable()
