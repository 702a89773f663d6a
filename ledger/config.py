"""All settings in one place: flags override `LEDGER_*` environment variables override the
config file (`LEDGER_CONFIG` or `--config`, else `./ledger.toml` when present) overrides
defaults."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ledger.errors import ConfigError

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_BOOTSTRAP",
    "DEFAULT_DB",
    "DEFAULT_GROUP",
    "DEFAULT_TOPIC",
    "FLAGS",
    "Settings",
    "configured",
    "load",
    "root_authority_ids",
    "secret",
]

DEFAULT_DB = "ledger.duckdb"
DEFAULT_TOPIC = "agent-audit-events"
DEFAULT_GROUP = "agent-ledger"
DEFAULT_BOOTSTRAP = "localhost:9092"
#: read when present in the working directory and no `LEDGER_CONFIG` names another
CONFIG_FILE = "ledger.toml"

#: Kafka's own rule for topic names (org.apache.kafka.common.internals.Topic.validate)
_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")
_SIZE = re.compile(r"\d+(\.\d+)?\s*([KMGT]i?B|B)", re.IGNORECASE)
#: the smallest `memory_limit` accepted: below it DuckDB fails the consumer's first append
MIN_MEMORY_LIMIT = 64 * 10**6


def secret(value: SecretStr | None, path: str | None, flag: str) -> str | None:
    """A password given itself (`value`, from the environment) or in a file (`path`, named by
    `flag` in errors), the file's content stripped; None for neither. Raises `ConfigError`
    when the file cannot be read."""
    if value is not None:
        return value.get_secret_value()
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{flag}: {exc}") from exc
    return None


def _bytes(size: str) -> float:
    """A size `_SIZE` matched, in bytes as DuckDB reads it (KB = 1000, KiB = 1024)."""
    match = _SIZE.fullmatch(size)
    if match is None:
        raise ValueError(size)
    unit: str = match.group(2).upper()
    power = "BKMGT".index(unit[0])
    scale: int = 1024**power if "I" in unit else 1000**power
    return float(size[: match.start(2)].strip()) * scale


class Settings(BaseSettings):
    """Environment-backed settings (prefix `LEDGER_`); secrets never appear in reprs or logs."""

    model_config = SettingsConfigDict(env_prefix="LEDGER_", extra="ignore", frozen=True)

    db: str = DEFAULT_DB
    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    topic: str = DEFAULT_TOPIC
    group: str = DEFAULT_GROUP
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # SASL password from a file instead (a mounted secret); read when connecting.
    sasl_password_file: str | None = None
    ssl_cafile: str | None = None
    # Mutual TLS: the client's certificate and private key (PEM files).
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    # Checkpoints: the private key file that signs them (`--key`, repeatable on the command
    # line: several keys sign together during a key handover).
    key: str | None = None
    # The log's origin (C2SP tlog-checkpoint): recorded once, when a ledger file is created
    # (the store reads LEDGER_ORIGIN then; default agent-ledger/<file stem>); given later, it
    # is only checked against the ledger's own, never used to rename the log.
    origin: str | None = None
    # Consumer group liveness; None = 1 s / 100 ms on loopback (the dev broker rejoins fast),
    # the aiokafka defaults 10 s / 3 s elsewhere. Real Kafka requires >= 6 s by default.
    session_timeout_ms: int | None = None
    heartbeat_interval_ms: int | None = None
    # Consumer: values in the Confluent wire format (0x00, 4-byte schema id, Avro body) name
    # their writer schema by id; it is resolved through a Schema Registry's REST API
    # (GET /schemas/ids/ID, HTTP basic auth), or offline from a directory of ID.avsc files
    # exported from it. Ids fetched from a registry are kept in a cache file (default under
    # ~/.cache/agent-ledger/, one per registry URL), so they resolve offline afterwards.
    schema_registry: str | None = None
    schema_registry_username: str | None = None
    schema_registry_password: SecretStr | None = None
    # the registry password from a file instead (a mounted secret); read when connecting
    schema_registry_password_file: str | None = None
    # CA bundle that verifies an https registry (default: the system's CAs)
    schema_registry_cafile: str | None = None
    schema_cache: str | None = None
    schema_dir: str | None = None
    # Consumer: read_committed skips the records of aborted Kafka transactions (and waits for
    # open ones); read_uncommitted takes every record as it is written.
    isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed"
    # Emitter: how record batches are compressed on the wire (the consumer reads all four).
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    # Consumer: DuckDB's memory limit for the ledger file it writes (its buffer pool and
    # caches; DuckDB's own default is 80 % of RAM, and a long-running consumer grew to fill it).
    memory_limit: str = "512MB"
    # Consumer: most events per DuckDB transaction (one `getmany`).
    batch_size: int = Field(default=10_000, ge=1)
    # Consumer: processes decoding messages beside it; None = 1 with two or more cores, else 0.
    decode_workers: int | None = Field(default=None, ge=0)
    # Authority rules: a chain longer than this is itself a finding (CHAIN_TOO_DEEP), and the
    # principals besides registered humans that may make root grants (comma-separated ids,
    # e.g. an IdP's service principal; ROOT_NOT_HUMAN otherwise).
    max_chain_depth: int = Field(default=32, ge=1)
    root_authorities: str = ""
    # Logging of the long-running commands (consume, broker): DEBUG, INFO, WARNING, ERROR.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Emitter: where events wait on disk while the broker is unreachable, and its size limit.
    # A directory holds one spool per destination (brokers + topic); None = the user's cache.
    spool: str | None = None
    spool_max_bytes: int = 256 * 1024 * 1024
    # Emitter: when emit() returns. "spool": once the event is written to the spool and
    # fsynced; "memory": at once, within a bounded loss window (README: durability modes).
    durability: Literal["spool", "memory"] = "spool"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _TomlFile(settings_cls)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("memory_limit")
    @classmethod
    def _size(cls, value: str) -> str:
        if not _SIZE.fullmatch(value.strip()):
            raise ValueError("not a size such as 512MB, 2GB or 1.5GiB")
        if _bytes(value.strip()) < MIN_MEMORY_LIMIT:
            raise ValueError("below 64MB, the least the consumer's DuckDB works in")
        return value.strip()

    @field_validator("schema_registry")
    @classmethod
    def _registry_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        url = value.strip().rstrip("/")
        scheme, _, rest = url.partition("://")
        if scheme.lower() not in ("http", "https") or not rest:
            raise ValueError("not an http:// or https:// URL")
        if "@" in rest.split("/", 1)[0]:
            raise ValueError(
                "credentials in the URL would show in logs and `ps`: give "
                "--schema-registry-username and LEDGER_SCHEMA_REGISTRY_PASSWORD "
                "(or --schema-registry-password-file) instead"
            )
        return url

    @field_validator("topic")
    @classmethod
    def _kafka_topic_name(cls, value: str) -> str:
        if not _TOPIC.fullmatch(value) or value in (".", ".."):
            raise ValueError(
                "not a Kafka topic name (1-249 of the characters a-z A-Z 0-9 . _ -, "
                "not '.' or '..')"
            )
        return value


class _TomlFile(PydanticBaseSettingsSource):
    """The config file: top-level keys named as the settings (`db = "audit.duckdb"`,
    `bootstrap_servers = "kafka:9092"`). A key that is no setting is an error, not ignored:
    a typo must not silently leave a default in force."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self.values = _read_config(settings_cls)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


