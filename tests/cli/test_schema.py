"""`ledger schema show|fingerprint`: the wire contract for producers in other languages."""

from __future__ import annotations

import json

import fastavro
from click.testing import CliRunner

from ledger.cli import cli
from ledger.contract.codec import current_schema, default_codec, schema_fingerprint


def test_schema_show_is_a_parseable_avro_schema() -> None:
    result = CliRunner().invoke(cli, ["schema", "show"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    parsed = fastavro.parse_schema(schema)
    assert parsed["name"] == "ledger.v1.AuditEvent"
    assert schema == current_schema()
    assert [fld["name"] for fld in schema["fields"]] == [
        "event_id",
        "type",
        "occurred_at",
        "producer",
        "trace_id",
        "span_id",
        "data",
    ]
    assert len(schema["fields"][-1]["type"]) == 8
    assert schema_fingerprint(schema) == default_codec().fingerprint


def test_schema_fingerprint() -> None:
    result = CliRunner().invoke(cli, ["schema", "fingerprint"])
    assert result.exit_code == 0
    assert result.stdout.strip() == default_codec().fingerprint.hex()
    as_json = json.loads(CliRunner().invoke(cli, ["schema", "fingerprint", "--json"]).stdout)
    assert as_json["fingerprint"] == default_codec().fingerprint.hex()
    assert as_json["known"][0] == as_json["fingerprint"]


def test_help_has_examples() -> None:
    for args in (["schema", "show", "--help"], ["schema", "fingerprint", "--help"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0 and "Example" in result.stdout
