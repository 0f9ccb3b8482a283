"""`dreamtext view`'s token kept between starts and its records of running viewers
(dreamtext.view.viewers): a viewer started again answers the addresses opened before,
`--new-token` replaces the token, `--list` finds a viewer whose output nobody kept."""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from test_view import make_run, servers_stopped_at_once, serving_in_a_thread

import dreamtext.processes as processes
import dreamtext.view.viewers as viewers
from dreamtext.cli import main
from dreamtext.errors import DreamtextError
from dreamtext.processes import HOST, user_name, write_held_record
from dreamtext.view.viewers import (
    LOCK_FILE,
    TOKEN_FILE,
    record_heartbeat,
    record_viewer,
    running_viewers,
    state_folder,
    viewer_token,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A folder with one finished run in it."""
    root = tmp_path / "runs"
    make_run(root / "cube", "a cube")
    return root


def started(monkeypatch, capsys, argv: list[str]) -> tuple[int, str | None, str, str]:
    """`dreamtext view ARGV --port 0`, stopped as it would start serving: its exit status, the
    token its server was given (``None``: no server), and what it printed on stdout and stderr."""
    made = servers_stopped_at_once(monkeypatch)
    code = main(["view", *argv, "--port", "0"])
    out, err = capsys.readouterr()
    return code, (made[0].token if made else None), out, err


def token_file() -> Path:
    return state_folder() / TOKEN_FILE


def test_a_viewer_started_again_serves_the_token_it_served_before(root, monkeypatch, capsys):
    """A restart (a reboot, a new job on another node of the same home) made a new token, and
    every open page and bookmark was refused. The token is kept, the user's alone (0600 in a
    0700 folder under $XDG_STATE_HOME), and the printed address carries it."""
    code, first, out, err = started(monkeypatch, capsys, [str(root)])
    assert code == 0 and err == "" and first is not None and len(first) == 32
    assert f"/?token={first}\n" in out
    assert token_file().read_text() == first + "\n"
    assert token_file().stat().st_mode & 0o777 == 0o600
    assert token_file().parent.stat().st_mode & 0o777 == 0o700
    assert started(monkeypatch, capsys, [str(root)])[1] == first


def test_new_token_replaces_the_kept_token_for_later_starts(root, monkeypatch, capsys):
    first = started(monkeypatch, capsys, [str(root)])[1]
    code, renewed, out, _ = started(monkeypatch, capsys, [str(root), "--new-token"])
    assert code == 0 and renewed not in (None, first) and len(renewed) == 32
    assert "viewers already running keep the old one until started again" in out
    assert token_file().read_text() == renewed + "\n"
    assert token_file().stat().st_mode & 0o777 == 0o600
    assert started(monkeypatch, capsys, [str(root)])[1] == renewed


def test_a_start_that_cannot_bind_its_port_leaves_the_kept_token(root, monkeypatch, capsys):
    """`--new-token --port 8000` with 8000 taken: nothing started, so nothing is replaced."""
    import socket

    kept = started(monkeypatch, capsys, [str(root)])[1]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        argv = ["view", str(root), "--new-token", "--port", str(taken.getsockname()[1])]
        assert main(argv) == 2
    assert "is in use" in capsys.readouterr().err
    assert token_file().read_text() == kept + "\n"


def test_no_token_neither_reads_nor_makes_the_token_file(root, monkeypatch, capsys):
    code, token, out, err = started(monkeypatch, capsys, [str(root), "--no-token"])
    assert (code, token, err) == (0, None, "") and "token" not in out
    assert not token_file().exists()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620])
def test_a_token_file_others_may_read_or_write_is_refused_with_one_line(
    root, monkeypatch, capsys, mode
):
    """Its token may be known, or set by another user: the viewer does not start on it; the
    line says what to do, and --new-token does it."""
    kept = started(monkeypatch, capsys, [str(root)])[1]
    token_file().chmod(mode)
    code, token, _, err = started(monkeypatch, capsys, [str(root)])
    assert (code, token) == (2, None) and "Traceback" not in err
    assert err == (
        f"dreamtext: error: others may read or write {token_file()} (mode {mode:o}), so its "
        "token may be known: remove it (a new token is made) or start dreamtext view with "
        "--new-token\n"
    )
    code, token, _, _ = started(monkeypatch, capsys, [str(root), "--new-token"])
    assert code == 0 and token not in (None, kept)
    assert token_file().stat().st_mode & 0o777 == 0o600


def test_a_token_file_of_another_user_or_a_link_is_refused(root, monkeypatch, capsys, tmp_path):
    kept = started(monkeypatch, capsys, [str(root)])[1]
    me = os.geteuid()
    owner = user_name(me) or f"user {me}"
    # The folder and the file as another user's: this process runs as someone else.
    with monkeypatch.context() as m:
        m.setattr(os, "geteuid", lambda: me + 1)
        code, token, _, err = started(monkeypatch, capsys, [str(root)])
        assert (code, token) == (2, None)
        assert err == (
            f"dreamtext: error: {token_file().parent} is {owner}'s, not yours: set "
            "XDG_STATE_HOME to a folder of your own\n"
        )
        # The folder this user's, the file another's: readable, or not even that (mode 600).
        m.setattr(os, "stat", _owned_by(me + 1, os.stat))
        code, token, _, err = started(monkeypatch, capsys, [str(root)])
        assert (code, token) == (2, None)
        assert err == (
            f"dreamtext: error: {token_file()} is {owner}'s, not yours: remove it (a new token "
            "is made) or start dreamtext view with --new-token\n"
        )
        real_open = os.open

        def refused(path, *args, **kwargs):
            if str(path) == str(token_file()):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        m.setattr(os, "open", refused)
        assert started(monkeypatch, capsys, [str(root)])[3] == err
    # A link (to a file an attacker reads, or made for the user to write the token into).
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text(kept + "\n")
    elsewhere.chmod(0o600)
    token_file().unlink()
    token_file().symlink_to(elsewhere)
    code, token, _, err = started(monkeypatch, capsys, [str(root)])
    assert (code, token) == (2, None)
    assert err == (
        f"dreamtext: error: {token_file()} is a link: remove it (a new token is made), or start "
        "dreamtext view with --new-token\n"
    )


def _owned_by(uid: int, stat):
    """``os.stat`` whose answer for the state folder names ``uid`` as its owner."""
    folder = str(state_folder())

    def fake(path, *args, **kwargs):
        info = stat(path, *args, **kwargs)
        if str(path) != folder:
            return info
        values = list(info)
        values[4] = uid  # st_uid
        return os.stat_result(values)

    return fake


def test_a_token_file_holding_no_token_is_refused(root, monkeypatch, capsys):
    token_file().parent.mkdir(mode=0o700, parents=True)
    token_file().write_text("secret\n")
    token_file().chmod(0o600)
    code, token, _, err = started(monkeypatch, capsys, [str(root)])
    assert (code, token) == (2, None)
    assert f"{token_file()} holds no token: remove it" in err and err.count("\n") == 1


def _read_only(monkeypatch, folder: Path) -> None:
    """Writes under ``folder`` fail as on a home mounted read-only (EROFS)."""
    real_open, real_mkdir = os.open, os.mkdir

    def refused(path, flags, *args, **kwargs):
        writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT
        if flags & writes and str(path).startswith(str(folder)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    def refused_mkdir(path, *args, **kwargs):
        if str(path).startswith(str(folder)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refused)
    monkeypatch.setattr(os, "mkdir", refused_mkdir)


def test_a_read_only_home_serves_with_a_token_of_its_own_and_one_line(
    root, monkeypatch, capsys, own_state_folder
):
    """Never fail to serve: where nothing can be written, this start has a new token, and one
    line says it will not be kept nor listed, and what to do."""
    _read_only(monkeypatch, own_state_folder)
    code, token, out, err = started(monkeypatch, capsys, [str(root)])
    assert code == 0 and token is not None and len(token) == 32 and f"?token={token}" in out
    assert err == (
        f"dreamtext view: cannot write {token_file()} (Read-only file system): this start's "
        "token is new and ends with it, and `dreamtext view --list` will not show it; set "
        "XDG_STATE_HOME to a folder you can write to keep one\n"
    )
    assert not token_file().parent.exists()
    assert started(monkeypatch, capsys, [str(root)])[1] != token


def test_a_read_only_home_serves_the_token_kept_before(root, monkeypatch, capsys, own_state_folder):
    """A home that became read-only (a full quota, a node that mounts it so) keeps the token
    made before: addresses opened then still open the runs; the record alone is said missing."""
    kept = started(monkeypatch, capsys, [str(root)])[1]
    _read_only(monkeypatch, own_state_folder)
    code, token, _, err = started(monkeypatch, capsys, [str(root)])
    assert (code, token) == (0, kept)
    assert err.startswith(f"dreamtext view: cannot record this viewer in {token_file().parent}")
    assert err.endswith("(Read-only file system): `dreamtext view --list` will not show it\n")


def test_without_a_home_it_serves_with_a_new_token_and_one_line(root, monkeypatch, capsys):
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(Path, "home", lambda: (_ for _ in ()).throw(RuntimeError("no home")))
    code, token, _, err = started(monkeypatch, capsys, [str(root)])
    assert code == 0 and token is not None
    assert err.startswith("dreamtext view: no home folder is known (HOME is unset): this start")
    assert err.count("\n") == 1


def test_a_relative_xdg_state_home_is_ignored(monkeypatch, tmp_path):
    """The XDG specification: a relative path in it is invalid, and is ignored."""
    monkeypatch.setenv("XDG_STATE_HOME", "state")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert state_folder() == tmp_path / ".local" / "state" / "dreamtext"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_folder() == tmp_path / "xdg" / "dreamtext"


RACE = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from dreamtext.view.viewers import viewer_token
    folder, start = Path(sys.argv[1]), float(sys.argv[2])
    time.sleep(max(start - time.time() - 0.05, 0))
    while time.time() < start:  # the last 50 ms spun: all ask within a few of each other
        pass
    print(viewer_token(folder=folder)[0])
    """
)


