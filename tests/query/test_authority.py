"""The authority engine end to end: the five fail-open inputs of the issue as regression tests
(through `ledger ingest`, `violations` and `trace` as a user runs them), and authority at a
point in time (`Ledger.authority`, `ledger authority`)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ledger.cli import cli
from ledger.query import Ledger
from ledger.query.rules import Thresholds
from tests import factories as f
from tests.query.test_rules import build

HUMANS = ("user:alice", "user:bob")
AGENTS = ("agent:a", "agent:b", "agent:c", *(f"agent:h{i}" for i in range(72)))


def people() -> list[dict[str, Any]]:
    return [f.principal(h, kind="human") for h in HUMANS] + [f.principal(a) for a in AGENTS]


def pairs(db: Path, **kw: Any) -> set[tuple[str, str]]:
    with Ledger.open(db, **kw) as ledger:
        return {(v.kind, v.subject_id) for v in ledger.violations()}


def trace_pairs(db: Path, action_id: str) -> set[tuple[str, str]]:
    with Ledger.open(db) as ledger:
        return {(v.kind, v.subject_id) for v in ledger.trace(action_id).violations}


def run(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def deep_chain() -> list[dict[str, Any]]:
    """Input 1: a 71-hop chain whose root is revoked (cascade) at 10:05; actions at 10:10."""
    ev = people()
    for i in range(71):
        parent = f"h-{i - 1}" if i else None
        delegator = "user:alice" if i == 0 else f"agent:h{i - 1}"
        ev.append(f.granted(f"h-{i}", delegator, f"agent:h{i}", parent, minutes=-30, start=-30))
    ev.append(f.revoked("h-0", cascade=True, minutes=5))
    for i in (10, 63, 64, 65, 70):
        ev.append(f.action(f"act-{i}", f"agent:h{i}", f"h-{i}", minutes=10, resource="crm/x"))
    return ev


def test_revocation_cascades_through_any_depth_and_trace_finds_the_true_root(
    tmp_path: Path,
) -> None:
    db = build(tmp_path / "l.duckdb", deep_chain())
    found = pairs(db)
    for i in (10, 63, 64, 65, 70):
        assert ("REVOKED_DELEGATION", f"act-{i}") in found
        assert ("REVOKED_DELEGATION", f"act-{i}") in trace_pairs(db, f"act-{i}")
    # deeper than the default limit of 32: a finding, never a truncation
    assert ("CHAIN_TOO_DEEP", "act-70") in found and ("CHAIN_TOO_DEEP", "act-10") not in found
    assert ("CHAIN_TOO_DEEP", "h-32") in found and ("CHAIN_TOO_DEEP", "h-31") not in found
    with Ledger.open(db) as ledger:
        t = ledger.trace("act-70")
    assert t.root_principal == "user:alice" and t.chain_complete
    assert [h.delegation_id for h in t.chain][-1] == "h-0" and len(t.chain) == 71
    # a higher limit, and the same chain is only revoked
    assert ("CHAIN_TOO_DEEP", "act-70") not in pairs(db, thresholds=Thresholds(max_chain_depth=80))


def test_a_self_parented_grant_authorizes_nothing(tmp_path: Path) -> None:
    ev = [
        *people(),
        f.granted("self", "agent:a", "agent:a", "self", scopes=["*"], resources=["*"], minutes=-1),
        f.action("a-1", "agent:a", "self", operation="hr:delete", resource="hr/all"),
    ]
    db = build(tmp_path / "l.duckdb", ev)
    assert {("DELEGATION_CYCLE", "self"), ("DELEGATION_CYCLE", "a-1")} <= pairs(db)
    with Ledger.open(db) as ledger:
        t = ledger.trace("a-1")
    assert t.root_principal is None and not t.chain_complete
    assert ("DELEGATION_CYCLE", "a-1") in {(v.kind, v.subject_id) for v in t.violations}


def test_a_child_valid_before_its_parent(tmp_path: Path) -> None:
    ev = [
        *people(),
        f.granted("p", "user:alice", "agent:a", start=0, end=60, minutes=-90),
        f.granted("c", "agent:a", "agent:b", "p", start=-60, end=30, minutes=-90),
        f.action("early", "agent:b", "c", minutes=-30),
        f.action("inside", "agent:b", "c", minutes=10),
    ]
    db = build(tmp_path / "l.duckdb", ev)
    found = pairs(db)
    assert ("SCOPE_ESCALATION", "c") in found
    assert ("EXPIRED_DELEGATION", "early") in found
    assert not {p for p in found if p[1] == "inside"}


def test_traversal_segments_do_not_escape_a_grant(tmp_path: Path) -> None:
    ev = [
        *people(),
        f.granted("g", "user:alice", "agent:a", resources=["crm/accounts/*"], minutes=-1),
        f.granted(
            "sub", "agent:a", "agent:b", "g", resources=["crm/accounts/../../hr/*"], minutes=-1
        ),
        f.action("t-1", "agent:a", "g", resource="crm/accounts/../../hr/payroll"),
        f.action("t-ok", "agent:a", "g", resource="crm/accounts/x/../42"),
    ]
    db = build(tmp_path / "l.duckdb", ev)
    found = pairs(db)
    assert ("RESOURCE_OUT_OF_SCOPE", "t-1") in found
    assert {("INVALID_PATTERN", "sub"), ("SCOPE_ESCALATION", "sub")} <= found
    assert not {p for p in found if p[1] == "t-ok"}


def test_one_matcher_for_trace_and_violations(tmp_path: Path) -> None:
    ev = [
        *people(),
        f.granted("g", "user:alice", "agent:a", resources=["files/report\\.csv"], minutes=-1),
        f.action("r-1", "agent:a", "g", resource="files/report.csv"),
    ]
    db = build(tmp_path / "l.duckdb", ev)
    found = pairs(db)
    assert {("INVALID_PATTERN", "g"), ("RESOURCE_OUT_OF_SCOPE", "r-1")} <= found
    assert trace_pairs(db, "r-1") == {p for p in found if p[1] in ("r-1", "g")}


def test_root_authorities_are_an_allow_list(tmp_path: Path) -> None:
    ev = [
        *people(),
        f.principal("service:idp", kind="service"),
        f.granted("r", "service:idp", "agent:a", minutes=-1),
        f.action("x", "agent:a", "r", resource="crm/1"),
    ]
    db = build(tmp_path / "l.duckdb", ev)
    assert {("ROOT_NOT_HUMAN", "r"), ("ROOT_NOT_HUMAN", "x")} <= pairs(db)
    allowed = Thresholds(root_authorities=frozenset({"service:idp"}))
    assert not {p for p in pairs(db, thresholds=allowed) if p[1] in ("r", "x")}


# -- authority at a point in time ---------------------------------------------------------


@pytest.fixture
def org(tmp_path: Path) -> Path:
    ev = [
        *people(),
        f.granted("d1", "user:alice", "agent:a", scopes=["crm:*"], resources=["crm/*"]),
        f.granted(
            "d2", "agent:a", "agent:b", "d1", scopes=["crm:read", "hr:read"], resources=["*"]
        ),
        f.granted("d3", "user:bob", "agent:b", scopes=["hr:read"], resources=["hr/*"], end=30),
        f.revoked("d1", minutes=40),
    ]
    return build(tmp_path / "l.duckdb", ev)


def test_authority_lists_each_delegation_with_its_path_and_what_survives(org: Path) -> None:
    with Ledger.open(org) as ledger:
        a = ledger.authority("agent:b", f.T0 + timedelta(minutes=10))
    by_id = {s.delegation_id: s for s in a.delegations}
    assert set(by_id) == {"d2", "d3"} and [s.delegation_id for s in a.in_force] == ["d2", "d3"]
    d2 = by_id["d2"]
    assert [h["delegation_id"] for h in d2.path] == ["d2", "d1"]
    assert d2.root_principal == "user:alice"
    assert d2.effective_scopes == ["crm:read"]  # hr:read does not survive d1
    assert d2.effective_resources == ["crm/*"]  # nor does `*`


def test_authority_answers_allowed_or_not_with_reasons(org: Path) -> None:
    at = f.T0 + timedelta(minutes=10)
    with Ledger.open(org) as ledger:
        crm = ledger.authority("agent:b", at, "crm:read", "crm/accounts/1")
        hr = ledger.authority("agent:b", at, "hr:read", "hr/payroll")
        wide = ledger.authority("agent:b", at, "hr:read", "crm/accounts/1")
        later = ledger.authority("agent:b", f.T0 + timedelta(minutes=45), "crm:read", "crm/x")
    assert (crm.allowed, crm.allowed_by) == (True, "d2")
    assert (hr.allowed, hr.allowed_by) == (True, "d3")
    assert wide.allowed is False
    reasons = {s.delegation_id: {r["kind"] for r in s.reasons} for s in wide.delegations}
    assert reasons == {"d2": {"OUT_OF_SCOPE"}, "d3": {"RESOURCE_OUT_OF_SCOPE"}}
    assert later.allowed is False  # d1 revoked (cascade) at 40, d3 expired at 30
    assert {s.delegation_id for s in later.in_force} == set()
    kinds = {p["kind"] for s in later.delegations for p in s.problems}
    assert kinds == {"REVOKED_DELEGATION", "EXPIRED_DELEGATION"}


def test_authority_agrees_with_violations_on_what_was_done(org: Path, tmp_path: Path) -> None:
    """An action the authority answer allows is not flagged afterwards, and vice versa."""
    with Ledger.open(org) as ledger:
        asked = [
            (op, res, minutes)
            for op in ("crm:read", "hr:read", "crm:write")
            for res in ("crm/a", "hr/b", "crm/../hr/b")
            for minutes in (-5, 10, 35, 45)
        ]
        answers = {
            (op, res, m): ledger.authority("agent:b", f.T0 + timedelta(minutes=m), op, res)
            for op, res, m in asked
        }
    events: list[dict[str, Any]] = []
    base = [
        *people(),
        f.granted("d1", "user:alice", "agent:a", scopes=["crm:*"], resources=["crm/*"]),
        f.granted(
            "d2", "agent:a", "agent:b", "d1", scopes=["crm:read", "hr:read"], resources=["*"]
        ),
        f.granted("d3", "user:bob", "agent:b", scopes=["hr:read"], resources=["hr/*"], end=30),
        f.revoked("d1", minutes=40),
    ]
    for i, ((op, res, m), a) in enumerate(answers.items()):
        via = a.allowed_by or "d2"
        events.append(f.action(f"q-{i}", "agent:b", via, operation=op, resource=res, minutes=m))
    db = build(tmp_path / "acts.duckdb", base + events)
    flagged = {s for _, s in pairs(db)}
    for i, a in enumerate(answers.values()):
        assert (f"q-{i}" not in flagged) is a.allowed, (i, a.to_dict())


def test_ledger_authority_cli(org: Path) -> None:
    text = run(
        "authority", "--principal", "agent:b", "--at", f.at(10), "--operation", "crm:read",
        "--resource", "crm/accounts/1", "--db", str(org),
    ).stdout  # fmt: skip
    assert "ALLOWED through d2" in text and "d2 <- d1" in text
    out = json.loads(
        run(
            "authority", "--principal", "agent:b", "--at", f.at(45), "--json", "--db", str(org)
        ).stdout
    )
    assert out["allowed"] is None and out["in_force"] == []
    assert {d["delegation_id"] for d in out["delegations"]} == {"d2", "d3"}
    bad = CliRunner().invoke(
        cli, ["authority", "--principal", "agent:b", "--operation", "x:y", "--db", str(org)]
    )
    assert bad.exit_code != 0 and "--operation and --resource together" in bad.output
