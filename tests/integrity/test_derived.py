"""`verify` covers what the answers read: projection rows, the meta chain of each entry.

The class of fault: a table derived from the entries is edited in the file (a row deleted,
widened, moved, invented, repeated, a table dropped, the coverage mark changed), or a column the
ledger adds to an entry (`source`, `recorded_at`) is edited, and `verify` still says ok while
`violations` and `trace` answer from the edited rows. Each tamper here must fail `verify`, name
the table, the row's key and the seq it should come from, and (for projections) be undone by
`rebuild`. The worker-process path is compared with the in-process one on the same tampers.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from ledger.cli import cli
from ledger.errors import StoreError
from ledger.integrity import derived
from ledger.integrity.verify import VerifyReport, verify_store
from ledger.query.ledger import Ledger
from ledger.store import Store
from ledger.store.projections import rebuild
from tests.query.test_ledger import tree
from tests.query.test_rules import build

Tamper = Callable[[duckdb.DuckDBPyConnection], None]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return build(tmp_path / "ledger.duckdb", tree())


def sql(*statements: str) -> Tamper:
    def run(con: duckdb.DuckDBPyConnection) -> None:
        for statement in statements:
            con.execute(statement)

    return run


def tamper(path: Path, edit: Tamper) -> None:
    con = duckdb.connect(str(path))
    try:
        edit(con)
    finally:
        con.close()


def seq_of(path: Path, table: str, column: str, key: str) -> int:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return int(con.execute(f"SELECT seq FROM {table} WHERE {column} = ?", [key]).fetchone()[0])  # type: ignore[index]
    finally:
        con.close()


def verify(path: Path) -> VerifyReport:
    with Store.open(path, read_only=True) as store:
        return verify_store(store)


def first_action(path: Path) -> tuple[str, int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        row = con.execute("SELECT action_id, seq FROM actions ORDER BY seq LIMIT 1").fetchone()
    finally:
        con.close()
    assert row is not None
    return str(row[0]), int(row[1])


# (name, tamper, table, problem) where the key and seq are those of d2 / the first action
CASES: list[tuple[str, Tamper, str, str]] = [
    (
        "delete a row",
        sql("DELETE FROM delegations WHERE delegation_id = 'd2'"),
        "delegations",
        "missing",
    ),
    (
        "widen resources",
        sql("UPDATE delegations SET resources = ['mail:*'] WHERE delegation_id = 'd2'"),
        "delegations",
        "altered",
    ),
    (
        "widen scopes",
        sql("UPDATE delegations SET scopes = list_append(scopes, '*') WHERE delegation_id = 'd2'"),
        "delegations",
        "altered",
    ),
    (
        "lengthen a window",
        sql(
            "UPDATE delegations SET expires_at = expires_at + INTERVAL 1 YEAR "
            "WHERE delegation_id = 'd2'"
        ),
        "delegations",
        "altered",
    ),
    (
        "cut the parent link",
        sql("UPDATE delegations SET parent_delegation_id = NULL WHERE delegation_id = 'd2'"),
        "delegations",
        "altered",
    ),
    (
        "change the event id",
        sql("UPDATE delegations SET event_id = 'other' WHERE delegation_id = 'd2'"),
        "delegations",
        "altered",
    ),
    (
        "move a row to another seq",
        sql("UPDATE delegations SET seq = seq + 1000 WHERE delegation_id = 'd2'"),
        "delegations",
        "missing",
    ),
    (
        "repeat a row",
        sql("INSERT INTO delegations SELECT * FROM delegations WHERE delegation_id = 'd2'"),
        "delegations",
        "row repeated",
    ),
]


@pytest.mark.parametrize(("name", "edit", "table", "problem"), CASES, ids=[c[0] for c in CASES])
def test_an_edited_projection_fails_verify_and_rebuild_restores_it(
    db: Path, name: str, edit: Tamper, table: str, problem: str
) -> None:
    seq = seq_of(db, "delegations", "delegation_id", "d2")
    tamper(db, edit)
    report = verify(db)
    assert not report.ok, name
    assert report.derived, report
    first = report.derived[0]
    assert (first["table"], first["problem"], first["seq"]) == (table, problem, seq), report.derived
    assert first["key"] == "d2"
    assert report.bad_seq == seq
    assert "delegations" in str(report.reason) and "d2" in str(report.reason)
    assert f"seq {seq}" in str(report.reason)
    with Store.open(db, create=False) as store:
        rebuild(store)
    after = verify(db)
    assert after.ok, after
    assert after.derived == [] and after.derived_total == 0


def test_the_quoted_case_delete_an_action(db: Path) -> None:
    """Issue 12: `DELETE FROM actions WHERE action_id='a-2'` left `verify` ok, exit 0."""
    action, seq = first_action(db)
    with Ledger.open(db) as ledger:
        before = [v.to_dict() for v in ledger.violations()]
    tamper(db, sql(f"DELETE FROM actions WHERE action_id = '{action}'"))
    result = CliRunner().invoke(cli, ["verify", "--db", str(db)])
    assert result.exit_code == 1, result.output
    assert "actions" in result.output and action in result.output and f"seq {seq}" in result.output
    with Store.open(db, create=False) as store:
        rebuild(store)
    assert CliRunner().invoke(cli, ["verify", "--db", str(db)]).exit_code == 0
    with Ledger.open(db) as ledger:
        assert [v.to_dict() for v in ledger.violations()] == before


def test_an_invented_row_is_not_from_the_ledger(db: Path) -> None:
    action, _ = first_action(db)
    tamper(
        db,
        sql(
            "INSERT INTO actions SELECT * REPLACE (seq + 100000 AS seq, 'a-ghost' AS action_id) "
            f"FROM actions WHERE action_id = '{action}'"
        ),
    )
    report = verify(db)
    assert not report.ok
    assert [(d["table"], d["key"], d["problem"]) for d in report.derived] == [
        ("actions", "a-ghost", "not from the ledger")
    ]


def test_a_row_in_the_wrong_table_is_not_from_the_ledger(db: Path) -> None:
    """A delegation's seq reused for a fake action: the entry behind it is not an action."""
    action, _ = first_action(db)
    d2 = seq_of(db, "delegations", "delegation_id", "d2")
    tamper(
        db,
        sql(
            f"INSERT INTO actions SELECT * REPLACE ({d2} AS seq, 'a-fake' AS action_id) "
            f"FROM actions WHERE action_id = '{action}'"
        ),
    )
    report = verify(db)
    assert not report.ok
    assert (report.derived[0]["key"], report.derived[0]["seq"]) == ("a-fake", d2)
    assert report.derived[0]["problem"] == "not from the ledger"


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (sql("DROP TABLE actions"), "table actions is missing"),
        (sql("UPDATE projection_meta SET value = 3"), "projection_meta"),
        (sql("DELETE FROM projection_meta"), "projection_meta"),
    ],
)
def test_coverage_and_missing_tables_fail_verify(db: Path, edit: Tamper, words: str) -> None:
    tamper(db, edit)
    report = verify(db)
    assert not report.ok
    assert words in str(report.reason)


