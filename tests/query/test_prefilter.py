"""The full scan's SQL pre-filter is a superset of what the evaluator flags, differentially.

`violations()` cannot hand every action and grant to the evaluator (`ledger.query.authority`):
SQL (`scans.ACTION_FACTS_SQL`, `scans.GRANT_FACTS_SQL`, the chain summaries of `chains`)
narrows them to the rows that might fail, and the evaluator decides those. If a pre-filter
predicate ever says "fine" where the evaluator would not, a finding disappears silently.

So, on the generated delegation forests of `test_reference` (mostly the near-clean ones, whose
probe actions are in order but for one defect, plus decisions, credential uses and credential
revocations), the evaluator is run here on EVERY action row, EVERY first grant and
EVERY credential, with no pre-filter, and its findings must equal what `violations()` reports
for the kinds it decides. The facts rows are built here with plain SQL of their own, as the
trace path builds them (`custody._action_row`): the pre-filter's SQL is not trusted to build
its own oracle.

The resource pre-filter is checked on its own too: on random (pattern, resource) pairs over a
nasty alphabet (SQL wildcards and escapes, regex metacharacters, dots, slashes, NFD, controls),
wherever a DuckDB predicate says "matches", `patterns.matches` must say so: `sql_pattern_ok`
(on a resource `sql_resource_simple` accepts, its stated precondition) and the form the action
scan uses (`sql_patterns_simple` over the grant's list, `sql_resource_simple`, a LIKE with
`sql_like`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.query.authority import (
    Grant,
    action_violations,
    as_violations,
    credential_findings,
    grant_findings,
    resolve_chain,
)
from ledger.query.facts import LedgerFacts
from ledger.query.ledger import Ledger
from ledger.query.patterns import (
    canonical_resource,
    is_valid_pattern,
    matches,
    matches_any,
    sql_like,
    sql_pattern_ok,
    sql_pattern_simple,
    sql_patterns_simple,
    sql_resource_simple,
)
from ledger.query.rules import (
    ACTION_KINDS,
    DELEGATION_KINDS,
    Thresholds,
    Violation,
    grant_retirement_violations,
)
from tests import factories as f
from tests.query.test_reference import (
    PRINCIPALS,
    Forest,
    forests,
    minutes,
    near_clean_forests,
    thresholds,
)
from tests.query.test_rules import build

#: every kind the evaluator decides (actions, grants, credentials' UNKNOWN_DELEGATION)
EVALUATED = ACTION_KINDS | DELEGATION_KINDS

Key = tuple[str, str, str, str | None]

# -- generated ledgers ----------------------------------------------------------------------


@st.composite
def forests_with_side_facts(draw: st.DrawFn) -> Forest:
    """A forest plus actions that cite credentials and decisions, decisions that deny or
    allow them, and credential revocations: every input of the action pre-filter."""
    forest = draw(st.one_of(near_clean_forests(), near_clean_forests(), forests()))
    ev = forest.events
    dids = sorted(
        {e["data"]["delegation_id"] for e in ev if e["type"] == "delegation.granted"}
    ) or ["d-gone"]
    creds = sorted({e["data"]["credential_id"] for e in ev if e["type"] == "credential.issued"})
    for i in range(draw(st.integers(0, 6))):
        aid = f"side-{i}"
        cid = draw(st.sampled_from([*creds, "k-missing", None]))
        decision = draw(st.sampled_from((None, "deny", "allow")))
        by_id = decision is not None and draw(st.booleans())  # linked by decision_id
        ev.append(
            f.action(
                aid,
                draw(st.sampled_from(PRINCIPALS)),
                draw(st.sampled_from([*dids, None])),
                outcome=draw(st.sampled_from(("succeeded", "failed", "denied"))),
                minutes=draw(minutes),
                credential_id=cid,
                decision=f"dec-{i}" if by_id else None,
            )
        )
        if decision is not None:
            ev.append(
                f.decided(
                    f"dec-{i}",
                    draw(st.sampled_from(PRINCIPALS)),
                    decision,
                    action=None if by_id else aid,
                    minutes=draw(minutes),
                )
            )
    for cid in creds:
        if draw(st.booleans()):
            ev.append(f.credential_revoked(cid, minutes=draw(minutes)))
    draw(st.randoms(use_true_random=False)).shuffle(ev)
    return forest


# -- the evaluator with no pre-filter ---------------------------------------------------------

_FIRST = "QUALIFY row_number() OVER (PARTITION BY {k} ORDER BY occurred_at, event_id) = 1"


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params)
    cols = [d[0] for d in cur.description or ()]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: Any) -> Any:
    row = con.execute(sql, params).fetchone()
    return None if row is None else row[0]


def _action_row(con: duckdb.DuckDBPyConnection, act: dict[str, Any]) -> dict[str, Any]:
    """The action facts row (`rules.ACTION_FACT_COLUMNS`), with plain SQL of its own."""
    aid, actor, cid = act["action_id"], act["principal_id"], act["credential_id"]
    cred = _rows(
        con,
        f"SELECT * FROM credentials WHERE credential_id = ? {_FIRST.format(k='credential_id')}",
        [cid],
    )
    c = cred[0] if cred else None
    return {
        **{k: act[k] for k in ("action_id", "event_id", "occurred_at", "principal_id")},
        **{k: act[k] for k in ("delegation_id", "credential_id", "operation", "resource")},
        "outcome": act["outcome"],
        "retired_at": _one(
            con, "SELECT min(occurred_at) FROM retirements WHERE principal_id = ?", [actor]
        ),
        "denied_by": _one(
            con,
            "SELECT min(decision_id) FROM decisions WHERE decision = 'deny' "
            "AND (action_id = ? OR decision_id = ?)",
            [aid, act["decision_id"]],
        ),
        "has_credential": c is not None,
        "holder": c and c["principal_id"],
        "cred_issued": c and c["occurred_at"],
        "cred_expires": c and c["expires_at"],
        "cred_revoked": _one(
            con,
            "SELECT min(occurred_at) FROM credential_revocations WHERE credential_id = ?",
            [cid],
        ),
    }


def unfiltered(ledger: Ledger, th: Thresholds) -> list[Violation]:
    """The evaluator on every action, first grant and credential: no pre-filter at all."""
    con, facts = ledger.con, LedgerFacts(ledger.snapshot)
    retired = dict(
        con.execute("SELECT principal_id, min(occurred_at) FROM retirements GROUP BY 1").fetchall()
    )
    out: list[Violation] = []
    for act in _rows(con, "SELECT * FROM actions"):
        out += action_violations(facts, _action_row(con, act), th)
    first = f"SELECT * FROM delegations {_FIRST.format(k='delegation_id')}"
    for row in _rows(con, first):
        grant = Grant.from_row(row)
        did = grant.delegation_id
        found = grant_findings(facts, grant, resolve_chain(facts, did), th)
        out += as_violations(found, did, grant.event_id, grant.granted_at, grant.delegator_id)
        out += grant_retirement_violations(
            did,
            grant.event_id,
            grant.granted_at,
            grant.delegator_id,
            grant.delegate_id,
            retired.get(grant.delegator_id),
            retired.get(grant.delegate_id),
        )
    for c in _rows(con, "SELECT * FROM credentials"):
        cid = c["credential_id"]
        found = credential_findings(facts, cid, c["delegation_id"], c["occurred_at"])
        out += as_violations(found, cid, c["event_id"], c["occurred_at"], c["principal_id"])
    return out


def _keys(violations: list[Violation]) -> set[Key]:
    return {(v.kind, v.subject_id, v.event_id, v.principal_id) for v in violations}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(forests_with_side_facts())
def test_the_full_scan_reports_exactly_what_the_evaluator_finds_everywhere(
    forest: Forest,
) -> None:
    th = thresholds(forest)
    with tempfile.TemporaryDirectory() as tmp:
        db = build(Path(tmp) / "ledger.duckdb", forest.events)
        with Ledger.open(db, thresholds=th) as ledger:
            everywhere = _keys([v for v in unfiltered(ledger, th) if v.kind in EVALUATED])
            scanned = _keys(ledger.violations(kinds=sorted(EVALUATED)))
    missed = sorted(everywhere - scanned)
    invented = sorted(scanned - everywhere)
    assert not missed, f"the pre-filter dropped findings: {missed}"
    assert not invented, f"the scan reports what the evaluator does not: {invented}"


# -- the resource pre-filter -----------------------------------------------------------------

NASTY = ("a", "b", "A", "/", "/", ".", "*", "?", "%", "_", "!", "\\", "[", "]", "^", "$")
NASTY += ("(", "|", "'", " ", "\u00e9", "e\u0301", "\x7f", "\x01", "\n", "~", "\u212a")
nasty = st.lists(st.sampled_from(NASTY), max_size=8).map("".join)


@st.composite
def pattern_resource_pairs(draw: st.DrawFn) -> tuple[str, str]:
    """A nasty pattern, and a resource either nasty too or spelled from the pattern (its
    wildcards filled with nasty text), so that matches are common."""
    pattern = draw(nasty)
    if draw(st.booleans()):
        return pattern, draw(nasty)
    out = []
    for ch in pattern:
        out.append(draw(nasty) if ch == "*" else draw(st.sampled_from(NASTY)) if ch == "?" else ch)
    return pattern, "".join(out)


@dataclass
class Verdict:
    """DuckDB's answers for one (patterns, resource) pair."""

    patterns: list[str]
    resource: str
    resource_simple: bool  # sql_resource_simple(resource)
    list_simple: bool  # sql_patterns_simple(patterns)
    each_simple: list[bool]  # sql_pattern_simple per pattern
    each_ok: list[bool]  # sql_pattern_ok per pattern
    scan_ok: bool  # the action scan's test: list simple, resource simple, some LIKE


