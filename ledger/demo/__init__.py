"""`ledger demo`: the whole pipeline on embedded defaults, ending in an explained incident.

Broker (embedded Tansu) -> the real `Emitter` -> Kafka -> the real consumer -> DuckDB ledger ->
signed checkpoint -> verify -> investigator queries. Nothing here is special-cased for the demo:
it calls the same library functions the commands do.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger import config
from ledger.demo import scenario
from ledger.errors import VerificationError
from ledger.integrity import checkpoint
from ledger.integrity.verify import verify_store
from ledger.query.ledger import Ledger
from ledger.store import Store
from ledger.stream.broker import EmbeddedBroker, create_topic
from ledger.stream.consumer import consume
from ledger.stream.emitter import Emitter

__all__ = ["DEFAULT_DB", "PARTITIONS", "DemoReport", "Say", "render", "run"]

DEFAULT_DB = "demo-ledger.duckdb"
PARTITIONS = 3

Say = Callable[[str], None]


@dataclass
class DemoReport:
    """Everything the demo found, JSON-serializable through `to_dict`."""

    db: str
    bootstrap_servers: str
    topic: str
    emitted: dict[str, int]
    consumed: dict[str, Any]
    entries: int
    types: dict[str, int]
    checkpoint_file: str
    public_key_file: str
    verify: dict[str, Any]
    trace: dict[str, Any]
    violations: list[dict[str, Any]]
    blast_radius: dict[str, Any]
    blast_subject: str = scenario.COMPROMISED_AGENT
    next_commands: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


async def _emit(bootstrap: str, topic: str, spool: Path, say: Say) -> dict[str, int]:
    await create_topic(bootstrap, topic, partitions=PARTITIONS)
    evs = scenario.events()
    async with Emitter(bootstrap, topic, spool_path=spool, producer="demo") as em:
        for i, ev in enumerate(evs, 1):
            await em.emit(ev)
            if i % 100 == 0:
                say(f"  emitted {i}/{len(evs)} events")
        await em.flush()
        counters = dict(em.counters)
    return counters


def _keys(db: str) -> tuple[Path, Path]:
    """The demo's signing key lives beside its ledger, made once and reused on later runs."""
    directory = Path(db).with_name(Path(db).stem + "-keys")
    key, vkey = directory / checkpoint.KEY_FILE, directory / checkpoint.VKEY_FILE
    if not key.exists():
        checkpoint.write_keypair(directory, name="agent-ledger-demo")
    return key, vkey


def run(
    db: str = DEFAULT_DB,
    say: Say = lambda _msg: None,
    hold: Callable[[EmbeddedBroker], None] | None = None,
) -> DemoReport:
    """Run the demo into `db`; `say` receives progress lines. With `hold`, the broker stays up
    until `hold(broker)` returns (`--keep-broker`). Returns what was found."""
    say("starting the embedded Kafka broker (memory-only, for development) ...")
    broker = EmbeddedBroker().start()
    try:
        bootstrap = broker.bootstrap_servers
        topic = f"agent-audit-events-demo-{uuid.uuid4().hex[:8]}"
        say(f"  broker pid {broker.pid} on {bootstrap}; topic {topic} ({PARTITIONS} partitions)")
        say("simulating the organisation: agents emit through ledger.Emitter ...")
        with tempfile.TemporaryDirectory(prefix="ledger-demo-") as tmp:
            emitted = asyncio.run(_emit(bootstrap, topic, Path(tmp) / "demo.spool", say))
        say(f"  {emitted['sent'] + emitted['resent']} events acknowledged by the broker")
        say(f"consuming into {db} (one DuckDB transaction per batch, offsets included) ...")
        settings = config.load(
            db=db, bootstrap_servers=bootstrap, topic=topic, group=f"demo-{topic}"
        )
        consumed = consume(settings, until_idle=2.0).to_dict()
        say(f"  appended {consumed['appended']}, duplicates {consumed['duplicates']}, "
            f"quarantined {consumed['quarantined']}")  # fmt: skip
        report = _investigate(db, bootstrap, topic, emitted, consumed, say)
        if hold is not None:
            hold(broker)
        return report
    finally:
        broker.stop()
        say("stopped the embedded broker")


def _investigate(
    db: str,
    bootstrap: str,
    topic: str,
    emitted: dict[str, int],
    consumed: dict[str, Any],
    say: Say,
) -> DemoReport:
    key, vkey = _keys(db)
    say(f"signing a checkpoint with {key} ...")
    with Store.open(db) as store:
        cp = checkpoint.create(store, checkpoint.load_signer(key))
        cp_file = Path(db).with_suffix(".checkpoint")
        cp_file.write_text(cp.note)
        say("verifying the ledger (hash chain, Merkle tree, checkpoints) ...")
        report = verify_store(store)
        types = dict(
            store.con.execute("SELECT type, count(*) FROM entries GROUP BY 1 ORDER BY 1").fetchall()
        )
    if not report.ok:
        raise VerificationError(f"demo ledger failed verification: {report.reason}")
    say("asking the investigator's questions ...")
    with Ledger.open(db) as ledger:
        trace = ledger.trace(scenario.INCIDENT_ACTION).to_dict()
        violations = [v.to_dict() for v in ledger.violations()]
        blast = ledger.blast_radius(
            principal=scenario.COMPROMISED_AGENT, until=scenario.DETECTED_AT
        ).to_dict()
    return DemoReport(
        db=db,
        bootstrap_servers=bootstrap,
        topic=topic,
        emitted=emitted,
        consumed=consumed,
        entries=report.size,
        types=types,
        checkpoint_file=str(cp_file),
        public_key_file=str(vkey),
        verify=report.to_dict(),
        trace=trace,
        violations=violations,
        blast_radius=blast,
        next_commands=_next_commands(db, str(cp_file), str(vkey)),
    )


