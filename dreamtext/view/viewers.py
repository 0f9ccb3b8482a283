"""What ``dreamtext view`` keeps of itself between starts, in a folder of the user's own
(:func:`state_folder`: ``$XDG_STATE_HOME/dreamtext/``, by default ``~/.local/state/dreamtext/``):

    view-token                    the token every start serves (:func:`viewer_token`), so that an
                                  address opened or bookmarked before a restart stays valid;
                                  ``--new-token`` replaces it
    view-<host>-<pid>-<port>.json one record per running viewer (:func:`record_viewer`): its
                                  address with the token, port, folders, and the process; what
                                  ``dreamtext view --list`` prints (:func:`running_viewers`);
                                  touched every :data:`BEAT_S` while the viewer serves
    view-token.lock               the lock ``--new-token`` starts take in turn to replace the
                                  token (:func:`_renew_token`); kept, and empty but while a
                                  start holds it: its process's record, which a start waiting
                                  for it names (:func:`_token_lock`); a start killed holding
                                  it leaves its record, which the next one replaces
    .view-token.<host>.<pid>.XXXXXXXX
                                  a start's new token while it writes it, before it is linked
                                  into place (:func:`_exclusive_file`); one a killed start left
                                  is removed by a later start (:func:`_remove_left_temps`)

Both are the user's alone: the folder is made 0700 and each file 0600, created with ``O_EXCL``
(never through a link another user left); a token file another user owns, or that others may
read or write, is refused with the line that says how to mend it. Where the folder cannot be
written (a read-only home, a full quota) the viewer still serves, with a new token for this
start and one line that says so. A home on NFS shared by many nodes is one folder for all of
them: one token for every node (a tunnel to any of them opens with it), records named by host,
pid and port, and the token made by a hard link of a written file, which is atomic there too.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NamedTuple

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from dreamtext.errors import DreamtextError, shell_word, shown_path
from dreamtext.processes import (
    ELSEWHERE_GRACE_S,
    HOST,
    _ago,
    _holder,
    earlier_boot,
    file_age,
    iso_timestamp,
    locks_reach_every_writer,
    now_iso,
    on_this_machine,
    process_name,
    process_stopped,
    record_alive,
    record_held,
    this_process,
    user_name,
    write_held_record,
)

TOKEN_FILE = "view-token"
# Its lock, which --new-token starts hold in turn while they replace it (_renew_token).
LOCK_FILE = "view-token.lock"
# A --new-token start waits this long for another's hold of LOCK_FILE, which lasts one write,
# fsync and rename of a 33-byte file (milliseconds; on a busy NFS server a second or two), and
# says so once it has waited LOCK_SAY_S. A hold longer than that is a start stopped or hung in
# it (Ctrl-Z, SIGSTOP, a hung NFS client): the start is refused with the line that names the
# holder, the token left as it was, rather than waiting for ever without a word.
LOCK_WAIT_S = 10.0
LOCK_SAY_S = 2.0
# How often a waiting start asks for the lock again (LOCK_NB: a blocking flock has no timeout).
LOCK_POLL_S = 0.05
# What a token file may hold (one line): characters an address's ?token= and a cookie carry as
# they are, and enough of them that no guess reaches it (a made one is 32 hex digits, 128 bits).
_TOKEN = re.compile(r"[A-Za-z0-9._~-]{32,256}")
# How to mend a token file that is refused.
AGAIN = "remove it (a new token is made) or start dreamtext view with --new-token"
_RECORD = re.compile(r"view-.+-[0-9]+-[0-9]+\.json")
# A start's temp token file (_exclusive_file's name for it): .view-token.<host>.<pid>.XXXXXXXX.
_TEMP = re.compile(rf"\.{re.escape(TOKEN_FILE)}\.(?P<host>.+)\.[0-9]+\.[0-9a-f]{{8}}")
# A running viewer touches its record this often (record_heartbeat, called from the server's
# loop between requests: no thread of its own), so that `--list` where its lock cannot be seen
# (another node over NFS) tells a record its dead node left, untouched since, from a live one's.
BEAT_S = 300.0
# Where the locks of other machines may not be seen (a home on NFS), a temp token file whose
# lock is free is taken for a killed start's once it is this old: a start links its own into
# place within milliseconds of making it.
TEMP_GRACE_S = 60.0


def state_folder() -> Path | None:
    """``$XDG_STATE_HOME/dreamtext``, else ``~/.local/state/dreamtext`` (an ``XDG_STATE_HOME``
    that is not an absolute path is ignored, as the XDG specification asks); ``None`` where
    neither is known (``HOME`` unset for a user without a home)."""
    base = os.environ.get("XDG_STATE_HOME", "")
    if os.path.isabs(base):
        return Path(base) / "dreamtext"
    try:
        return Path.home() / ".local" / "state" / "dreamtext"
    except RuntimeError:  # Path.home(): "Could not determine home directory."
        return None


def new_token() -> str:
    """128 random bits as 32 hex digits: no guess reaches it."""
    return secrets.token_hex(16)


def viewer_token(
    renew: bool = False, folder: Path | None = None, say: Callable[[str], None] | None = None
) -> tuple[str, str | None]:
    """The token this start serves, and a line to print where it could not be kept (else
    ``None``): the one in ``folder``'s ``view-token`` (default :func:`state_folder`), made there
    when there is none, or with ``renew`` (``--new-token``) made and put in place of the old.
    ``say``: where the line of a ``renew`` start that waits long for another's lock goes
    (:func:`_token_lock`, which refuses after :data:`LOCK_WAIT_S`).

    Two viewers started at once make one file: each writes its own token into a temp file, and
    the first hard link of one to ``view-token`` wins (``O_EXCL``'s atomic create, which NFS
    keeps for links too); both then serve what the file holds. Two ``renew`` starts at once
    serve one new token too (:func:`_renew_token`). Raises ``DreamtextError`` for a
    file or folder of another user's, or one others may read or write; where the folder cannot
    be made or written, returns a new token for this start alone and the line that says so."""
    folder = state_folder() if folder is None else folder
    if folder is None:
        return new_token(), _not_kept("no home folder is known (HOME is unset)")
    path = folder / TOKEN_FILE
    try:
        _own_folder(folder)
        with contextlib.suppress(OSError):
            _remove_left_temps(folder)
        if renew:
            return _renew_token(path, say), None
        kept = _read_token(path)
        if kept is not None:
            return kept, None
        return _make_token(path, new_token(), renew=False), None
    except DreamtextError:
        raise
    except OSError as error:
        if not renew and not isinstance(error, FileNotFoundError):
            # A read-only home still holds the token a start before made: keep serving that.
            with contextlib.suppress(OSError):
                kept = _read_token(path)
                if kept is not None:
                    return kept, None
        reason = error.strerror or str(error)
        return new_token(), _not_kept(f"cannot write {shown_path(path)} ({reason})")


def _not_kept(why: str) -> str:
    """The one line of a start whose token is its own: why, and what to do."""
    return (
        f"dreamtext view: {why}: this start's token is new and ends with it, and "
        "`dreamtext view --list` will not show it; set XDG_STATE_HOME to a folder you can write "
        "to keep one"
    )


def _own_folder(folder: Path) -> None:
    """Make ``folder`` (0700) and its parents; refuse one another user owns or others may
    write in, where they could put a token of theirs, or take this user's, in place."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.stat()
    if info.st_uid != os.geteuid():
        raise DreamtextError(
            f"{shown_path(folder)} is {_owner(info.st_uid)}'s, not yours: set XDG_STATE_HOME "
            "to a folder of your own"
        )
    if info.st_mode & 0o022:
        raise DreamtextError(
            f"others may write in {shown_path(folder)} (mode {info.st_mode & 0o777:o}): "
            f"chmod 700 {shown_path(folder)}"
        )