def test_viewers_started_at_once_serve_one_token_the_file_holds(tmp_path: Path):
    """Each start that finds no token file makes one: started at once, each had served a token
    of its own while the file kept one of them. One start's file wins (a hard link fails for
    the others), and all serve it. Processes started together wait for one moment, then ask."""
    for attempt in range(3):
        folder = tmp_path / f"state{attempt}" / "dreamtext"
        at = time.time() + 3.0
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", RACE, str(folder), str(at)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
            for _ in range(6)
        ]
        tokens = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            tokens.append(out.strip())
        kept = (folder / TOKEN_FILE).read_text().strip()
        assert tokens == [kept] * len(procs), attempt
        assert sorted(p.name for p in folder.iterdir()) == [TOKEN_FILE]  # no temp file left


def test_threads_started_at_once_serve_one_token(tmp_path: Path):
    """The same, many starts in one instant (threads at a barrier), many times."""
    for attempt in range(20):
        folder = tmp_path / f"state{attempt}" / "dreamtext"
        barrier, tokens = threading.Barrier(8), []

        def start(barrier=barrier, tokens=tokens, folder=folder):
            barrier.wait()
            tokens.append(viewer_token(folder=folder)[0])

        threads = [threading.Thread(target=start) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        kept = (folder / TOKEN_FILE).read_text().strip()
        assert tokens == [kept] * 8, attempt


def test_new_token_starts_at_once_serve_one_new_token_the_file_holds(tmp_path: Path, monkeypatch):
    """Several `dreamtext view --new-token` at once (a job array's viewers): each put its own
    new token in place, so all but the last served a token the file no longer held, which a
    later start (without --new-token) did not serve, and the addresses they printed stopped
    working at their next start. Starts that read the old token before any replaced it serve
    one new token, the one the file holds; each start is held here, between reading the old
    token and making its own, until all have read it."""
    for attempt in range(5):
        folder = tmp_path / f"state{attempt}" / "dreamtext"
        old = viewer_token(folder=folder)[0]
        barrier, tokens, made = threading.Barrier(6), [], viewers.new_token

        def all_at_once(barrier=barrier, made=made) -> str:
            barrier.wait(timeout=30)
            return made()

        monkeypatch.setattr(viewers, "new_token", all_at_once)

        def start(tokens=tokens, folder=folder):
            tokens.append(viewer_token(renew=True, folder=folder)[0])

        threads = [threading.Thread(target=start) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        kept = (folder / TOKEN_FILE).read_text().strip()
        assert kept != old and tokens == [kept] * 6, attempt
        monkeypatch.setattr(viewers, "new_token", made)
        assert viewer_token(renew=True, folder=folder)[0] not in (old, kept)  # one after: new


HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(120)
    """
)


def holding(path: Path, script: str = HOLDER) -> subprocess.Popen:
    """A second process running ``script`` with ``path`` as its argument, once it has said
    that it holds the lock (its first line), and, where it said it stops itself, once it is
    stopped: the line between its print and its SIGSTOP may wait on a loaded machine, and a
    start that looked before then named a running holder."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    said = proc.stdout.readline().strip()
    assert said in ("held", "stopping")
    deadline = time.monotonic() + 60
    while said == "stopping" and not processes.process_stopped(proc.pid):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    return proc


def bounded(call, limit: float, holder: subprocess.Popen):
    """``call()`` on a thread, given ``limit`` seconds: its result or exception and the seconds
    it took. Where it is still waiting then, the holder is killed (its lock freed) so that the
    test fails, rather than waiting with it."""
    done: dict = {}

    def run():
        try:
            done["result"] = call()
        except BaseException as error:
            done["error"] = error

    began = time.monotonic()
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(limit)
    took = time.monotonic() - began
    if thread.is_alive():
        holder.kill()
        thread.join(60)
        pytest.fail(f"still waiting for the lock after {took:.1f} s")
    return done, took


def test_a_new_token_start_gives_up_on_a_lock_held_too_long_and_changes_nothing(
    root, monkeypatch, capsys
):
    """A process holding view-token.lock for good (a --new-token start stopped with Ctrl-Z, a
    hung NFS client) made every later `dreamtext view --new-token` wait in flock for ever,
    without a word. It waits LOCK_WAIT_S at most, says so once it has waited LOCK_SAY_S, then
    refuses (exit 2) with a line that names the lock and what frees it, the kept token as it
    was. A holder that wrote no record of itself (another program) is another process."""
    kept = started(monkeypatch, capsys, [str(root)])[1]
    monkeypatch.setattr(viewers, "LOCK_WAIT_S", 1.5, raising=False)
    monkeypatch.setattr(viewers, "LOCK_SAY_S", 0.5, raising=False)
    lock = token_file().parent / viewers.LOCK_FILE
    holder = holding(lock)
    try:
        done, took = bounded(
            lambda: started(monkeypatch, capsys, [str(root), "--new-token"]), 15.0, holder
        )
    finally:
        holder.kill()
        holder.wait()
    code, token, _, err = done["result"]
    assert (code, token) == (2, None) and 1.5 <= took < 5.0 and "Traceback" not in err
    assert err.splitlines() == [
        f"dreamtext view: waiting for {lock}, held by another process; giving up after 1.5 s",
        f"dreamtext: error: {lock} is held by another process: find it with `lsof {lock}` and "
        "end it (a `dreamtext view --new-token` stopped with Ctrl-Z goes on with `fg` in its "
        "terminal); then start again (waited 1.5 s; the token is as it was)",
    ]
    assert token_file().read_text() == kept + "\n"
    assert sorted(p.name for p in token_file().parent.iterdir()) == [TOKEN_FILE, LOCK_FILE]


STOPPED = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import dreamtext.view.viewers as viewers
    made = viewers._make_token
    def stopped(*args, **kwargs):  # Ctrl-Z's moment: the lock held, the token not yet replaced
        print("stopping", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)
        return made(*args, **kwargs)
    viewers._make_token = stopped
    print(viewers.viewer_token(renew=True, folder=Path(sys.argv[1]))[0], flush=True)
    """
)


def test_a_new_token_start_stopped_in_the_lock_is_named_with_the_kill_cont_that_frees_it(
    tmp_path: Path, monkeypatch
):
    """The holder is a --new-token start stopped as it held the lock: its record in the lock
    file names it, the line says it is stopped and gives the `kill -CONT` that lets it finish.
    Continued, it replaces the token and empties the lock file (no record of a past holder)."""
    folder = tmp_path / "dreamtext"
    old = viewer_token(folder=folder)[0]
    monkeypatch.setattr(viewers, "LOCK_WAIT_S", 1.5, raising=False)
    monkeypatch.setattr(viewers, "LOCK_SAY_S", 0.5, raising=False)
    holder, said = holding(folder, STOPPED), []
    try:
        done, took = bounded(
            lambda: viewer_token(renew=True, folder=folder, say=said.append), 15.0, holder
        )
        error = done.get("error")
        assert isinstance(error, DreamtextError) and 1.5 <= took < 5.0
        lock = folder / LOCK_FILE
        who = (
            f"process {holder.pid} on this machine (a --new-token start), stopped (Ctrl-Z or "
            "SIGSTOP)"
        )
        assert said == [f"dreamtext view: waiting for {lock}, held by {who}; giving up after 1.5 s"]
        assert str(error) == (
            f"{lock} is held by {who}: `kill -CONT {holder.pid}` (or `fg` in its "
            f"terminal) lets it finish, or `kill {holder.pid}` ends it; then start again "
            "(waited 1.5 s; the token is as it was)"
        )
        assert (folder / TOKEN_FILE).read_text().strip() == old
        os.kill(holder.pid, signal.SIGCONT)
        renewed = holder.communicate(timeout=60)[0].strip()
    finally:
        holder.kill()
        holder.wait()
    assert renewed not in ("", old) and (folder / TOKEN_FILE).read_text().strip() == renewed
    assert (folder / LOCK_FILE).read_text() == ""
    assert viewer_token(renew=True, folder=folder)[0] not in (old, renewed)


@pytest.mark.parametrize(
    "record",
    [
        "[" * 100_000,  # nested past the interpreter's recursion limit: RecursionError
        json.dumps({"host": HOST, "pid": 10**20}),  # past a pid_t: os.kill's OverflowError
    ],
    ids=["nested", "huge-pid"],
)
def test_a_lock_file_holding_garbage_is_told_as_another_process_without_a_traceback(
    tmp_path: Path, monkeypatch, record: str
):
    """The record a waiting --new-token start reads from view-token.lock to name its holder is
    anything another program (or a disk) left there: one that json cannot parse for its depth,
    or one whose pid no process can have, raised a traceback from the waiting line, and the
    token's lock was never refused with its line. Either is no record: another process."""
    folder = tmp_path / "dreamtext"
    old = viewer_token(folder=folder)[0]
    lock = folder / LOCK_FILE
    lock.write_text(record)
    monkeypatch.setattr(viewers, "LOCK_WAIT_S", 1.0, raising=False)
    monkeypatch.setattr(viewers, "LOCK_SAY_S", 0.2, raising=False)
    holder, said = holding(lock), []
    try:
        done, _ = bounded(
            lambda: viewer_token(renew=True, folder=folder, say=said.append), 15.0, holder
        )
    finally:
        holder.kill()
        holder.wait()
    error = done.get("error")
    assert isinstance(error, DreamtextError), repr(error)
    waiting = f"dreamtext view: waiting for {lock}, held by another process; giving up after 1 s"
    assert said == [waiting]
    assert str(error).startswith(f"{lock} is held by another process: find it with `lsof {lock}`")
    assert (folder / TOKEN_FILE).read_text().strip() == old


LOOKING = textwrap.dedent(
    """
    import fcntl, os, signal, sys
    fd = os.open(sys.stdin.readline().strip(), os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # _remove_left_temps' look at a temp file
    print("held", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)  # stopped (Ctrl-Z, a hung NFS call) before it closes
    """
)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/self/fd")
def test_a_start_does_not_wait_for_another_stopped_as_it_looked_at_its_temp_token_file(
    tmp_path: Path, monkeypatch
):
    """Another start's cleanup (_remove_left_temps) takes a shared lock on each temp token file
    to tell a start at work from a killed one's; one that did so on this start's new file in
    the instant before this start locked it, and was stopped there, made this start wait in
    flock for ever (a first start, or a --new-token one). The file is given up and another
    made: the token is served, and no temp file is left."""
    import fcntl

    folder = tmp_path / "dreamtext"
    folder.mkdir(mode=0o700)
    looking = subprocess.Popen(
        [sys.executable, "-c", LOOKING], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    real, taken = fcntl.flock, []

    def looked_at_first(fd, how):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if how & fcntl.LOCK_EX and f"/.{TOKEN_FILE}." in name and not taken:
            taken.append(name)  # the other start's look comes first, and stops there
            looking.stdin.write(name + "\n")
            looking.stdin.flush()
            assert looking.stdout.readline().strip() == "held"
        return real(fd, how)

    monkeypatch.setattr(fcntl, "flock", looked_at_first)
    try:
        done, took = bounded(lambda: viewer_token(folder=folder), 15.0, looking)
        assert looking.poll() is None  # still stopped, holding the first file
    finally:
        looking.kill()
        looking.wait()
    token, line = done["result"]
    assert line is None and len(taken) == 1 and took < 5.0
    assert (folder / TOKEN_FILE).read_text() == token + "\n"
    assert sorted(p.name for p in folder.iterdir()) == [TOKEN_FILE]


KILLED = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from dreamtext.view.viewers import viewer_token
    def killed(*args, **kwargs):  # SIGKILL's moment: the temp file written, not yet in place
        os._exit(9)
    os.link = os.replace = killed
    viewer_token(renew=sys.argv[2] == "renew", folder=Path(sys.argv[1]))
    """
)


def test_a_start_killed_before_its_token_is_in_place_leaves_nothing_after_the_next_start(
    tmp_path: Path,
):
    """A start killed between writing its new token and linking it into place (kill -9, the
    OOM killer) left its hidden temp file in the state folder for good: no start looked at it
    again. Its lock died with it, so the next start removes it (a new token, and --new-token)."""
    folder = tmp_path / "dreamtext"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for how in ("new", "renew"):
        killed = subprocess.run(
            [sys.executable, "-c", KILLED, str(folder), how], env=env, capture_output=True
        )
        assert killed.returncode == 9, killed.stderr
        left = [p for p in folder.iterdir() if p.name.startswith(f".{TOKEN_FILE}.{HOST}.")]
        assert len(left) == 1 and len(left[0].read_text().strip()) == 32, how
        token, line = viewer_token(folder=folder)
        assert line is None and token == (folder / TOKEN_FILE).read_text().strip()
        assert not left[0].exists(), how
        assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == [], how


def test_a_temp_token_file_at_work_is_kept_and_on_a_shared_home_one_until_a_minute_old(
    tmp_path: Path, monkeypatch
):
    """A temp file whose lock is held is a start's at work: kept, however old. Where other
    machines' locks may not be seen (a home on NFS), a free one may be another node's start at
    work: removed only once TEMP_GRACE_S old. A file of the user's own beside them is no temp."""
    import fcntl

    folder = tmp_path / "dreamtext"
    viewer_token(folder=folder)
    at_work = folder / f".{TOKEN_FILE}.{HOST}.1.0123abcd"
    fd = os.open(at_work, os.O_WRONLY | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    mine = folder / f".{TOKEN_FILE}.bak"
    elsewhere = folder / f".{TOKEN_FILE}.node042.example.77.89abcdef"
    old = time.time() - 3600  # past TEMP_GRACE_S
    for path in (mine, elsewhere):
        path.write_text("0" * 32 + "\n")
    for path in (at_work, mine):
        os.utime(path, (old, old))
    monkeypatch.setattr(processes, "file_system_type", lambda path: "nfs4")
    try:
        viewer_token(folder=folder)
        assert at_work.exists() and mine.exists() and elsewhere.exists()
        os.utime(elsewhere, (old, old))
        viewer_token(folder=folder)
        assert at_work.exists() and not elsewhere.exists()
    finally:
        os.close(fd)
    viewer_token(folder=folder)
    assert not at_work.exists() and mine.exists()  # its lock free and an hour old
    monkeypatch.undo()  # a local disk: a free one of this machine's is removed at once
    for path in (at_work, elsewhere):  # another's: a local disk this machine serves over NFS
        path.write_text("0" * 32 + "\n")
    viewer_token(folder=folder)
    assert not at_work.exists() and elsewhere.exists() and mine.exists()


def test_a_cookie_of_a_viewer_is_answered_by_the_viewer_started_again_on_its_port(
    root, monkeypatch
):
    """An open page (or a bookmark) of a viewer that was stopped and started again on its port
    keeps working: its cookie, set by the first viewer, is what the second asks for; the old
    viewer's printed address opens it too."""
    first, thread, out = serving_in_a_thread(monkeypatch, [root])
    port = first.server_port
    printed = out.getvalue().split(" at ", 1)[1].split("\n", 1)[0]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/?" + urlsplit(printed).query)
    answer = conn.getresponse()
    answer.read()
    cookie = answer.getheader("Set-Cookie").split(";")[0]
    conn.close()
    first.shutdown()
    thread.join(timeout=30)
    again, thread, out = serving_in_a_thread(monkeypatch, [root], port=port)
    try:
        assert f" at {printed}\n" in out.getvalue()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/runs.json", headers={"Cookie": cookie})
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        again.shutdown()
        thread.join(timeout=30)


def test_list_prints_each_running_viewers_address_and_forgets_stopped_ones(
    root, monkeypatch, capsys, tmp_path
):
    """Jupyter's `server list`: each running viewer's address as it printed it (with the
    token), its folders and process; a stopped viewer's record is gone with it."""
    other = tmp_path / "other"
    other.mkdir()
    first, t1, _ = serving_in_a_thread(monkeypatch, [root])
    second, t2, _ = serving_in_a_thread(monkeypatch, [other], token=False)
    try:
        assert main(["view", "--list"]) == 0
        out, err = capsys.readouterr()
        first_line = f"http://127.0.0.1:{first.server_port}/?token={first.token}  {root}  "
        lines = sorted(out.splitlines(), key=lambda line: not line.startswith(first_line))
        assert err == "" and len(lines) == 2, out
        assert lines[0].startswith(f"http://127.0.0.1:{first.server_port}/?token={first.token}  ")
        assert lines[1].startswith(f"http://127.0.0.1:{second.server_port}/  {other}  ")
        assert f"  {root}  (pid {os.getpid()} on {HOST}; since 20" in lines[0]
        records = sorted(state_folder().glob("view-*.json"))
        assert [r.stat().st_mode & 0o777 for r in records] == [0o600, 0o600]
    finally:
        for srv, thread in ((first, t1), (second, t2)):
            srv.shutdown()
            thread.join(timeout=30)
    assert list(state_folder().glob("view-*.json")) == []
    assert main(["view", "--list"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err == (
        "dreamtext view: none of yours is running (that this machine knows of)\n"
    )


def _record(name: str, **fields) -> Path:
    path = state_folder() / name
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    record = {"url": "http://127.0.0.1:8123/?token=x", "folders": ["/runs"], **fields}
    path.write_text(json.dumps(record))
    return path


def test_list_removes_records_of_killed_viewers_and_marks_other_machines(capsys):
    """A viewer killed without its Ctrl-C (kill -9, the OOM killer) leaves its record: --list
    removes it, its process being gone. Another machine's (a home on NFS) cannot be checked
    from here: it is listed, marked so, and kept."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = _record(f"view-{HOST}-{gone.pid}-8123.json", host=HOST, pid=gone.pid, started="a")
    unlocked = _record("view-x-1-8123.json", host=HOST, pid=gone.pid, locked=True, started="b")
    there = _record(
        "view-node042-77-8123.json",
        host="node042",
        pid=77,
        port=8123,
        address="127.0.0.1",
        locked=True,
        started="c",
    )
    assert main(["view", "--list"]) == 0
    out, _ = capsys.readouterr()
    assert not dead.exists() and not unlocked.exists() and there.exists()
    assert out == (
        "http://127.0.0.1:8123/?token=x  /runs  (pid 77 on node042, another machine: forward "
        "it first, ssh -o ExitOnForwardFailure=yes -L 8123:127.0.0.1:8123 node042; not checked "
        "from here, whether it still runs; since c)\n"
    )
    # Its lock held (NFS whose locks reach here): it runs, and is listed without the doubt.
    record = json.loads(there.read_text())
    with write_held_record(there, {**record, "address": "0.0.0.0"}):
        assert main(["view", "--list"]) == 0
    assert capsys.readouterr().out == (
        "http://127.0.0.1:8123/?token=x  /runs  (pid 77 on node042, another machine: forward "
        "it first, ssh -o ExitOnForwardFailure=yes -L 8123:127.0.0.1:8123 node042; since c)\n"
    )


def test_list_removes_the_record_of_a_viewer_of_this_machines_earlier_boot(capsys, monkeypatch):
    """A viewer that ran here before a reboot left its record, its lock free, on a home on NFS:
    its boot_id is another's, so it was listed as another machine's, "not checked from here",
    for good. Last touched before this boot (by more than two of its beats), it is the earlier
    boot's: removed. A twin's (this machine's name, another boot), touched since, is kept."""
    assert processes.BOOT_TIME is not None
    monkeypatch.setattr(processes, "file_system_type", lambda path: "nfs4")
    before = processes.BOOT_TIME - 600
    fields = {"host": HOST, "pid": 12, "locked": True, "beat_s": 300.0, "started": "b"}
    rebooted = _record(f"view-{HOST}-12-8123.json", boot_id="an earlier boot", **fields)
    os.utime(rebooted, (before, before))
    twin = _record(f"view-{HOST}-13-8123.json", boot_id="a twin's boot", **fields)
    assert main(["view", "--list"]) == 0
    out = capsys.readouterr().out
    assert not rebooted.exists() and twin.exists()  # touched since this boot: another machine
    assert out.count("\n") == 1 and "not checked from here, whether it still runs" in out


def test_list_names_the_rm_of_another_machines_record_untouched_for_an_hour(capsys, monkeypatch):
    """A viewer on another node of a shared home whose node died: its record's lock, where it
    does not reach here, cannot tell, and the record was listed as "not checked" forever. A
    running viewer touches its record every beat_s: one untouched for an hour is marked so,
    and stderr names the rm that removes it; one touched lately gets the line that says what
    removes it once gone. Neither is removed: neither is proven gone."""
    monkeypatch.setattr(processes, "file_system_type", lambda path: "nfs4")
    fields = {"port": 8123, "address": "127.0.0.1", "locked": True, "beat_s": 300.0}
    dead = _record("view-node042-77-8123.json", host="node042", pid=77, started="c", **fields)
    three_hours = time.time() - 3 * 3600 - 30
    os.utime(dead, (three_hours, three_hours))
    live = _record("view-node043-78-8123.json", host="node043", pid=78, started="d", **fields)
    assert main(["view", "--list"]) == 0
    out, err = capsys.readouterr()
    assert dead.exists() and live.exists()
    forward = "another machine: forward it first, ssh -o ExitOnForwardFailure=yes -L"
    assert out == (
        f"http://127.0.0.1:8123/?token=x  /runs  (pid 77 on node042, {forward} "
        "8123:127.0.0.1:8123 node042; not checked from here, and its record was last touched "
        "3 h 0 min ago (a running viewer touches it every 5 min); since c)\n"
        f"http://127.0.0.1:8123/?token=x  /runs  (pid 78 on node043, {forward} "
        "8123:127.0.0.1:8123 node043; not checked from here, whether it still runs; since d)\n"
    )
    assert err == (
        "dreamtext view: the record of pid 77 on node042 was last touched 3 h 0 min ago (a "
        "running viewer touches it every 5 min): if node042 is down or that viewer stopped, "
        f"remove it: rm {dead}\n"
        "dreamtext view: 1 viewer of another machine not checked from here (its lock does not "
        "reach this one): `dreamtext view --list` there removes the record of one that is gone, "
        "and here one untouched for an hour is named with the command that removes it\n"
    )


def test_a_serving_viewer_touches_its_record_every_beat(root, monkeypatch):
    """The heartbeat that tells a live viewer's record from a dead node's: the server touches
    its record every BEAT_S from its loop between requests."""
    monkeypatch.setattr(viewers, "BEAT_S", 0.1)
    server, thread, _ = serving_in_a_thread(monkeypatch, [root])
    try:
        deadline = time.monotonic() + 10
        while not list(state_folder().glob("view-*.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        (record,) = state_folder().glob("view-*.json")
        assert json.loads(record.read_text())["beat_s"] == 0.1
        old = time.time() - 3600
        os.utime(record, (old, old))
        while record.stat().st_mtime == old and time.monotonic() < deadline:
            time.sleep(0.05)
        assert time.time() - record.stat().st_mtime < 60
    finally:
        server.shutdown()
        thread.join(timeout=30)


def test_the_heartbeat_touches_the_record_by_name_where_utime_takes_no_descriptor(
    tmp_path, monkeypatch
):
    """Windows' os.utime refuses a descriptor with a TypeError (it is not in os.supports_fd):
    the heartbeat, called from the server's loop, raised it there and stopped the viewer."""
    real_utime = os.utime

    def utime_without_descriptors(path, *args, **kwargs):
        if isinstance(path, int):
            raise TypeError("utime: path should be string, bytes or os.PathLike, not int")
        return real_utime(path, *args, **kwargs)

    record = tmp_path / "view-host-1-8000.json"
    handle = write_held_record(record, {"url": "http://127.0.0.1:8000/"})
    old = time.time() - 3600
    os.utime(record, (old, old))
    monkeypatch.setattr(os, "utime", utime_without_descriptors)
    try:
        record_heartbeat(handle)()
    finally:
        handle.close()
    assert time.time() - record.stat().st_mtime < 60


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/self/fd")
@pytest.mark.parametrize("renew", [False, True], ids=["first", "new-token"])
def test_without_flock_the_temp_token_is_closed_before_it_is_put_in_place(
    tmp_path, monkeypatch, renew
):
    """Windows has no fcntl, and renames, links or removes no file a descriptor holds open: a
    start there closes its temp token file before it puts it in place (os.replace of
    --new-token failed with the temp open, and each start served a token of its own)."""
    real = {name: getattr(os, name) for name in ("replace", "link", "unlink")}

    def refusing_open_files(name):
        def call(source, *args, **kwargs):
            held = set()
            for fd in os.listdir("/proc/self/fd"):
                with contextlib.suppress(OSError):  # the listing's own descriptor, closed
                    held.add(os.readlink(f"/proc/self/fd/{fd}"))
            if str(source) in held:
                raise PermissionError(13, "in use by another descriptor", str(source))
            return real[name](source, *args, **kwargs)

        return call

    monkeypatch.setattr(viewers, "fcntl", None)
    for name in real:
        monkeypatch.setattr(os, name, refusing_open_files(name))
    folder = tmp_path / "state"
    first, line = viewer_token(folder=folder)
    assert line is None
    token, line = viewer_token(renew=renew, folder=folder)
    assert line is None
    assert (folder / TOKEN_FILE).read_text().strip() == token
    assert (token != first) is renew
    assert not [p for p in folder.iterdir() if p.name.startswith(f".{TOKEN_FILE}.")]


def test_list_is_one_command_of_its_own(root, capsys):
    for argv, named in [
        (["--list", "--port", "0"], "--port"),
        (["--list", str(root)], "WORKSPACE_OR_ROOT"),
        (["--list", "--static", "site"], "--static"),
        (["--list", "--new-token"], "--new-token"),
    ]:
        assert main(["view", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err == f"dreamtext: error: give --list (the viewers running) or {named}, not both\n"
    assert main(["view", str(root), "--new-token", "--no-token"]) == 2
    assert capsys.readouterr().err.endswith("give --new-token or --no-token, not both\n")
    assert main(["view", str(root), "--new-token", "--static", "site"]) == 2
    err = capsys.readouterr().err
    assert err.endswith("give --static (files, no server) or --new-token, not both\n")


def test_a_viewer_started_in_the_background_without_its_output_is_found_by_list(
    root: Path, tmp_path: Path
):
    """`dreamtext view runs & disown` over ssh, its output to a terminal since closed: the
    address is nowhere but in --list, run from another shell, which opens the runs; the
    viewer's stop (SIGTERM, as `kill` sends) removes its record."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "dreamtext", "view", str(root), "--port", "0"]
    viewer = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        deadline, lines = time.monotonic() + 60, []
        while not lines and time.monotonic() < deadline:
            time.sleep(0.2)
            listed = subprocess.run(
                [sys.executable, "-m", "dreamtext", "view", "--list"],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            )
            lines = listed.stdout.splitlines()
        assert len(lines) == 1 and f"(pid {viewer.pid} on {HOST}; since" in lines[0], listed
        address = urlsplit(lines[0].split()[0])
        assert address.query == f"token={token_file().read_text().strip()}"
        conn = http.client.HTTPConnection("127.0.0.1", address.port, timeout=10)
        conn.request("GET", f"/api/runs.json?{address.query}")
        assert conn.getresponse().status == 200
        conn.close()
        viewer.send_signal(signal.SIGTERM)
        _, err = viewer.communicate(timeout=30)
    finally:
        viewer.kill()
    assert viewer.returncode == 0 and "Traceback" not in err, err
    assert list(token_file().parent.glob("view-*.json")) == []


def test_record_viewer_refuses_a_folder_others_may_write_in(tmp_path: Path):
    folder = tmp_path / "dreamtext"
    folder.mkdir(mode=0o700)
    folder.chmod(0o777)
    handle, path, line = record_viewer("http://127.0.0.1:1/", 1, "127.0.0.1", [tmp_path], folder)
    assert (handle, path) == (None, None)
    assert f"others may write in {folder} (mode 777): chmod 700 {folder}" in line
    assert list(folder.iterdir()) == []
    with pytest.raises(viewers.DreamtextError, match="others may write in"):
        viewer_token(folder=folder)
    assert running_viewers(folder) == []
