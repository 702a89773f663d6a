"""The ledger file: entries, quarantine, offsets and the state derived from them, in DuckDB.

With `query`, the only package that speaks SQL. `Store` names no derived structure itself:
this package registers the defaults (the investigator projections, then the Merkle state),
and callers that want others pass `Store.open(path, extensions=[...])`.
"""

from __future__ import annotations

from ledger.contract.batch import Incoming, Rejected
from ledger.store._store import (
    FORMAT_VERSION,
    Appended,
    AppendResult,
    Store,
    StoreExtension,
    default_db_path,
    default_extensions,
    fetch_one,
    register_default_extension,
)
from ledger.store.projections import Projections
from ledger.store.quarantine import Quarantined, quarantined
from ledger.store.treestore import MerkleExtension

__all__ = [
    "FORMAT_VERSION",
    "AppendResult",
    "Appended",
    "Incoming",
    "MerkleExtension",
    "Projections",
    "Quarantined",
    "Rejected",
    "Store",
    "StoreExtension",
    "default_db_path",
    "default_extensions",
    "fetch_one",
    "quarantined",
    "register_default_extension",
]

register_default_extension(Projections)
register_default_extension(MerkleExtension)