def _owner(uid: int) -> str:
    return user_name(uid) or f"user {uid}"


def _read_token(path: Path) -> str | None:
    """The token in the file ``path``, ``None`` where there is no such file. Refuses (with
    ``DreamtextError``) a link, a file of another user's, one others may read or write (its
    token may be known), and one that holds no token."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as error:
        with contextlib.suppress(OSError):
            owner = os.lstat(path).st_uid
            if owner != os.geteuid():  # one this user may not even open (mode 600, root's)
                mine = f"{shown_path(path)} is {_owner(owner)}'s, not yours"
                raise DreamtextError(f"{mine}: {AGAIN}") from None
        if error.errno == errno.ELOOP:
            raise DreamtextError(
                f"{shown_path(path)} is a link: remove it (a new token is made), or start "
                "dreamtext view with --new-token"
            ) from None
        raise
    try:
        info = os.fstat(fd)
        text = os.read(fd, 1024).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)
    if info.st_uid != os.geteuid():
        raise DreamtextError(f"{shown_path(path)} is {_owner(info.st_uid)}'s, not yours: {AGAIN}")
    if info.st_mode & 0o077:
        raise DreamtextError(
            f"others may read or write {shown_path(path)} (mode {info.st_mode & 0o777:o}), so "
            f"its token may be known: {AGAIN}"
        )
    if not _TOKEN.fullmatch(text):
        raise DreamtextError(f"{shown_path(path)} holds no token: {AGAIN}")
    return text


def _renew_token(path: Path, say: Callable[[str], None] | None = None) -> str:
    """``--new-token``: a new token in place of the one in ``path``, served by every start that
    began before it was put there.

    Each start reads the token it is to replace, makes its own, then, holding
    :data:`LOCK_FILE`'s ``flock``, puts its own in place only where the file still holds what it
    read; where another start's new token came in between (made after this one began, so not
    the token it was asked to replace), it serves that one. Two starts at once had each put
    their own in place, and the first served a token the file no longer held, which no later
    start served. Where the file system has no locks, the file is read again after the
    replace and the token it then holds is served: a start whose replace another's followed
    before that reading serves the other's, and only one whose reading came first keeps its
    own. A lock held past :data:`LOCK_WAIT_S` raises ``DreamtextError`` before anything is
    written (:func:`_token_lock`; ``say`` as there)."""
    seen = _peek_token(path)
    token = new_token()
    lock = _token_lock(path.parent, say)
    try:
        current = _peek_token(path)
        if current is None or current == seen:
            _make_token(path, token, renew=True)
        return _peek_token(path) or token  # none: removed since, or unreadable: ours
    finally:
        if lock is not None:
            _release_token_lock(lock)


def _peek_token(path: Path) -> str | None:
    """The token in ``path`` (:func:`_read_token`), ``None`` where there is none or it is
    refused (one ``--new-token`` is to replace)."""
    with contextlib.suppress(OSError, DreamtextError):
        return _read_token(path)
    return None


def _token_lock(folder: Path, say: Callable[[str], None] | None = None) -> int | None:
    """A descriptor of ``folder``'s :data:`LOCK_FILE` (made 0600, never removed) holding an
    exclusive ``flock`` on it, for :func:`_renew_token`, with this process's record written in
    it (emptied by :func:`_release_token_lock`); ``None`` where it cannot be had (no locks on
    the file system, a file that cannot be made). Opened for writing: NFS grants an exclusive
    lock on a file opened so only.

    Another start's hold is waited out for :data:`LOCK_WAIT_S` at most, asking again every
    :data:`LOCK_POLL_S` (a blocking ``flock`` waits for ever on a holder stopped or hung in
    it); after :data:`LOCK_SAY_S` one line through ``say`` names the holder, and past the
    deadline ``DreamtextError`` says who holds it and what frees it (:func:`_lock_holder`)."""
    if fcntl is None:
        return None
    path = folder / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError:
        return None
    began, said = time.monotonic(), False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - began
            if waited >= LOCK_WAIT_S:
                who, fix = _lock_holder(path)
                raise DreamtextError(
                    f"{shown_path(path)} is held by {who}: {fix}; then start again (waited "
                    f"{LOCK_WAIT_S:g} s; the token is as it was)"
                )
            if say is not None and not said and waited >= LOCK_SAY_S:
                said = True
                say(
                    f"dreamtext view: waiting for {shown_path(path)}, held by "
                    f"{_lock_holder(path)[0]}; giving up after {LOCK_WAIT_S:g} s"
                )
            time.sleep(LOCK_POLL_S)
    except OSError:  # no locks on this file system
        os.close(fd)
        return None
    except BaseException:  # the refusal, or Ctrl-C while waiting
        os.close(fd)
        raise
    with contextlib.suppress(OSError):  # a full disk: the lock holds without its record
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({**this_process(), "started": now_iso()}).encode(), 0)
        os.fsync(fd)  # a start waiting on another machine (NFS) reads it from the server
    return fd


def _release_token_lock(fd: int) -> None:
    """Empty the lock file of :func:`_token_lock`'s descriptor ``fd`` (a record left in it
    would name a process that no longer holds it), then close it, which drops the lock."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    os.close(fd)


