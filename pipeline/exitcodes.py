"""Process exit codes, and which of them the supervisor must never retry."""

from enum import IntEnum


class ExitCode(IntEnum):
    """What a stage's exit code tells the supervisor."""

    OK = 0
    # Raised out of run() after a clean unwind (inbox reader joined): safe to restart alone.
    CRASH = 1
    # Could not start (bad database file, port in use): restarting will not help.
    BOOT = 3
    # EX_CONFIG from sysexits.h: the settings are wrong; restarting will not help.
    CONFIG = 78


NEVER_RETRY = frozenset({ExitCode.BOOT, ExitCode.CONFIG})
