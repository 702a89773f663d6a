"""`violations()`: every rule over the whole ledger, SQL narrowing, the evaluator deciding.

The delegation rules are decided only by `authority` (the one evaluator `trace` uses too).
SQL narrows millions of rows down to the ones that might fail: its predicates are a superset
of the evaluator's findings (each "fine" in SQL implies "fine" in Python; the differential
tests hold it), built on the per-delegation chain summaries of `chains`. Principal- and
credential-level kinds (LONG_LIVED_CREDENTIAL, UNOWNED_AGENT, UNKNOWN_PRINCIPAL, BURST) are
plain SQL. Every check is on event time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

import duckdb

from ledger.query import chains, patterns
from ledger.query.authority import (
    action_violations,
    as_violations,
    credential_findings,
    grant_findings,
    resolve_chain,
)
from ledger.query.facts import LedgerFacts
from ledger.query.rules import (
    ACTION_FACT_COLUMNS,
    ACTION_KINDS,
    CREDENTIAL_KINDS,
    DELEGATION_KINDS,
    KINDS,
    Thresholds,
    Violation,
    dedupe,
    grant_retirement_violations,
    iso,
    long_lived_violation,
    scope_covers_sql,
    side_violations,
    unowned_violation,
)
from ledger.query.snapshot import Snapshot, dict_rows

__all__ = [
    "ACTION_FACTS_SQL",
    "GRANT_FACTS_SQL",
    "MENTIONS",
    "bursts",
    "evaluate",
    "long_lived",
    "rows",
    "unknown",
    "unowned",
]

_FIRST = "QUALIFY row_number() OVER (PARTITION BY {k} ORDER BY occurred_at, event_id) = 1"
_CHAINS = "_ledger_chains"
_DIRTY = "_ledger_dirty"


ACTION_FACTS_SQL = f"""
WITH reg AS (SELECT principal_id, arg_max(kind, (occurred_at, event_id)) AS kind
        FROM principals GROUP BY principal_id),
ret AS (SELECT principal_id, min(occurred_at) AS retired_at FROM retirements GROUP BY 1),
dl AS (SELECT delegation_id, delegate_id, scopes,
        {patterns.sql_patterns_simple("resources")} AS simple,
        list_transform(resources, lambda p: {patterns.sql_like("p")}) AS likes
    FROM delegations {_FIRST.format(k="delegation_id")}),
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
        ch.delegation_id IS NOT NULL AS has_chain,
        ch.depth <= $max_depth AND dirty.delegation_id IS NULL AS clean, ch.eff_nb, ch.eff_exp,
        ch.held_from, ch.revoked_at, dl.delegate_id,
        ret.retired_at, denied.decision_id AS denied_by,
        cr.credential_id IS NOT NULL AS has_credential, cr.principal_id AS holder,
        cr.occurred_at AS cred_issued, cr.expires_at AS cred_expires,
        crev.revoked_at AS cred_revoked,
        {scope_covers_sql("dl.scopes", "a.operation")} AS scope_ok,
        dl.simple AND {patterns.sql_resource_simple("a.resource")}
            AND len(list_filter(dl.likes, lambda k: a.resource LIKE k ESCAPE '!')) > 0
            AS resource_ok
    FROM actions a
    LEFT JOIN reg ON reg.principal_id = a.principal_id
    LEFT JOIN {_CHAINS} ch ON ch.delegation_id = a.delegation_id
    LEFT JOIN {_DIRTY} dirty ON dirty.delegation_id = a.delegation_id
    LEFT JOIN dl ON dl.delegation_id = a.delegation_id
    LEFT JOIN ret ON ret.principal_id = a.principal_id
    LEFT JOIN denied ON denied.action_id = a.action_id
    LEFT JOIN cr ON cr.credential_id = a.credential_id
    LEFT JOIN crev ON crev.credential_id = a.credential_id
)
SELECT {", ".join(ACTION_FACT_COLUMNS)}, chain_ok FROM (
    SELECT *, delegation_id IS NULL OR coalesce(has_chain AND clean
        AND occurred_at >= held_from AND occurred_at >= eff_nb AND occurred_at < eff_exp
        AND (revoked_at IS NULL OR revoked_at > occurred_at) AND delegate_id = principal_id
        AND scope_ok AND resource_ok, false) AS chain_ok
    FROM x
)
WHERE (delegation_id IS NULL AND coalesce(actor_kind, '') <> 'human')
   OR NOT chain_ok
   OR retired_at <= occurred_at
   OR (outcome = 'succeeded' AND denied_by IS NOT NULL)
   OR (credential_id IS NOT NULL AND (NOT has_credential OR holder <> principal_id
       OR cred_issued > occurred_at OR cred_expires <= occurred_at
       OR cred_revoked <= occurred_at))
