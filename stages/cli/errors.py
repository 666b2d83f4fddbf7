"""Exit codes, and `Failure`: the one exception a command raises to stop with a message.

`app.main` prints a Failure as one line on stderr and exits with its code; nothing else
reaches the operator as a traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    SERVER = 1  # the server refused to work, or could not be reached
    USAGE = 2  # bad options, a bad file, or a request the server refused for what it asked
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it


class Failure(Exception):
    """Stop the command: `message` is one line for the operator, `code` the exit status."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
