"""All settings in one place: flags override `LEDGER_*` environment variables override defaults."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ledger.errors import ConfigError

__all__ = [
    "DEFAULT_BOOTSTRAP",
    "DEFAULT_DB",
    "DEFAULT_GROUP",
    "DEFAULT_TOPIC",
    "Settings",
    "load",
    "root_authority_ids",
]

DEFAULT_DB = "ledger.duckdb"
DEFAULT_TOPIC = "agent-audit-events"
DEFAULT_GROUP = "agent-ledger"
DEFAULT_BOOTSTRAP = "localhost:9092"


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
    ssl_cafile: str | None = None
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
    # Consumer: most events per DuckDB transaction (one `getmany`).
    batch_size: int = 10_000
    # Consumer: processes decoding messages beside it; None = 1 with two or more cores, else 0.
    decode_workers: int | None = Field(default=None, ge=0)
    # Authority rules: a chain longer than this is itself a finding (CHAIN_TOO_DEEP), and the
    # principals besides registered humans that may make root grants (comma-separated ids,
    # e.g. an IdP's service principal; ROOT_NOT_HUMAN otherwise).
    max_chain_depth: int = Field(default=32, ge=1)
    root_authorities: str = ""
    # Emitter: where events wait on disk while the broker is unreachable, and its size limit.
    spool: str | None = None
    spool_max_bytes: int = 256 * 1024 * 1024


def root_authority_ids(settings: Settings) -> frozenset[str]:
    """The allow-listed root authorities of `settings.root_authorities` (comma-separated)."""
    return frozenset(p.strip() for p in settings.root_authorities.split(",") if p.strip())


def load(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit (non-None) overrides from flags on top."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        name = ".".join(str(p) for p in err["loc"])
        raise ConfigError(
            f"setting {name} (LEDGER_{name.upper()} or --{name.replace('_', '-')}): "
            f"{err['msg']}, got {err['input']!r}"
        ) from exc