"""

#: a child pattern `c` that SQL can see is covered: equal to a parent pattern, or starting with
#: the literal prefix of a parent pattern `prefix*` (the evaluator decides every other case)
_COVERED = (
    "(len(list_filter(par.resources, lambda p: p = c OR ("
    + patterns.sql_pattern_simple("p")
    + " AND ends_with(p, '*') AND NOT regexp_matches(left(p, length(p) - 1), '[*?]')"
    " AND starts_with(c, left(p, length(p) - 1))))) > 0)"
)

GRANT_FACTS_SQL = f"""
WITH reg AS (SELECT principal_id, arg_max(kind, (occurred_at, event_id)) AS kind
        FROM principals GROUP BY principal_id),
ret AS (SELECT principal_id, min(occurred_at) AS retired_at FROM retirements GROUP BY 1),
g AS (SELECT * FROM delegations {_FIRST.format(k="delegation_id")}),
x AS (
    SELECT g.delegation_id, g.event_id, g.occurred_at, g.parent_delegation_id, g.delegator_id,
        g.delegate_id, g.not_before, g.expires_at, reg.kind AS delegator_kind,
        par.delegation_id IS NOT NULL AS has_parent, par.occurred_at AS par_granted,
        par.not_before AS par_nb, par.expires_at AS par_exp,
        par.may_redelegate AS par_may_redelegate, par.delegate_id AS par_delegate,
        r1.retired_at AS delegator_retired_at, r2.retired_at AS delegate_retired_at,
        {patterns.sql_patterns_simple("g.resources")} AS simple,
        len(list_filter(g.scopes, lambda cs: NOT {scope_covers_sql("par.scopes", "cs")})) = 0
            AS scopes_ok,
        len(list_filter(g.resources, lambda c: NOT {_COVERED})) = 0 AS resources_ok
    FROM g
    LEFT JOIN g par ON par.delegation_id = g.parent_delegation_id
    LEFT JOIN reg ON reg.principal_id = g.delegator_id
    LEFT JOIN ret r1 ON r1.principal_id = g.delegator_id
    LEFT JOIN ret r2 ON r2.principal_id = g.delegate_id
)
SELECT delegation_id, event_id, occurred_at, delegator_id, delegate_id,
    delegator_retired_at, delegate_retired_at, coalesce(needs_eval, true) AS needs_eval FROM (
    SELECT *, NOT simple
       OR (parent_delegation_id IS NULL AND coalesce(delegator_kind, '') <> 'human'
           AND NOT list_contains($roots, delegator_id))
       OR (parent_delegation_id IS NOT NULL AND (NOT has_parent OR par_granted > occurred_at
           OR NOT scopes_ok OR NOT resources_ok OR not_before < par_nb OR expires_at > par_exp
           OR NOT par_may_redelegate OR par_delegate <> delegator_id)) AS needs_eval
    FROM x
)
WHERE needs_eval IS NOT false
   OR delegator_retired_at <= occurred_at OR delegate_retired_at <= occurred_at
"""

CREDENTIAL_FACTS_SQL = f"""
WITH dl AS (SELECT delegation_id, occurred_at FROM delegations
            {_FIRST.format(k="delegation_id")})
SELECT c.credential_id, c.event_id, c.occurred_at, c.principal_id, c.delegation_id
FROM credentials c LEFT JOIN dl ON dl.delegation_id = c.delegation_id
WHERE c.delegation_id IS NOT NULL AND (dl.delegation_id IS NULL OR dl.occurred_at > c.occurred_at)
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
    """Every row of `sql` as a dict keyed by column name."""
    return dict_rows(con, sql, params)


def _roots_param(th: Thresholds) -> list[str]:
    return ["\x00", *sorted(th.root_authorities)]  # never empty: DuckDB needs its type


def grant_candidates(snap: Snapshot, th: Thresholds) -> list[dict[str, Any]]:
    """Grants that might break a rule (a superset of the evaluator's findings)."""
    return snap.rows(GRANT_FACTS_SQL, {"roots": _roots_param(th)})


