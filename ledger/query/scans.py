"""`violations()`: every rule over the whole ledger in a handful of set-based DuckDB queries.

Action and delegation facts rows are gathered with joins and pre-filtered in SQL by the same
predicates `rules` applies in Python (which then decides, so trace and the full scan agree);
principal- and credential-level kinds are plain SQL. Every check is on event time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

import duckdb

from ledger.query.rules import (
    ACTION_FACT_COLUMNS,
    ACTION_KINDS,
    DELEGATION_FACT_COLUMNS,
    DELEGATION_KINDS,
    KINDS,
    Thresholds,
    Violation,
    action_violations,
    dedupe,
    delegation_violations,
    iso,
    long_lived_violation,
    resource_covers_sql,
    scope_covers_sql,
    unowned_violation,
)

# -- SQL ------------------------------------------------------------------------------------

_FIRST = "QUALIFY row_number() OVER (PARTITION BY {k} ORDER BY occurred_at, event_id) = 1"

#: effective revocation time of every revoked delegation (own or cascaded from an ancestor)
REVOKED_CTE = """
down(delegation_id, revoked_at, via, cascade, depth) AS (
    SELECT delegation_id, occurred_at, delegation_id, cascade, 0 FROM revocations {rev_filter}
    UNION ALL
    SELECT c.delegation_id, d.revoked_at, d.via, true, d.depth + 1
    FROM down d JOIN delegations c ON c.parent_delegation_id = d.delegation_id
    WHERE d.cascade AND d.depth < 64
),
eff AS (
    SELECT delegation_id, min(revoked_at) AS revoked_at, arg_min(via, (revoked_at, via)) AS via
    FROM down GROUP BY delegation_id
)"""

ACTION_FACTS_SQL = f"""
WITH RECURSIVE {REVOKED_CTE.format(rev_filter="")},
reg AS (SELECT principal_id, arg_max(kind, (occurred_at, event_id)) AS kind
        FROM principals GROUP BY principal_id),
ret AS (SELECT principal_id, min(occurred_at) AS retired_at FROM retirements GROUP BY 1),
dl AS (SELECT * FROM delegations {_FIRST.format(k="delegation_id")}),
cr AS (SELECT * FROM credentials {_FIRST.format(k="credential_id")}),
crev AS (SELECT credential_id, min(occurred_at) AS revoked_at
         FROM credential_revocations GROUP BY 1),
denials AS (
    SELECT a.action_id, dc.decision_id FROM actions a
    JOIN decisions dc ON dc.decision_id = a.decision_id WHERE dc.decision = 'deny'
    UNION ALL
    SELECT action_id, decision_id FROM decisions WHERE decision = 'deny' AND action_id IS NOT NULL
),
denied AS (SELECT action_id, min(decision_id) AS decision_id FROM denials GROUP BY 1),
x AS (
    SELECT a.action_id, a.event_id, a.occurred_at, a.principal_id, a.delegation_id,
        a.credential_id, a.operation, a.resource, a.outcome, reg.kind AS actor_kind,
        dl.delegation_id IS NOT NULL AS has_delegation, dl.delegate_id, dl.scopes,
        dl.resources, dl.not_before, dl.expires_at, eff.revoked_at, eff.via AS revoked_via,
        ret.retired_at, denied.decision_id AS denied_by,
        cr.credential_id IS NOT NULL AS has_credential, cr.principal_id AS holder,
        cr.occurred_at AS cred_issued, cr.expires_at AS cred_expires,
        crev.revoked_at AS cred_revoked,
        {scope_covers_sql("dl.scopes", "a.operation")} AS scope_ok,
        {resource_covers_sql("dl.resources", "a.resource")} AS resource_ok
    FROM actions a
    LEFT JOIN reg ON reg.principal_id = a.principal_id
    LEFT JOIN dl ON dl.delegation_id = a.delegation_id
    LEFT JOIN eff ON eff.delegation_id = a.delegation_id
    LEFT JOIN ret ON ret.principal_id = a.principal_id
    LEFT JOIN denied ON denied.action_id = a.action_id
    LEFT JOIN cr ON cr.credential_id = a.credential_id
    LEFT JOIN crev ON crev.credential_id = a.credential_id
)
SELECT {", ".join(ACTION_FACT_COLUMNS)} FROM x
WHERE (delegation_id IS NULL AND coalesce(actor_kind, '') <> 'human')
   OR (delegation_id IS NOT NULL AND NOT has_delegation)
   OR (has_delegation AND (delegate_id <> principal_id OR NOT scope_ok OR NOT resource_ok
       OR occurred_at < not_before OR occurred_at >= expires_at OR revoked_at <= occurred_at))
   OR retired_at <= occurred_at
   OR (outcome = 'succeeded' AND denied_by IS NOT NULL)
   OR (credential_id IS NOT NULL AND (NOT has_credential OR holder <> principal_id
       OR cred_issued > occurred_at OR cred_expires <= occurred_at
       OR cred_revoked <= occurred_at))
