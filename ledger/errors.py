"""One exception family, so callers (and the CLI) can catch everything the ledger raises."""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "CodecError",
    "ConfigError",
    "LedgerError",
    "NotFoundError",
    "SpoolFullError",
    "StoreError",
    "ValidationError",
    "VerificationError",
]


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose; `exit_code` is what the CLI returns."""

    exit_code = 1


class ConfigError(LedgerError):
    """A setting or argument that cannot work (bad path, bad option combination)."""


class ValidationError(LedgerError):
    """An event that is malformed: missing or mistyped fields, empty ids, type/data mismatch."""


class CodecError(LedgerError):
    """Bytes that are not a decodable single-object Avro AuditEvent."""


class StoreError(LedgerError):
    """The DuckDB ledger file cannot be opened, read or written."""


class NotFoundError(LedgerError):
    """An id (action, event, delegation, …) that the ledger does not hold."""


class VerificationError(LedgerError):
    """The ledger, a checkpoint or a proof failed an integrity check."""


class BrokerError(LedgerError):
    """Kafka is unreachable or refused a request."""


class SpoolFullError(LedgerError):
    """The emitter's on-disk spool reached its size limit; events would otherwise be dropped.

    `unsent` counts events the caller had already handed over that are neither delivered nor
    spooled (raised by `close()`): they are reported, never dropped silently."""

    def __init__(self, message: str, unsent: int = 0) -> None:
        super().__init__(message)
        self.unsent = unsent
