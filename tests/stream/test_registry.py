"""Schema ids resolved for the consumer: the REST client against a registry-compatible HTTP
server on 127.0.0.1, the cache file, a directory of ID.avsc files, and the consumer's waits.

No Schema Registry server can be installed here from the package registries (Confluent's and
Apicurio's are Java services outside them; Karapace is not on PyPI), so `Registry` below is a
small HTTP server answering `GET /schemas/ids/{id}` as the Confluent REST API does (the body
`{"schema": "..."}`, 404 with error_code 40403, 401 without the right basic-auth header).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import json
import logging
import re
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fastavro
import pytest

from ledger.config import load
from ledger.contract import events
from ledger.contract.codec import Codec, current_schema, default_codec
from ledger.errors import ConfigError
from ledger.integrity.verify import verify_store
from ledger.store import Store
from ledger.store.schemas import StoredSchema, stored_schemas
from ledger.stream.broker import EmbeddedBroker
from ledger.stream.registry import (
    RegistryClient,
    SchemaDir,
    SchemaIdUnknown,
    SchemaRegistryError,
    SchemaResolver,
    SchemaSourceUnavailable,
    schema_source,
)
from tests import factories as f
from tests.contract.test_codec import OLD_DATUM, older_schema
from tests.kafkautil import consume_into, produce

USER, PASSWORD = "ledger", "s3cret-pw"
SCHEMA = json.dumps(current_schema())


class Registry:
    """A registry-compatible HTTP server on 127.0.0.1 (see the module docstring).

    `schemas` maps an id to the schema text, or to the whole answer (to give a schemaType or
    references); `status`, when set, is answered to every request instead."""

    def __init__(self, schemas: dict[int, Any]) -> None:
        self.schemas = schemas
        self.status: int | None = None
        self.requests: list[tuple[str, str | None, str | None]] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                auth = self.headers.get("Authorization")
                registry.requests.append((self.path, auth, self.headers.get("Accept")))
                token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if registry.status is not None:
                    self._answer(registry.status, {"error_code": 50001, "message": "down"})
                elif auth != f"Basic {token}":
                    self._answer(401, {"error_code": 401, "message": "Unauthorized"})
                elif not (found := re.fullmatch(r"/schemas/ids/(\d+)", self.path)):
                    self._answer(404, {"error_code": 404, "message": "HTTP 404 Not Found"})
                elif (schema_id := int(found.group(1))) not in registry.schemas:
                    self._answer(
                        404, {"error_code": 40403, "message": f"Schema {schema_id} not found"}
                    )
                else:
                    held = registry.schemas[schema_id]
                    self._answer(200, held if isinstance(held, dict) else {"schema": held})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def registry() -> Iterator[Registry]:
    server = Registry({1: SCHEMA, 2: json.dumps(older_schema())})
    yield server
    server.close()


def client(registry: Registry, password: str = PASSWORD) -> RegistryClient:
    return RegistryClient(registry.url, USER, password, timeout=5)


# -- the REST client -------------------------------------------------------------------------


def test_the_client_gets_a_schema_by_id_with_basic_auth(registry: Registry) -> None:
    assert client(registry).fetch(1) == StoredSchema(1, SCHEMA, f"registry:{registry.url}")
    path, auth, accept = registry.requests[-1]
    assert path == "/schemas/ids/1" and auth is not None and auth.startswith("Basic ")
    assert accept is not None and "application/vnd.schemaregistry.v1+json" in accept


def test_an_id_the_registry_does_not_have_is_unknown_naming_it(registry: Registry) -> None:
    with pytest.raises(SchemaIdUnknown) as caught:
        client(registry).fetch(99)
    assert str(caught.value) == (
        f"unknown schema id 99 (Confluent wire format): not found at schema registry "
        f"{registry.url} (HTTP 404: 40403 Schema 99 not found)"
    )


def test_refused_credentials_end_the_run_and_never_show_the_password(
    registry: Registry,
) -> None:
    with pytest.raises(SchemaRegistryError) as caught:
        client(registry, "wrong-pw").fetch(1)
    assert caught.value.exit_code == 4 and "refused the credentials (HTTP 401" in str(caught.value)
    assert "wrong-pw" not in str(caught.value)
    with pytest.raises(SchemaRegistryError):
        RegistryClient(registry.url).fetch(1)  # no credentials at all


def test_a_registry_that_cannot_answer_is_worth_waiting_for(registry: Registry) -> None:
    registry.status = 503
    with pytest.raises(SchemaSourceUnavailable, match="HTTP 503: 50001 down"):
        client(registry).fetch(1)
    url = registry.url
    registry.close()
    with pytest.raises(SchemaSourceUnavailable):
        RegistryClient(url, USER, PASSWORD, timeout=2).fetch(1)


def test_what_the_ledger_cannot_use_is_refused_naming_the_id(registry: Registry) -> None:
    registry.schemas[3] = {"schema": "syntax = 'proto3';", "schemaType": "PROTOBUF"}
    registry.schemas[4] = {"schema": SCHEMA, "references": [{"name": "other.avsc"}]}
    with pytest.raises(SchemaIdUnknown, match=r"schema id 3 at .* is a PROTOBUF schema, not Avro"):
        client(registry).fetch(3)
    with pytest.raises(SchemaIdUnknown, match=r"schema id 4 .*references other schemas"):
        client(registry).fetch(4)


def test_ids_once_fetched_resolve_offline_from_the_cache_file(
    registry: Registry, tmp_path: Path
) -> None:
    cache = tmp_path / "cache.json"
    settings = load(
        schema_registry=registry.url + "/",
        schema_registry_username=USER,
        schema_registry_password=PASSWORD,
        schema_cache=str(cache),
    )
    assert schema_source(settings).fetch(1).schema == SCHEMA  # type: ignore[union-attr]
    assert json.loads(cache.read_text())["registries"] == {registry.url: {"1": SCHEMA}}
    registry.close()
    offline = schema_source(settings)
    assert offline is not None
    assert offline.fetch(1) == StoredSchema(1, SCHEMA, f"registry:{registry.url}")
    with pytest.raises(SchemaSourceUnavailable):
        offline.fetch(2)


def test_the_password_comes_from_the_environment_or_a_file_and_is_never_shown(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_SCHEMA_REGISTRY_PASSWORD", PASSWORD)
    settings = load(schema_registry=registry.url, schema_registry_username=USER)
    assert PASSWORD not in repr(settings)
    assert RegistryClient.from_settings(settings).fetch(1).schema == SCHEMA
    monkeypatch.delenv("LEDGER_SCHEMA_REGISTRY_PASSWORD")
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    settings = load(
        schema_registry=registry.url,
        schema_registry_username=USER,
        schema_registry_password_file=str(secret),
    )
    assert RegistryClient.from_settings(settings).fetch(1).schema == SCHEMA
    with pytest.raises(ConfigError, match="credentials in the URL") as caught:
        load(schema_registry=f"http://{USER}:{PASSWORD}@127.0.0.1:1")
    assert PASSWORD not in str(caught.value)


# -- a directory of ID.avsc files ---------------------------------------------------------------


def test_a_schema_directory_holds_exported_schemas(tmp_path: Path) -> None:
    (tmp_path / "1.avsc").write_text(SCHEMA)
    (tmp_path / "2.avsc").write_text(json.dumps({"schema": SCHEMA, "schemaType": "AVRO"}))
    (tmp_path / "3.avsc").write_text("{not json")
    source = SchemaDir(tmp_path)
    assert source.fetch(1) == StoredSchema(1, SCHEMA, f"file:{tmp_path / '1.avsc'}")
    assert source.fetch(2).schema == SCHEMA  # the registry's answer, saved as it came
    with pytest.raises(SchemaIdUnknown, match=r"schema id 3: .*3\.avsc is not JSON"):
        source.fetch(3)
    with pytest.raises(SchemaIdUnknown, match=r"unknown schema id 4 .*no 4\.avsc in --schema-dir"):
        source.fetch(4)
    with pytest.raises(ConfigError, match="not a directory"):
        SchemaDir(tmp_path / "1.avsc")
    with pytest.raises(ConfigError, match="exclusive"):
        schema_source(load(schema_registry="http://127.0.0.1:1", schema_dir=str(tmp_path)))


# -- the resolver -------------------------------------------------------------------------------


class FlakySource:
    """A source that cannot answer `failures` times, then answers from `schemas`."""

    name = "flaky source"

    def __init__(self, schemas: dict[int, str], failures: int = 0) -> None:
        self.schemas = schemas
        self.failures = failures
        self.asked: list[int] = []

    def fetch(self, schema_id: int) -> StoredSchema:
        self.asked.append(schema_id)
        if self.failures:
            self.failures -= 1
            raise SchemaSourceUnavailable("connection refused")
        if schema_id not in self.schemas:
            raise SchemaIdUnknown(f"unknown schema id {schema_id}: not in the flaky source")
        return StoredSchema(schema_id, self.schemas[schema_id], "test:flaky")


def fetch_of(*values: bytes) -> list[bytes | None]:
    """The values of one fetch."""
    return list(values)


def framed(schema_id: int, body: bytes = b"") -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def test_the_resolver_registers_refuses_and_remembers(caplog: pytest.LogCaptureFixture) -> None:
    order = json.dumps({"type": "record", "name": "Order", "fields": []})
    source = FlakySource({1: SCHEMA, 5: order})
    codec = Codec()
    resolver = SchemaResolver(codec, source)
    batch = fetch_of(framed(1), framed(5), framed(9), b"\xc3\x01" + bytes(8), framed(1))
    with caplog.at_level(logging.INFO, "ledger.consume"):
        assert asyncio.run(resolver.prepare(batch, asyncio.Event()))
    assert codec.knows_id(1) and resolver.resolved == {1: StoredSchema(1, SCHEMA, "test:flaky")}
    refused = codec.refused_ids()
    assert refused[9] == "unknown schema id 9: not in the flaky source"
    assert refused[5].startswith("schema id 5: cannot be read as ledger.v1.AuditEvent")
    assert refused[5].endswith("(test:flaky)")
    assert "its events are quarantined" in caplog.text
    assert sorted(source.asked) == [1, 5, 9]
    asyncio.run(resolver.prepare(batch, asyncio.Event()))
    assert sorted(source.asked) == [1, 5, 9]  # known, unusable and recently missing: not again


def test_an_unavailable_source_is_waited_for(caplog: pytest.LogCaptureFixture) -> None:
    source = FlakySource({1: SCHEMA}, failures=2)
    resolver = SchemaResolver(Codec(), source)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "ledger.consume"):
        assert asyncio.run(resolver.prepare(fetch_of(framed(1)), asyncio.Event()))
    assert time.monotonic() - started >= 1.4  # 0.5 s, then 1 s
    assert resolver.codec.knows_id(1) and source.asked == [1, 1, 1]
    assert caplog.text.count("flaky source unreachable (connection refused): schema id 1") == 2


def test_a_stop_while_waiting_leaves_the_batch_untaken() -> None:
    async def scenario() -> bool:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.2, stop.set)
        return await SchemaResolver(Codec(), FlakySource({}, failures=99)).prepare(
            fetch_of(framed(1)), stop
        )

    assert asyncio.run(scenario()) is False


def test_a_stop_does_not_wait_for_a_registry_that_does_not_answer() -> None:
    """SIGTERM while a request hangs (a registry that accepts and never answers): the stop is
    not held up for the request's timeout, and the abandoned request ends on its own."""

    class Hanging:
        name = "hanging registry"

        def fetch(self, schema_id: int) -> StoredSchema:
            time.sleep(3)
            raise SchemaSourceUnavailable("timed out")

    async def scenario() -> bool:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.2, stop.set)
        return await SchemaResolver(Codec(), Hanging()).prepare(fetch_of(framed(1)), stop)

    started = time.monotonic()
    assert asyncio.run(scenario()) is False
    assert time.monotonic() - started < 1.5


