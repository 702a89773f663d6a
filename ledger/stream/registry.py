"""Schema ids of the Confluent wire format, resolved for the consumer: a registry or a directory.

Most Kafka Avro producers (Confluent's serializers for Java, Python, Go, .NET, and the tools
built on them) write the Confluent wire format: 0x00, a 4-byte big-endian schema id, the Avro
body (Confluent Schema Registry documentation, "Wire format"). The id means something only to
the registry that assigned it, so before a fetch is decoded every id it names that the codec
does not know is resolved here, from one source:

- a Schema Registry's REST API, `GET {url}/schemas/ids/{id}` answering
  `{"schema": "<Avro schema JSON>", "schemaType": "AVRO"}` (Confluent Schema Registry API
  reference, "Schemas"; other registries offer the same API), with HTTP basic auth; what it
  answers is kept in a cache file, so an id once fetched resolves offline afterwards; or
- a directory of `ID.avsc` files exported from a registry (each the schema JSON, or the
  registry's whole answer for that id saved as it came).

Ids the ledger file already holds are never asked for again: the file keeps the schema of every
id its entries use (`ledger.store.schemas`) and its meaning of an id wins. An id the source does
not have, or whose schema is not an `AuditEvent` writer the ledger can read
(`Codec.register_id`), is refused with a reason naming the id, and its values are quarantined
with it; the consumer goes on. A source that cannot answer (registry unreachable, HTTP 5xx, a
timeout) is not a verdict on the id: the consumer waits, retrying with a capped backoff and
saying so, and appends nothing (and skips nothing) until it answers. Quarantining instead would
take every event of a new schema out of the chain for as long as the registry is down, to be
replayed by hand out of order. With `--until-idle N` the wait ends after N seconds with exit
code 4; credentials the registry refuses end the run at once, with exit code 4 as well.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import http.client
import json
import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ledger.config import Settings, secret
from ledger.contract.codec import Codec
from ledger.contract.framing import confluent_ids
from ledger.errors import CodecError, ConfigError, LedgerError
from ledger.store import Store
from ledger.store.schemas import StoredSchema, ledger_codec, stored_schemas
from ledger.stream.kafka_errors import EXIT_KAFKA

__all__ = [
    "MISSING_RETRY_S",
    "REGISTRY_TIMEOUT_S",
    "RegistryClient",
    "SchemaCache",
    "SchemaDir",
    "SchemaIdUnknown",
    "SchemaRegistryError",
    "SchemaResolver",
    "SchemaSource",
    "SchemaSourceUnavailable",
    "check_stored_ids",
    "default_cache_path",
    "schema_resolution",
    "schema_source",
]

log = logging.getLogger("ledger.consume")

#: one registry request waits at most this long
REGISTRY_TIMEOUT_S = 10.0
#: an id the source did not have is asked for again after this long (a producer registers a
#: schema before it writes with it, so a miss is rarely temporary; but a directory can grow)
MISSING_RETRY_S = 30.0
#: longest pause between attempts while the source cannot answer
RETRY_MAX_S = 30.0
#: an answer larger than this is no schema
MAX_ANSWER_BYTES = 16 * 1024 * 1024
_ACCEPT = (
    "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, application/json"
)


class SchemaIdUnknown(LedgerError):
    """The source does not have the id, or has something the ledger cannot use for it (not
    Avro, references to other schemas, not JSON). Values naming the id are quarantined with
    this message, which names the id."""


class SchemaSourceUnavailable(LedgerError):
    """The source cannot answer now (unreachable, HTTP 5xx or 429, a timeout): worth waiting."""


class SchemaRegistryError(LedgerError):
    """A failure of schema resolution no wait cures: credentials or a TLS certificate the
    registry refuses, or, with `--until-idle`, a source silent for that long. `ledger consume`
    stops with exit code 4; nothing was appended past the last committed batch."""

    exit_code = EXIT_KAFKA


class SchemaSource(Protocol):
    """Where schema ids are resolved. `fetch` runs on a worker thread."""

    #: how the source is named in logs ("schema registry http://...", "--schema-dir DIR")
    name: str

    def fetch(self, schema_id: int) -> StoredSchema:
        """The writer schema of `schema_id`. Raises `SchemaIdUnknown`,
        `SchemaSourceUnavailable` or `SchemaRegistryError`."""
        ...


def _avro_text(text: str, schema_id: int, where: str) -> str:
    """The Avro schema JSON of `text`: the schema itself, or a registry's answer for the id
    (`{"schema": "...", ...}`) saved as it came. Raises `SchemaIdUnknown`."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise SchemaIdUnknown(f"schema id {schema_id}: {where} is not JSON ({exc})") from exc
    if isinstance(doc, dict) and isinstance(doc.get("schema"), str) and "type" not in doc:
        return _registry_schema(doc, schema_id, where)
    return text