#: grant findings after which a delegation's own scopes, patterns and window no longer decide
#: what its whole chain allows (or the chain allows nothing): its actions go to the evaluator
_WIDENING = frozenset(
    {"SCOPE_ESCALATION", "INVALID_PATTERN", "UNKNOWN_DELEGATION", "ROOT_NOT_HUMAN"}
)


def _grant_violations(
    facts: LedgerFacts, ids: Sequence[str], th: Thresholds
) -> tuple[list[Violation], set[str]]:
    """The evaluator's findings on each grant of `ids`, and the grants whose findings can
    widen or void what their chain allows."""
    facts.prefetch(ids)
    out: list[Violation] = []
    widening: set[str] = set()
    for did in ids:
        grant = facts.grant(did)
        if grant is None:
            continue
        found = grant_findings(facts, grant, resolve_chain(facts, did), th)
        if any(f.kind in _WIDENING for f in found):
            widening.add(did)
        out += as_violations(found, did, grant.event_id, grant.granted_at, grant.delegator_id)
    return out, widening


def _retirements(grants: Iterable[dict[str, Any]]) -> list[Violation]:
    return [
        v
        for g in grants
        for v in grant_retirement_violations(
            g["delegation_id"],
            g["event_id"],
            g["occurred_at"],
            g["delegator_id"],
            g["delegate_id"],
            g["delegator_retired_at"],
            g["delegate_retired_at"],
        )
    ]


def _action_violations(snap: Snapshot, facts: LedgerFacts, th: Thresholds) -> list[Violation]:
    """Actions SQL cannot clear (`_CHAINS` and `_DIRTY` registered), judged by the evaluator;
    where SQL found the chain fine (its own hop decides, see `chains`), only the rules beside
    the chain are left to check."""
    acts = snap.rows(ACTION_FACTS_SQL, {"max_depth": th.max_chain_depth})
    facts.prefetch({a["delegation_id"] for a in acts if not a["chain_ok"]})
    out: list[Violation] = []
    for act in acts:
        if act["chain_ok"] and act["delegation_id"] is not None:
            out += side_violations(act)
        else:
            out += action_violations(facts, act, th)
    return out


def evaluate(
    snap: Snapshot, kinds: Iterable[str] | None = None, th: Thresholds | None = None
) -> list[Violation]:
    """Every violation of the requested kinds in the whole ledger, in event-time order.

    Cost at 1M events (124k delegations, 435k actions): a few seconds, mostly the SQL scans
    of grants and actions; the evaluator sees only what SQL cannot clear."""
    th = th or Thresholds()
    want = set(KINDS if kinds is None else kinds)
    con = snap.con
    facts = LedgerFacts(snap)
    found: list[Violation] = []
    grants = grant_candidates(snap, th)
    con.register(_CHAINS, chains.chain_table(con, th.max_chain_depth))
    try:
        suspects = {g["delegation_id"] for g in grants if g["needs_eval"]}
        suspects |= chains.unreached(con, _CHAINS, th.max_chain_depth)
        grant_found, widening = _grant_violations(facts, sorted(suspects), th)
        if want & ACTION_KINDS:
            con.register(_DIRTY, chains.dirty_ids(con, widening))
            try:
                found += _action_violations(snap, facts, th)
            finally:
                con.unregister(_DIRTY)
    finally:
        con.unregister(_CHAINS)
    if want & DELEGATION_KINDS:
        found += grant_found + _retirements(grants)
    if want & CREDENTIAL_KINDS:
        found += credential_violations(snap, facts)
    if "LONG_LIVED_CREDENTIAL" in want:
        found += long_lived(con, th)
    if "UNOWNED_AGENT" in want:
        found += unowned(con)
    if "UNKNOWN_PRINCIPAL" in want:
        found += unknown(con)
    if "BURST" in want:
        found += bursts(con, th)
    return dedupe(v for v in found if v.kind in want)


def credential_violations(
    snap: Snapshot, facts: LedgerFacts, credential_id: str | None = None
) -> list[Violation]:
    """UNKNOWN_DELEGATION of credentials issued under a delegation the ledger did not hold."""
    sql = CREDENTIAL_FACTS_SQL
    params: dict[str, Any] | None = None
    if credential_id is not None:
        sql += " AND c.credential_id = $cid"
        params = {"cid": credential_id}
    out = []
    for c in snap.rows(sql, params):
        found = credential_findings(facts, c["credential_id"], c["delegation_id"], c["occurred_at"])
        out += as_violations(
            found, c["credential_id"], c["event_id"], c["occurred_at"], c["principal_id"]
        )
    return out


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
