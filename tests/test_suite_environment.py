"""The conditions the tests make for themselves, so that a contributor's run of one file, from
any folder, in any virtual environment, tests this checkout as CI's run does."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_a_process_a_test_starts_imports_this_checkouts_dreamtext(tmp_path):
    """`python -m dreamtext.cli` started by a test, in a folder outside the checkout, in a
    virtual environment where another checkout is installed (`pip install -e`), ran that one:
    the test passed for code the contributor had not written (or, with none installed, failed
    with "No module named 'dreamtext'")."""
    done = subprocess.run(
        [sys.executable, "-c", "import dreamtext; print(dreamtext.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve() == ROOT / "dreamtext" / "__init__.py"


def test_an_exception_a_test_is_parametrized_with_lets_its_frames_go_after_the_test():
    """An exception instance in a parameter list lives for the session; raised through a
    training step, its traceback kept that run alive for every later test (test_batch's three
    machine-failure cases kept ~100 MB each in CI's process). conftest's teardown hook drops it."""
    import gc
    import types
    import weakref

    import conftest

    class Run:  # stands for the trainer's run: weak-referenceable, as a field is
        pass

    error = OSError(28, "No space left on device")

    def step(run: Run) -> None:
        raise error

    run = Run()
    alive = weakref.ref(run)
    with pytest.raises(OSError):
        step(run)
    del run
    gc.collect()
    assert alive() is not None  # the traceback's frame of step() holds it
    item = types.SimpleNamespace(callspec=types.SimpleNamespace(params={"error": error}))
    conftest.pytest_runtest_teardown(item)
    gc.collect()
    assert alive() is None
    assert error.__traceback__ is None


def test_what_collection_imported_is_frozen_and_what_a_test_makes_is_still_collected():
    """dreamtext's ``free_memory`` runs a full ``gc.collect()`` after each stage and line; in a
    process that collected the whole suite each one walked ~590,000 objects (~0.42 s of CPU),
    most of the time of test_batch.py's image lines. conftest freezes what collection imported
    (torch, diffusers, the test modules), and a cycle a test makes is still freed."""
    import gc
    import weakref

    assert gc.get_freeze_count() > 100_000

    class Run:  # a run's objects referring to each other, as a field and its optimizer do
        pass

    run = Run()
    run.itself = run
    alive = weakref.ref(run)
    del run
    gc.collect()
    assert alive() is None