def configured() -> dict[str, Any]:
    """The config file's settings as written (empty without a file); `ConfigError` for a
    file that cannot be read or names no setting."""
    return _read_config(Settings)


def _read_config(settings_cls: type[BaseSettings]) -> dict[str, Any]:
    named = os.environ.get("LEDGER_CONFIG")
    path = Path(named) if named else Path(CONFIG_FILE)
    if not named and not path.is_file():
        return {}
    try:
        values = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    unknown = sorted(set(values) - set(settings_cls.model_fields))
    if unknown:
        raise ConfigError(
            f"config file {path}: {', '.join(unknown)} is not a setting "
            f"(settings: {', '.join(sorted(settings_cls.model_fields))})"
        )
    return values


def root_authority_ids(settings: Settings) -> frozenset[str]:
    """The allow-listed root authorities of `settings.root_authorities` (comma-separated)."""
    return frozenset(p.strip() for p in settings.root_authorities.split(",") if p.strip())


#: the command-line flag of each setting that has one (`load` names it in errors; a test holds
#: every flag here to exist on some command)
FLAGS: dict[str, str] = {
    "db": "--db",
    "bootstrap_servers": "--bootstrap-servers",
    "topic": "--topic",
    "group": "--group",
    "security_protocol": "--security-protocol",
    "sasl_mechanism": "--sasl-mechanism",
    "sasl_username": "--sasl-username",
    "sasl_password_file": "--sasl-password-file",
    "ssl_cafile": "--ssl-cafile",
    "ssl_certfile": "--ssl-certfile",
    "ssl_keyfile": "--ssl-keyfile",
    "key": "--key",
    "origin": "--origin",
    "schema_registry": "--schema-registry",
    "schema_registry_username": "--schema-registry-username",
    "schema_registry_password_file": "--schema-registry-password-file",
    "schema_registry_cafile": "--schema-registry-cafile",
    "schema_cache": "--schema-cache",
    "schema_dir": "--schema-dir",
    "isolation_level": "--isolation-level",
    "compression": "--compression",
    "batch_size": "--batch-size",
    "decode_workers": "--decode-workers",
    "max_chain_depth": "--max-chain-depth",
    "root_authorities": "--root-authority",
    "log_level": "--log-level",
    "memory_limit": "--memory-limit",
    "spool": "--spool",
    "durability": "--durability",
}


#: settings whose rejected value an error must not repeat: it may hold a secret
_NOT_ECHOED = frozenset({"schema_registry", "schema_registry_password", "sasl_password"})


def load(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit (non-None) overrides from flags on top."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        name = ".".join(str(p) for p in err["loc"])
        where = f"LEDGER_{name.upper()}" + (f" or {FLAGS[name]}" if name in FLAGS else "")
        got = "" if name in _NOT_ECHOED else f", got {err['input']!r}"
        raise ConfigError(
            f"setting {name} ({where}): {err['msg'].removeprefix('Value error, ')}{got}"
        ) from exc
