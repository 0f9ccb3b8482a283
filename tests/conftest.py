"""Shared fixtures. The hub is never reached: everything is built from tiny random configs."""

import gc
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers/transformers read it at import

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton hash-grid kernels run in Triton's CPU interpreter. Triton reads the
# variable when a kernel is defined, so it is set before anything imports triton (diffusers does,
# through tiny_models below; torch itself does not).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The repository root (for `dreamtext` without an install) and tests/ (for `tiny_models`).
sys.path[:0] = [str(Path(__file__).parent.parent), str(Path(__file__).parent)]
# The processes the tests start (`python -m dreamtext.cli ...`, `python -c ...`) import this
# checkout's `dreamtext` too, from any folder: without it they found none where it is not
# installed, or, in a virtual environment with another checkout installed (`pip install -e`), ran
# that checkout's code, and its tests passed or failed for code the contributor had not written.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(Path(__file__).parent.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
)

from tiny_models import write_tiny_sd  # noqa: E402

torch.set_num_threads(1)


def _model_state(loaded) -> tuple:
    """What a test could change in a loaded model's numbers: which tensors and modules its
    attributes are, and each tensor's in-place version counter (``Tensor._version``: weights,
    buffers, the noise schedule) with its dtype and device. Settings the code itself changes on a
    loaded model (its memory options, its compiled modules) are left out."""
    parts = []
    for name, value in sorted(vars(loaded).items()):
        if isinstance(value, torch.Tensor):
            parts.append((name, id(value), value._version, value.dtype, value.device))
        elif isinstance(value, torch.nn.Module):
            parts.append((name, id(value)))
            for tensor_name, tensor in [*value.named_parameters(), *value.named_buffers()]:
                parts.append((name, tensor_name, tensor._version, tensor.dtype, tensor.device))
    return tuple(parts)


# Each model's state as its load left it, by id(): what the cache hands every later test.
_AS_LOADED: dict[int, tuple] = {}


def _record_loads() -> None:
    """Has every :class:`~dreamtext.models.StableDiffusionModels` and
    :class:`~dreamtext.describe.ClipEncoder` record its state as loaded."""
    import dreamtext.describe as describe
    import dreamtext.models as models

    for cls in (models.StableDiffusionModels, describe.ClipEncoder):
        load = cls.__init__

        def loading(self, *args, load=load, **kwargs):
            load(self, *args, **kwargs)
            _AS_LOADED[id(self)] = _model_state(self)

        cls.__init__ = loading


_record_loads()


@pytest.fixture(autouse=True)
def cached_models_left_as_found() -> Iterator[None]:
    """A test that leaves a model the process keeps for every later test (``models._LOADED``,
    ``models._CLIP``)
    other than its load made it (its noise schedule replaced, its text encoder cast, a weight
    edited) fails, and the model is dropped from the cache: it changed what every later test in
    that process computed with it, in whatever order pytest-xdist hands them out (an fp16 test's
    loss scale once depended on which test ran before it). Changes made with ``monkeypatch`` are
    undone before this check, which is set up before, and so ends after, the fixtures a test
    asks for."""
    yield
    import dreamtext.models as models

    changed = {}
    for cache in (models._LOADED, models._CLIP):
        for key, loaded in list(cache.items()):
            if id(loaded) in _AS_LOADED:
                now, then = set(_model_state(loaded)), set(_AS_LOADED[id(loaded)])
                if now != then:
                    changed[key] = sorted({part[0] for part in now ^ then})
                    del cache[key]
    if changed:
        pytest.fail(
            f"the test left cached model(s) other than loaded (changed: {changed}), for later "
            "tests to reuse: change them with monkeypatch, or work on a copy"
        )