def test_every_difference_is_counted(db: Path) -> None:
    tamper(db, sql("DELETE FROM actions", "UPDATE delegations SET resources = ['*']"))
    report = verify(db)
    con = duckdb.connect(str(db), read_only=True)
    expected = con.execute(
        "SELECT count(*) FROM entries WHERE type IN ('action.performed', 'delegation.granted')"
    ).fetchone()
    con.close()
    assert expected is not None
    assert report.derived_total == expected[0]
    assert "more" in str(report.reason)


# -- the meta chain: recorded_at and source --------------------------------------------------


@pytest.mark.parametrize(
    "edit",
    [
        sql("UPDATE entries SET source = 'forged.jsonl:1' WHERE seq = 3"),
        sql("UPDATE entries SET recorded_at = recorded_at + INTERVAL 1 SECOND WHERE seq = 5"),
        sql("UPDATE entries SET recorded_at = recorded_at - INTERVAL 1 DAY WHERE seq = 0"),
        sql("UPDATE ledger_meta SET value = repeat('0', 64) WHERE key = 'meta_hash'"),
    ],
    ids=["source", "recorded_at later", "recorded_at earlier", "meta hash"],
)
def test_source_and_recorded_at_are_committed(db: Path, edit: Tamper) -> None:
    assert verify(db).ok
    tamper(db, edit)
    report = verify(db)
    assert not report.ok, report
    assert "recorded" in str(report.reason) or "source" in str(report.reason)


