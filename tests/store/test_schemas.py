"""Writer schemas kept by Confluent schema id: stored with the entries, never rewritten, checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ledger.contract import events
from ledger.contract.codec import Codec, current_schema, default_codec
from ledger.store import Incoming, Store
from ledger.store.catalog import catalog_problems
from ledger.store.projections import rebuild
from ledger.store.schemas import (
    DIGEST_PREFIX,
    StoredSchema,
    ledger_codec,
    schema_problems,
    stored_schemas,
)
from tests import factories as f

SCHEMA_ID = 7
STORED = StoredSchema(SCHEMA_ID, json.dumps(current_schema()), "file:/exported/7.avsc")


def confluent_incoming(ev: dict[str, Any], schema_id: int = SCHEMA_ID) -> Incoming:
    """An event as a Confluent serializer writes it (0x00, id, body), decoded for the store."""
    record = events.to_record(events.parse_event(ev))
    payload = b"\x00" + schema_id.to_bytes(4, "big") + default_codec().encode(record)[10:]
    decoded, _ = Codec(schema_ids={schema_id: current_schema()}).decode(payload)
    return Incoming(ev["event_id"], ev["type"], record["occurred_at"], payload, "test", decoded)


def confluent_ledger(path: Path, n: int = 3) -> list[Incoming]:
    items = [confluent_incoming(f.action(f"a-{i}", "agent:p", minutes=i)) for i in range(n)]
    with Store.open(path) as store:
        store.append(items, schemas={SCHEMA_ID: STORED})
    return items


def test_a_schema_is_stored_with_the_first_entries_that_need_it(db_path: Path) -> None:
    items = confluent_ledger(db_path)
    with Store.open(db_path) as store:
        assert stored_schemas(store.con) == {SCHEMA_ID: STORED}
        rows = store.con.execute("SELECT payload FROM entries ORDER BY seq").fetchall()
        payloads = [r[0] for r in rows]
        assert payloads == [i.payload for i in items]  # the bytes as received
        # handing the same id again (every append does) stores nothing twice, and a held id
        # keeps its schema whatever is handed later
        other = StoredSchema(SCHEMA_ID, json.dumps({"type": "string"}), "registry:http://x")
        store.append([confluent_incoming(f.principal("agent:p"))], schemas={SCHEMA_ID: other})
        assert stored_schemas(store.con) == {SCHEMA_ID: STORED}
        assert schema_problems(store.con) == []


class _Failing:
    """A derived structure whose update fails: the whole append must roll back."""

    name = "failing"

    def create_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        pass

    def on_append(self, con: duckdb.DuckDBPyConnection, appended: object) -> None:
        raise RuntimeError("projection bug")


def test_a_schema_commits_with_its_batch_or_not_at_all(db_path: Path) -> None:
    with Store.open(db_path, extensions=[_Failing()]) as store:
        with pytest.raises(RuntimeError, match="projection bug"):
            store.append([confluent_incoming(f.principal("agent:p"))], schemas={7: STORED})
        assert stored_schemas(store.con) == {} and store.size() == 0
        assert store.con.execute(
            f"SELECT count(*) FROM ledger_meta WHERE starts_with(key, '{DIGEST_PREFIX}')"
        ).fetchall() == [(0,)]
    with Store.open(db_path, extensions=[]) as store:  # and the next append stores it
        store.append([confluent_incoming(f.principal("agent:p"))], schemas={7: STORED})
        assert stored_schemas(store.con) == {7: STORED} and schema_problems(store.con) == []


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        ("UPDATE schema_ids SET schema = replace(schema, 'AuditEvent', 'AuditEvent ')", "differs"),
        ("UPDATE schema_ids SET source = 'file:elsewhere'", "differs"),
        ("UPDATE schema_ids SET recorded_at = recorded_at + INTERVAL 1 SECOND", "differs"),
        ("DELETE FROM schema_ids", "which the ledger stored, is missing"),
        ("INSERT INTO schema_ids VALUES (8, '{}', 'x', now())", "schema id 8 was never recorded"),
    ],
)
def test_a_row_edited_added_or_deleted_is_named_by_its_id(
    db_path: Path, edit: str, says: str
) -> None:
    confluent_ledger(db_path)
    with duckdb.connect(str(db_path)) as con:
        con.execute(edit)
    with Store.open(db_path, read_only=True) as store:
        problems = schema_problems(store.con)
    assert len(problems) == 1 and says in problems[0], problems
    assert problems[0].startswith("schema_ids: the row of schema id")


def test_the_files_codec_reads_its_ids_and_changes_no_other_codec(db_path: Path) -> None:
    items = confluent_ledger(db_path)
    with Store.open(db_path, read_only=True) as store:
        codec = ledger_codec(store.con)
        assert codec is not default_codec() and not default_codec().knows_id(SCHEMA_ID)
        assert codec.decode(items[0].payload)[0]["event_id"] == items[0].event_id
        mine = Codec()
        assert ledger_codec(store.con, mine) is not mine and not mine.knows_id(SCHEMA_ID)
    with Store.open(db_path.with_name("plain.duckdb")) as plain:
        assert ledger_codec(plain.con) is default_codec()  # nothing stored: nothing built
        assert ledger_codec(plain.con, fresh=True) is not default_codec()


def test_an_unusable_stored_schema_is_refused_with_its_id(db_path: Path) -> None:
    confluent_ledger(db_path)
    with duckdb.connect(str(db_path)) as con:
        con.execute('UPDATE schema_ids SET schema = \'{"type": "string"}\'')
    with Store.open(db_path, read_only=True) as store:
        refused = ledger_codec(store.con).refused_ids()
    assert list(refused) == [SCHEMA_ID] and "the schema stored for it" in refused[SCHEMA_ID]


def test_a_ledger_from_before_the_table_is_still_a_ledger(db_path: Path, codec: Codec) -> None:
    """A file written before `schema_ids` existed lacks it: read-only it is still a ledger
    holding no schema; the next writable open adds the table."""
    with Store.open(db_path) as store:
        record = events.to_record(events.parse_event(f.principal("agent:p")))
        payload = codec.encode(record)
        store.append([Incoming(record["event_id"], record["type"], record["occurred_at"],
                               payload, "test", codec.decode(payload)[0])])  # fmt: skip
        store.con.execute("DROP TABLE schema_ids")
    with Store.open(db_path, read_only=True) as store:
        assert catalog_problems(store.con) == []
        assert stored_schemas(store.con) == {} and schema_problems(store.con) == []
        assert ledger_codec(store.con) is default_codec()
    with Store.open(db_path) as store:
        assert catalog_problems(store.con) == [] and stored_schemas(store.con) == {}


def test_a_changed_table_definition_is_still_found_by_the_catalog(db_path: Path) -> None:
    confluent_ledger(db_path)
    with duckdb.connect(str(db_path)) as con:
        con.execute("ALTER TABLE schema_ids ALTER schema SET DATA TYPE VARCHAR COLLATE NOCASE")
    with Store.open(db_path, read_only=True) as store:
        assert any(
            "table schema_ids is defined otherwise" in p for p in catalog_problems(store.con)
        )


def test_rebuild_reads_the_entries_with_the_stored_schemas(db_path: Path) -> None:
    items = confluent_ledger(db_path)
    with Store.open(db_path) as store:
        before = store.con.execute("SELECT * FROM actions ORDER BY seq").fetchall()
        assert rebuild(store) == len(items)
        assert store.con.execute("SELECT * FROM actions ORDER BY seq").fetchall() == before
