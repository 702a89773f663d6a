"""A realistic, deterministic stream of valid JSON-form audit events, for benchmarks.

Organisations register humans, services, tools and agents (agents owned by humans); humans
grant delegations to agents, which re-delegate in forests up to 8 levels deep; delegates get
credentials, ask the policy engine and act at every level of the tree. A small share of events
carry misconduct of several kinds (out-of-scope or out-of-window actions, denied-but-executed,
credential misuse, scope escalation, unowned agents, ...): well-formed events the ledger must
record and the query layer must flag. The same seed gives the same events, byte for byte.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

T0 = datetime(2026, 3, 23, 8, 0, tzinfo=UTC)
MAX_DEPTH = 8

SERVICES: dict[str, tuple[list[str], list[str]]] = {
    "crm": (["read", "write", "export"], ["accounts", "contacts", "opportunities"]),
    "billing": (["read", "write", "refund"], ["invoices", "payments"]),
    "hr": (["read", "write"], ["employees", "salaries"]),
    "git": (["read", "write", "admin"], ["repos", "pipelines"]),
    "tickets": (["read", "write", "close"], ["queues", "issues"]),
    "mail": (["read", "send"], ["inbox", "outbox"]),
    "storage": (["read", "write", "delete"], ["buckets", "objects"]),
    "db": (["read", "write", "admin"], ["tables", "backups"]),
}
MODELS = ["gpt-x", "claude-y", "llama-z", "mistral-w", None]
ROLES = ["planner", "researcher", "coder", "reporter", "triager", "mailer", "analyst", "fixer"]
TOOLS = ["http", "sql", "shell", "browser", "mail-client", "s3", "git-cli"]
PURPOSES = [
    "quarterly report",
    "incident triage",
    "customer refund",
    "release pipeline",
    "payroll review",
    "data cleanup",
    None,
]
#: every kind of misconduct the generator injects, with its probability per opportunity
VIOLATIONS = {
    "UNOWNED_AGENT": 0.03,
    "SCOPE_ESCALATION": 0.01,
    "REDELEGATION_NOT_ALLOWED": 0.01,
    "LONG_LIVED_CREDENTIAL": 0.02,
    "NO_DELEGATION": 0.003,
    "OUT_OF_SCOPE": 0.004,
    "RESOURCE_OUT_OF_SCOPE": 0.004,
    "EXPIRED_DELEGATION": 0.003,
    "DENIED_BUT_EXECUTED": 0.003,
    "CREDENTIAL_MISUSE": 0.003,
    "NOT_DELEGATE": 0.002,
    "REVOKED_DELEGATION": 0.3,
    "RETIRED_PRINCIPAL": 0.3,
}


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@dataclass
class _Org:
    name: str
    humans: list[str]
    agents: list[str]
    tools: list[str]
    services: list[str]
    retired: set[str] = field(default_factory=set)


@dataclass
class _Node:
    delegation_id: str
    delegator: str
    delegate: str
    scopes: list[str]
    resources: list[str]
    start: datetime
    end: datetime
    may_redelegate: bool
    depth: int
    parent: _Node | None = None
    credential: str | None = None
    actions: list[str] = field(default_factory=list)


class EventGenerator:
    """Stateful source of events; `injected` counts the misconduct put in so far, by kind."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.clock = T0
        self.injected: Counter[str] = Counter()
        self._ids: Counter[str] = Counter()
        self._orgs = 0

    # -- small helpers ---------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        self._ids[prefix] += 1
        return f"{prefix}-{self._ids[prefix]:x}{self.rng.getrandbits(24):06x}"

    def _event_id(self, at: datetime) -> str:
        """A UUIDv7 whose time part is the event time, so ids sort roughly with the ledger."""
        ms = int(at.timestamp() * 1000)
        rand = self.rng.getrandbits(74)
        value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0b10 << 62
        value |= rand & (2**62 - 1)
        return str(uuid.UUID(int=value))

    def _tick(self, lo_ms: int = 5, hi_ms: int = 2_000) -> datetime:
        self.clock += timedelta(microseconds=self.rng.randint(lo_ms * 1000, hi_ms * 1000))
        return self.clock

    def _chance(self, kind: str) -> bool:
        if self.rng.random() < VIOLATIONS[kind]:
            self.injected[kind] += 1
            return True
        return False

    def _event(
        self, etype: str, at: datetime, data: dict[str, Any], producer: str
    ) -> dict[str, Any]:
        traced = self.rng.random() < 0.7
        return {
            "event_id": self._event_id(at),
            "type": etype,
            "occurred_at": iso(at),
            "producer": producer,
            "trace_id": f"{self.rng.getrandbits(128):032x}" if traced else None,
            "span_id": f"{self.rng.getrandbits(64):016x}" if traced else None,
            "data": data,
        }

    # -- organisations ---------------------------------------------------------------------

    def _org(self) -> tuple[_Org, list[dict[str, Any]]]:
        rng = self.rng
        self._orgs += 1
        name = f"org{self._orgs}"
        org = _Org(
            name,
            humans=[f"user:{name}/u{i}" for i in range(rng.randint(4, 12))],
            agents=[],
            tools=[f"tool:{name}/{t}" for t in rng.sample(TOOLS, rng.randint(2, 5))],
            services=rng.sample(sorted(SERVICES), rng.randint(3, 6)),
        )
        out = []
        idp = f"idp.{name}"
        for h in org.humans:
            data = {"principal_id": h, "kind": "human", "display_name": h.split("/")[-1].upper()}
            out.append(self._event("principal.registered", self._tick(), data, idp))
        for t in org.tools:
            data = {"principal_id": t, "kind": "tool", "owner_id": rng.choice(org.humans)}
            out.append(self._event("principal.registered", self._tick(), data, idp))
        for i in range(rng.randint(8, 30)):
            agent = f"agent:{name}/{rng.choice(ROLES)}-{i}"
            org.agents.append(agent)
            owner = None if self._chance("UNOWNED_AGENT") else rng.choice(org.humans)
            data = {
                "principal_id": agent,
                "kind": "agent",
                "display_name": None,
                "owner_id": owner,
                "model": rng.choice(MODELS),
            }
            out.append(self._event("principal.registered", self._tick(), data, idp))
        return org, out

    # -- delegation trees ------------------------------------------------------------------

    def _scope_pool(self, org: _Org) -> list[str]:
        return [f"{s}:{v}" for s in org.services for v in SERVICES[s][0]]

    def _root(self, org: _Org) -> _Node:
        rng = self.rng
        services = rng.sample(org.services, rng.randint(1, min(3, len(org.services))))
        scopes = []
        for s in services:
            verbs = SERVICES[s][0]
            if rng.random() < 0.15:
                scopes.append(f"{s}:*")
            else:
                scopes += [f"{s}:{v}" for v in rng.sample(verbs, rng.randint(1, len(verbs)))]
        resources = [f"{s}/{k}/*" for s in services for k in SERVICES[s][1]]
        start = self._tick()
        return _Node(
            self._id("d"),
            rng.choice([h for h in org.humans if h not in org.retired] or org.humans),
            rng.choice(org.agents),
            scopes,
            resources,
            start,
            start + timedelta(minutes=rng.choice([30, 60, 120, 240, 480])),
            rng.random() < 0.9,
            1,
        )

    def _child(self, org: _Org, parent: _Node) -> _Node:
        rng = self.rng
        scopes = rng.sample(parent.scopes, rng.randint(1, len(parent.scopes)))
        if self._chance("SCOPE_ESCALATION"):
            extra = [s for s in self._scope_pool(org) if s not in parent.scopes]
            scopes.append(rng.choice(extra) if extra else "*")
        resources = []
        for service in sorted({s.split(":")[0] for s in scopes}):
            own = [p for p in parent.resources if p.startswith(service + "/")]
            if own:
                resources += rng.sample(own, rng.randint(1, len(own)))
        resources = resources or [rng.choice(parent.resources)]
        start = max(self._tick(), parent.start)
        end = start + (parent.end - start) * rng.uniform(0.3, 1.0)
        if end <= start:
            end = start + timedelta(seconds=1)
        return _Node(
            self._id("d"),
            parent.delegate,
            rng.choice(org.agents),
            scopes,
            resources,
            start,
            end,
            rng.random() < 0.8,
            parent.depth + 1,
            parent,
        )

    def _tree(self, org: _Org) -> list[_Node]:
        rng = self.rng
        depth = rng.choices(range(1, MAX_DEPTH + 1), weights=[10, 14, 14, 10, 7, 5, 3, 2])[0]
        nodes = [self._root(org)]
        frontier = [nodes[0]]
        while frontier and len(nodes) < 40:
            node = frontier.pop(0)
            if node.depth >= depth:
                continue
            allowed = node.may_redelegate or self._chance("REDELEGATION_NOT_ALLOWED")
            if not allowed:
                continue
            for _ in range(rng.choices([1, 2, 3], weights=[6, 3, 1])[0]):
                child = self._child(org, node)
                nodes.append(child)
                frontier.append(child)
        return nodes

    def _grant(self, node: _Node) -> dict[str, Any]:
        data = {
            "delegation_id": node.delegation_id,
            "parent_delegation_id": node.parent.delegation_id if node.parent else None,
            "delegator_id": node.delegator,
            "delegate_id": node.delegate,
            "scopes": node.scopes,
            "resources": node.resources,
            "purpose": self.rng.choice(PURPOSES),
            "not_before": iso(node.start),
            "expires_at": iso(node.end),
            "may_redelegate": node.may_redelegate,
        }
        producer = "iam" if node.parent is None else f"orchestrator-{self.rng.randint(1, 9)}"
        return self._event("delegation.granted", node.start, data, producer)

    def _credential(self, node: _Node, at: datetime) -> dict[str, Any]:
        rng = self.rng
        node.credential = self._id("cred")
        expires: str | None = iso(node.end)
        if self._chance("LONG_LIVED_CREDENTIAL"):
            expires = None if rng.random() < 0.5 else iso(at + timedelta(days=rng.randint(2, 90)))
        data = {
            "credential_id": node.credential,
            "principal_id": node.delegate,
            "delegation_id": node.delegation_id,
            "kind": rng.choices(["token", "api_key", "certificate", "other"], [8, 3, 1, 1])[0],
            "scopes": node.scopes,
            "expires_at": expires,
            "fingerprint": f"sha256:{rng.getrandbits(256):064x}",
        }
        return self._event("credential.issued", at, data, "vault")

    # -- actions ---------------------------------------------------------------------------

    def _operation(self, org: _Org, node: _Node, out_of_scope: bool) -> str:
        rng = self.rng
        if out_of_scope:
            pool = [s for s in self._scope_pool(org) if s not in node.scopes]
            if pool and not any(s == "*" or s.endswith(":*") for s in node.scopes):
                return rng.choice(pool)
        scope = rng.choice(node.scopes)
        service, verb = scope.split(":") if ":" in scope else (rng.choice(org.services), "*")
        if verb == "*":
            verb = rng.choice(SERVICES.get(service, (["read"], []))[0])
        return f"{service}:{verb}"

    def _resource(self, node: _Node, operation: str, out_of_scope: bool) -> str:
        rng = self.rng
        service = operation.split(":", maxsplit=1)[0]
        patterns = [p for p in node.resources if p.startswith(service + "/")] or node.resources
        base = rng.choice(patterns).removesuffix("/*")
        if out_of_scope:
            base = f"{service}/secret-{rng.randint(1, 9)}"
        return f"{base}/{rng.randint(1, 5000)}"

    def _act(
        self, org: _Org, node: _Node, at: datetime, after: bool = False
    ) -> list[dict[str, Any]]:
        """A policy decision and the action it governed (or an action with no decision)."""
        rng = self.rng
        out = []
        actor = node.delegate
        delegation: str | None = node.delegation_id
        credential = node.credential
        if self._chance("NOT_DELEGATE"):
            actor = rng.choice(org.agents)
        if self._chance("NO_DELEGATION"):
            delegation = None
        if credential and self._chance("CREDENTIAL_MISUSE"):
            credential = self._id("cred-stolen")
        if not after and self._chance("EXPIRED_DELEGATION"):
            at = node.end + timedelta(seconds=rng.randint(1, 3600))
        operation = self._operation(org, node, self._chance("OUT_OF_SCOPE"))
        resource = self._resource(node, operation, self._chance("RESOURCE_OUT_OF_SCOPE"))
        action_id = self._id("act")
        decision_id: str | None = None
        outcome = rng.choices(["succeeded", "failed"], [19, 1])[0]
        if rng.random() < 0.8:
            decision_id = self._id("dec")
            denied = rng.random() < 0.05
            if denied and not self._chance("DENIED_BUT_EXECUTED"):
                outcome = "denied"
            data = {
                "decision_id": decision_id,
                "principal_id": actor,
                "delegation_id": delegation,
                "action_id": action_id,
                "operation": operation,
                "resource": resource,
                "decision": "deny" if denied else "allow",
                "policy_id": f"policy-{rng.randint(1, 12)}",
                "reasons": ["no matching allow rule"] if denied else ["scope ok", "resource ok"],
            }
            out.append(self._event("policy.decided", at, data, "pdp"))
        parent = node.parent.actions[-1] if node.parent and node.parent.actions else None
        node.actions.append(action_id)
        data = {
            "action_id": action_id,
            "principal_id": actor,
            "delegation_id": delegation,
            "credential_id": credential,
            "tool": rng.choice(org.tools) if rng.random() < 0.6 else None,
            "operation": operation,
            "resource": resource,
            "outcome": outcome,
            "parent_action_id": parent,
            "decision_id": decision_id,
        }
        out.append(self._event("action.performed", at + timedelta(milliseconds=3), data, "gateway"))
        return out

    def _task(self, org: _Org) -> list[dict[str, Any]]:
        """One delegation forest's life: grants, credentials, actions, maybe revocations."""
        rng = self.rng
        nodes = self._tree(org)
        out = []
        for node in nodes:
            out.append(self._grant(node))
            if rng.random() < 0.6:
                out.append(self._credential(node, node.start + timedelta(milliseconds=50)))
        for node in nodes:
            for _ in range(rng.randint(1, 6)):
                at = max(self._tick(1, 400), node.start)
                if at >= node.end:
                    at = node.start + (node.end - node.start) / 2
                out += self._act(org, node, at)
        if rng.random() < 0.2:
            victim = rng.choice(nodes)
            at = self._tick()
            data = {
                "delegation_id": victim.delegation_id,
                "revoked_by": victim.delegator,
                "reason": rng.choice(["task done", "suspicious activity", None]),
                "cascade": rng.random() < 0.9,
            }
            out.append(self._event("delegation.revoked", at, data, "iam"))
            if victim.credential:
                data = {
                    "credential_id": victim.credential,
                    "revoked_by": victim.delegator,
                    "reason": None,
                }
                out.append(self._event("credential.revoked", self._tick(), data, "vault"))
            if self._chance("REVOKED_DELEGATION"):
                out += self._act(org, victim, self._tick(), after=True)
        if rng.random() < 0.02:
            node = rng.choice(nodes)
            data = {
                "principal_id": node.delegate,
                "retired_by": rng.choice(org.humans),
                "reason": None,
            }
            out.append(self._event("principal.retired", self._tick(), data, f"idp.{org.name}"))
            org.retired.add(node.delegate)
            if self._chance("RETIRED_PRINCIPAL"):
                out += self._act(org, node, self._tick(), after=True)
        return out

    def events(self) -> Iterator[dict[str, Any]]:
        """An endless stream: one organisation after another, each running many tasks."""
        while True:
            org, out = self._org()
            yield from out
            for _ in range(self.rng.randint(30, 120)):
                yield from self._task(org)


def generate(n_events: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """The first `n_events` events for `seed` (JSON form, each valid per the event contract)."""
    if n_events <= 0:
        return
    for i, ev in enumerate(EventGenerator(seed).events(), 1):
        yield ev
        if i >= n_events:
            return


def write_jsonl(path: str | Path, n: int, seed: int = 0) -> Path:
    """Write `n` generated events as JSON Lines; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for ev in generate(n, seed):
            fh.write(json.dumps(ev, separators=(",", ":")))
            fh.write("\n")
    return path