def test_a_deleted_meta_chain_fails_verify(db: Path) -> None:
    """Issue 12 (adversarial run): deleting `meta_hash` switched the check off, and then
    `source` and `recorded_at` could be rewritten at will."""
    tamper(
        db,
        sql(
            "DELETE FROM ledger_meta WHERE key = 'meta_hash'",
            "UPDATE entries SET source = 'file:evil:1', recorded_at = '2001-01-01'",
        ),
    )
    report = verify(db)
    assert not report.ok
    assert "no meta chain" in str(report.reason)


def test_a_ledger_from_before_the_meta_chain_gets_one_when_opened_writable(db: Path) -> None:
    tamper(db, sql("DELETE FROM ledger_meta WHERE key = 'meta_hash'"))
    assert not verify(db).ok
    Store.open(db, create=False).close()
    report = verify(db)
    assert report.ok, report
    assert any(u.startswith("consumer_offsets") for u in report.unvouched)
    assert any(u.startswith("quarantine") for u in report.unvouched)
    tamper(db, sql("UPDATE entries SET source = 'x' WHERE seq = 2"))
    assert not verify(db).ok


def test_appends_in_the_same_microsecond_stay_apart(tmp_path: Path) -> None:
    """recorded_at strictly increases from one append to the next, so verify finds the
    appends again even when the clock has not moved."""
    from tests.store.test_treestore import incoming

    events = incoming(30)
    with Store.open(tmp_path / "fast.duckdb") as store:
        for i in range(0, 30, 3):
            store.append(events[i : i + 3])
        times = [
            r[0]
            for r in store.con.execute("SELECT recorded_at FROM entries ORDER BY seq").fetchall()
        ]
        assert verify_store(store).ok
    assert len(set(times)) == 10 and times == sorted(times)


# -- workers and in process agree ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "edit", "table", "problem"),
    CASES[:4] + CASES[6:],
    ids=[c[0] for c in CASES[:4] + CASES[6:]],
)
def test_worker_processes_find_what_the_check_in_process_finds(
    db: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    edit: Tamper,
    table: str,
    problem: str,
) -> None:
    tamper(db, edit)
    with Store.open(db, read_only=True) as store:
        in_process = derived.DerivedCheck.start(store, workers=0).result()
        monkeypatch.setattr(derived, "PARALLEL_FROM", 1)
        check = derived.DerivedCheck.start(store, workers=2)
        assert len(check._workers) == 2
        assert check.result() == in_process
        assert check.redone == 0
    assert in_process[1] >= 1