"""

_CHILD_SCOPES_OK = (
    f"(len(list_filter(g.scopes, lambda cs: NOT {scope_covers_sql('par.scopes', 'cs')})) = 0)"
)
_CHILD_RESOURCES_OK = (
    f"(len(list_filter(g.resources, lambda cr: NOT "
    f"{resource_covers_sql('par.resources', 'cr')})) = 0)"
)

DELEGATION_FACTS_SQL = f"""
WITH ret AS (SELECT principal_id, min(occurred_at) AS retired_at FROM retirements GROUP BY 1),
par AS (SELECT * FROM delegations {_FIRST.format(k="delegation_id")}),
x AS (
    SELECT g.delegation_id, g.event_id, g.occurred_at, g.parent_delegation_id, g.delegator_id,
        g.delegate_id, g.scopes, g.resources, g.expires_at,
        par.delegation_id IS NOT NULL AS has_parent, par.scopes AS par_scopes,
        par.resources AS par_resources, par.expires_at AS par_expires,
        par.may_redelegate AS par_may_redelegate, par.delegate_id AS par_delegate,
        r1.retired_at AS delegator_retired_at, r2.retired_at AS delegate_retired_at,
        {_CHILD_SCOPES_OK} AND {_CHILD_RESOURCES_OK} AS narrower
    FROM delegations g
    LEFT JOIN par ON par.delegation_id = g.parent_delegation_id
    LEFT JOIN ret r1 ON r1.principal_id = g.delegator_id
    LEFT JOIN ret r2 ON r2.principal_id = g.delegate_id
    {{where}}
)
SELECT {", ".join(DELEGATION_FACT_COLUMNS)} FROM x
WHERE (has_parent AND (NOT narrower OR expires_at > par_expires OR NOT par_may_redelegate
       OR delegator_id <> par_delegate))
   OR delegator_retired_at <= occurred_at OR delegate_retired_at <= occurred_at
"""

LONG_LIVED_SQL = """
SELECT credential_id, event_id, occurred_at, principal_id, expires_at FROM credentials
WHERE (expires_at IS NULL OR expires_at - occurred_at > ?) {and_where}
"""

UNOWNED_SQL = """
WITH reg AS (
    SELECT principal_id, arg_max(kind, (occurred_at, event_id)) AS kind,
        arg_max(owner_id, (occurred_at, event_id)) AS owner_id,
        arg_max(event_id, (occurred_at, event_id)) AS event_id, max(occurred_at) AS occurred_at
    FROM principals {where} GROUP BY principal_id
),
ret AS (SELECT principal_id, min(occurred_at) AS retired_at,
        arg_min(event_id, (occurred_at, event_id)) AS event_id FROM retirements GROUP BY 1)
SELECT reg.principal_id, reg.owner_id, reg.event_id, reg.occurred_at,
    o.retired_at AS owner_retired_at, o.event_id AS owner_retired_event, a.retired_at
FROM reg
LEFT JOIN ret o ON o.principal_id = reg.owner_id
LEFT JOIN ret a ON a.principal_id = reg.principal_id
WHERE reg.kind = 'agent' AND (reg.owner_id IS NULL
    OR (o.retired_at IS NOT NULL AND (a.retired_at IS NULL OR a.retired_at > o.retired_at)))
"""

MENTIONS = (
    ("actions", "principal_id", "actor"),
    ("delegations", "delegator_id", "delegator"),
    ("delegations", "delegate_id", "delegate"),
    ("credentials", "principal_id", "credential holder"),
    ("principals", "owner_id", "owner"),
    ("decisions", "principal_id", "decision principal"),
    ("retirements", "principal_id", "retiree"),
)


def unknown_sql(names: bool) -> str:
    """UNKNOWN_PRINCIPAL; with `names`, only for the ids in the list parameter $names."""
    flt = " AND {c} IN (SELECT unnest($names))" if names else ""
    parts = [
        f"SELECT {c} AS pid, event_id, occurred_at, '{role}' AS role FROM {t} "
        f"WHERE {c} IS NOT NULL" + flt.format(c=c)
        for t, c, role in MENTIONS
    ]
    return f"""
WITH m AS ({" UNION ALL ".join(parts)})
SELECT pid, arg_min(event_id, (occurred_at, event_id)), min(occurred_at),
    arg_min(role, (occurred_at, event_id)), count(*)
