"""A recipient row's status: the one spelling of each, for SQL and for Python.

SQL uses the values as literals (f-strings of these members), never as bound
parameters, because the partial indexes (`WHERE status = 'pending'`) only serve a
query whose text names the same literal. The migrations in schema.py keep their own
literals: they are history and must not change.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"  # waiting for its due time
    SENDING = "sending"  # claimed: with the sender, perhaps at SES
    SENT = "sent"  # SES accepted it
    FAILED = "failed"  # SES refused it for good, or it could not be built
    CANCELLED = "cancelled"  # its topic was cancelled before it reached SES
    PAUSED = "paused"  # its topic is paused; a resume makes it pending again
    SUPPRESSED = "suppressed"  # its address was suppressed after it was stored
    UNKNOWN = "unknown"  # imported as the original's Processed: nobody knows whether it went out


# What a hold may move: sent and failed rows keep their outcome; a pause keeps cancels.
HOLDABLE = {
    Status.CANCELLED: (Status.PENDING, Status.PAUSED, Status.SENDING),
    Status.PAUSED: (Status.PENDING, Status.SENDING),
}