def test_a_failing_worker_is_redone_in_process(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tamper(db, sql("DELETE FROM delegations WHERE delegation_id = 'd2'"))
    monkeypatch.setattr(derived, "PARALLEL_FROM", 1)
    monkeypatch.setattr(derived.sys, "executable", shutil.which("false") or "/bin/false")
    with Store.open(db, read_only=True) as store:
        check = derived.DerivedCheck.start(store, workers=2)
        found, total = check.result()
    assert total == 1 and found[0].key == "d2"
    assert check.redone == 2


def test_workers_run_this_package_not_one_in_the_working_directory(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoy = tmp_path / "elsewhere" / "ledger"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise SystemExit('the wrong ledger package')\n")
    monkeypatch.chdir(decoy.parent)
    monkeypatch.setattr(derived, "PARALLEL_FROM", 1)
    with Store.open(db, read_only=True) as store:
        check = derived.DerivedCheck.start(store)
        assert check.result() == ([], 0)
    assert check.redone == 0


# -- the Merkle state ------------------------------------------------------------------------


@pytest.fixture
def big(tmp_path: Path) -> Path:
    """Enough entries for stored Merkle nodes (complete subtrees of 16+ leaves)."""
    from tests.store.test_treestore import incoming

    path = tmp_path / "big.duckdb"
    with Store.open(path) as store:
        store.append(incoming(300))
    return path


@pytest.mark.parametrize(
    "edit",
    [
        sql(
            "UPDATE merkle_nodes SET hash = sha256('x')::BLOB "
            "WHERE node = (SELECT min(node) FROM merkle_nodes)"
        ),
        sql("DELETE FROM merkle_nodes WHERE node = (SELECT max(node) FROM merkle_nodes)"),
        sql(
            "INSERT INTO merkle_nodes SELECT max(node) + 1000003, any_value(hash) FROM merkle_nodes"
        ),
        sql("UPDATE merkle_head SET root = sha256('x')::BLOB"),
        sql("DELETE FROM merkle_head"),
    ],
    ids=["node altered", "node deleted", "node invented", "head root", "head deleted"],
)
def test_an_edited_merkle_state_fails_verify(big: Path, edit: Tamper) -> None:
    assert verify(big).ok
    tamper(big, edit)
    report = verify(big)
    assert not report.ok, report
    assert "Merkle" in str(report.reason) or "merkle" in str(report.reason), report.reason


# -- the catalog: what every query reads through ---------------------------------------------

FOREIGN = [
    ("CREATE MACRO len(x) AS 1", "macro len"),
    ("CREATE MACRO starts_with(a, b) AS true", "macro starts_with"),
    ("CREATE VIEW v_actions AS SELECT * FROM actions", "view v_actions"),
    ("CREATE SCHEMA shadow", "schema shadow"),
    ("CREATE SEQUENCE s1", "sequence s1"),
    ("CREATE TYPE mood AS ENUM ('a', 'b')", "type mood"),
    ("CREATE TABLE notes (t VARCHAR)", "table notes is not part of a ledger"),
]


@pytest.mark.parametrize(("statement", "named"), FOREIGN, ids=[f[1] for f in FOREIGN])
def test_foreign_catalog_objects_fail_verify_and_stop_the_answers(
    db: Path, statement: str, named: str
) -> None:
    """Issue 12 (adversarial run): `CREATE MACRO len(x) AS 1` saved in the file made every
    list one element long, so `violations` said "no violations" and verify said ok."""
    tamper(db, sql(statement))
    report = verify(db)
    assert not report.ok
    assert named in str(report.reason), report.reason
    with pytest.raises(StoreError, match="answers could be altered"):
        Ledger.open(db)
    result = CliRunner().invoke(cli, ["violations", "--db", str(db)])
    assert result.exit_code == 1 and named in result.output


def drop_indexes(con: duckdb.DuckDBPyConnection) -> None:
    """DuckDB alters no indexed table."""
    for (index,) in con.execute("SELECT index_name FROM duckdb_indexes()").fetchall():
        con.execute(f"DROP INDEX {index}")


ALTERED = [
    (
        "a case-blind collation",
        "ALTER TABLE actions ALTER resource TYPE VARCHAR COLLATE NOCASE",
    ),
    ("another type", "ALTER TABLE delegations ALTER scopes TYPE VARCHAR"),
    ("a renamed column", "ALTER TABLE actions RENAME COLUMN tool TO tool2"),
    ("a dropped column", "ALTER TABLE actions DROP COLUMN tool"),
    ("an extra column", "ALTER TABLE actions ADD COLUMN note VARCHAR"),
    (
        "a view for a table",
        "CREATE TABLE actions_real AS SELECT * FROM actions; DROP TABLE actions; "
        "CREATE VIEW actions AS SELECT * FROM actions_real",
    ),
]


@pytest.mark.parametrize(("name", "statement"), ALTERED, ids=[a[0] for a in ALTERED])
def test_an_altered_projection_table_fails_verify_and_rebuild_restores_it(
    db: Path, name: str, statement: str
) -> None:
    with Ledger.open(db) as ledger:
        before = [v.to_dict() for v in ledger.violations()]

    def edit(con: duckdb.DuckDBPyConnection) -> None:
        drop_indexes(con)
        for part in statement.split("; "):
            con.execute(part)

    tamper(db, edit)
    report = verify(db)
    assert not report.ok, name
    assert report.catalog, report
    with Store.open(db, create=False) as store:
        rebuild(store)
    if name == "a view for a table":
        tamper(db, sql("DROP TABLE actions_real"))
    after = verify(db)
    assert after.ok, after
    with Ledger.open(db) as ledger:
        assert [v.to_dict() for v in ledger.violations()] == before


def test_the_case_blind_collation_no_longer_hides_a_finding(db: Path) -> None:
    """The quoted case: with `COLLATE NOCASE` on `actions.resource`, an edit of the resource's
    case passed verify and changed `violations`."""
    action, _ = first_action(db)

    def edit(con: duckdb.DuckDBPyConnection) -> None:
        drop_indexes(con)
        con.execute("ALTER TABLE actions ALTER resource TYPE VARCHAR COLLATE NOCASE")
        con.execute(f"UPDATE actions SET resource = upper(resource) WHERE action_id = '{action}'")

    tamper(db, edit)
    report = verify(db)
    assert not report.ok
    assert "COLLATE" in str(report.reason) or any("COLLATE" in p for p in report.catalog)