FROM m WHERE pid NOT IN (SELECT principal_id FROM principals) GROUP BY pid
"""


BURST_SQL = """
WITH w AS (
    SELECT principal_id, event_id, occurred_at,
        count(*) OVER (PARTITION BY principal_id ORDER BY occurred_at
                       RANGE BETWEEN $span PRECEDING AND CURRENT ROW) AS n
    FROM actions {where}
),
f AS (
    SELECT *, lag(occurred_at) OVER (PARTITION BY principal_id ORDER BY occurred_at, event_id)
        AS prev FROM w WHERE n > $limit
),
e AS (
    SELECT *, sum(CASE WHEN prev IS NULL OR occurred_at - prev >= $window THEN 1 ELSE 0 END)
        OVER (PARTITION BY principal_id ORDER BY occurred_at, event_id) AS episode FROM f
)
SELECT principal_id, arg_min(event_id, (occurred_at, event_id)), min(occurred_at),
    max(occurred_at), max(n)
FROM e GROUP BY principal_id, episode
"""


def rows(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params) if params is not None else con.execute(sql)
    cols = [d[0] for d in cur.description or ()]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def scan_action_violations(con: duckdb.DuckDBPyConnection) -> list[Violation]:
    return [v for row in rows(con, ACTION_FACTS_SQL) for v in action_violations(row)]


def scan_delegation_violations(
    con: duckdb.DuckDBPyConnection, ids: Sequence[str] | None = None
) -> list[Violation]:
    if ids is None:
        sql, params = DELEGATION_FACTS_SQL.format(where=""), None
    else:
        sql = DELEGATION_FACTS_SQL.format(where="WHERE g.delegation_id IN (SELECT unnest($ids))")
        params = {"ids": list(ids)}
    return [v for row in rows(con, sql, params) for v in delegation_violations(row)]


def long_lived(
    con: duckdb.DuckDBPyConnection, th: Thresholds, credential_id: str | None = None
) -> list[Violation]:
    and_where = "" if credential_id is None else "AND credential_id = ?"
    params: list[Any] = [th.credential_max_lifetime]
    if credential_id is not None:
        params.append(credential_id)
    rows = con.execute(LONG_LIVED_SQL.format(and_where=and_where), params).fetchall()
    found = (long_lived_violation(c, e, at, h, x, th) for c, e, at, h, x in rows)
    return [v for v in found if v is not None]


def unowned(con: duckdb.DuckDBPyConnection, principal_id: str | None = None) -> list[Violation]:
    where = "" if principal_id is None else "WHERE principal_id = ?"
    params = [] if principal_id is None else [principal_id]
    out = []
    for pid, owner, event_id, at, owner_ret, owner_ret_event, agent_ret in con.execute(
        UNOWNED_SQL.format(where=where), params
    ).fetchall():
        owner_retired = None if owner_ret is None else (owner_ret, owner_ret_event)
        v = unowned_violation(pid, owner, event_id, at, owner_retired, agent_ret)
        if v is not None:
            out.append(v)
    return out


def unknown(con: duckdb.DuckDBPyConnection, names: Sequence[str] | None = None) -> list[Violation]:
    if names is not None and not names:
        return []
    sql = unknown_sql(names is not None)
    rows = con.execute(sql, {"names": list(names)} if names is not None else None).fetchall()
    return [
        Violation(
            "UNKNOWN_PRINCIPAL",
            pid,
            event_id,
            at,
            pid,
            f"{pid} is named ({role}, {n} times) but was never registered.",
        )
        for pid, event_id, at, role, n in rows
    ]


def bursts(
    con: duckdb.DuckDBPyConnection, th: Thresholds, principal_id: str | None = None
) -> list[Violation]:
    where = "" if principal_id is None else "WHERE principal_id = $pid"
    params: dict[str, Any] = {
        "span": th.burst_window - timedelta(microseconds=1),
        "limit": th.burst_actions,
        "window": th.burst_window,
    }
    if principal_id is not None:
        params["pid"] = principal_id
    secs = th.burst_window.total_seconds()
    out = []
    for pid, event_id, start, end, peak in con.execute(
        BURST_SQL.format(where=where), params
    ).fetchall():
        detail = (
            f"{pid} performed {peak} actions within {secs:g} s (limit {th.burst_actions}), "
            f"from {iso(start)} to {iso(end)}."
        )
        out.append(Violation("BURST", pid, event_id, start, pid, detail, None, end))
    return out


def evaluate(
    con: duckdb.DuckDBPyConnection, kinds: Iterable[str] | None = None, th: Thresholds | None = None
) -> list[Violation]:
    """Every violation of the requested kinds in the whole ledger, in event-time order."""
    th = th or Thresholds()
    want = set(KINDS if kinds is None else kinds)
    found: list[Violation] = []
    if want & ACTION_KINDS:
        found += scan_action_violations(con)
    if want & DELEGATION_KINDS:
        found += scan_delegation_violations(con)
    if "LONG_LIVED_CREDENTIAL" in want:
        found += long_lived(con, th)
    if "UNOWNED_AGENT" in want:
        found += unowned(con)
    if "UNKNOWN_PRINCIPAL" in want:
        found += unknown(con)
    if "BURST" in want:
        found += bursts(con, th)
    return dedupe(v for v in found if v.kind in want)
