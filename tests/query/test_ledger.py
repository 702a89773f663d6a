"""The Ledger API: trace, blast radius, inventory, read-only SQL."""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from ledger import Ledger
from ledger.errors import ConfigError, NotFoundError, ValidationError
from ledger.integrity.verify import verify_store
from ledger.store import Store
from tests import factories as f
from tests.query.test_rules import build


def tree() -> list[dict[str, object]]:
    """alice -> planner -> coder -> runner (three levels), a credential, a decision, a subagent."""
    return [
        f.principal("user:alice", kind="human"),
        f.principal("user:bob", kind="human"),
        f.principal("agent:planner", owner="user:bob"),
        f.principal("agent:coder"),
        f.principal("agent:runner"),
        f.granted("d1", "user:alice", "agent:planner", scopes=["git:*"], resources=["git/*"]),
        f.granted(
            "d2",
            "agent:planner",
            "agent:coder",
            parent="d1",
            scopes=["git:write"],
            resources=["git/*"],
        ),
        f.granted(
            "d3",
            "agent:coder",
            "agent:runner",
            parent="d2",
            scopes=["git:write"],
            resources=["git/repo/*"],
            end=30,
        ),
        f.granted("d-other", "user:alice", "agent:coder", scopes=["crm:read"]),
        f.credential("k1", "agent:runner", "d3", expires=20, scopes=["git:write"]),
        f.credential("k-planner", "agent:planner", "d1", expires=50),
        f.decided("x1", "agent:runner", "allow", action="a3", policy_id="pol-git"),
        f.action(
            "a3",
            "agent:runner",
            "d3",
            operation="git:write",
            resource="git/repo/1",
            credential_id="k1",
            decision="x1",
            tool="git-cli",
            minutes=5,
        ),
        f.action(
            "a2", "agent:coder", "d2", operation="git:write", resource="git/repo/2", minutes=6
        ),
        f.action(
            "a1", "agent:planner", "d1", operation="git:read", resource="git/repo/3", minutes=7
        ),
        f.action("a-other", "agent:coder", "d-other", resource="crm/x", minutes=8),
        f.revoked("d2", minutes=25),
        f.action(
            "a-late", "agent:runner", "d3", operation="git:write", resource="git/repo/1", minutes=26
        ),
    ]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("q") / "ledger.duckdb", tree())


def test_trace_returns_the_exact_chain_and_accountability(db: Path) -> None:
    with Ledger.open(db) as ledger:
        t = ledger.trace("a3").to_dict()
    assert set(t) >= {"action", "chain", "root_principal", "accountable", "violations"}
    assert t["action"]["action_id"] == "a3" and t["action"]["occurred_at"] == f.at(5)
    assert [h["delegation_id"] for h in t["chain"]] == ["d3", "d2", "d1"]
    assert [(h["delegator_id"], h["delegate_id"]) for h in t["chain"]] == [
        ("agent:coder", "agent:runner"),
        ("agent:planner", "agent:coder"),
        ("user:alice", "agent:planner"),
    ]
    hop = t["chain"][0]
    assert set(hop) >= {
        "delegation_id",
        "delegator_id",
        "delegate_id",
        "scopes",
        "resources",
        "not_before",
        "expires_at",
        "revoked_at",
        "problems",
    }
    assert hop["expires_at"] == f.at(30) and hop["not_before"] == f.at(0)
    assert [h["revoked_at"] for h in t["chain"]] == [f.at(25), f.at(25), None]  # cascade from d2
    assert t["root_principal"] == "user:alice"
    assert t["accountable"] == {
        "root_delegator": "user:alice",
        "actor_owner": "user:alice",
        "policy_id": "pol-git",
    }
    assert t["violations"] == [] and all(h["problems"] == [] for h in t["chain"])
    json.dumps(t)


def test_trace_marks_the_offending_hops(db: Path) -> None:
    with Ledger.open(db) as ledger:
        t = ledger.trace("a-late")
        planner = ledger.trace("a1")
    assert {(v.kind, v.subject_id) for v in t.violations} == {("REVOKED_DELEGATION", "a-late")}
    problems = {h.delegation_id: h.problems for h in t.chain}
    assert problems == {"d3": ["REVOKED_DELEGATION"], "d2": ["REVOKED_DELEGATION"], "d1": []}
    assert planner.subagents == [{"delegation_id": "d2", "delegate_id": "agent:coder"}]
    assert planner.accountable["actor_owner"] == "user:bob"
    assert planner.accountable["policy_id"] is None


def test_trace_of_an_unknown_action_is_not_found(db: Path) -> None:
    with Ledger.open(db) as ledger, pytest.raises(NotFoundError, match="no action 'nope'"):
        ledger.trace("nope")


def test_blast_radius_of_a_delegation_is_its_subtree(db: Path) -> None:
    with Ledger.open(db) as ledger:
        r = ledger.blast_radius(delegation="d2", until=f.T0 + timedelta(minutes=10)).to_dict()
        later = ledger.blast_radius(delegation="d2", until=f.T0 + timedelta(minutes=26))
    assert r["delegations"] == ["d2", "d3"]
    assert r["principals"] == ["agent:coder", "agent:runner"]
    assert r["actions"] == ["a2", "a3"]
    assert r["credentials"] == ["k1"]
    assert r["resources"] == ["git/repo/1", "git/repo/2"]
    assert r["still_active"] == {"delegations": ["d2", "d3"], "credentials": ["k1"]}
    assert later.still_active == {"delegations": [], "credentials": []}
    assert later.actions == ["a-late", "a2", "a3"]


