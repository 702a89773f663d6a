"""Event builders: time-ordered ids and the Kafka key rule."""

from __future__ import annotations

import uuid

from ledger.contract import events
from ledger.contract.builders import partition_key, uuid7
from tests import factories as f


def test_uuid7_ids_are_valid_unique_and_time_ordered() -> None:
    ids = [uuid7() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_key_is_the_delegation_id_else_the_principal_id() -> None:
    def key(ev: dict[str, object]) -> bytes:
        return partition_key(events.to_record(events.parse_event(ev)))

    assert key(f.action("a1", "agent:x", delegation="d-9")) == b"d-9"
    assert key(f.action("a1", "agent:x")) == b"agent:x"
    assert key(f.granted("d-2", "user:a", "agent:b")) == b"d-2"
    assert key(f.principal("agent:p")) == b"agent:p"
    assert key(f.credential_revoked("c-1")) == b"c-1"
