"""agent-ledger: a tamper-evident, hash-chained audit ledger of AI-agent delegation lineage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ledger.query.ledger import Ledger

__version__ = "0.1.0"
__all__ = ["Ledger"]


def __getattr__(name: str) -> Any:
    """`from ledger import Ledger`, imported lazily so `import ledger` stays light."""
    if name == "Ledger":
        from ledger.query.ledger import Ledger

        return Ledger
    raise AttributeError(f"module 'ledger' has no attribute {name!r}")