def _lock_holder(path: Path) -> tuple[str, str]:
    """Who holds the lock file ``path`` (:func:`_token_lock`), in words, by the record it wrote
    there, and what frees the lock: a process of this machine stopped (Ctrl-Z, SIGSTOP), or
    running (hung on a file system, or slow); another machine's; or, without a record of a
    live holder (a dreamtext from before the record, another program), another process."""
    record = _holder(path)
    pid, host = record.get("pid"), record.get("host")
    if pid == os.getpid() and on_this_machine(record):  # serve() called on two threads
        return "another thread of this process", "wait for it"
    if isinstance(pid, int) and record_alive(record) is True:
        who = f"{process_name(pid)} on this machine (a --new-token start)"
        if process_stopped(pid):
            return (
                f"{who}, stopped (Ctrl-Z or SIGSTOP)",
                f"`kill -CONT {pid}` (or `fg` in its terminal) lets it finish, or `kill {pid}` "
                "ends it",
            )
        return f"{who}, which has not finished", f"wait for it, or end it (`kill {pid}`)"
    if isinstance(pid, int) and isinstance(host, str) and not on_this_machine(record):
        taken = iso_timestamp(record.get("started"))
        since = f", lock taken {_ago(taken)}" if taken is not None else ""
        return (
            f"process {pid} on {host} (a --new-token start{since})",
            f"end it there; if {host} is down, its file server frees the lock once it gives "
            "that machine up",
        )
    return (
        "another process",
        f"find it with `lsof {shell_word(path)}` and end it (a `dreamtext view --new-token` "
        "stopped with Ctrl-Z goes on with `fg` in its terminal)",
    )


