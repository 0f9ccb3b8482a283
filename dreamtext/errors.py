"""The one exception type a user can cause.

A ``DreamtextError`` carries a one-line message that names the fix. The CLI prints it to stderr
without a traceback and exits with status 2; every other exception is a bug and stays a traceback,
except the file-system errors that are the machine's state (:data:`ENVIRONMENT_ERRNOS`).
"""

import errno
import os
import shlex
import shutil
import sys
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

# What to do about each file-system error that is the machine's state, not a bug: the first half
# of its one line, which the command ends with where else it can write (file_system_fix). EIO is
# a disk or file server failing to read or write; ESTALE, an NFS file handle the server no longer
# knows (the file replaced or removed from another machine, or the server restarted); ENOTCONN, a
# network or FUSE mount whose connection is gone. A refused write (EACCES, EPERM) has nothing to
# fix but the place.
FILE_SYSTEM_FIXES: dict[int, str] = {
    errno.ENOSPC: "free space on that disk (or quota)",
    errno.EDQUOT: "free space on that disk (or quota)",
    errno.EFBIG: "raise the file-size limit (ulimit -f; a file system's largest file)",
    errno.EROFS: "make that file system writable again (a disk error can make the system "
    "remount it read-only: ask its administrator)",
    errno.EIO: "check that disk or file server (an I/O error: the system log says more)",
    errno.ESTALE: "run the command again once the file server is back (a stale NFS file "
    "handle: the file was replaced or removed from another machine, or the server restarted)",
    errno.ENOTCONN: "mount that file system again (its network or FUSE connection is gone)",
}
# File-system errors that are the machine's state, not a bug: one line, not a traceback.
ENVIRONMENT_ERRNOS = frozenset({*FILE_SYSTEM_FIXES, errno.EACCES, errno.EPERM})

# What reading a JSON file the run wrote can raise besides OSError when the file is damaged:
# bytes that are not UTF-8 (UnicodeDecodeError), not JSON (json.JSONDecodeError), a number
# of over 4,300 digits (ValueError), nesting deeper than Python's recursion limit.
UNREADABLE_JSON = (ValueError, RecursionError)


class DreamtextError(Exception):
    """A problem with the user's input, with a message that says what to do."""


class WorkspaceInUse(DreamtextError):
    """Another live process is running a run in the workspace (its lock or its ``status.json``
    says so). ``holder`` names that process in words (``process 123 on this machine``): a batch
    skips such a line, as it skips one another worker holds, instead of failing it. The one
    line every command says: ``situation`` (``W is in use: HOLDER is running WHAT``, which a
    batch's skip line reuses), then what to do: wait, or ``gone`` (what to do once the holder is
    known gone, where that cannot be told from here), or another folder; or ``fix`` instead."""

    def __init__(
        self,
        workspace: object,
        holder: str,
        what: str = "a run in it",
        fix: str | None = None,
        gone: str | None = None,
    ) -> None:
        self.situation = f"{workspace} is in use: {holder} is running {what}"
        # Where waiting is not the answer (a lock that cannot tell whether its run ended), what
        # to do instead: a batch's skip line says it too.
        self.fix = fix
        # What to do once the holder is known gone, where this machine cannot tell (a lock of
        # another machine's process, which a file server may keep held after it went down).
        wait = "wait for it to end or stop it"
        wait += f"; {gone}; or" if gone else ", or"
        super().__init__(f"{self.situation}; {fix or wait + ' pass --workspace NEW_FOLDER'}")
        self.holder = holder


@dataclass(frozen=True)
class TrainedRun:
    """What a file-system error in the export at the end of a run carries (``trained_run``):
    the step the run trained to, its checkpoint of that step and its folder."""

    step: int
    checkpoint: Path | None
    workspace: Path


@dataclass(frozen=True)
class SavedRun:
    """What a file-system error in training carries (``saved_run``) where the run has a
    checkpoint to go on from: its step and how the command goes on (``--resume``, a rerun)."""

    step: int
    resume_with: str


ANOTHER_SEED = "another --seed"


