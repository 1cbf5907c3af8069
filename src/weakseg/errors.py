"""The exceptions a user's input can cause, and the one way the command line reports them.

Every error that a person can fix (a bad setting, a missing or malformed file, an occupied run
folder) derives from :class:`WeaksegError`. Its message says what is wrong and where; ``hint``
says how to fix it. ``weakseg`` prints such an error as one line on stderr,
``error: <what>, <where>; <how to fix>``, and exits with status 2 (a traceback only with
``--debug``). Library callers catch the subclasses, which stay ``ValueError`` /
``RuntimeError`` where they always were.
"""

from __future__ import annotations


class WeaksegError(Exception):
    """An error in what the user gave: the message names the value and the file or key.

    Args:
        message: what is wrong, and where (the file, the key, the value).
        hint: how to fix it; shown after the message.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        message = super().__str__()
        return f"{message}; {self.hint}" if self.hint else message


class ConfigError(WeaksegError, ValueError):
    """A configuration key or value is wrong; the message names it."""


class DataError(WeaksegError, ValueError):
    """A data file is missing, unreadable, truncated or inconsistent; the message names it."""


class MissingFileError(DataError, FileNotFoundError):
    """A file or folder that the user named, or that a run needs, does not exist; the message
    names the path (a :class:`DataError` and a ``FileNotFoundError``)."""


class RunDirError(WeaksegError, RuntimeError):
    """A run folder cannot be used as asked: another trainer holds it, or it holds a run."""
