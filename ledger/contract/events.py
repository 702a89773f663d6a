"""The event contract: frozen pydantic models of the JSON form, and the same checks on Avro.

Only malformed events are rejected here. An event that reveals misconduct (an unowned agent, an
out-of-scope action) is well-formed: the ledger records what happened, the query layer flags it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, get_args

import pydantic
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

from ledger.errors import ValidationError

__all__ = [
    "DATA_NON_EMPTY",
    "ENVELOPE_NON_EMPTY",
    "EPOCH",
    "EVENT_ADAPTER",
    "EVENT_TYPES",
    "MAX_MICROS",
    "MIN_MICROS",
    "RECORD_TO_TYPE",
    "TIMESTAMP_FIELDS",
    "WINDOWS",
    "ActionPerformed",
    "ActionPerformedEvent",
    "CredentialIssued",
    "CredentialIssuedEvent",
    "CredentialKind",
    "CredentialRevoked",
    "CredentialRevokedEvent",
    "DelegationGranted",
    "DelegationGrantedEvent",
    "DelegationRevoked",
    "DelegationRevokedEvent",
    "Event",
    "Id",
    "PolicyDecided",
    "PolicyDecidedEvent",
    "PrincipalKind",
    "PrincipalRegistered",
    "PrincipalRegisteredEvent",
    "PrincipalRetired",
    "PrincipalRetiredEvent",
    "Text",
    "Timestamp",
    "check_record",
    "from_micros",
    "parse_event",
    "parse_event_json",
    "to_json_dict",
    "to_micros",
    "to_record",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


_ISO_DATETIME = re.compile(r"\s*\d{4}-\d{2}-\d{2}[Tt ]\d")


def _only_text_or_datetime(value: object) -> object:
    """Only ISO 8601 date-times: pydantic alone would also take numbers, numeric strings
    (as Unix time) and bare dates, none of which say unambiguously when something happened."""
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_DATETIME.match(value)):
        return value
    raise ValueError("timestamp must be an ISO 8601 date-time such as 2026-03-23T10:00:00Z")


def _as_utc(value: datetime) -> datetime:
    """Naive timestamps are taken as UTC (the contract says every timestamp is UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("timestamp outside years 1-9999 once converted to UTC") from exc


Id = Annotated[str, StringConstraints(min_length=1)]
Text = Annotated[str, StringConstraints(min_length=1)]
Timestamp = Annotated[datetime, BeforeValidator(_only_text_or_datetime), AfterValidator(_as_utc)]
PrincipalKind = Literal["human", "agent", "service", "tool"]
CredentialKind = Literal["token", "api_key", "certificate", "password", "other"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PrincipalRegistered(_Model):
    principal_id: Id
    kind: PrincipalKind
    display_name: str | None = None
    owner_id: Id | None = None
    model: str | None = None


class PrincipalRetired(_Model):
    principal_id: Id
    retired_by: Id
    reason: str | None = None


class DelegationGranted(_Model):
    delegation_id: Id
    parent_delegation_id: Id | None = None
    delegator_id: Id
    delegate_id: Id
    scopes: list[str]
    resources: list[str]
    purpose: str | None = None
    not_before: Timestamp
    expires_at: Timestamp
    may_redelegate: StrictBool

    @model_validator(mode="after")
    def _window(self) -> DelegationGranted:
        if self.expires_at <= self.not_before:
            raise ValueError("expires_at must be after not_before")
        return self


class DelegationRevoked(_Model):
    delegation_id: Id
    revoked_by: Id
    reason: str | None = None
    cascade: StrictBool = True


class CredentialIssued(_Model):
    credential_id: Id
    principal_id: Id
    delegation_id: Id | None = None
    kind: CredentialKind
    scopes: list[str]
    expires_at: Timestamp | None = None
    fingerprint: Text


class CredentialRevoked(_Model):
    credential_id: Id
    revoked_by: Id
    reason: str | None = None


class PolicyDecided(_Model):
    decision_id: Id
    principal_id: Id
    delegation_id: Id | None = None
    action_id: Id | None = None
    operation: Text
    resource: Text
    decision: Literal["allow", "deny"]
    policy_id: Id
    reasons: list[str]


class ActionPerformed(_Model):
    action_id: Id
    principal_id: Id
    delegation_id: Id | None = None
    credential_id: Id | None = None
    tool: str | None = None
    operation: Text
    resource: Text
    outcome: Literal["succeeded", "failed", "denied"]
    parent_action_id: Id | None = None
    decision_id: Id | None = None


class _Envelope(_Model):
    event_id: Id
    occurred_at: Timestamp
    producer: Id
    trace_id: str | None = None
    span_id: str | None = None


class PrincipalRegisteredEvent(_Envelope):
    type: Literal["principal.registered"]
    data: PrincipalRegistered


class PrincipalRetiredEvent(_Envelope):
    type: Literal["principal.retired"]
    data: PrincipalRetired


class DelegationGrantedEvent(_Envelope):
    type: Literal["delegation.granted"]
    data: DelegationGranted


class DelegationRevokedEvent(_Envelope):
    type: Literal["delegation.revoked"]
    data: DelegationRevoked


class CredentialIssuedEvent(_Envelope):
    type: Literal["credential.issued"]
    data: CredentialIssued


class CredentialRevokedEvent(_Envelope):
    type: Literal["credential.revoked"]
    data: CredentialRevoked


class PolicyDecidedEvent(_Envelope):
    type: Literal["policy.decided"]
    data: PolicyDecided


class ActionPerformedEvent(_Envelope):
    type: Literal["action.performed"]
    data: ActionPerformed


Event = Annotated[
    PrincipalRegisteredEvent
    | PrincipalRetiredEvent
    | DelegationGrantedEvent
    | DelegationRevokedEvent
    | CredentialIssuedEvent
    | CredentialRevokedEvent
    | PolicyDecidedEvent
    | ActionPerformedEvent,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

#: event type -> (envelope model, data model, Avro record full name)
EVENT_TYPES: dict[str, tuple[type[_Envelope], type[_Model], str]] = {
    "principal.registered": (
        PrincipalRegisteredEvent,
        PrincipalRegistered,
        "ledger.v1.PrincipalRegistered",
    ),
    "principal.retired": (PrincipalRetiredEvent, PrincipalRetired, "ledger.v1.PrincipalRetired"),
    "delegation.granted": (
        DelegationGrantedEvent,
        DelegationGranted,
        "ledger.v1.DelegationGranted",
    ),
    "delegation.revoked": (
        DelegationRevokedEvent,
        DelegationRevoked,
        "ledger.v1.DelegationRevoked",
    ),
    "credential.issued": (CredentialIssuedEvent, CredentialIssued, "ledger.v1.CredentialIssued"),
    "credential.revoked": (
        CredentialRevokedEvent,
        CredentialRevoked,
        "ledger.v1.CredentialRevoked",
    ),
    "policy.decided": (PolicyDecidedEvent, PolicyDecided, "ledger.v1.PolicyDecided"),
    "action.performed": (ActionPerformedEvent, ActionPerformed, "ledger.v1.ActionPerformed"),
}
RECORD_TO_TYPE = {record: etype for etype, (_, _, record) in EVENT_TYPES.items()}


def _is_non_empty(annotation: Any) -> bool:
    """Whether an annotation is `Id`/`Text`, or a union holding one (`Id | None`)."""
    if any(getattr(m, "min_length", None) == 1 for m in getattr(annotation, "__metadata__", ())):
        return True
    return any(_is_non_empty(arg) for arg in get_args(annotation))


def _non_empty_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """Fields that must not be the empty string (when present, for nullable ones)."""
    return tuple(
        name
        for name, info in model.model_fields.items()
        if any(getattr(m, "min_length", None) == 1 for m in info.metadata)
        or _is_non_empty(info.annotation)
    )


ENVELOPE_NON_EMPTY = _non_empty_fields(_Envelope)
DATA_NON_EMPTY = {etype: _non_empty_fields(data) for etype, (_, data, _) in EVENT_TYPES.items()}
#: (start, end) timestamp fields of an event type whose end must come after its start
WINDOWS = {"delegation.granted": ("not_before", "expires_at")}
TIMESTAMP_FIELDS = {
    etype: tuple(n for n, i in data.model_fields.items() if "datetime" in repr(i.annotation))
    for etype, (_, data, _) in EVENT_TYPES.items()
}


def _reason(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:3]:
        loc = ".".join(
            str(p) for p in err["loc"] if not str(p).endswith("Event") and p not in EVENT_TYPES
        )
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "union_tag_invalid":
            msg = f"unknown event type {err['input'].get('type')!r}; expected one of " + ", ".join(
                EVENT_TYPES
            )
        elif err["type"] == "union_tag_not_found":
            msg = "missing field 'type'"
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def parse_event(obj: Any) -> Event:
    """Validate one event given as a dict; raise `ValidationError` with a one-line reason."""
    if not isinstance(obj, dict):
        raise ValidationError(f"an event must be a JSON object, got {type(obj).__name__}")
    try:
        return EVENT_ADAPTER.validate_python(obj)
    except pydantic.ValidationError as exc:
        raise ValidationError(_reason(exc)) from exc


def parse_event_json(text: str | bytes) -> Event:
    """Validate one event given as JSON text."""
    try:
        return EVENT_ADAPTER.validate_json(text)
    except pydantic.ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise ValidationError(f"not valid JSON: {exc.errors()[0]['msg']}") from exc
        if any(
            e["type"] in ("model_attributes_type", "dict_type") and not e["loc"]
            for e in exc.errors()
        ):
            raise ValidationError("an event must be a JSON object") from exc
        raise ValidationError(_reason(exc)) from exc


def to_micros(value: datetime) -> int:
    return (value - EPOCH) // _MICRO


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


#: the range of UTC microseconds a timestamp of the JSON form (years 1-9999) can express
MIN_MICROS = to_micros(datetime.min.replace(tzinfo=UTC))
MAX_MICROS = to_micros(datetime.max.replace(tzinfo=UTC))


def to_record(event: Event) -> dict[str, Any]:
    """The Avro form of an event: timestamps as UTC microseconds, `data` a plain dict."""
    data = dict(event.data.__dict__)
    for name in TIMESTAMP_FIELDS[event.type]:
        if data[name] is not None:
            data[name] = to_micros(data[name])
    return {
        "event_id": event.event_id,
        "type": event.type,
        "occurred_at": to_micros(event.occurred_at),
        "producer": event.producer,
        "trace_id": event.trace_id,
        "span_id": event.span_id,
        "data": data,
    }


def to_json_dict(record: dict[str, Any]) -> dict[str, Any]:
    """The JSON form of an Avro-shaped record (what `ledger export` writes)."""
    etype = record["type"]
    data = dict(record["data"])
    for name in TIMESTAMP_FIELDS.get(etype, ()):
        if data.get(name) is not None:
            data[name] = _iso(data[name])
    out = {k: v for k, v in record.items() if k != "data"}
    out["occurred_at"] = _iso(record["occurred_at"])
    out["data"] = data
    return out


def _iso(micros: int) -> str:
    return from_micros(micros).isoformat().replace("+00:00", "Z")


def check_record(record: dict[str, Any], record_name: str) -> str | None:
    """Checks Avro cannot express, on a decoded record; returns the reason it is malformed or None.

    `fastdecode.BatchDecoder` compiles the same tables (non-empty fields, timestamp ranges,
    windows) into its fast path; a rule that is not in a table must be added there too.

    Runs on the consumer's hot path instead of a pydantic round trip; it applies the same
    rules as the models (non-empty ids, type matches data, delegation window).
    """
    etype = record["type"]
    spec = EVENT_TYPES.get(etype)
    if spec is None:
        return f"unknown event type {etype!r}; expected one of " + ", ".join(EVENT_TYPES)
    if spec[2] != record_name:
        return f"type {etype!r} does not match data record {record_name.rsplit('.', 1)[-1]}"
    for name in ENVELOPE_NON_EMPTY:
        if record[name] == "":
            return f"{name}: String should have at least 1 character"
    if not MIN_MICROS <= record["occurred_at"] <= MAX_MICROS:
        return "occurred_at: timestamp outside years 1-9999"
    data = record["data"]
    for name in DATA_NON_EMPTY[etype]:
        if data[name] == "":
            return f"data.{name}: String should have at least 1 character"
    for name in TIMESTAMP_FIELDS[etype]:
        value = data[name]
        if value is not None and not MIN_MICROS <= value <= MAX_MICROS:
            return f"data.{name}: timestamp outside years 1-9999"
    window = WINDOWS.get(etype)
    if window is not None and data[window[1]] <= data[window[0]]:
        return f"data: {window[1]} must be after {window[0]}"
    return None