def _make_token(path: Path, token: str, renew: bool) -> str:
    """``token`` written to ``path``: in place of what is there (``renew``), or where there is
    nothing yet, by a hard link that fails for all but the first of several starts (which then
    read the winner's). Where the file system has no hard links, a rename: the last of several
    starts at once then wins, and the others serve a token the next start does not."""
    temp, fd = _exclusive_file(path.parent, f".{TOKEN_FILE}.{HOST}.{os.getpid()}", token + "\n")
    try:
        if renew:
            os.replace(temp, path)
            return token
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another start's came first (or NFS answered a retried link so): read it
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS):
                raise
            os.replace(temp, path)
            return token
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if fd is not None:
            os.close(fd)  # last: its lock says a start is at work on the temp until it is gone
    kept = _read_token(path)
    if kept is None:  # removed between the link and the read: serve ours, kept or not
        return token
    return kept


def _exclusive_file(folder: Path, stem: str, text: str) -> tuple[Path, int | None]:
    """A new file ``folder/stem.XXXXXXXX`` (mode 0600, created with ``O_EXCL``, never through
    a link) holding ``text``, written out to the disk, and its descriptor, open with an
    exclusive ``flock`` on it: close it once the file is linked into place and removed, so that
    a later start tells a file at work (locked) from one a killed start left (free:
    :func:`_remove_left_temps`). ``None`` for the descriptor, closed already, where there is no
    ``flock`` (Windows, which renames or removes no file another descriptor holds open)."""
    while True:
        path = folder / f"{stem}.{secrets.token_hex(4)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            continue
        try:
            if fcntl is not None and not _locked_in_place(fd, path):
                os.close(fd)  # taken for a leftover before its lock was: make another
                continue
            os.write(fd, text.encode())
            os.fsync(fd)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        if fcntl is None:
            os.close(fd)
            return path, None
        return path, fd


