"""The agent SDK's import path: `from ledger.emitter import SyncEmitter` (or `Emitter`).

A stable name for agent code; the implementation lives in `ledger.stream.emitter`.
"""

from __future__ import annotations

from ledger.errors import SpoolError, SpoolFullError
from ledger.stream.emitter import EmitReport, Emitter, SyncEmitter

__all__ = ["EmitReport", "Emitter", "SpoolError", "SpoolFullError", "SyncEmitter"]