def test_blast_radius_of_a_principal_covers_what_it_granted_and_did(db: Path) -> None:
    with Ledger.open(db) as ledger:
        r = ledger.blast_radius(principal="agent:planner")
        since = ledger.blast_radius(principal="agent:planner", since=f.T0 + timedelta(minutes=6))
    assert r.delegations == ["d2", "d3"]  # granted by it, and their descendants
    assert r.actions == ["a-late", "a1", "a2", "a3"]  # under them, and by it
    assert r.principals == ["agent:coder", "agent:planner", "agent:runner"]
    assert r.credentials == ["k-planner", "k1"]
    assert since.actions == ["a-late", "a1", "a2"]


def test_blast_radius_of_a_credential(db: Path) -> None:
    with Ledger.open(db) as ledger:
        r = ledger.blast_radius(credential="k1", until=f.T0 + timedelta(minutes=10))
        with pytest.raises(NotFoundError):
            ledger.blast_radius(credential="nope")
        with pytest.raises(ConfigError):
            ledger.blast_radius(principal="a", delegation="b")
    assert r.actions == ["a3"] and r.delegations == ["d3"]  # a-late is after --until
    assert r.credentials == ["k1"] and "agent:runner" in r.principals
    assert r.still_active["credentials"] == ["k1"]


def test_inventory_lists_every_principal_including_unknown(tmp_path: Path) -> None:
    events = [
        *tree(),
        f.action("ghost-1", "agent:ghost", "d1"),
        f.retired("agent:coder", minutes=9),
    ]
    db = build(tmp_path / "inv.duckdb", events)
    with Ledger.open(db) as ledger:
        items = {
            i.principal_id: i.to_dict() for i in ledger.inventory(at=f.T0 + timedelta(minutes=10))
        }
    assert set(items) == {
        "user:alice",
        "user:bob",
        "agent:planner",
        "agent:coder",
        "agent:runner",
        "agent:ghost",
    }
    coder = items["agent:coder"]
    assert coder["status"] == "retired" and coder["kind"] == "agent"
    assert coder["owner_id"] == "user:alice"
    assert coder["delegated_by"] == ["agent:planner", "user:alice"]
    assert coder["delegated_to"] == ["agent:runner"]
    assert coder["resources"] == ["crm/x", "git/repo/2"]
    runner = items["agent:runner"]
    assert runner["tools"] == ["git-cli"] and runner["live_credentials"] == ["k1"]
    assert items["agent:planner"]["live_credentials"] == ["k-planner"]
    assert items["agent:ghost"]["unknown"] is True and items["agent:ghost"]["kind"] is None
    assert items["user:alice"]["unknown"] is False and items["user:alice"]["status"] == "active"


@pytest.mark.parametrize(
    "query",
    [
        "DELETE FROM actions",
        "UPDATE actions SET outcome = 'failed'",
        "INSERT INTO actions SELECT * FROM actions",
        "DROP TABLE entries",
        "ATTACH ':memory:' AS scratch",
        "COPY actions TO '/tmp/ledger-leak.csv'",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET threads = 1",
        "SELECT 1; DELETE FROM actions",
        "SELECT * FROM read_csv('/etc/hostname')",
        "CREATE TABLE x AS SELECT 1",
    ],
)
def test_sql_is_read_only(db: Path, query: str) -> None:
    with Ledger.open(db) as ledger:
        with pytest.raises(ValidationError) as err:
            ledger.sql(query)
        assert "\n" not in str(err.value)
        assert ledger.sql("SELECT count(*) AS n FROM actions").to_dict() == [{"n": 5}]


WRITES = [
    "WITH x AS (SELECT 1) DELETE FROM entries RETURNING *",
    "WITH gone AS (DELETE FROM actions RETURNING *) SELECT count(*) FROM gone",
    "EXPLAIN ANALYZE DELETE FROM entries",
    "EXPLAIN ANALYZE UPDATE delegations SET resources = ['*']",
    "EXPLAIN ANALYZE INSERT INTO actions SELECT * FROM actions",
    "EXPLAIN ANALYZE DROP TABLE entries",
    "DELETE FROM entries",
    "COPY entries TO '/tmp/ledger-leak.parquet'",
    "ATTACH '/tmp/ledger-other.duckdb' AS other",
]


def _state(path: Path) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return [
            con.execute(f"SELECT count(*), sum(hash(t)) FROM {table} t").fetchall()[0]
            for table in ("entries", "actions", "delegations")
        ]
    finally:
        con.close()


@pytest.mark.parametrize("read_only", [True, False])
@pytest.mark.parametrize("query", WRITES)
def test_sql_cannot_write_whatever_the_statement(db: Path, query: str, read_only: bool) -> None:
    """Issue 12: a data-modifying CTE or EXPLAIN ANALYZE deleted entries through `Ledger.sql`
    on a ledger opened writable. The statement may be refused or may run; the file stays."""
    before = _state(db)
    with Ledger.open(db, read_only=read_only) as ledger:
        with contextlib.suppress(ValidationError):
            ledger.sql(query)
        assert ledger.sql("SELECT count(*) AS n FROM actions").to_dict() == [{"n": 5}]
    assert _state(db) == before
    assert not Path("/tmp/ledger-other.duckdb").exists()
    with Store.open(db, read_only=True) as store:
        assert verify_store(store).ok


def test_sql_returns_json_ready_rows(db: Path) -> None:
    with Ledger.open(db) as ledger:
        rows = ledger.sql(
            "SELECT delegation_id, scopes, expires_at FROM delegations WHERE delegation_id = 'd3'"
        ).to_dict()
    assert rows == [{"delegation_id": "d3", "scopes": ["git:write"], "expires_at": f.at(30)}]
