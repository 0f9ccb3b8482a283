"""dreamtext.errors' fixes for the file-system errors that are the machine's state, errno by
errno, and the refused read of another user's file (lines written out by hand)."""

import errno

from dreamtext import errors
from dreamtext.errors import ENVIRONMENT_ERRNOS, file_system_fix, unreadable_file


def test_a_stale_nfs_handle_and_a_lost_mount_each_have_their_own_fix():
    stale = OSError(errno.ESTALE, "Stale file handle")
    gone = OSError(errno.ENOTCONN, "Transport endpoint is not connected")
    assert {errno.ESTALE, errno.ENOTCONN, errno.EIO} <= ENVIRONMENT_ERRNOS
    assert file_system_fix(stale, "pick another folder").startswith(
        "run the command again once the file server is back (a stale NFS file handle"
    )
    assert file_system_fix(gone, "pick another folder") == (
        "mount that file system again (its network or FUSE connection is gone) or pick "
        "another folder"
    )


def test_a_file_this_process_may_not_read_is_to_be_let_read(tmp_path, monkeypatch):
    """A refused read of an existing file (another user's, mode 600): its fix is to be let read
    it, quoted for the shell, not another folder to write."""
    image = tmp_path / "my mug.png"
    image.write_bytes(b"x")
    monkeypatch.setattr(errors.os, "access", lambda name, mode: False)
    refused = OSError(errno.EACCES, "Permission denied", str(image))
    assert unreadable_file(refused) == str(image)
    assert file_system_fix(refused, "pick another folder") == (
        f"you may not read it: ask its owner to let you (chmod a+r '{image}')"
    )


def test_a_refused_write_of_a_file_that_may_be_read_is_fixed_elsewhere(tmp_path, monkeypatch):
    """A file this process may read, refused (a write to it): not the chmod a+r line."""
    run_file = tmp_path / "status.json"
    run_file.write_text("{}")
    monkeypatch.setattr(errors.os, "access", lambda name, mode: True)
    refused = OSError(errno.EPERM, "Operation not permitted", str(run_file))
    assert unreadable_file(refused) is None
    assert file_system_fix(refused, "pick another folder") == "pick another folder"


def test_names_read_from_disk_reach_the_terminal_escaped_outside_the_error_line(
    tmp_path, monkeypatch, capsys
):
    """A run's folder named by another tool (`dreamtext export` exports the newest under
    workspace/) printed its escape sequence raw in the export's summary on stdout, and a batch's
    progress lines (batch._say) printed theirs raw on stderr: the terminal obeyed
    ``\\x1b]0;pwned\\x07`` (its title set). Both now write it as its escapes."""
    from dreamtext import batch
    from dreamtext.cli import main

    monkeypatch.chdir(tmp_path)
    trained = [
        "text", "a colorful cube", "--model", "builtin:shapes", "--iters", "2", "--h", "16",
        "--w", "16", "--no-export", "--workspace", "workspace/run", "--device", "cpu",
    ]  # fmt: skip
    assert main(trained) == 0
    odd = tmp_path / "workspace" / "run\x1b]0;pwned\x07"
    (tmp_path / "workspace" / "run").rename(odd)
    capsys.readouterr()
    export = ["export", "--no-video", "--resolution", "16", "--formats", "ply", "--device", "cpu"]
    assert main(export) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert "run\\x1b]0;pwned\\x07/mesh/mesh.ply" in out
    batch._say(f"batch: line 1: {odd} finished\nsecond line")
    err = capsys.readouterr().err
    assert (
        err == f"batch: line 1: {tmp_path}/workspace/run\\x1b]0;pwned\\x07 finished\nsecond line\n"
    )
