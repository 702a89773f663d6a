"""The agent SDK's import path: `from ledger.emitter import SyncEmitter` (or `Emitter`).

A stable name for agent code; the implementation lives in `ledger.stream.emitter`.
"""

from __future__ import annotations

from ledger.errors import SpoolFullError
from ledger.stream.emitter import Emitter, SyncEmitter

__all__ = ["Emitter", "SpoolFullError", "SyncEmitter"]