@pytest.fixture(autouse=True)
def ctrl_c_as_in_a_terminal() -> Iterator[None]:
    """Every test starts with Ctrl-C raising KeyboardInterrupt, as Python sets it up in a
    terminal, and ends with the handler it found. pytest started in the background by a script
    (a CI job's shell: `... &`) inherits SIGINT ignored, which dreamtext rightly leaves ignored,
    and the tests that send themselves a Ctrl-C then saw nothing arrive."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(autouse=True)
def own_state_folder(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> Path:
    """Every test's ``$XDG_STATE_HOME`` is a new empty folder (the processes it starts inherit
    it): `dreamtext view` keeps its token and viewers' records there, which were the user's own
    ~/.local/state/dreamtext, shared by every test."""
    folder = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("XDG_STATE_HOME", str(folder))
    return folder


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection imported (torch, diffusers, transformers, every test module: ~590,000
    objects tracked by the garbage collector in a process that collected the whole suite) is
    moved out of the collector's sight (``gc.freeze``). dreamtext frees memory with
    ``gc.collect()`` after each stage and line (``devices.free_memory``), and each such full
    collection walked all of them: ~0.42 s of CPU each, 60 of them in five image-line tests of
    test_batch.py. Frozen, a collection walks only what the tests made since, and still frees
    it; what collection imported lives as long as the process anyway."""
    gc.collect()
    gc.freeze()


def pytest_unconfigure(config: pytest.Config) -> None:
    """The frozen objects go back to the collector before the interpreter's own shutdown, which
    otherwise reports extension objects (Triton's nanobind) as leaked."""
    gc.unfreeze()


def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Each exception a test is parametrized with forgets, once the test is over, where it was
    raised. The instance lives as long as the session (the parameter list is the module's), and
    its ``__traceback__`` holds the frames it was raised through: one raised from inside a
    training step kept that run (its field, prior and optimizer) alive for every later test."""
    callspec = getattr(item, "callspec", None)
    for value in callspec.params.values() if callspec else ():
        if isinstance(value, BaseException):
            value.__traceback__ = value.__context__ = value.__cause__ = None


@pytest.fixture(scope="session")
def tiny_sd_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random epsilon-prediction SD-2.x pipeline folder (native resolution 64 px)."""
    return write_tiny_sd(tmp_path_factory.mktemp("tiny_sd"), prediction_type="epsilon")


@pytest.fixture(scope="session")
def tiny_sd_v_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny pipeline, but its scheduler says the U-Net predicts v."""
    return write_tiny_sd(tmp_path_factory.mktemp("tiny_sd_v"), prediction_type="v_prediction")


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP (text and vision towers) in transformers layout."""
    from tiny_clip import write_clip

    return write_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture
def no_weight_loads(monkeypatch):
    """Every model weight read fails (the tokenizer alone reads): a check that came after a
    load shows as that failure."""
    import dreamtext.describe
    import dreamtext.models as models

    def tokenizer_only(cls, path, subfolder, **kwargs):
        if subfolder != "tokenizer":
            raise AssertionError(f"{subfolder} was loaded before the texts were checked")
        return real(cls, path, subfolder, **kwargs)

    def clip(*args, **kwargs):
        raise AssertionError("CLIP was loaded before the texts were checked")

    models.clear_cache()
    real = models._from_pretrained
    monkeypatch.setattr(models, "_from_pretrained", tokenizer_only)
    monkeypatch.setattr(dreamtext.describe, "ClipEncoder", clip)


@pytest.fixture
def count_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The Stable Diffusion parts read from disk from now on (subfolder names, in order); the
    process's model cache starts empty, so the first use of a model loads it."""
    import dreamtext.models as models

    models.clear_cache()
    loads: list[str] = []
    real = models._from_pretrained

    def counting(cls, path, subfolder, **kwargs):
        loads.append(subfolder)
        return real(cls, path, subfolder, **kwargs)

    monkeypatch.setattr(models, "_from_pretrained", counting)
    return loads


# A process that claims a workspace (processes.claim_workspace), says so, and holds it.
HOLD = """
import sys, time
from dreamtext.processes import claim_workspace
with claim_workspace(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder():
    """Returns a function that starts another process holding a workspace's lock (``another
    terminal's run``) and returns that process once it holds it; all are killed at the end."""
    started = []
    root = str(Path(__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}

    def hold(workspace) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(workspace)], stdout=subprocess.PIPE, text=True, env=env
        )
        started.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield hold
    for process in started:
        process.kill()
        process.wait()


@pytest.fixture
def refuse_stat(monkeypatch: pytest.MonkeyPatch):
    """Returns a function that makes ``Path.stat`` of one path raise ``EACCES``, as a file in
    another user's folder (mode 700) does: the tests run as root, who reads any folder."""
    import errno

    def refuse(path: Path) -> None:
        real_stat = Path.stat

        def stat(self, *args, **kwargs):
            if self == path:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real_stat(self, *args, **kwargs)

        monkeypatch.setattr(Path, "stat", stat)

    return refuse
