"""The one exception type a user can cause.

A ``DreamtextError`` carries a one-line message that names the fix. The CLI prints it to stderr
without a traceback and exits with status 2; every other exception is a bug and stays a traceback,
except the file-system errors that are the machine's state (:data:`ENVIRONMENT_ERRNOS`).
"""

import errno

# File-system errors that are the machine's state, not a bug: one line, not a traceback.
# EFBIG: a file over the file-size limit (ulimit -f, a file system's largest file).
ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS}
)

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
    batch's skip line reuses), then what to do."""

    def __init__(self, workspace: object, holder: str, what: str = "a run in it") -> None:
        self.situation = f"{workspace} is in use: {holder} is running {what}"
        super().__init__(
            f"{self.situation}; wait for it to end or stop it, or pass --workspace NEW_FOLDER"
        )
        self.holder = holder