@dataclass(frozen=True)
class StartAgain:
    """How the lines that stop a run for good (it diverged, its weights overflowed, no
    checkpoint of it is whole) say to train it again from scratch where a checkpoint is on disk:
    ``command``, ``--overwrite`` for `dreamtext text` and `image`; a batch's line is told its own
    `dreamtext text|image ... --workspace W --overwrite`, since the batch's --overwrite trains
    every text line of its share again and refuses a list with image lines. ``seed``: whether
    that start may take :data:`ANOTHER_SEED` (an image run's descriptor keeps the seed that
    trained it: `image --overwrite --seed N` is refused)."""

    command: str = "--overwrite"
    seed: bool = True

    def with_changes(self, *changes: str, held: bool = True) -> str | None:
        """``"start again with --overwrite and a smaller --lr (…) or another --seed"``: the
        command (left out where no checkpoint is ``held`` and it is the plain ``--overwrite``,
        which a new run there does not need) and those of ``changes`` it takes; ``None`` where
        it takes none of them (starting again unchanged fixes nothing)."""
        kept = [change for change in changes if self.seed or change != ANOTHER_SEED]
        if changes and not kept:
            return None
        command = self.command if held or self.command != "--overwrite" else ""
        return "start again with " + " and ".join(filter(None, [command, " or ".join(kept)]))


# `dreamtext text`'s; `dreamtext image`'s and `text --diverse`'s, whose runs keep the seed that
# trained their descriptor.
OVERWRITE = StartAgain()
OVERWRITE_SAME_SEED = StartAgain(seed=False)


def free_memory_fix(memory: str) -> str:
    """The first thing a command out of ``memory`` (``"GPU memory"`` or ``"memory"``, the
    host's) is told to do, before any flag: make room on that device."""
    return "free the GPU of other work" if memory == "GPU memory" else "close other programs"


def precision_memory_fixes(
    memory: str, half: bool, typed: Sequence[str] | None = None
) -> tuple[str, str]:
    """The precision flags that give a command out of ``memory`` (``"GPU memory"`` or
    ``"memory"``, the host's) room, as ``(halve, cpu)``, each ``""`` where there is none. On the
    GPU: ``--fp16`` for a run in float32 (``half`` false), which halves the weights it loads in
    the run's precision (the priors'; a field and its optimiser state stay float32, its MLPs
    run under autocast), not a second time for a run in half precision; and ``--device cpu``,
    with ``--fp32`` for a run in half precision, which the CPU refuses. On the host neither: the
    CPU runs in float32. ``typed``: the precision flags the command line gave (``["--fp32"]``)
    where known; where not (a config file's or a resumed run's precision), ``--fp16`` says it
    is refused beside ``--fp32`` all the same."""
    if memory != "GPU memory":
        return "", ""
    if half:
        given = [flag for flag in typed or () if flag in ("--fp16", "--bf16")]
        return "", "--device cpu --fp32" + (f" (without {given[0]})" if given else "")
    refused = typed is None or "--fp32" in typed
    return "--fp16" + (" (without --fp32)" if refused else ""), "--device cpu"


def what_stands(path: Path) -> str:
    """What stands at ``path`` where a file should: ``"a folder"``, ``"a link to nothing"``,
    ``"a FIFO"`` or ``"no regular file"`` (a socket, a device)."""
    if path.is_dir():
        return "a folder"
    if not path.exists():
        return "a link to nothing"
    return "a FIFO" if path.is_fifo() else "no regular file"


def check_a_file(path: Path, kind: str) -> None:
    """Refuse a folder, a link to nothing or a FIFO (:func:`what_stands`) at ``path``, where a
    command reads, replaces or removes a file (``last.pt``, ``status.json``, ``mesh/mesh.json``),
    made or copied there by hand: ``PATH is a folder, not KIND; move it out of ...``. Nothing
    there, or a file, passes."""
    if not os.path.lexists(path) or path.is_file():
        return
    raise DreamtextError(
        f"{path} is {what_stands(path)}, not {kind}; move it out of {path.parent} and run the "
        "command again"
    )


def cause_line(error: BaseException, width: int = 200) -> str:
    """``Type: first line`` of ``error`` (at most ``width`` characters of the line): what a
    one-line message quotes of the compiler or driver error behind it. An error that wraps
    another as its ``inner_exception`` (torch.compile's ``BackendCompilerFailed``, whose own
    first line is only "backend='inductor' raised:") quotes the wrapped one's instead:
    ``BackendCompilerFailed: RuntimeError: first line``."""
    inner = getattr(error, "inner_exception", None)
    if isinstance(inner, BaseException):
        return f"{type(error).__name__}: {cause_line(inner, width)}"
    first = (str(error).strip().splitlines() or [""])[0][:width]
    return f"{type(error).__name__}: {first}"