def _next_commands(db: str, cp_file: str, vkey: str) -> list[str]:
    flag = f" --db {db}"  # the other commands default to ledger.duckdb, not the demo's file
    return [
        f"ledger trace {scenario.INCIDENT_ACTION}{flag}",
        f"ledger trace {scenario.INCIDENT_ACTION} --format mermaid{flag}",
        f"ledger blast-radius --principal {scenario.COMPROMISED_AGENT}{flag}",
        f"ledger violations --kind DENIED_BUT_EXECUTED --kind BURST{flag}",
        f"ledger inventory{flag}",
        f'ledger sql "SELECT type, count(*) FROM entries GROUP BY type"{flag}',
        f"ledger verify --checkpoint {cp_file} --public-key {vkey}{flag}",
        f"ledger prove {_any_event(db)} --out proof.json{flag}"
        f" && ledger verify-proof proof.json --public-key {vkey}",
    ]


def _any_event(db: str) -> str:
    with Store.open(db, read_only=True) as store:
        row = store.con.execute(
            "SELECT event_id FROM actions WHERE action_id = ?", [scenario.INCIDENT_ACTION]
        ).fetchall()
    return str(row[0][0]) if row else "EVENT_ID"


# -- rendering -------------------------------------------------------------------------------


def _hop_line(i: int, hop: dict[str, Any]) -> str:
    problems = ", ".join(hop["problems"]) or "ok"
    revoked = f", revoked {hop['revoked_at']}" if hop.get("revoked_at") else ""
    return (
        f"  {i}. {hop['delegation_id']}: {hop['delegator_id']} -> {hop['delegate_id']}\n"
        f"     scopes {hop['scopes']} on {hop['resources']}\n"
        f"     valid {hop['not_before']} .. {hop['expires_at']}{revoked}   [{problems}]"
    )


def _ids(values: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(values[:limit])
    more = len(values) - limit
    return shown + (f" (+{more} more)" if more > 0 else "") if values else "none"


def render(r: DemoReport) -> str:
    """The demo's findings as text a newcomer can read top to bottom."""
    t = r.trace
    act = t["action"]
    acc = t["accountable"]
    lines = [
        "",
        "== The ledger ==",
        f"  {r.entries} entries in {r.db}: "
        + ", ".join(f"{n} {k}" for k, n in sorted(r.types.items())),
        f"  verify: {'ok' if r.verify['ok'] else 'FAILED'}, head {r.verify['head_hash'][:16]}...;"
        f" signed checkpoint in {r.checkpoint_file}",
        "",
        f"== Chain of custody of {act['action_id']} ==",
        f"  WHAT:  {act['principal_id']} ran {act['operation']} on {act['resource']}"
        f" via {act.get('tool') or 'no tool'} at {act.get('occurred_at')}"
        f" (outcome: {act['outcome']})",
        "  UNDER (from the action's delegation up to the root grant):",
        *(_hop_line(i, hop) for i, hop in enumerate(t["chain"], 1)),
        f"  WHO AUTHORIZED: {t['root_principal']} made the root grant",
        f"  ACCOUNTABLE: root delegator {acc.get('root_delegator')}, actor's owner "
        f"{acc.get('actor_owner') or 'NONE (unowned subagent)'}, policy {acc.get('policy_id')}",
        "  WHAT WAS WRONG:",
        *(f"    - {v['kind']}: {v['detail']}" for v in t["violations"]),
        "",
        "== Violations across the ledger ==",
    ]
    by_kind = Counter(v["kind"] for v in r.violations)
    for kind, n in sorted(by_kind.items()):
        example = next(v for v in r.violations if v["kind"] == kind)
        lines.append(f"  {kind:<26} {n:>4}  e.g. {example['subject_id']}: {example['detail']}")
    b = r.blast_radius
    lines += [
        "",
        f"== Blast radius of {r.blast_subject} (until detection) ==",
        f"  delegations: {_ids(b['delegations'])}",
        f"  principals:  {_ids(b['principals'])}",
        f"  credentials: {_ids(b['credentials'])}",
        f"  actions:     {len(b['actions'])} ({_ids(b['actions'], 3)})",
        f"  resources:   {len(b['resources'])} ({_ids(b['resources'], 4)})",
        f"  still active then: {_ids(_flatten(b.get('still_active')))}",
        "",
        "== Try next (same file) ==",
        *(f"  {c}" for c in r.next_commands),
        "",
    ]
    return "\n".join(lines)


def _flatten(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [str(x) for v in value.values() for x in (v if isinstance(v, list) else [v])]
    if isinstance(value, list):
        return [str(x) for x in value]
    return []
