"""`ledger quarantine`: list, filter, JSON / NDJSON, export the exact bytes, read-only, errors."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ledger.cli import cli
from ledger.errors import ConfigError
from ledger.store import Rejected, Store
from ledger.store.quarantine import export, file_name, parse_time, quarantined
from ledger.stream.broker import EmbeddedBroker
from tests import factories as f
from tests.conftest import write_jsonl
from tests.kafkautil import consume_into, produce, wire

LONG = bytes(range(256)) + b"\\tail"


@pytest.fixture
def ledger_file(tmp_path: Path, db_path: Path) -> Path:
    """A ledger whose quarantine holds: a bad JSON line, two conflicting duplicates (from
    ingest), a Kafka message without a value, and 261 arbitrary bytes."""
    events: list[dict[str, object] | str] = [
        f.principal("agent:p"),
        f.action("a-1", "agent:p", event_id="dup-2"),
        "{oops",
        f.action("a-2", "agent:p", operation="hr:delete", resource="hr/all", event_id="dup-2"),
        f.retired("agent:p", event_id="dup-2"),
    ]
    path = write_jsonl(tmp_path / "in.jsonl", events)
    assert invoke("ingest", str(path), "--db", str(db_path)).exit_code == 3
    with Store.open(db_path) as store:
        store.append(
            [],
            [
                Rejected("kafka:audit/2/41", None, "empty message (no value)"),
                Rejected("kafka:audit/0/7", LONG, "bad magic byte"),
            ],
        )
    return db_path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def listed(db: Path, *args: str) -> list[dict[str, object]]:
    result = invoke("quarantine", "--db", str(db), "--json", *args)
    assert result.exit_code == 0, result.output
    rows: list[dict[str, object]] = json.loads(result.stdout)
    return rows


def raw_rows(db: Path) -> list[tuple[str, bytes | None]]:
    with Store.open(db, read_only=True) as store:
        rows = store.con.execute("SELECT source, raw FROM quarantine ORDER BY rowid").fetchall()
    return [(s, None if r is None else bytes(r)) for s, r in rows]


def fingerprint(path: Path) -> tuple[str, ...]:
    files = sorted(p for p in path.parent.iterdir() if p.name.startswith(path.name))
    return tuple(f"{p.name}:{hashlib.sha256(p.read_bytes()).hexdigest()}" for p in files)


def test_lists_every_row_as_a_table(ledger_file: Path, tmp_path: Path) -> None:
    before = fingerprint(ledger_file)
    result = invoke("quarantine", "--db", str(ledger_file))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["#", "received_at", "source", "size", "first", "bytes", "reason"]
    assert len(lines) == 2 + 5
    src = tmp_path / "in.jsonl"
    assert f"file:{src}:3" in lines[2] and "not valid JSON" in lines[2] and "{oops" in lines[2]
    assert f"file:{src}:4" in lines[3] and "conflicting duplicate of seq 1: " in lines[3]
    assert f"file:{src}:5" in lines[4] and "conflicting duplicate of seq 1: " in lines[4]
    assert "kafka:audit/2/41" in lines[5] and "(no bytes)" in lines[5]
    assert "kafka:audit/0/7" in lines[6] and "261" in lines[6]
    assert "\\x00\\x01\\x02" in lines[6] and lines[6].count("\\x") == 32
    assert fingerprint(ledger_file) == before  # read-only: the file is untouched


def test_json_rows_have_the_documented_fields(ledger_file: Path, tmp_path: Path) -> None:
    rows = listed(ledger_file)
    assert [r["number"] for r in rows] == [1, 2, 3, 4, 5]
    assert set(rows[0]) == {"number", "received_at", "source", "reason", "size", "sha256",
                            "preview"}  # fmt: skip
    assert rows[0]["preview"] == "{oops" and rows[0]["size"] == 5
    assert rows[0]["sha256"] == hashlib.sha256(b"{oops").hexdigest()
    conflict = rows[1]
    assert conflict["source"] == f"file:{tmp_path / 'in.jsonl'}:4"
    assert str(conflict["reason"]).endswith(f"received sha256 {conflict['sha256']}")
    assert rows[3]["size"] is None and rows[3]["sha256"] is None and rows[3]["preview"] == ""
    assert rows[4]["size"] == len(LONG)
    assert rows[4]["preview"] == "".join(f"\\x{b:02x}" for b in range(32)) + "..."
    received = datetime.fromisoformat(str(rows[0]["received_at"]))
    assert received.tzinfo is not None and abs(datetime.now(UTC) - received) < timedelta(hours=1)


def test_nl_prints_one_object_per_line(ledger_file: Path) -> None:
    result = invoke("quarantine", "--db", str(ledger_file), "--nl")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [json.loads(line) for line in lines] == listed(ledger_file)


def test_reason_is_a_case_insensitive_substring(ledger_file: Path) -> None:
    rows = listed(ledger_file, "--reason", "CONFLICTING Duplicate")
    assert [r["number"] for r in rows] == [2, 3]  # numbers stay those of the whole table
    assert listed(ledger_file, "--reason", "%") == []  # plain text, not a LIKE pattern
    assert [r["number"] for r in listed(ledger_file, "--reason", "magic")] == [5]


def test_since_filters_on_received_at(ledger_file: Path) -> None:
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")  # naive: UTC
    assert len(listed(ledger_file, "--since", past)) == 5
    assert listed(ledger_file, "--since", future) == []
    both = listed(ledger_file, "--since", past.replace("+00:00", "Z"), "--reason", "empty")
    assert [r["source"] for r in both] == ["kafka:audit/2/41"]
    text = invoke("quarantine", "--db", str(ledger_file), "--since", future, "--reason", "x")
    assert text.exit_code == 0
    assert text.stdout.strip() == f"no quarantined input matches --reason 'x' --since {future}"


def test_bad_since_is_one_line_exit_1(ledger_file: Path) -> None:
    result = invoke("quarantine", "--db", str(ledger_file), "--since", "yesterday")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: --since: 'yesterday' is not an ISO 8601 time such as 2026-03-23T10:00:00Z"
    ]


def test_missing_ledger_is_one_line_exit_1_and_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "typo.duckdb"
    result = invoke("quarantine", "--db", str(typo))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: no ledger at {typo} (run `ledger ingest` or `ledger consume` first)"
    ]
    assert not list(tmp_path.iterdir())


def test_an_empty_quarantine(tmp_path: Path, db_path: Path) -> None:
    path = write_jsonl(tmp_path / "ok.jsonl", [f.principal("agent:p")])
    assert invoke("ingest", str(path), "--db", str(db_path)).exit_code == 0
    result = invoke("quarantine", "--db", str(db_path))
    assert (result.exit_code, result.stdout) == (0, "no quarantined input\n")
    assert listed(db_path) == []


def test_export_writes_the_exact_bytes_and_a_manifest(ledger_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "replay" / "nested"
    result = invoke("quarantine", "--db", str(ledger_file), "--export", str(out))
    assert result.exit_code == 0, result.output
    assert f"exported 5 rows to {out} (manifest {out / 'index.jsonl'})" in result.stdout
    manifest = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    stored = raw_rows(ledger_file)
    assert len(manifest) == len(stored) == 5
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*(m["name"] for m in manifest), "index.jsonl"]
    )
    for n, (entry, (source, raw)) in enumerate(zip(manifest, stored, strict=True), 1):
        assert entry["name"].startswith(f"{n:06d}-") and entry["name"].endswith(".bin")
        assert entry["source"] == source and entry["number"] == n
        assert {"reason", "received_at"} <= set(entry)
        data = (out / entry["name"]).read_bytes()
        if raw is None:
            assert (data, entry["size"], entry["sha256"], entry["raw"]) == (
                b"",
                None,
                None,
                "missing",
            )
        else:
            assert data == raw
            assert (entry["size"], entry["sha256"]) == (len(raw), hashlib.sha256(raw).hexdigest())
            assert "raw" not in entry
    assert manifest[4]["name"] == "000005-kafka_audit_0_7.bin"
    assert (out / manifest[4]["name"]).read_bytes() == LONG


def test_export_refuses_to_overwrite_unless_force(ledger_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "replay"
    assert invoke("quarantine", "--db", str(ledger_file), "--export", str(out)).exit_code == 0
    conflict = next(out.glob("000002-file_*"))
    conflict.write_bytes(b"edited by hand")
    again = invoke("quarantine", "--db", str(ledger_file), "--export", str(out), "--reason", "dup")
    assert again.exit_code == 1
    assert again.stderr.strip().splitlines() == [
        f"error: {conflict} and 2 more already exist; nothing was written (--force overwrites)"
    ]
    assert conflict.read_bytes() == b"edited by hand"
    forced = invoke("quarantine", "--db", str(ledger_file), "--export", str(out), "--reason",
                    "dup", "--force")  # fmt: skip
    assert forced.exit_code == 0, forced.output
    assert conflict.read_bytes() == raw_rows(ledger_file)[1][1]
    assert len((out / "index.jsonl").read_text().splitlines()) == 2  # the manifest of this run


def test_export_with_json_keeps_stdout_json(ledger_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "replay"
    result = invoke("quarantine", "--db", str(ledger_file), "--json", "--export", str(out))
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["file"] for r in rows] == [
        json.loads(line)["name"] for line in (out / "index.jsonl").read_text().splitlines()
    ]
    assert "exported 5 rows" in result.stderr


def test_option_misuse_is_one_line_exit_1(ledger_file: Path) -> None:
    for args, message in (
        (["--json", "--nl"], "error: use one of --json and --nl"),
        (["--force"], "error: --force only applies with --export DIR"),
    ):
        result = invoke("quarantine", "--db", str(ledger_file), *args)
        assert result.exit_code == 1
        assert result.stderr.strip().splitlines() == [message]


def test_help_has_examples() -> None:
    result = invoke("quarantine", "--help")
    assert result.exit_code == 0
    for text in ("Examples:", "ledger quarantine --reason", "--export DIR", "--since TIME",
                 "--nl", "conflicting duplicates"):  # fmt: skip
        assert text in result.stdout, text


@pytest.mark.integration
def test_conflicting_duplicates_from_kafka(
    broker: EmbeddedBroker, topic: str, db_path: Path, tmp_path: Path
) -> None:
    """The reported dup-2 case through `consume`: Kafka coordinates and the exact bytes kept."""
    sent = [
        wire(f.action("a-1", "agent:p", event_id="dup-2")),
        wire(
            f.action("a-2", "agent:p", operation="hr:delete", resource="hr/all", event_id="dup-2")
        ),
        wire(f.retired("agent:p", event_id="dup-2")),
    ]
    produce(broker.bootstrap_servers, topic, [*sent, sent[0]], partition=0)
    stats = consume_into(db_path, broker.bootstrap_servers, topic)
    assert (stats.appended, stats.duplicates, stats.quarantined) == (1, 1, 2)
    rows = listed(db_path, "--reason", "conflicting duplicate of seq 0")
    assert [r["source"] for r in rows] == [f"kafka:{topic}/0/1", f"kafka:{topic}/0/2"]
    export_dir = tmp_path / "replay"
    assert invoke("quarantine", "--db", str(db_path), "--export", str(export_dir)).exit_code == 0
    manifest = [json.loads(line) for line in (export_dir / "index.jsonl").read_text().splitlines()]
    assert [(export_dir / m["name"]).read_bytes() for m in manifest] == sent[1:]


# -- the library behind it ----------------------------------------------------------------------


def test_library_lists_and_exports_on_a_read_only_store(ledger_file: Path, tmp_path: Path) -> None:
    with Store.open(ledger_file, read_only=True) as store:
        rows = quarantined(store.con, reason="Magic", since=parse_time("2000-01-01"))
        (row,) = rows
        assert (row.number, row.source, row.size, row.head) == (
            5,
            "kafka:audit/0/7",
            261,
            LONG[:32],
        )
        assert file_name(row) == "000005-kafka_audit_0_7.bin"
        paths = export(store.con, rows, tmp_path / "x")
        assert paths == [tmp_path / "x" / "000005-kafka_audit_0_7.bin"]
        assert paths[0].read_bytes() == LONG
        with pytest.raises(ConfigError, match="already exist"):
            export(store.con, rows, tmp_path / "x")
        assert export(store.con, [], tmp_path / "empty") == []
        assert (tmp_path / "empty" / "index.jsonl").read_text() == ""


def test_parse_time() -> None:
    assert parse_time("2026-03-23T10:00:00Z") == datetime(2026, 3, 23, 10, tzinfo=UTC)
    assert parse_time("2026-03-23T12:00:00+02:00") == datetime(2026, 3, 23, 10, tzinfo=UTC)
    assert parse_time("2026-03-23") == datetime(2026, 3, 23, tzinfo=UTC)
    with pytest.raises(ConfigError, match="not an ISO 8601 time"):
        parse_time("23/03/2026")