def _registry_schema(answer: Mapping[str, Any], schema_id: int, where: str) -> str:
    """The Avro schema text of a registry's answer for `schema_id` (Confluent REST API, `GET
    /schemas/ids/{id}`; `schemaType` absent means AVRO). Raises `SchemaIdUnknown`."""
    kind = answer.get("schemaType") or "AVRO"
    if kind != "AVRO":
        raise SchemaIdUnknown(f"schema id {schema_id} at {where} is a {kind} schema, not Avro")
    references = answer.get("references") or []
    if references:
        names = ", ".join(str(r.get("name", r)) for r in references if isinstance(r, dict))
        raise SchemaIdUnknown(
            f"schema id {schema_id} at {where} references other schemas ({names or references}),"
            " which the ledger does not resolve"
        )
    text = answer["schema"]
    try:
        json.loads(text)
    except ValueError as exc:
        raise SchemaIdUnknown(
            f"schema id {schema_id} at {where}: the schema is not JSON ({exc})"
        ) from exc
    return str(text)


class SchemaDir:
    """Ids resolved offline from `DIR/ID.avsc` files exported from a registry, e.g.
    `curl -u USER:PW URL/schemas/ids/7 > DIR/7.avsc` (the answer as it comes) or the schema
    JSON alone."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Raises `ConfigError` when `path` is not a directory."""
        self.path = Path(path)
        if not self.path.is_dir():
            raise ConfigError(f"--schema-dir {self.path}: not a directory")
        self.name = f"--schema-dir {self.path}"

    def fetch(self, schema_id: int) -> StoredSchema:
        file = self.path / f"{schema_id}.avsc"
        try:
            text = file.read_text("utf-8")
        except FileNotFoundError as exc:
            raise SchemaIdUnknown(
                f"unknown schema id {schema_id} (Confluent wire format): no {file.name} in "
                f"--schema-dir {self.path}"
            ) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise SchemaIdUnknown(f"schema id {schema_id}: cannot read {file}: {exc}") from exc
        return StoredSchema(schema_id, _avro_text(text, schema_id, str(file)), f"file:{file}")


