"""Shared fixtures. Ledger files live on disk (tmp_path), never only in memory."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.contract.codec import Codec, default_codec
from ledger.stream.broker import EmbeddedBroker


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.duckdb"


@pytest.fixture
def codec() -> Codec:
    return default_codec()


def write_jsonl(path: Path, events: Iterable[dict[str, Any] | str]) -> Path:
    """Write events (dicts, or raw strings for malformed lines) as JSON Lines."""
    with path.open("w") as fh:
        for ev in events:
            fh.write((ev if isinstance(ev, str) else json.dumps(ev)) + "\n")
    return path


# -- Kafka: one embedded broker per test session, a fresh topic per test ----------------------


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """The real embedded Tansu broker (memory-only), started once for the whole session."""
    with EmbeddedBroker() as embedded:
        yield embedded


@pytest.fixture
def topic(broker: EmbeddedBroker) -> str:
    """A new, random topic with 3 partitions on the session broker."""
    return broker.create_topic(f"test-{uuid.uuid4().hex[:12]}", partitions=3)


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    return tmp_path / "emitter.spool"
