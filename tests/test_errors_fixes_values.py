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
