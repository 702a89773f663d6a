"""One exception family, so callers (and the CLI) can catch everything the ledger raises."""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "CodecError",
    "ConfigError",
    "LedgerError",
    "NotFoundError",
    "SpoolError",
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


class SpoolError(LedgerError):
    """The emitter's on-disk spool cannot be written or synced (disk full, I/O error); the
    event whose `emit()` raises it was not accepted."""


class SpoolFullError(SpoolError):
    """The emitter's on-disk spool reached its size limit; events would otherwise be dropped.

    The event whose `emit()` raises it was not accepted; nothing accepted before is lost."""