class RegistryClient:
    """`GET {url}/schemas/ids/{id}` of a Schema Registry's REST API, with the standard
    library's HTTP client (the package has no HTTP dependency; one request per new id).

    Basic auth when `username` is given; the password is sent only to `url` itself (not
    along a redirect) and never logged. `cafile` verifies an https registry (default: the
    system's CAs)."""

    def __init__(
        self,
        url: str,
        username: str | None = None,
        password: str | None = None,
        cafile: str | None = None,
        timeout: float = REGISTRY_TIMEOUT_S,
    ) -> None:
        """Raises `ConfigError` for a CA file that cannot be read."""
        self.url = url.rstrip("/")
        self.name = f"schema registry {self.url}"
        self.timeout = timeout
        self._auth: str | None = None
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
            self._auth = f"Basic {token}"
        handlers: list[urllib.request.BaseHandler] = []
        if self.url.lower().startswith("https:"):
            try:
                context = ssl.create_default_context(cafile=cafile)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"--schema-registry-cafile: {exc}") from exc
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)

    @classmethod
    def from_settings(cls, settings: Settings) -> RegistryClient:
        """The client of `settings.schema_registry`, its user, password (`SecretStr`, or its
        file, read here) and CA file. Raises `ConfigError`."""
        assert settings.schema_registry is not None
        return cls(
            settings.schema_registry,
            settings.schema_registry_username,
            secret(
                settings.schema_registry_password,
                settings.schema_registry_password_file,
                "--schema-registry-password-file",
            ),
            settings.schema_registry_cafile,
        )

    def fetch(self, schema_id: int) -> StoredSchema:
        request = urllib.request.Request(  # noqa: S310 (the URL was checked: http or https)
            f"{self.url}/schemas/ids/{schema_id}",
            headers={"Accept": _ACCEPT, "User-Agent": "agent-ledger"},
        )
        if self._auth is not None:
            request.add_unredirected_header("Authorization", self._auth)
        try:
            with self._opener.open(request, timeout=self.timeout) as answer:
                raw = answer.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise self._refusal(schema_id, exc.code, _detail(exc)) from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLCertVerificationError):
                raise SchemaRegistryError(
                    f"{self.name}: TLS certificate verification failed ({exc.reason}); check "
                    "--schema-registry-cafile"
                ) from exc
            raise SchemaSourceUnavailable(str(exc.reason) or type(exc).__name__) from exc
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, bad answers
            raise SchemaSourceUnavailable(str(exc) or type(exc).__name__) from exc
        if len(raw) > MAX_ANSWER_BYTES:
            raise SchemaIdUnknown(f"schema id {schema_id}: {self.name} answered over 16 MiB")
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise SchemaSourceUnavailable(
                f"answered something that is not JSON for schema id {schema_id} (is "
                f"{self.url} a Schema Registry?)"
            ) from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("schema"), str):
            raise SchemaSourceUnavailable(
                f"answered JSON without a schema for schema id {schema_id} (is {self.url} a "
                "Schema Registry?)"
            )
        text = _registry_schema(doc, schema_id, self.name)
        return StoredSchema(schema_id, text, f"registry:{self.url}")

    def _refusal(self, schema_id: int, status: int, detail: str) -> LedgerError:
        """What an HTTP error status means for the consumer (Confluent REST API errors: 404
        with error_code 40403 is "Schema not found")."""
        if status == 404:
            return SchemaIdUnknown(
                f"unknown schema id {schema_id} (Confluent wire format): not found at "
                f"{self.name} (HTTP 404{detail})"
            )
        if status in (401, 403):
            return SchemaRegistryError(
                f"{self.name} refused the credentials (HTTP {status}{detail}): check "
                "--schema-registry-username and LEDGER_SCHEMA_REGISTRY_PASSWORD / "
                "--schema-registry-password-file"
            )
        if status in (408, 425, 429) or status >= 500:
            return SchemaSourceUnavailable(f"HTTP {status}{detail}")
        return SchemaIdUnknown(f"schema id {schema_id}: {self.name} answered HTTP {status}{detail}")


def _detail(exc: urllib.error.HTTPError) -> str:
    """`: 40403 Schema 7 not found` from a registry's error body, when it has one."""
    with contextlib.suppress(Exception):
        doc = json.loads(exc.read(64 * 1024))
        if isinstance(doc, dict) and doc.get("message"):
            code = doc.get("error_code")
            return f": {code} {doc['message']}" if code else f": {doc['message']}"
    return ""