def shorten(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, for a one-line message or a bar's label: a
    longer one ends in ``…``, so that a cut word does not read as a word of its own
    ('firefight' for 'firefighter')."""
    return text if len(text) <= width else text[: width - 1] + "…"


def what_failed(error: OSError) -> str:
    """The first half of a file-system error's line: what the system calls it, and its file
    where it has one (``No space left on device (W/log.jsonl)``)."""
    where = f" ({error.filename})" if error.filename else ""
    return f"{error.strerror or error}{where}"


def shell_word(text: str | Path) -> str:
    """``text`` quoted for a shell; where it holds a control character (a folder another tool
    named; a terminal obeys an escape sequence printed as it is), in bash's ``$'...'`` form with
    each such character as its escape, which pasted names the file itself."""
    text = str(text)
    if not _has_control(text):
        return shlex.quote(text)
    escaped = "".join(
        _shell_escape(c) if unicodedata.category(c) == "Cc" else "\\" + c if c in "\\'" else c
        for c in text
    )
    return f"$'{escaped}'"


def _shell_escape(c: str) -> str:
    """A control character as ``$'...'`` writes it for any locale: the bytes of its name on disk
    (``\\xc2\\x85``), not ``\\u0085``, which bash under ``LC_ALL=C`` keeps as those six
    characters, naming another file."""
    return "".join(f"\\x{byte:02x}" for byte in os.fsencode(c))


def run_command(
    kind: str,
    given: str,
    workspace: str | Path,
    flag: str = "--overwrite",
    options: Sequence[str] = (),
    placeholder: bool = False,
) -> str:
    """``dreamtext KIND GIVEN OPTIONS --workspace W FLAG``: the command that runs ``kind``
    (``text``, ``image``) of ``given`` (a prompt, an image's path) in its folder ``workspace``
    again: with ``flag`` ``--overwrite`` from scratch, ``--resume`` going on from its
    checkpoint, ``""`` none (an image run goes on by itself). ``options`` go before the folder
    (``--diverse``, ``--seed 3``). ``given`` is quoted for a shell (:func:`shell_word`) unless it
    is a ``placeholder`` (``PROMPT``). A prompt or image that starts with a dash goes last, after
    ``--``, and a folder that does is ``--workspace=W``: argparse takes either for a flag
    otherwise (``--workspace -runs`` it refuses)."""
    folder = shell_word(workspace)
    where = f"--workspace={folder}" if str(workspace).startswith("-") else f"--workspace {folder}"
    words = " ".join([*options, where, *([flag] if flag else [])])
    typed = given if placeholder else shell_word(given)
    if given.startswith("-"):
        return f"dreamtext {kind} {words} -- {typed}"
    return f"dreamtext {kind} {typed} {words}"


def shown_path(path: str | Path) -> str:
    """``path`` as a message names it: as it is, or, where it holds a control character (ESC,
    BEL, a newline), as :func:`shell_word` writes it, never the character itself."""
    return shell_word(path) if _has_control(str(path)) else str(path)


def terminal_text(text: str) -> str:
    """``text`` with each control character written as its escape (``\\x1b``, ``\\x0a``): a line
    for the terminal, whatever names of folders and files it holds (a terminal obeys an escape
    sequence printed as it is; a newline would make it two lines)."""
    return "".join(_escape(c) if unicodedata.category(c) == "Cc" else c for c in text)


def utf8_locale_fix() -> str:
    """What the line about a name or an argument this locale's encoding cannot hold says (a
    locale that is not UTF-8: ``LC_ALL=C`` with ``PYTHONUTF8=0``, an ISO-8859-1 ``LANG``)."""
    return (
        f"this locale's encoding ({sys.getfilesystemencoding()}); run dreamtext under a UTF-8 "
        "locale (export LC_ALL=C.UTF-8)"
    )


def typed_in_utf8(text: str) -> bool:
    """Whether the bytes Python left undecoded in the command-line argument ``text`` (lone
    surrogates U+DC80-U+DCFF) are UTF-8 after all: typed in a UTF-8 terminal, read by Python in
    a locale that is not, whose advice is the locale's, not the terminal's."""
    if not any(0xDC80 <= ord(c) <= 0xDCFF for c in text):
        return False
    try:
        os.fsencode(text).decode("utf-8")
    except UnicodeError:
        return False
    return True


def terminal_lines(text: str) -> str:
    """``text`` of one or more lines, each as :func:`terminal_text` writes it: what every
    message printed outside the error line goes through (:func:`dreamtext.progress.say`)."""
    return "\n".join(terminal_text(line) for line in text.split("\n"))


def print_note(text: str, flush: bool = False) -> None:
    """Print ``text`` (one or more lines) on stderr as :func:`terminal_lines` writes it: the
    command line's notes, printed outside any progress bar (:func:`dreamtext.progress.say`
    prints above them). Where stderr's reader is gone (`2>&1 | tee run.log`, whose tee a Ctrl-C
    ended too) the note is lost, as it would be read by no one, and the command ends as it
    would have: a stop with its own status (130), not exit 1. (On a terminal gone without a
    SIGHUP it is lost as every line is: :class:`dreamtext.__main__.LostOnAGoneTerminal`.)"""
    try:
        print(terminal_lines(text), file=sys.stderr, flush=flush)
    except BrokenPipeError:
        from dreamtext.__main__ import to_devnull

        to_devnull(sys.stderr)  # later writes, Python's flush at exit included


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in text)


def _escape(c: str) -> str:
    """A character as ``$'...'`` writes it: ``\\x1b``, past ASCII ``\\u0085``."""
    return f"\\x{ord(c):02x}" if ord(c) < 0x80 else f"\\u{ord(c):04x}"


def trained_run_line(error: OSError, trained: TrainedRun) -> str:
    """The line for a file-system error (one of :data:`ENVIRONMENT_ERRNOS`) in the export at the
    end of a run: the run is trained and saved, so the fix is followed by an export of it, not a
    new run in another folder (which would train it again from the start)."""
    saved = f" and is saved ({trained.checkpoint})" if trained.checkpoint else ""
    fix = FILE_SYSTEM_FIXES.get(error.errno, "make its folder writable")
    return (
        f"{what_failed(error)} in the export; the run trained to step "
        f"{trained.step}{saved}: {fix}, then run `dreamtext export --workspace "
        f"{shell_word(trained.workspace)}` (or copy the run to a disk with room, or one "
        "you can write, and export it there)"
    )


def saved_run_line(error: OSError, saved: SavedRun) -> str:
    """The line for a file-system error (one of :data:`ENVIRONMENT_ERRNOS`) in training where the
    run has a checkpoint: once fixed, the run goes on from it, not a new run in another folder
    (which trains it again from the start)."""
    fix = FILE_SYSTEM_FIXES.get(error.errno, "make its folder writable")
    return (
        f"{what_failed(error)}; the run is saved at step {saved.step}: {fix}, then resume it "
        f"with {saved.resume_with}"
    )


def file_system_fix(error: OSError, elsewhere: str) -> str:
    """What to do about ``error`` (one of :data:`ENVIRONMENT_ERRNOS`): its fix
    (:data:`FILE_SYSTEM_FIXES`) ``or`` ``elsewhere``, the command's other place to write.
    A refused file that this process may not read (another user's image, mode 600) is no
    place to write elsewhere: its fix is to be let read it (:func:`unreadable_file`)."""
    if (unreadable := unreadable_file(error)) is not None:
        return f"you may not read it: ask its owner to let you (chmod a+r {shell_word(unreadable)})"
    fix = FILE_SYSTEM_FIXES.get(error.errno)
    return f"{fix} or {elsewhere}" if fix is not None else elsewhere


def unreadable_file(error: OSError) -> str | None:
    """The file of a refused ``error`` (EACCES, EPERM) where it is a file that exists and this
    process may not read (``os.access``), else ``None``: a refused write, or a folder."""
    name = error.filename
    if error.errno not in (errno.EACCES, errno.EPERM) or not isinstance(name, (str, Path)):
        return None
    try:
        refused = os.path.isfile(name) and not os.access(name, os.R_OK)
    except (OSError, ValueError):
        return None
    return str(name) if refused else None


# A copy's errors that are its target's disk whatever file they name: shutil.copyfile's sendfile
# names the source (a full disk's error pointed at the disk with room).
TARGET_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def copy_file(source: Path, target: Path) -> None:
    """``shutil.copyfile(source, target)`` into ``target``, a new file: where the copy fails, no
    part of it is left at ``target``, and a full disk or quota (:data:`TARGET_DISK_ERRNOS`)
    names ``target``, the file it could not write, not ``source``, which shutil names."""
    try:
        shutil.copyfile(source, target)
    except BaseException as error:
        with suppress(OSError):
            os.unlink(target)
        if isinstance(error, OSError) and error.errno in TARGET_DISK_ERRNOS:
            raise OSError(error.errno, error.strerror, str(target)) from error
        raise


@contextmanager
def naming_the_file(path: Path) -> Iterator[None]:
    """Give an ``OSError`` of writing to an open file (no name: a full disk, ``ulimit -f``) the
    name of the file being written, so that the CLI's one line says which."""
    try:
        yield
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from error