def test_until_idle_bounds_the_wait() -> None:
    resolver = SchemaResolver(Codec(), FlakySource({}, failures=99))
    started = time.monotonic()
    with pytest.raises(SchemaRegistryError, match=r"did not answer for 1s \(--until-idle 1\)"):
        asyncio.run(resolver.prepare(fetch_of(framed(1)), asyncio.Event(), until_idle=1))
    assert time.monotonic() - started < 3


# -- the consumer, against the real broker ------------------------------------------------------


def confluent_value(schema_id: int, ev: dict[str, Any]) -> bytes:
    record = events.to_record(events.parse_event(ev))
    return framed(schema_id, default_codec().encode(record)[10:])


def older_value(schema_id: int) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(copy.deepcopy(older_schema())), OLD_DATUM)
    return framed(schema_id, out.getvalue())


@pytest.mark.integration
def test_consume_resolves_ids_at_the_registry_and_the_ledger_keeps_them(
    broker: EmbeddedBroker, topic: str, db_path: Path, registry: Registry, tmp_path: Path
) -> None:
    evs = [f.principal("agent:a"), f.action("a-1", "agent:a"), f.action("a-2", "agent:a")]
    values = [confluent_value(1, evs[0]), older_value(2), confluent_value(1, evs[1])]
    values += [confluent_value(99, evs[2])]
    produce(broker.bootstrap_servers, topic, values, partition=0)
    settings = {
        "schema_registry": registry.url,
        "schema_registry_username": USER,
        "schema_registry_password": PASSWORD,
        "schema_cache": str(tmp_path / "cache.json"),
    }
    stats = consume_into(db_path, broker.bootstrap_servers, topic, **settings)
    assert (stats.appended, stats.quarantined) == (3, 1)
    with Store.open(db_path, read_only=True) as store:
        payloads = [r[0] for r in store.con.execute("SELECT payload FROM entries ORDER BY seq")
                    .fetchall()]  # fmt: skip
        assert payloads == values[:3]  # the bytes as received
        ((reason,),) = store.con.execute("SELECT reason FROM quarantine").fetchall()
        assert reason.startswith("unknown schema id 99 (Confluent wire format): not found at")
        assert {i: s.source for i, s in stored_schemas(store.con).items()} == {
            1: f"registry:{registry.url}",
            2: f"registry:{registry.url}",
        }
        assert verify_store(store).ok

    # the registry gone: ids the ledger holds need nothing; ids in the cache neither
    registry.close()
    more = [confluent_value(1, f.action("a-3", "agent:a")), older_value(2)]
    produce(broker.bootstrap_servers, topic, more, partition=1)
    stats = consume_into(db_path, broker.bootstrap_servers, topic, group="again", **settings)
    assert (stats.appended, stats.quarantined) == (1, 0)  # older_value is a repeat of old-1
    fresh = broker.create_topic(f"{topic}-fresh", partitions=1)
    produce(broker.bootstrap_servers, fresh, values[:3])
    stats = consume_into(tmp_path / "other.duckdb", broker.bootstrap_servers, fresh, **settings)
    assert (stats.appended, stats.quarantined) == (3, 0)
    # an id neither the ledger nor the cache holds waits for the registry: nothing is skipped
    with pytest.raises(SchemaRegistryError, match="schema id 99 waited to be resolved"):
        consume_into(tmp_path / "third.duckdb", broker.bootstrap_servers, topic, **settings)