def default_cache_path(url: str) -> Path:
    """`$XDG_CACHE_HOME/agent-ledger/schema-registry-<16 hex of SHA-256(url)>.json` (else
    `~/.cache/...`): one cache per registry, since an id means something only to its own."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return base / "agent-ledger" / f"schema-registry-{digest}.json"


class SchemaCache:
    """What a registry answered, by id, in one JSON file: `{"format": 1, "registries": {URL:
    {"7": "<schema>"}}}`, so ids once fetched resolve with the registry unreachable.

    Registry ids are immutable, so an entry never expires. The file is rewritten whole (a
    temporary file, then a rename), so a crash leaves the old one; two consumers writing it at
    once can lose an entry, which is fetched again. A cache that cannot be read is said once
    and started afresh; one that cannot be written is said and the id still resolves."""

    def __init__(self, path: str | os.PathLike[str], url: str) -> None:
        self.path = Path(path)
        self.url = url
        self._all = self._read()
        held = self._all["registries"].get(url)
        self._ids: dict[str, str] = dict(held) if isinstance(held, dict) else {}

    def _read(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return {"format": 1, "registries": {}}
        except (OSError, ValueError) as exc:
            log.warning("schema cache %s unreadable (%s); starting it afresh", self.path, exc)
            return {"format": 1, "registries": {}}
        if not isinstance(doc, dict) or not isinstance(doc.get("registries"), dict):
            log.warning("schema cache %s is not a schema cache; starting it afresh", self.path)
            return {"format": 1, "registries": {}}
        return doc

    def get(self, schema_id: int) -> str | None:
        return self._ids.get(str(schema_id))

    def put(self, schema_id: int, schema: str) -> None:
        self._ids[str(schema_id)] = schema
        self._all["registries"][self.url] = self._ids
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self._all, indent=1, sort_keys=True), "utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("schema cache %s not written (%s)", self.path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()


class _CachedRegistry:
    """A registry behind its cache file: the cache answers first, the registry fills it."""

    def __init__(self, client: RegistryClient, cache: SchemaCache) -> None:
        self.client = client
        self.cache = cache
        self.name = client.name

    def fetch(self, schema_id: int) -> StoredSchema:
        held = self.cache.get(schema_id)
        if held is not None:
            return StoredSchema(schema_id, held, f"registry:{self.client.url}")
        found = self.client.fetch(schema_id)
        self.cache.put(schema_id, found.schema)
        return found


def schema_source(settings: Settings) -> SchemaSource | None:
    """The source `settings` name (`schema_registry` with its cache, or `schema_dir`), or None.
    Raises `ConfigError` when both are given or one cannot be used."""
    if settings.schema_registry and settings.schema_dir:
        raise ConfigError(
            "--schema-registry and --schema-dir are exclusive: resolve schema ids from one "
            "registry, or from a directory exported from it"
        )
    if settings.schema_dir:
        return SchemaDir(settings.schema_dir)
    if settings.schema_registry:
        url = settings.schema_registry
        cache = SchemaCache(settings.schema_cache or default_cache_path(url), url)
        return _CachedRegistry(RegistryClient.from_settings(settings), cache)
    return None


class SchemaResolver:
    """Resolves, before a fetch is decoded, the schema ids its values name that `codec` does
    not know, and registers them on it (see the module docstring for what each outcome does).

    `resolved` holds the schemas resolved in this process, by id: the consumer hands them to
    every append, and the store keeps those it does not hold yet with the entries."""

    def __init__(self, codec: Codec, source: SchemaSource) -> None:
        self.codec = codec
        self.source = source
        self.resolved: dict[int, StoredSchema] = {}
        #: ids the source did not have, and when it last said so
        self._missing: dict[int, float] = {}
        #: ids whose schema the ledger cannot use: never asked for again in this process; ids
        #: the codec refuses from the start (a schema the file holds that is not usable) too,
        #: since the file's meaning of an id wins
        self._unusable: set[int] = set(codec.refused_ids())

    def wanted(self, values: Iterable[bytes | None]) -> set[int]:
        """The ids among `values` to resolve now."""
        ids = confluent_ids(values)
        if not ids:
            return ids
        now = time.monotonic()
        return {
            i
            for i in ids
            if not self.codec.knows_id(i)
            and i not in self._unusable
            and now - self._missing.get(i, -MISSING_RETRY_S) >= MISSING_RETRY_S
        }

    async def prepare(
        self,
        values: Sequence[bytes | None],
        stop: asyncio.Event,
        until_idle: float | None = None,
    ) -> bool:
        """Resolve the ids that `values` (one fetch, about to be decoded) name. Returns False
        when `stop` was set while waiting for the source: the fetch must then not be taken
        (nothing of it is appended, no offset moves in the ledger). Raises
        `SchemaRegistryError`."""
        wanted = self.wanted(values)
        for schema_id in sorted(wanted):
            if not await self._resolve(schema_id, stop, until_idle):
                return False
        return True

    async def _resolve(self, schema_id: int, stop: asyncio.Event, until_idle: float | None) -> bool:
        backoff = 0.5
        since: float | None = None
        while True:
            fetch = _in_thread(self.source.fetch, schema_id)
            stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
            waiting: set[asyncio.Future[Any]] = {fetch, stopping}
            try:
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if not fetch.done():  # a stop does not wait for a registry that does not answer
                return False
            try:
                found = fetch.result()
                break
            except SchemaIdUnknown as exc:
                self._missing[schema_id] = time.monotonic()
                self._refuse(schema_id, str(exc))
                return True
            except SchemaSourceUnavailable as exc:
                now = time.monotonic()
                since = since if since is not None else now
                waited = now - since
                if until_idle is not None and waited >= until_idle:
                    raise SchemaRegistryError(
                        f"{self.source.name} did not answer for {waited:.0f}s (--until-idle "
                        f"{until_idle:g}) while schema id {schema_id} waited to be resolved "
                        f"({exc}); nothing was lost: the next run resumes from the offsets in "
                        "the ledger"
                    ) from exc
                wait = (
                    backoff if until_idle is None else max(0.05, min(backoff, until_idle - waited))
                )
                log.warning(
                    "%s unreachable (%s): schema id %d cannot be resolved, so nothing is "
                    "appended (or skipped) until it answers; retrying in %.1fs",
                    self.source.name,
                    exc,
                    schema_id,
                    wait,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                if stop.is_set():
                    return False
                backoff = min(backoff * 2, RETRY_MAX_S)
        try:
            self.codec.register_id(schema_id, json.loads(found.schema))
        except (CodecError, ValueError) as exc:
            self._unusable.add(schema_id)
            self._refuse(schema_id, f"{exc} ({found.source})")
            return True
        self._missing.pop(schema_id, None)
        self.resolved[schema_id] = found
        log.info("schema id %d resolved from %s", schema_id, found.source)
        return True

    def _refuse(self, schema_id: int, reason: str) -> None:
        log.warning("%s; its events are quarantined", reason)
        self.codec.refuse_id(schema_id, reason)


def _in_thread(call: Callable[[int], StoredSchema], schema_id: int) -> asyncio.Future[StoredSchema]:
    """`call(schema_id)` on a daemon thread of its own, as a future of the running loop. Not an
    executor: the loop joins its executor's threads when it closes, so a stop would wait for a
    registry that does not answer (up to `REGISTRY_TIMEOUT_S`)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[StoredSchema] = loop.create_future()

    def settle(result: StoredSchema | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            assert result is not None
            future.set_result(result)

    def run() -> None:
        try:
            result, error = call(schema_id), None
        except BaseException as exc:  # handed to the loop, raised by the awaiting task
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="ledger-schema-fetch", daemon=True).start()
    return future


