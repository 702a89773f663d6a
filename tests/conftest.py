"""Shared fixtures. Ledger files live on disk (tmp_path), never only in memory."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from ledger.codec import Codec, default_codec


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
