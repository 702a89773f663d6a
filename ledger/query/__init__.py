"""The investigator's questions: trace, blast radius, violations, inventory, read-only SQL.

`Ledger` is the facade; `custody` and `blast` answer from a `Snapshot` of the file, and the
rules live in `rules` (pure) and `scans` (their SQL). `Ledger` is imported lazily so that
`ledger.query.rules` can be used without loading DuckDB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ledger.query.ledger import InventoryItem, Ledger, SqlResult

__all__ = ["InventoryItem", "Ledger", "SqlResult"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ledger.query import ledger

        return getattr(ledger, name)
    raise AttributeError(f"module 'ledger.query' has no attribute {name!r}")