def schema_resolution(
    store: Store, settings: Settings, codec: Codec | None = None
) -> tuple[Codec, SchemaResolver | None]:
    """The consumer's codec (`codec`, default the shipped one, with the writer schemas the
    ledger keeps by id) and, when `settings` name a registry or a directory, the resolver that
    registers new ids on it (a codec of its own, never a caller's or the shared one). Raises
    `ConfigError` (`schema_source`)."""
    source = schema_source(settings)
    if source is not None:
        check_stored_ids(store, source)
    out = ledger_codec(store.con, codec, fresh=source is not None)
    return out, (SchemaResolver(out, source) if source is not None else None)


def check_stored_ids(store: Store, source: SchemaSource) -> None:
    """Every schema id the ledger already stored must mean the same schema at `source`: the
    ledger reads an id with the schema it stored, so a source whose ids mean other schemas
    (another registry, an export whose ids restart at 1) would have new values read with the
    wrong schema. Raises `ConfigError` naming the id and both sources. An id the source does
    not have is fine (the stored schema reads it); one it cannot answer for now is logged and
    left to the stored schema."""
    for schema_id, row in sorted(stored_schemas(store.con).items()):
        try:
            there = source.fetch(schema_id)
        except SchemaIdUnknown:
            continue
        except SchemaSourceUnavailable as exc:
            log.warning("cannot compare stored schema id %d with %s now: %s", schema_id,
                        source.name, exc)  # fmt: skip
            continue
        if _parsed(there.schema) != _parsed(row.schema):
            raise ConfigError(
                f"schema id {schema_id} means another schema at {source.name} than the one this "
                f"ledger stored for it (from {row.source}): values naming it would be read with "
                "the wrong schema; point the consumer at the schema source the ledger was "
                "written with"
            )


def _parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