def _locked_in_place(fd: int, path: Path) -> bool:
    """Take an exclusive ``flock`` on the new file ``fd`` and tell whether ``path`` is still
    that file: a later start may have taken it, unlocked in the instant between its creation
    and the lock, for a killed start's and removed it. Where that start's look (its shared
    lock, :func:`_remove_left_temps`) still holds it, the file is given up (removed here, as
    only this process makes files of its name) rather than waited for: a start stopped or hung
    in its look held it, and this one waited in ``flock`` for ever. ``True`` where the file
    system has no locks (nothing is removed then before it is :data:`TEMP_GRACE_S` old)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        path.unlink(missing_ok=True)
        return False
    except OSError:
        return True
    try:
        return os.path.samestat(os.fstat(fd), os.lstat(path))
    except FileNotFoundError:
        return False


def _remove_left_temps(folder: Path) -> list[Path]:
    """Remove the temp token files (:data:`_TEMP`) that starts killed between writing theirs and
    linking it into place left in ``folder`` (SIGKILL, the OOM killer, a node lost), and return
    them. A start holds its temp file's ``flock`` until it has removed the file
    (:func:`_exclusive_file`), so one of this machine's (its name in the file's) whose lock is
    free is a killed start's where the folder lies on a local disk
    (``locks_reach_every_writer``). Elsewhere one is taken for a killed start's once it is also
    :data:`TEMP_GRACE_S` old: a home on NFS, whose other nodes' locks may not reach here, and
    another machine's file on a local disk this machine serves over NFS (its client's lock, a
    POSIX lock here, is not seen by ``flock``). One whose lock is held is never removed: a start
    is writing it."""
    local = locks_reach_every_writer(folder)
    removed = []
    for temp in folder.iterdir():
        named = _TEMP.fullmatch(temp.name)
        if named is None:
            continue
        try:
            fd = os.open(temp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue  # gone since, or not a file of ours (a link): left alone
        try:
            free = None
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    free = True
                except BlockingIOError:
                    continue  # a start is at work on it
                except OSError:
                    pass  # no locks on this file system: its age alone tells
            if (free and local and named["host"] == HOST) or file_age(temp) > TEMP_GRACE_S:
                temp.unlink(missing_ok=True)  # the lock still held: no start takes it meanwhile
                removed.append(temp)
        finally:
            os.close(fd)
    return removed


def record_viewer(
    url: str, port: int, address: str, folders: list[Path], folder: Path | None = None
) -> tuple[IO[str] | None, Path | None, str | None]:
    """Record a viewer that starts serving ``url`` (its token in it) on ``address``:``port``
    over ``folders``, in ``folder`` (default :func:`state_folder`), for ``dreamtext view
    --list``: the open record (its ``flock`` held while this process lives: close it, then
    remove the file, as the viewer stops), its path, and a line to print where it could not be
    written (else ``None``)."""
    folder = state_folder() if folder is None else folder
    if folder is None:
        return None, None, _not_kept("no home folder is known (HOME is unset)")
    record: dict[str, Any] = {
        "url": url,
        "port": port,
        "address": address,
        "folders": [str(f.resolve()) for f in folders],
        "started": now_iso(),
        "beat_s": BEAT_S,
        **this_process(),
    }
    # The port too: one process may serve twice (serve() called from Python on two threads).
    path = folder / f"view-{HOST}-{os.getpid()}-{port}.json"
    try:
        _own_folder(folder)
        # Made 0600 first: write_held_record opens it as it is (the record holds the token).
        path.unlink(missing_ok=True)  # a pid this process reused, of a viewer killed before
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return write_held_record(path, record), path, None
    except (OSError, DreamtextError) as error:
        with contextlib.suppress(OSError):
            path.unlink()
        reason = error.strerror if isinstance(error, OSError) else str(error)
        line = (
            f"dreamtext view: cannot record this viewer in {shown_path(folder)} ({reason}): "
            "`dreamtext view --list` will not show it"
        )
        return None, None, line


def forget_viewer(handle: IO[str] | None, path: Path | None) -> None:
    """Remove the record :func:`record_viewer` made, as the viewer stops."""
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()
    if handle is not None:
        with contextlib.suppress(OSError):
            handle.close()


def record_heartbeat(handle: IO[str] | None) -> Callable[[], None]:
    """The viewer's heartbeat, for its server to call between requests: sets the modification
    time of its open record (``handle``, from :func:`record_viewer`) to now once every
    :data:`BEAT_S`, the first time at once. A failed touch is skipped (the record stays)."""
    due = 0.0  # time.monotonic() of the next touch

    def beat() -> None:
        nonlocal due
        now = time.monotonic()
        if handle is None or now < due:
            return
        due = now + BEAT_S
        with contextlib.suppress(OSError, ValueError):  # ValueError: a closed handle
            # Windows' os.utime takes no descriptor (a TypeError): the record's name there.
            os.utime(handle.fileno() if os.utime in os.supports_fd else handle.name)

    return beat


class Viewer(NamedTuple):
    """A record :func:`running_viewers` lists: the record, whether its viewer was checked to
    run (``False``: it cannot be from here), its file, and, for another machine's that no
    viewer has touched for :data:`~dreamtext.processes.ELSEWHERE_GRACE_S`, when it last was
    (seconds since the epoch; else ``None``)."""

    record: dict[str, Any]
    checked: bool
    path: Path
    silent_since: float | None = None


def running_viewers(folder: Path | None = None) -> list[Viewer]:
    """The records of this user's viewers that run (oldest first), each with whether that was
    checked (:func:`_viewer_alive`). Records of viewers that are gone are removed: this
    machine's whose lock is free or process ended, and those of an earlier boot of this
    machine. Another machine's, where its
    lock cannot be seen from here (a home on NFS mounted ``local_lock=flock``), stay until a
    ``--list`` there finds them gone; one untouched for longer than
    :data:`~dreamtext.processes.ELSEWHERE_GRACE_S` (a running viewer touches its record every
    :data:`BEAT_S`) is marked with when it last was (:func:`removal_lines` says how to remove
    it)."""
    folder = state_folder() if folder is None else folder
    if folder is None:
        return []
    try:
        names = sorted(p for p in folder.iterdir() if _RECORD.fullmatch(p.name))
    except OSError:
        return []
    found = []
    for path in names:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # one being written as it was read, or not a record
        if not isinstance(record, dict) or not isinstance(record.get("url"), str):
            continue
        alive = _viewer_alive(path, record)
        if alive is False:
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        silent = None
        if not on_this_machine(record) and _beat(record) is not None:
            age = file_age(path)
            silent = time.time() - age if age > ELSEWHERE_GRACE_S else None
        found.append(Viewer(record, alive is True and silent is None, path, silent))
    return sorted(found, key=lambda viewer: str(viewer.record.get("started")))


def _beat(record: dict[str, Any]) -> float | None:
    """The record's ``beat_s`` (:data:`BEAT_S` of the viewer that wrote it); ``None`` where it
    gives none (a viewer of a dreamtext from before the heartbeat) or no usable one."""
    beat = record.get("beat_s")
    if isinstance(beat, (int, float)) and not isinstance(beat, bool) and 0 < beat < 1e9:
        return float(beat)
    return None


def _viewer_alive(path: Path, record: dict[str, Any]) -> bool | None:
    """Whether the viewer of ``record`` (the file ``path``) runs: ``True`` where its lock is
    held (by a process of any machine whose locks reach here), or, without a lock to tell, its
    process of this machine runs (:func:`record_alive`); ``False`` where it is gone; ``None``
    where that cannot be told from here.

    Gone: a record of this machine whose lock is free or whose process ended, and one of an
    earlier boot of this machine (:func:`earlier_boot`: this one's name, another ``boot_id``,
    and its heartbeat's last touch, late by two beats, before this boot). Another machine's
    record with its lock free is ``None``, on any file system: over NFS mounted
    ``local_lock=flock`` its lock does not reach here, and on a local disk this machine serves
    over NFS its client's lock is a POSIX lock here, which ``flock`` does not see."""
    held = record_held(path) if record.get("locked") is True else None
    if held is True:
        return True
    beat = _beat(record)
    if beat is not None:
        try:
            touched = path.stat().st_mtime
        except OSError:
            touched = None
        if touched is not None and earlier_boot(record, touched, every=2 * beat):
            return False
    if held is False:
        return False if on_this_machine(record) else None
    return record_alive(record)


def viewer_lines(viewers: list[Viewer]) -> list[str]:
    """``dreamtext view --list``'s lines: one per viewer, its address to open first; for
    another machine's (a home shared over NFS), the ssh forward that reaches it from here."""
    lines = []
    for record, checked, _, silent_since in viewers:
        folders = ", ".join(str(f) for f in record.get("folders", []))
        machine = record.get("host", "?")
        where = f"pid {record.get('pid')} on {machine}"
        port, address = record.get("port"), str(record.get("address", ""))
        if machine != HOST and isinstance(port, int):
            target = "127.0.0.1" if address in ("", "0.0.0.0", "::", "0") else address
            target = f"[{target}]" if ":" in target else target
            where += (
                ", another machine: forward it first, ssh -o ExitOnForwardFailure=yes "
                f"-L {port}:{target}:{port} {machine}"
            )
        if silent_since is not None:
            where += (
                f"; not checked from here, and its record was last touched {_ago(silent_since)}"
                f" (a running viewer touches it every {_minutes(_beat(record))})"
            )
        elif not checked:
            where += "; not checked from here, whether it still runs"
        lines.append(f"{record['url']}  {folders}  ({where}; since {record.get('started')})")
    return lines


def _minutes(seconds: float | None) -> str:
    """``5 min`` for 300 seconds; ``?`` for ``None``."""
    return "?" if seconds is None else f"{seconds / 60:g} min"


def removal_lines(viewers: list[Viewer]) -> list[str]:
    """The lines ``dreamtext view --list`` prints on stderr after its list, for the viewers it
    could not check: for each whose record no viewer has touched for long (its node down, or
    the viewer stopped), the command that removes the record; for the others, one line that
    says what removes theirs."""
    lines = []
    for record, _, path, silent_since in viewers:
        if silent_since is not None:
            machine = record.get("host", "?")
            lines.append(
                f"dreamtext view: the record of pid {record.get('pid')} on {machine} was last "
                f"touched {_ago(silent_since)} (a running viewer touches it every "
                f"{_minutes(_beat(record))}): if {machine} is down or that viewer stopped, "
                f"remove it: rm {shell_word(path)}"
            )
    unchecked = [v for v in viewers if not v.checked and v.silent_since is None]
    if unchecked:
        lines.append(
            f"dreamtext view: {_count(len(unchecked))} of another machine not checked from "
            "here (its lock does not reach this one): `dreamtext view --list` there removes "
            "the record of one that is gone, and here one untouched for an hour is named with "
            "the command that removes it"
        )
    return lines


def _count(n: int) -> str:
    return "1 viewer" if n == 1 else f"{n} viewers"
