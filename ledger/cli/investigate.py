"""Investigator commands: trace, blast-radius, violations, inventory, sql, rebuild.

Thin wrappers: parse arguments, call one `Ledger` (or `projections.rebuild`) function, render a
plain table, JSON (`--json`), CSV or a graph.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ledger.cli._common import EXIT_OK, Progress, db_option, echo_json, json_option, render_table
from ledger.query.rules import KINDS, Thresholds, iso, jsonable

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from ledger.query.blast import BlastRadius
    from ledger.query.custody import Trace
    from ledger.query.inforce import Authority

__all__ = ["COMMANDS"]


class _Time(click.ParamType[datetime, Any]):
    """An ISO 8601 timestamp; naive means UTC, a trailing Z is accepted."""

    name = "TIME"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 time such as 2026-03-23T10:00:00Z", param, ctx)
        return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


TIME = _Time()
_since = click.option("--since", type=TIME, help="Only from this time on (ISO 8601, UTC).")
_until = click.option("--until", type=TIME, help="Only up to this time (ISO 8601, UTC).")


def _authority_options(f: F) -> F:
    """--max-chain-depth and --root-authority, for every command that applies the rules."""
    f = click.option(
        "--root-authority",
        "root_authorities",
        multiple=True,
        metavar="ID",
        help="A principal besides registered humans that may make root grants (repeatable). "
        "Env: LEDGER_ROOT_AUTHORITIES (comma-separated).",
    )(f)
    return click.option(
        "--max-chain-depth",
        type=click.IntRange(min=1),
        default=None,
        help="A longer chain is CHAIN_TOO_DEEP. Env: LEDGER_MAX_CHAIN_DEPTH. [default: 32]",
    )(f)


def _thresholds(max_chain_depth: int | None, root_authorities: tuple[str, ...]) -> Thresholds:
    from ledger.config import load, root_authority_ids

    settings = load(
        max_chain_depth=max_chain_depth,
        root_authorities=",".join(root_authorities) if root_authorities else None,
    )
    return Thresholds(
        max_chain_depth=settings.max_chain_depth,
        root_authorities=root_authority_ids(settings),
    )


# -- trace ------------------------------------------------------------------------------------


@click.command()
@click.argument("action_id")
@db_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "mermaid", "dot"]),
    default="text",
    show_default=True,
    help="text table, JSON, or a graph (Mermaid flowchart, Graphviz dot).",
)
@_authority_options
@json_option
def trace(
    action_id: str,
    db: str,
    fmt: str,
    as_json: bool,
    max_chain_depth: int | None,
    root_authorities: tuple[str, ...],
) -> int:
    """Who authorized ACTION_ID: its delegation chain up to the root grant.

    Shows each hop (delegator -> delegate, scopes, resources, window, revocation) with
    the violations found at it, the root principal, who is accountable (root delegator,
    the actor's owner, the deciding policy) and every violation of the action.
    Graph formats draw the chain and the actor's subagents; offending hops in red.

    \b
    Examples:
      ledger trace act-42
      ledger trace act-42 --json | jq .root_principal
      ledger trace act-42 --format mermaid > chain.mmd
      ledger trace act-42 --format dot | dot -Tsvg > chain.svg

    Exit: 0 found (even with violations), 1 unknown action id.
    """
    from ledger.query import Ledger

    with Ledger.open(db, thresholds=_thresholds(max_chain_depth, root_authorities)) as ledger:
        result = ledger.trace(action_id)
    if as_json or fmt == "json":
        echo_json(result.to_dict())
    elif fmt == "mermaid":
        click.echo(to_mermaid(result))
    elif fmt == "dot":
        click.echo(to_dot(result))
    else:
        click.echo(_trace_text(result))
    return EXIT_OK


def _trace_text(t: Trace) -> str:
    a = t.action
    lines = [
        f"action {a['action_id']}: {a['principal_id']} {a['operation']} {a['resource']} "
        f"-> {a['outcome']} at {iso(a['occurred_at'])}",
        "",
    ]
    if t.chain:
        rows = [
            (
                h.delegation_id,
                h.delegator_id,
                h.delegate_id,
                ",".join(h.scopes),
                ",".join(h.resources),
                f"{iso(h.not_before)} .. {iso(h.expires_at)}",
                iso(h.revoked_at) or "",
                ",".join(h.problems),
            )
            for h in t.chain
        ]
        headers = [
            "delegation",
            "from",
            "to",
            "scopes",
            "resources",
            "window",
            "revoked",
            "problems",
        ]
        lines.append(render_table(rows, headers))
    else:
        lines.append("no delegation chain (the action cites no delegation)")
    if not t.chain_complete:
        lines.append("chain incomplete: a parent delegation is not in the ledger")
    acc = t.accountable
    lines += [
        "",
        f"root principal: {t.root_principal or '-'}",
        f"accountable: root delegator {acc['root_delegator'] or '-'}, "
        f"actor owner {acc['actor_owner'] or '-'}, policy {acc['policy_id'] or '-'}",
        "",
    ]
    if t.violations:
        lines.append(_violations_table([v.to_dict() for v in t.violations]))
    else:
        lines.append("no violations")
    return "\n".join(lines)


def _quote_mermaid(text: str) -> str:
    return '"' + text.replace('"', "#quot;") + '"'


def to_mermaid(t: Trace) -> str:
    """A Mermaid flowchart: principal -> delegation -> principal ... -> action; subagents dashed.

    Offending hops (and the action, if it has violations) get the `bad` class (red)."""
    ids: dict[str, str] = {}
    out = ["flowchart LR"]

    def node(key: str, label: str, shape: str = "[{}]") -> str:
        if key not in ids:
            ids[key] = f"n{len(ids)}"
            out.append(f"  {ids[key]}{shape.format(_quote_mermaid(label))}")
        return ids[key]

    def person(pid: str) -> str:
        return node("p:" + pid, pid)

    bad: list[str] = []
    for h in reversed(t.chain):
        label = f"{h.delegation_id}<br/>{', '.join(h.scopes)}"
        if h.problems:
            label += "<br/>" + ", ".join(h.problems)
        d = node("d:" + h.delegation_id, label, "{{{{{}}}}}")
        if h.problems:
            bad.append(d)
        out.append(f"  {person(h.delegator_id)} --> {d} --> {person(h.delegate_id)}")
    a = t.action
    label = f"{a['action_id']}<br/>{a['operation']} {a['resource']}"
    kinds = sorted({v.kind for v in t.violations if v.subject_id == a["action_id"]})
    if kinds:
        label += "<br/>" + ", ".join(kinds)
    act = node("a:" + a["action_id"], label, "([{}])")
    if kinds:
        bad.append(act)
    actor = person(a["principal_id"])
    out.append(f"  {actor} -- acted --> {act}")
    for sub in t.subagents:
        d = node("d:" + sub["delegation_id"], sub["delegation_id"], "{{{{{}}}}}")
        out.append(f"  {actor} -.-> {d} -.-> {person(sub['delegate_id'])}")
    out.append("  classDef bad stroke:#d00,stroke-width:3px,color:#d00")
    if bad:
        out.append(f"  class {','.join(dict.fromkeys(bad))} bad")
    return "\n".join(out)


def _quote_dot(text: str) -> str:
    return json.dumps(text)


def to_dot(t: Trace) -> str:
    """A Graphviz digraph of the same shape as `to_mermaid`."""
    out = ["digraph trace {", "  rankdir=LR;", "  node [shape=box];"]
    for h in reversed(t.chain):
        attrs = "shape=hexagon"
        label = f"{h.delegation_id}\n{', '.join(h.scopes)}"
        if h.problems:
            label += "\n" + ", ".join(h.problems)
            attrs += ", color=red, fontcolor=red, penwidth=2"
        d = _quote_dot("d:" + h.delegation_id)
        out.append(f"  {d} [label={_quote_dot(label)}, {attrs}];")
        out.append(f"  {_quote_dot(h.delegator_id)} -> {d} -> {_quote_dot(h.delegate_id)};")
    a = t.action
    kinds = sorted({v.kind for v in t.violations if v.subject_id == a["action_id"]})
    label = f"{a['action_id']}\n{a['operation']} {a['resource']}"
    attrs = "shape=ellipse"
    if kinds:
        label += "\n" + ", ".join(kinds)
        attrs += ", color=red, fontcolor=red, penwidth=2"
    act = _quote_dot("a:" + a["action_id"])
    out.append(f"  {act} [label={_quote_dot(label)}, {attrs}];")
    out.append(f"  {_quote_dot(a['principal_id'])} -> {act} [label=acted];")
    for sub in t.subagents:
        d = _quote_dot("d:" + sub["delegation_id"])
        out.append(
            f"  {d} [label={_quote_dot(sub['delegation_id'])}, shape=hexagon, style=dashed];"
        )
        out.append(
            f"  {_quote_dot(a['principal_id'])} -> {d} -> {_quote_dot(sub['delegate_id'])} "
            "[style=dashed];"
        )
    out.append("}")
    return "\n".join(out)


# -- blast radius -----------------------------------------------------------------------------


@click.command("blast-radius")
@click.option("--principal", metavar="ID", help="A compromised principal.")
@click.option("--delegation", metavar="ID", help="A compromised delegation.")
@click.option("--credential", metavar="ID", help="A compromised credential.")
@_since
@_until
@db_option
@json_option
def blast_radius(
    *,
    principal: str | None,
    delegation: str | None,
    credential: str | None,
    since: datetime | None,
    until: datetime | None,
    db: str,
    as_json: bool,
) -> int:
    """What a compromised principal, delegation or credential reached, multi-hop.

    For a principal: every delegation it granted and all their descendants, every
    action under them or by it, the credentials involved; for a delegation: it and its
    descendants; for a credential: the actions that used it and its delegation's subtree.
    `still_active` lists delegations and credentials still usable at --until (or now):
    revoke those first.

    \b
    Examples:
      ledger blast-radius --principal agent:planner
      ledger blast-radius --credential cred-9 --since 2026-03-23T10:00:00Z --json
      ledger blast-radius --delegation d-1 --until 2026-03-23T12:00:00Z

    Exit: 0 done, 1 unknown id or not exactly one of the three options.
    """
    given = [x for x in (principal, delegation, credential) if x is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --principal, --delegation, --credential")
    from ledger.query import Ledger

    with Ledger.open(db) as ledger:
        result = ledger.blast_radius(principal, delegation, credential, since, until)
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(_blast_text(result))
    return EXIT_OK


def _blast_text(r: BlastRadius) -> str:
    def show(ids: list[str]) -> str:
        head = ", ".join(ids[:8])
        return head + (f", ... (+{len(ids) - 8})" if len(ids) > 8 else "")

    rows = [
        ("delegations", len(r.delegations), show(r.delegations)),
        ("principals", len(r.principals), show(r.principals)),
        ("credentials", len(r.credentials), show(r.credentials)),
        ("actions", len(r.actions), show(r.actions)),
        ("resources", len(r.resources), show(r.resources)),
        (
            "active delegations",
            len(r.still_active["delegations"]),
            show(r.still_active["delegations"]),
        ),
        (
            "active credentials",
            len(r.still_active["credentials"]),
            show(r.still_active["credentials"]),
        ),
    ]
    title = f"blast radius of {r.subject['kind']} {r.subject['id']} (active at {iso(r.at)})"
    return (
        title
        + "\n\n"
        + render_table(rows, ["reached", "count", "ids"])
        + ("\n\nuse --json for the full lists")
    )


# -- authority --------------------------------------------------------------------------------


@click.command()
@click.option("--principal", required=True, metavar="ID", help="The principal asked about.")
@click.option(
    "--at", "at", type=TIME, default=None, help="The time (ISO 8601, UTC). [default: now]"
)
@click.option("--operation", metavar="OP", help="An operation, e.g. crm:read (with --resource).")
@click.option("--resource", metavar="PATH", help="A resource path (with --operation).")
@_authority_options
@db_option
@json_option
def authority(
    *,
    principal: str,
    at: datetime | None,
    operation: str | None,
    resource: str | None,
    max_chain_depth: int | None,
    root_authorities: tuple[str, ...],
    db: str,
    as_json: bool,
) -> int:
    """What could PRINCIPAL do at a point in time, and through whom?

    Every delegation granted to the principal: in force at --at or not (and why),
    its path to the root grant, and the scopes and resource patterns that survive
    every hop. With --operation and --resource: allowed or not, with the reasons
    per delegation (the same rules as `violations` and `trace`).

    \b
    Examples:
      ledger authority --principal agent:planner --at 2026-03-23T10:41:00Z
      ledger authority --principal agent:planner --at 2026-03-23T10:41:00Z \\
          --operation crm:read --resource crm/accounts/42 --json

    Exit: 0 (also when not allowed), 1 error.
    """
    from ledger.query import Ledger

    if (operation is None) != (resource is None):
        raise click.UsageError("give --operation and --resource together")
    with Ledger.open(db, thresholds=_thresholds(max_chain_depth, root_authorities)) as ledger:
        answer = ledger.authority(principal, at, operation, resource)
    if as_json:
        echo_json(answer.to_dict())
    else:
        click.echo(_authority_text(answer))
    return EXIT_OK


def _authority_text(a: Authority) -> str:
    head = f"authority of {a.principal_id} at {iso(a.at)}"
    if a.operation is not None:
        verdict = "ALLOWED" if a.allowed else "NOT ALLOWED"
        how = (
            f" through {a.allowed_by}"
            if a.allowed_by
            else " (a registered human acts on its own authority)"
            if a.own_authority
            else ""
        )
        head += f": {a.operation} on {a.resource} {verdict}{how}"
    if not a.delegations:
        return head + "\n\nno delegation had been granted to it"
    rows = []
    for s in a.delegations:
        why = s.problems or s.reasons
        rows.append(
            (
                s.delegation_id,
                "yes" if s.in_force else "no",
                "" if s.allowed is None else ("yes" if s.allowed else "no"),
                " <- ".join(h["delegation_id"] for h in s.path),
                s.root_principal or "",
                ",".join(s.effective_scopes),
                ",".join(s.effective_resources),
                "; ".join(f"{p['kind']}: {p['detail']}" for p in why),
            )
        )
    headers = ["delegation", "in force", "allows", "path", "root", "scopes", "resources", "why"]
    return head + "\n\n" + render_table(rows, headers)


# -- violations -------------------------------------------------------------------------------


@click.command()
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(KINDS, case_sensitive=False),
    help="Only this kind (repeatable).",
)
@_since
@_until
@click.option(
    "--credential-max-hours",
    type=float,
    default=24.0,
    show_default=True,
    help="LONG_LIVED_CREDENTIAL above this lifetime.",
)
@click.option("--burst-actions", type=int, default=100, show_default=True, help="BURST above N...")
@click.option(
    "--burst-seconds",
    type=float,
    default=60.0,
    show_default=True,
    help="...actions in this window.",
)
@_authority_options
@db_option
@json_option
def violations(
    *,
    max_chain_depth: int | None,
    root_authorities: tuple[str, ...],
    kinds: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    credential_max_hours: float,
    burst_actions: int,
    burst_seconds: float,
    db: str,
    as_json: bool,
) -> int:
    """Every action, grant, credential or principal outside its delegated authority.

    Checked at event time, so late or out-of-order events give the same answer as
    in-order ones. Kinds: NO_DELEGATION, NOT_DELEGATE, OUT_OF_SCOPE,
    RESOURCE_OUT_OF_SCOPE, EXPIRED_DELEGATION, REVOKED_DELEGATION, SCOPE_ESCALATION,
    REDELEGATION_NOT_ALLOWED, RETIRED_PRINCIPAL, DENIED_BUT_EXECUTED,
    LONG_LIVED_CREDENTIAL, CREDENTIAL_MISUSE, UNOWNED_AGENT, UNKNOWN_PRINCIPAL, BURST,
    DELEGATION_CYCLE, UNKNOWN_DELEGATION, ROOT_NOT_HUMAN, CHAIN_TOO_DEEP, INVALID_PATTERN.
    Chains are followed to their root however deep; what cannot be traced to a
    human's root grant authorizes nothing.

    \b
    Examples:
      ledger violations
      ledger violations --kind OUT_OF_SCOPE --kind REVOKED_DELEGATION --json
      ledger violations --since 2026-03-23T00:00:00Z --burst-actions 50

    Exit: 0 (also when violations are found), 1 error.
    """
    from ledger.query import Ledger

    with Ledger.open(db, thresholds=_thresholds(max_chain_depth, root_authorities)) as ledger:
        found = ledger.violations(
            [k.upper() for k in kinds] or None,
            since,
            until,
            credential_max_lifetime=timedelta(hours=credential_max_hours),
            burst_actions=burst_actions,
            burst_window=timedelta(seconds=burst_seconds),
        )
    items = [v.to_dict() for v in found]
    if as_json:
        echo_json(items)
    elif items:
        click.echo(_violations_table(items))
        click.echo(f"\n{len(items):,} violations")
    else:
        click.echo("no violations")
    return EXIT_OK


def _violations_table(items: list[dict[str, Any]]) -> str:
    rows = [
        (v["occurred_at"], v["kind"], v["subject_id"], v["principal_id"], v["detail"])
        for v in items
    ]
    return render_table(rows, ["occurred_at", "kind", "subject", "principal", "detail"])


# -- inventory --------------------------------------------------------------------------------


@click.command()
@db_option
@json_option
def inventory(db: str, as_json: bool) -> int:
    """The register of every principal: kind, owner, status, who delegated to it, what it
    delegated onward, the tools and resources it touched, its live credentials.

    Principals named in events but never registered are listed too, marked unknown.

    \b
    Examples:
      ledger inventory
      ledger inventory --json | jq '.[] | select(.kind == "agent" and .status == "active")'

    Exit: 0 done, 1 error.
    """
    from ledger.query import Ledger

    with Ledger.open(db) as ledger:
        items = ledger.inventory()
    if as_json:
        echo_json([i.to_dict() for i in items])
        return EXIT_OK

    def short(values: list[str]) -> str:
        return ",".join(values[:3]) + (f",+{len(values) - 3}" if len(values) > 3 else "")

    rows = [
        (
            i.principal_id,
            "unknown" if i.unknown else i.kind,
            i.owner_id or "",
            i.status,
            short(i.delegated_by),
            short(i.delegated_to),
            short(i.tools),
            short(i.resources),
            short(i.live_credentials),
        )
        for i in items
    ]
    headers = [
        "principal",
        "kind",
        "owner",
        "status",
        "delegated by",
        "delegated to",
        "tools",
        "resources",
        "live credentials",
    ]
    click.echo(render_table(rows, headers))
    return EXIT_OK


# -- sql --------------------------------------------------------------------------------------


@click.command()
@click.argument("query")
@db_option
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header row.")
def sql(query: str, db: str, as_json: bool, as_csv: bool) -> int:
    """Run one read-only SQL query against the ledger.

    Tables: entries, quarantine, principals, retirements, delegations, revocations,
    credentials, credential_revocations, decisions, actions. Writes, ATTACH, COPY,
    INSTALL/LOAD and file access are refused.

    \b
    Examples:
      ledger sql "SELECT type, count(*) FROM entries GROUP BY type"
      ledger sql "SELECT * FROM actions WHERE principal_id = 'agent:planner'" --json
      ledger sql "SELECT * FROM delegations" --csv > delegations.csv

    Exit: 0 done, 1 refused or failed query.
    """
    if as_json and as_csv:
        raise click.UsageError("--json and --csv are exclusive")
    from ledger.query import Ledger

    with Ledger.open(db) as ledger:
        result = ledger.sql(query)
    if as_json:
        echo_json(result.to_dict())
    elif as_csv:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(result.columns)
        for row in result.rows:
            writer.writerow([_csv_value(v) for v in row])
        click.echo(buf.getvalue(), nl=False)
    else:
        rows = [[_text_value(v) for v in row] for row in result.rows]
        click.echo(render_table(rows, result.columns))
    return EXIT_OK


def _csv_value(value: Any) -> Any:
    v = jsonable(value)
    return json.dumps(v) if isinstance(v, list | dict) else v


def _text_value(value: Any) -> Any:
    v = jsonable(value)
    return json.dumps(v, ensure_ascii=False) if isinstance(v, list | dict) else v


# -- rebuild ----------------------------------------------------------------------------------


@click.command()
@db_option
@json_option
def rebuild(db: str, as_json: bool) -> int:
    """Drop the query projections and rebuild them from the ledger's entries.

    The projections are a cache of `entries` (decoded from the exact stored bytes);
    answers are identical before and after. Needs write access (stop the consumer).

    \b
    Examples:
      ledger rebuild
      ledger rebuild --db audit.duckdb --json

    Exit: 0 rebuilt, 1 error.
    """
    from ledger.store import Store
    from ledger.store.projections import rebuild as run_rebuild

    meter = Progress("rebuild")
    with Store.open(db, create=False) as store:
        rows = run_rebuild(store, progress=meter.update)
    meter.done()
    if as_json:
        echo_json({"entries": rows, "db": db})
    else:
        click.echo(f"rebuilt projections from {rows:,} entries in {db}")
    return EXIT_OK


COMMANDS = [trace, blast_radius, authority, violations, inventory, sql, rebuild]
