"""agent-ledger: a tamper-evident, hash-chained audit ledger of AI-agent delegation lineage."""

from __future__ import annotations

__version__ = "0.1.0"