def sql_verdicts(pairs: list[tuple[list[str], str]]) -> list[Verdict]:
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE t (i INTEGER, ps VARCHAR[], r VARCHAR)")
        con.executemany(
            "INSERT INTO t VALUES (?, ?, ?)", [(i, ps, r) for i, (ps, r) in enumerate(pairs)]
        )
        rs = sql_resource_simple("r")
        scan = (
            f"{sql_patterns_simple('ps')} AND {rs} AND "
            f"len(list_filter(ps, lambda p: r LIKE {sql_like('p')} ESCAPE '!')) > 0"
        )
        rows = con.execute(
            f"SELECT ps, r, {rs}, {sql_patterns_simple('ps')}, "
            f"list_transform(ps, lambda p: {sql_pattern_simple('p')}), "
            f"list_transform(ps, lambda p: {sql_pattern_ok('p', 'r')}), {scan} FROM t ORDER BY i"
        ).fetchall()
    finally:
        con.close()
    return [Verdict(*row) for row in rows]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.lists(nasty, max_size=3), nasty)
        | pattern_resource_pairs().map(lambda pr: ([pr[0]], pr[1])),
        min_size=1,
        max_size=40,
    )
)
def test_the_sql_pattern_predicates_never_match_where_python_does_not(
    pairs: list[tuple[list[str], str]],
) -> None:
    for v in sql_verdicts(pairs):
        r = v.resource
        if v.resource_simple:
            assert canonical_resource(r) == r, ("sql_resource_simple", r)
        for p, simple, ok in zip(v.patterns, v.each_simple, v.each_ok, strict=True):
            if simple:
                assert is_valid_pattern(p), ("sql_pattern_simple", p)
            if ok and v.resource_simple:
                assert matches(p, r), ("sql_pattern_ok on a simple resource", p, r)
        if v.list_simple:
            assert all(is_valid_pattern(p) for p in v.patterns), ("sql_patterns_simple", v)
        if v.scan_ok:
            assert matches_any(v.patterns, r), ("the action scan's resource test", v)


