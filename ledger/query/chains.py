"""Every delegation's chain summarized at once: the input of the full scan's SQL pre-filter.

`violations()` cannot run the evaluator on millions of actions; it asks SQL for the actions
that might fail, and the evaluator (`authority`) decides those. To keep that set a superset,
each delegation reachable from a root grant gets, in one recursive query from the roots down
(one hash join per level, ~0.1 s per million delegations):

- its depth; the effective window (latest `not_before`, earliest `expires_at` on the chain);
  the time from which every hop is in the ledger; the earliest revocation that reaches it (its
  own, or a cascading one above);
- `clean`: at most `max_chain_depth` hops, and no grant on the chain is one whose findings can
  widen or void authority (then the delegation's own scopes, patterns and window decide
  exactly what the whole chain allows).

A delegation the recursion does not reach (its ancestry loops or misses a parent, or it lies
deeper than the limit) has no summary, and its actions always go to the evaluator.
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb
import pyarrow as pa

__all__ = ["CHAINS_SQL", "chain_table", "dirty_ids", "unreached"]

_FIRST = "QUALIFY row_number() OVER (PARTITION BY delegation_id ORDER BY occurred_at, event_id) = 1"

CHAINS_SQL = f"""
WITH RECURSIVE g AS (
    SELECT delegation_id, parent_delegation_id, not_before, expires_at, occurred_at
    FROM delegations {_FIRST}
),
rv AS (SELECT delegation_id, min(occurred_at) AS any_rev,
        min(occurred_at) FILTER (WHERE cascade) AS cascade_rev
    FROM revocations GROUP BY 1),
gr AS (SELECT g.*, rv.any_rev, rv.cascade_rev FROM g LEFT JOIN rv USING (delegation_id)),
c(delegation_id, depth, eff_nb, eff_exp, held_from, cascade_at, revoked_at) AS (
    SELECT delegation_id, 1, not_before, expires_at, occurred_at, cascade_rev, any_rev
    FROM gr WHERE parent_delegation_id IS NULL
    UNION ALL
    SELECT k.delegation_id, c.depth + 1, greatest(k.not_before, c.eff_nb),
        least(k.expires_at, c.eff_exp), greatest(k.occurred_at, c.held_from),
        least(k.cascade_rev, c.cascade_at), least(k.any_rev, c.cascade_at)
    FROM c JOIN gr k ON k.parent_delegation_id = c.delegation_id
    WHERE c.depth <= $max_depth
)
SELECT delegation_id, depth, eff_nb, eff_exp, held_from, revoked_at FROM c
"""

_UNREACHED_SQL = """
SELECT delegation_id FROM delegations
WHERE delegation_id NOT IN (SELECT delegation_id FROM {table} WHERE depth <= $max_depth)
"""

_DIRTY_SQL = """
WITH RECURSIVE g AS (SELECT DISTINCT delegation_id, parent_delegation_id FROM delegations),
d(delegation_id) AS (
    SELECT unnest($ids)
    UNION
    SELECT g.delegation_id FROM d JOIN g ON g.parent_delegation_id = d.delegation_id
)
SELECT delegation_id FROM d
"""


def chain_table(con: duckdb.DuckDBPyConnection, max_depth: int) -> pa.Table:
    """The summaries of every delegation reachable from a root within `max_depth` + 1 hops
    (deeper ones are left out: they are findings, and go to the evaluator)."""
    return con.sql(CHAINS_SQL, params={"max_depth": max_depth}).to_arrow_table()


def unreached(con: duckdb.DuckDBPyConnection, table: str, max_depth: int) -> set[str]:
    """Delegations without a clean-able chain: not reached from a root (a loop, a missing
    parent) or deeper than `max_depth`. `table` is the registered `chain_table`."""
    sql = _UNREACHED_SQL.format(table=table)
    return {r[0] for r in con.execute(sql, {"max_depth": max_depth}).fetchall()}


def dirty_ids(con: duckdb.DuckDBPyConnection, widening: Iterable[str]) -> pa.Table:
    """`widening` and every delegation below them (ids with a parent on the way)."""
    ids = sorted(set(widening))
    if not ids:
        return pa.table({"delegation_id": pa.array([], pa.string())})
    return con.sql(_DIRTY_SQL, params={"ids": ids}).to_arrow_table()
