"""A prompts list read from a pipe (``dreamtext batch <(printf 'image:mug.png\\n')``,
``/dev/stdin``) takes its relative ``image:`` paths from the current folder: they resolved
against /dev/fd, where no image is."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from dreamtext.batch import read_prompts, relative_images_folder
from dreamtext.inputs import read_prompt_lines


def write_mug(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mug.png"
    Image.new("RGB", (8, 8), (200, 40, 40)).save(path)
    return path


def test_a_piped_lists_relative_image_is_taken_from_the_current_folder(tmp_path, monkeypatch):
    mug = write_mug(tmp_path)
    monkeypatch.chdir(tmp_path)
    read_end, write_end = os.pipe()
    os.write(write_end, b"image:mug.png\n")
    os.close(write_end)
    try:
        entries = read_prompts(f"/dev/fd/{read_end}", tmp_path / "root")
    finally:
        os.close(read_end)
    assert [(e.kind, e.prompt) for e in entries] == [("image", str(mug))]


def test_a_regular_files_relative_image_is_still_taken_from_its_folder(tmp_path, monkeypatch):
    mug = write_mug(tmp_path / "lists")
    prompts = tmp_path / "lists" / "prompts.txt"
    prompts.write_text("image:mug.png\n")
    monkeypatch.chdir(tmp_path)  # another folder, holding no mug.png
    entries = read_prompts(prompts, tmp_path / "root")
    assert [e.prompt for e in entries] == [str(mug)]
    assert relative_images_folder(Path("lists/prompts.txt")) == Path("lists")


def _folder_through_a_descriptor(tmp_path, monkeypatch, prefix):
    """``relative_images_folder`` of ``lists/prompts.txt`` (beside its mug.png) named by
    ``prefix`` and the descriptor it is open on, from another folder."""
    write_mug(tmp_path / "lists")
    prompts = tmp_path / "lists" / "prompts.txt"
    prompts.write_text("image:mug.png\n")
    monkeypatch.chdir(tmp_path)
    with open(prompts) as opened:
        return relative_images_folder(Path(f"{prefix}{opened.fileno()}"))


def test_stdin_redirected_from_a_file_takes_the_files_folder(tmp_path, monkeypatch):
    assert _folder_through_a_descriptor(tmp_path, monkeypatch, "/dev/fd/") == tmp_path / "lists"


def test_batch_from_stdin_finds_the_image_in_the_current_folder_in_a_real_process(tmp_path):
    """Up to the built-in prior's refusal of image lines: the line was read and its image found
    (it said "image not found: /dev/mug.png" before)."""
    write_mug(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "dreamtext.cli", "batch", "/dev/stdin", "--model", "builtin:shapes"],
        input="image:mug.png\n",
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "not found" not in result.stderr, result.stderr
    assert "line 1 is an image, which needs a Stable Diffusion model" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mug.png"]


def piped_lines(text: bytes, fd: int | None = None) -> list[str]:
    """``read_prompt_lines`` of a pipe holding ``text``, read at ``/dev/fd/<fd>`` (its read end
    moved to ``fd`` when given), twice, as the early checks and the batch read it."""
    read_end, write_end = os.pipe()
    os.write(write_end, text)
    os.close(write_end)
    if fd is not None and read_end != fd:
        os.dup2(read_end, fd)
        os.close(read_end)
        read_end = fd
    try:
        path = Path(f"/dev/fd/{read_end}")
        first = read_prompt_lines(path)
        assert read_prompt_lines(path) == first  # read once: the second read is the first's
        return first
    finally:
        os.close(read_end)


def test_a_later_pipe_at_the_same_descriptor_is_read_as_its_own_list():
    """The text a pipe gave is kept per pipe, not per /dev/fd/N path: a later pipe given the same
    descriptor number (a test process, or a caller running two batches) read the first one's."""
    fd = os.dup(0)  # a number free for both pipes
    os.close(fd)
    assert piped_lines(b"a red cube", fd) == ["a red cube"]
    assert piped_lines(b"a blue sphere", fd) == ["a blue sphere"]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux's /proc/self/fd")
def test_a_list_named_by_its_proc_descriptor_takes_the_files_folder(tmp_path, monkeypatch):
    """``/proc/self/fd/N`` (as a shell's ``/dev/stdin`` resolves) opened on a file is that
    file's folder, not ``/proc/self/fd``."""
    folder = _folder_through_a_descriptor(tmp_path, monkeypatch, "/proc/self/fd/")
    assert folder == tmp_path / "lists"


def test_stdin_redirected_from_a_file_takes_the_files_folder_on_macos(tmp_path, monkeypatch):
    """macOS's ``/dev/fd/N`` is no symlink (Linux's goes to ``/proc/self/fd/N``, a link to the
    file): realpath kept it, so ``dreamtext batch /dev/stdin < lists/prompts.txt`` looked for
    ``image:mug.png`` in ``/dev/fd``. macOS tells a descriptor's file by ``fcntl(F_GETPATH)``;
    simulated here with Linux's link, as macOS answers it (the path, NUL-padded); on a Mac,
    macOS's own answer."""
    import fcntl

    from dreamtext import batch

    real_realpath = os.path.realpath
    monkeypatch.setattr(
        os.path,
        "realpath",
        lambda p, **kw: os.fspath(p) if str(p).startswith("/dev/") else real_realpath(p, **kw),
    )
    f_getpath = 50  # macOS's value
    real_fcntl = fcntl.fcntl

    def macos_fcntl(fd, command, arg=0):
        if command != f_getpath or sys.platform == "darwin":
            return real_fcntl(fd, command, arg)
        named = os.readlink(f"/proc/self/fd/{fd}").encode()
        return named.ljust(len(arg), b"\0")[: len(arg)]  # as much as the buffer holds

    monkeypatch.setattr(fcntl, "F_GETPATH", f_getpath, raising=False)
    monkeypatch.setattr(fcntl, "fcntl", macos_fcntl)
    monkeypatch.setattr(batch, "fcntl", fcntl)
    assert _folder_through_a_descriptor(tmp_path, monkeypatch, "/dev/fd/") == tmp_path / "lists"