def test_the_sql_pattern_predicates_agree_on_plain_cases() -> None:
    """And they are not vacuous: they do say "matches" on ordinary canonical ASCII input."""
    cases = [
        ("crm/*", "crm/accounts/1", True),
        ("crm/accounts/?", "crm/accounts/1", True),
        ("a%b_c", "a%b_c", True),
        ("a%b", "aXYb", False),
        ("a_b", "aXb", False),
        ("a!b", "a!b", True),
        ("crm/*", "crm/../../hr", False),
    ]
    verdicts = sql_verdicts([([p], r) for p, r, _ in cases])
    for (p, r, want), v in zip(cases, verdicts, strict=True):
        assert v.scan_ok is want, (p, r)
        assert (v.each_ok[0] and v.resource_simple) is want, (p, r)
        assert matches(p, r) is want, (p, r)


def test_sql_pattern_ok_needs_its_precondition() -> None:
    """`sql_pattern_ok` alone reads the resource as written: on a resource that is not
    canonical it can say "matches" where `matches` does not (`..` climbing above the root).
    Its docstring asks for a simple resource, and the scan always checks that."""
    (v,) = sql_verdicts([(["*"], "crm/../../hr")])
    assert v.each_ok == [True] and not v.resource_simple and not v.scan_ok
    assert not matches("*", "crm/../../hr")