@pytest.mark.integration
def test_an_unreachable_registry_holds_the_consumer_back_and_loses_nothing(
    broker: EmbeddedBroker,
    topic: str,
    db_path: Path,
    registry: Registry,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    values = [confluent_value(1, f.principal("agent:a")), confluent_value(1, f.retired("agent:a"))]
    produce(broker.bootstrap_servers, topic, values, partition=0)
    settings = {
        "schema_registry": registry.url,
        "schema_registry_username": USER,
        "schema_registry_password": PASSWORD,
        "schema_cache": str(tmp_path / "cache.json"),
    }
    registry.status = 503
    with pytest.raises(SchemaRegistryError, match=r"did not answer for 2s \(--until-idle 2\)"):
        consume_into(db_path, broker.bootstrap_servers, topic, until_idle=2, **settings)
    with Store.open(db_path, read_only=True) as store:
        assert store.counts() == {"entries": 0, "quarantined": 0} and store.offsets(topic) == {}

    threading.Timer(1.5, lambda: setattr(registry, "status", None)).start()
    with caplog.at_level(logging.WARNING, "ledger.consume"):
        stats = consume_into(db_path, broker.bootstrap_servers, topic, until_idle=5, **settings)
    assert (stats.appended, stats.quarantined) == (2, 0)
    assert "unreachable (HTTP 503: 50001 down): schema id 1 cannot be resolved" in caplog.text


# -- end to end: Confluent's own serializer, librdkafka, `ledger consume --schema-dir` ---------


SCHEMA_FILE = Path(__file__).parents[2] / "ledger" / "schemas" / "audit_event.avsc"


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _avro_datum(event: dict[str, Any]) -> dict[str, Any]:
    """A JSON-form event as the record AvroSerializer takes (fastavro's union tuple form),
    built from the published schema file, not with the ledger's codec."""
    raw = json.loads(SCHEMA_FILE.read_text())
    name = "".join(part.title() for part in event["type"].split("."))
    record = next(
        r for fl in raw["fields"] if fl["name"] == "data" for r in fl["type"] if r["name"] == name
    )
    body = dict(event["data"])
    for fld in record["fields"]:
        value = body.get(fld["name"])
        if isinstance(value, str) and "timestamp-micros" in json.dumps(fld["type"]):
            body[fld["name"]] = _when(value)
    return {
        "event_id": event["event_id"],
        "type": event["type"],
        "occurred_at": _when(event["occurred_at"]),
        "producer": "other-team",
        "trace_id": None,
        "span_id": None,
        "data": (f"{raw['namespace']}.{name}", body),
    }


@pytest.mark.integration
def test_confluent_serializer_values_enter_the_ledger_offline_and_verify(
    broker: EmbeddedBroker, topic: str, tmp_path: Path
) -> None:
    """Another team's service: confluent-kafka's AvroSerializer on a (mock) Schema Registry,
    librdkafka producing. Its schemas are exported as ID.avsc; `ledger consume --schema-dir`
    appends the exact bytes; `ledger verify` passes without the directory; ids the directory
    does not hold, or whose schema is not an AuditEvent the ledger reads, are quarantined."""
    from click.testing import CliRunner
    from confluent_kafka import Producer
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    from ledger.cli import cli

    registry = SchemaRegistryClient.new_client({"url": "mock://other-team"})
    serialize = AvroSerializer(registry, SCHEMA_FILE.read_text())
    value_of = SerializationContext(topic, MessageField.VALUE)
    evs = [f.principal("user:alice", kind="human")]
    evs += [f.granted(f"d-{i}", "user:alice", f"agent:{i}") for i in range(15)]
    evs += [f.action(f"a-{i}", f"agent:{i}", delegation=f"d-{i}") for i in range(15)]
    values = [serialize(_avro_datum(e), value_of) for e in evs]
    assert values is not None and all(v is not None and v[0] == 0 for v in values)
    known = int.from_bytes(values[0][1:5], "big")  # type: ignore[index]
    # a later version of the schema, registered but never exported; and another team's record
    evolved = json.loads(SCHEMA_FILE.read_text())
    evolved["fields"].append({"name": "region", "type": ["null", "string"], "default": None})
    unexported = AvroSerializer(registry, json.dumps(evolved))(
        _avro_datum(f.principal("agent:late")) | {"region": None},
        SerializationContext("x", MessageField.VALUE),
    )
    order = {"type": "record", "name": "Order", "fields": [{"name": "id", "type": "string"}]}
    foreign = AvroSerializer(registry, json.dumps(order))(
        {"id": "o-1"}, SerializationContext("orders", MessageField.VALUE)
    )
    assert unexported is not None and foreign is not None
    exported = tmp_path / "schemas"
    exported.mkdir()
    for value in (values[0], foreign):
        schema_id = int.from_bytes(value[1:5], "big")
        (exported / f"{schema_id}.avsc").write_text(registry.get_schema(schema_id).schema_str)

    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 20})
    for value in [*values, unexported, foreign]:
        producer.produce(topic, value=value, partition=0)
    assert producer.flush(30) == 0

    db = tmp_path / "ledger.duckdb"
    run = CliRunner().invoke(
        cli,
        ["consume", "-b", broker.bootstrap_servers, "--topic", topic, "--db", str(db),
         "--schema-dir", str(exported), "--until-idle", "1", "--json"],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    with Store.open(db, read_only=True) as store:
        rows = store.con.execute("SELECT payload FROM entries ORDER BY seq").fetchall()
        assert [r[0] for r in rows] == values  # the exact bytes the serializer wrote
        reasons = [r[0] for r in store.con.execute("SELECT reason FROM quarantine").fetchall()]
    unknown_id = int.from_bytes(unexported[1:5], "big")
    order_id = int.from_bytes(foreign[1:5], "big")
    assert len(reasons) == 2
    assert reasons[0].startswith(f"unknown schema id {unknown_id} (Confluent wire format)")
    assert reasons[1].startswith(f"schema id {order_id}: cannot be read as ledger.v1.AuditEvent")

    shutil.rmtree(exported)  # verify needs nothing but the file
    verdict = CliRunner().invoke(cli, ["verify", "--db", str(db), "--json"])
    assert verdict.exit_code == 0, verdict.output
    assert json.loads(verdict.output)["size"] == len(evs) and known > 0


def test_a_source_whose_stored_ids_mean_other_schemas_is_refused(tmp_path: Path) -> None:
    """The ledger read id 7 with schema A; a --schema-dir (or registry) where 7 is another
    schema (a migration, an export whose ids restart) must stop the consumer before any value
    naming 7 is read with the wrong schema. Same schema, or an id the source lacks: fine."""
    from ledger.contract.codec import current_schema
    from ledger.errors import ConfigError
    from ledger.stream.registry import check_stored_ids
    from tests.store.test_schemas import confluent_ledger

    db = tmp_path / "l.duckdb"
    confluent_ledger(db)  # id 7 stored with the current schema
    same, other, lacking = (tmp_path / n for n in ("same", "other", "lacking"))
    for d in (same, other, lacking):
        d.mkdir()
    (same / "7.avsc").write_text(json.dumps(current_schema(), indent=1))
    reordered = dict(current_schema())
    reordered["fields"] = list(reversed(reordered["fields"]))
    (other / "7.avsc").write_text(json.dumps(reordered))
    with Store.open(db, read_only=True) as store:
        check_stored_ids(store, SchemaDir(same))
        check_stored_ids(store, SchemaDir(lacking))
        with pytest.raises(ConfigError, match=r"schema id 7 means another schema at --schema-dir"):
            check_stored_ids(store, SchemaDir(other))
