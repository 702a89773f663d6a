"""One event contract, four spellings: Avro schema, projection columns, pydantic models, builders.

The contract is written down in four places: the Avro `data` records (the wire form, and the
source `TABLES` is derived from), the projection columns `TABLES` (what DuckDB stores), the
pydantic data models (what the JSON form accepts) and the builder methods agent code calls
(`EventBuilders`, inherited unchanged by `Emitter` and `SyncEmitter`). A field added to one and
not the others would be stored as NULL, dropped, or rejected at the first event, without an
error that says why. `contract_differences` compares them for each event type, field by
field and in order:

* Avro record == `TABLES` columns == model fields: names, order and column type (string and
  enum -> VARCHAR, array<string> -> VARCHAR[], timestamp-micros -> TIMESTAMPTZ, boolean ->
  BOOLEAN); Avro and model also agree on nullability, defaults and enum symbols.
* the builder method takes exactly the model's fields; a field the model makes optional is
  optional in the builder with the same default, a required one is required (except the few
  documented conveniences in `BUILDER_DEFAULTS`); calling it puts every field into `data`
  unchanged, and the event it builds passes the model.

The checker returns a list of differences, each naming the event type and the field. The
mutation tests below prove it reports what it is meant to report.
"""

from __future__ import annotations

import copy
import inspect
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

import pydantic
import pytest
from pydantic import BaseModel

from ledger.contract import columns, events
from ledger.contract.builders import EventBuilders
from ledger.contract.codec import current_schema, full_name
from ledger.errors import ValidationError
from ledger.stream.emitter import Emitter, SyncEmitter

Tables = Mapping[str, tuple[str, tuple[tuple[str, str], ...]]]

#: Builder defaults for fields the model requires: the builder picks the least-authority value
#: so agent code need not spell it out. The wire form still always carries the field.
BUILDER_DEFAULTS: dict[tuple[str, str], object] = {
    ("delegation.granted", "may_redelegate"): False,
    ("policy.decided", "reasons"): (),
}


class _NoDefault:
    def __repr__(self) -> str:
        return "<required>"


NO_DEFAULT: Any = _NoDefault()


@dataclass(frozen=True)
class FieldSpec:
    """One field as one source spells it; None means the source does not say."""

    name: str
    sql: str
    nullable: bool | None = None
    default: object = NO_DEFAULT
    symbols: tuple[str, ...] | None = None


class Contract(NamedTuple):
    """The four sources; the tests replace one of them with a mutated copy."""

    schema: Mapping[str, Any]
    tables: Tables
    models: Mapping[str, type[BaseModel]]
    builders: type[EventBuilders[Any]]


def real_contract() -> Contract:
    return Contract(
        schema=current_schema(),
        tables=columns.TABLES,
        models={etype: data for etype, (_, data, _) in events.EVENT_TYPES.items()},
        builders=EventBuilders,
    )


# -- each source as a list of FieldSpec -------------------------------------------------------


def avro_field(field: Mapping[str, Any]) -> FieldSpec:
    """string/enum -> VARCHAR, array<string> -> VARCHAR[], timestamp-micros -> TIMESTAMPTZ."""
    avro_type = field["type"]
    nullable = isinstance(avro_type, list) and "null" in avro_type
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        avro_type = branches[0] if len(branches) == 1 else branches
    symbols = None
    match avro_type:
        case "string":
            sql = "VARCHAR"
        case "boolean":
            sql = "BOOLEAN"
        case {"type": "enum", "symbols": list(names)}:
            sql, symbols = "VARCHAR", tuple(names)
        case {"type": "array", "items": "string"}:
            sql = "VARCHAR[]"
        case {"type": "long", "logicalType": "timestamp-micros"}:
            sql = "TIMESTAMPTZ"
        case _:
            sql = f"unmapped Avro type {avro_type!r}"
    return FieldSpec(field["name"], sql, nullable, field.get("default", NO_DEFAULT), symbols)


def avro_records(schema: Mapping[str, Any]) -> dict[str, list[FieldSpec]]:
    """Full record name -> fields, for every branch of `AuditEvent.data`."""
    data = next(f for f in schema["fields"] if f["name"] == "data")
    namespace = schema.get("namespace", "")
    return {
        full_name(record, namespace): [avro_field(f) for f in record["fields"]]
        for record in data["type"]
    }


def _strip_annotated(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def model_fields(model: type[BaseModel]) -> list[FieldSpec]:
    out = []
    for name, info in model.model_fields.items():
        annotation = _strip_annotated(info.annotation)
        nullable = False
        if get_origin(annotation) in (Union, types.UnionType):
            args = get_args(annotation)
            rest = [a for a in args if a is not type(None)]
            nullable = len(rest) < len(args)
            annotation = _strip_annotated(rest[0]) if len(rest) == 1 else annotation
        symbols = None
        if annotation is str:
            sql = "VARCHAR"
        elif get_origin(annotation) is Literal:
            sql, symbols = "VARCHAR", tuple(get_args(annotation))
        elif get_origin(annotation) is list and get_args(annotation) == (str,):
            sql = "VARCHAR[]"
        elif annotation is datetime:
            sql = "TIMESTAMPTZ"
        elif annotation is bool:
            sql = "BOOLEAN"
        else:
            sql = f"unmapped annotation {annotation!r}"
        default = NO_DEFAULT if info.is_required() else info.default
        out.append(FieldSpec(name, sql, nullable, default, symbols))
    return out


def table_fields(tables: Tables, etype: str) -> list[FieldSpec]:
    return [FieldSpec(name, sql) for name, sql in tables[etype][1]]


def builder_method(etype: str) -> str:
    return etype.replace(".", "_")


def builder_params(builders: type[EventBuilders[Any]], etype: str) -> list[FieldSpec]:
    """The data fields a builder method takes (not self, not the `**envelope` catch-all)."""
    signature = inspect.signature(getattr(builders, builder_method(etype)))
    return [
        FieldSpec(p.name, "", default=NO_DEFAULT if p.default is p.empty else p.default)
        for p in list(signature.parameters.values())[1:]
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]


# -- comparing them ---------------------------------------------------------------------------


def compare(
    etype: str,
    left_name: str,
    left: list[FieldSpec],
    right_name: str,
    right: list[FieldSpec],
    attributes: tuple[str, ...],
    *,
    ordered: bool = True,
) -> list[str]:
    """Differences between two spellings of one record: missing, extra, order, attributes."""
    out = []
    left_names, right_names = [f.name for f in left], [f.name for f in right]
    out += [
        f"{etype}: field {n!r} is in {left_name} but missing from {right_name}"
        for n in left_names
        if n not in right_names
    ]
    out += [
        f"{etype}: field {n!r} is in {right_name} but missing from {left_name}"
        for n in right_names
        if n not in left_names
    ]
    common_left = [n for n in left_names if n in right_names]
    common_right = [n for n in right_names if n in left_names]
    if ordered and common_left != common_right:
        out.append(
            f"{etype}: fields in a different order: {left_name} has {common_left}, "
            f"{right_name} has {common_right}"
        )
    by_name = {f.name: f for f in right}
    for lf in left:
        rf = by_name.get(lf.name)
        if rf is None:
            continue
        for attribute in attributes:
            lv, rv = getattr(lf, attribute), getattr(rf, attribute)
            if lv != rv or type(lv) is not type(rv):
                out.append(
                    f"{etype}: field {lf.name!r} has {attribute} {lv!r} in {left_name} "
                    f"but {rv!r} in {right_name}"
                )
    return out


def builder_defaults_differences(
    etype: str, model_name: str, model: list[FieldSpec], builder_name: str, params: list[FieldSpec]
) -> list[str]:
    """Optional in the model <=> optional in the builder, with the same default."""
    out = []
    by_name = {p.name: p for p in params}
    for field in model:
        param = by_name.get(field.name)
        if param is None:
            continue
        allowed = BUILDER_DEFAULTS.get((etype, field.name), NO_DEFAULT)
        if field.default is NO_DEFAULT and param.default is not NO_DEFAULT:
            if param.default != allowed:
                out.append(
                    f"{etype}: field {field.name!r} is required by {model_name} but "
                    f"{builder_name} defaults it to {param.default!r}"
                )
        elif field.default is NO_DEFAULT and allowed is not NO_DEFAULT:
            out.append(
                f"{etype}: field {field.name!r} is listed in BUILDER_DEFAULTS but "
                f"{builder_name} requires it"
            )
        elif field.default is not NO_DEFAULT and param.default is NO_DEFAULT:
            out.append(
                f"{etype}: field {field.name!r} is optional in {model_name} (default "
                f"{field.default!r}) but required by {builder_name}"
            )
        elif field.default is not NO_DEFAULT and param.default != field.default:
            out.append(
                f"{etype}: field {field.name!r} defaults to {field.default!r} in {model_name} "
                f"but to {param.default!r} in {builder_name}"
            )
    return out


def sample_value(field: FieldSpec, index: int) -> Any:
    """A valid, recognisable value for a field (later timestamps for later fields)."""
    if field.symbols:
        return field.symbols[-1]
    return {
        "VARCHAR": f"{field.name}-value",
        "VARCHAR[]": [f"{field.name}-a", f"{field.name}-b"],
        "TIMESTAMPTZ": datetime(2026, 3, 23, tzinfo=UTC) + timedelta(hours=index),
        "BOOLEAN": field.default is not True,
    }.get(field.sql, f"{field.name}-value")


def builder_output_differences(
    etype: str,
    builder_name: str,
    builders: type[EventBuilders[Any]],
    model_name: str,
    model: list[FieldSpec],
) -> list[str]:
    """Call the builder with every field set; `data` must carry each one unchanged."""
    params = {p.name for p in builder_params(builders, etype)}
    expected = {f.name: sample_value(f, i) for i, f in enumerate(model) if f.name in params}
    # a parameter the model lacks (reported already) still needs a value to make the call
    args = {name: expected.get(name, f"{name}-value") for name in params}

    class Capture(builders):  # type: ignore[valid-type,misc]
        def _submit(self, event: dict[str, Any]) -> dict[str, Any]:
            return event

    try:
        event = getattr(Capture(), builder_method(etype))(**args)
    except Exception as exc:  # a broken builder is a difference too
        return [f"{etype}: {builder_name} raised {exc!r} when given every field"]
    out = []
    data = event["data"]
    out += [
        f"{etype}: field {f.name!r} of {model_name} is missing from the data {builder_name} builds"
        for f in model
        if f.name not in data
    ]
    out += [
        f"{etype}: field {name!r} is in the data {builder_name} builds but not in {model_name}"
        for name in data
        if name not in {f.name for f in model}
    ]
    out += [
        f"{etype}: field {name!r}: {builder_name} puts {data[name]!r} in data, given {value!r}"
        for name, value in expected.items()
        if name in data and data[name] != value
    ]
    if event["type"] != etype:
        out.append(f"{etype}: {builder_name} builds events of type {event['type']!r}")
    elif not out:
        try:
            events.parse_event(event)
        except ValidationError as exc:
            out.append(f"{etype}: the event {builder_name} builds is rejected: {exc}")
    return out


def event_type_differences(contract: Contract, etype: str) -> list[str]:
    """Every difference between the four spellings of one event type's `data`."""
    record = events.EVENT_TYPES[etype][2]
    records = avro_records(contract.schema)
    if record not in records:
        return [f"{etype}: the Avro schema has no data record {record}"]
    if etype not in contract.tables:
        return [f"{etype}: TABLES has no table for it"]
    if not hasattr(contract.builders, builder_method(etype)):
        return [f"{etype}: {contract.builders.__name__} has no {builder_method(etype)}()"]
    avro_name = f"Avro record {record}"
    avro = records[record]
    table_name = f"TABLES[{etype!r}] ({contract.tables[etype][0]})"
    model = contract.models[etype]
    model_name = f"model {model.__name__}"
    model_specs = model_fields(model)
    builder_name = f"builder {contract.builders.__name__}.{builder_method(etype)}()"
    params = builder_params(contract.builders, etype)
    return [
        *compare(
            etype, avro_name, avro, table_name, table_fields(contract.tables, etype), ("sql",)
        ),
        *compare(
            etype,
            avro_name,
            avro,
            model_name,
            model_specs,
            ("sql", "nullable", "default", "symbols"),
        ),
        *compare(etype, model_name, model_specs, builder_name, params, (), ordered=False),
        *builder_defaults_differences(etype, model_name, model_specs, builder_name, params),
        *builder_output_differences(
            etype, builder_name, contract.builders, model_name, model_specs
        ),
    ]


def contract_differences(contract: Contract) -> list[str]:
    """Every difference in the whole contract: the same event types everywhere, then each."""
    out = []
    known = {record for _, _, record in events.EVENT_TYPES.values()}
    out += [
        f"the Avro schema has data record {r} that no event type uses"
        for r in avro_records(contract.schema)
        if r not in known
    ]
    out += [
        f"TABLES has a table for unknown event type {t!r}"
        for t in contract.tables
        if t not in events.EVENT_TYPES
    ]
    for etype in events.EVENT_TYPES:
        out += event_type_differences(contract, etype)
    return out


# -- the real contract ------------------------------------------------------------------------


@pytest.mark.parametrize("etype", list(events.EVENT_TYPES))
def test_avro_columns_models_and_builders_agree(etype: str) -> None:
    assert event_type_differences(real_contract(), etype) == []


def test_the_whole_contract_agrees() -> None:
    assert contract_differences(real_contract()) == []
    assert len(avro_records(current_schema())) == len(events.EVENT_TYPES) == len(columns.TABLES)


def test_envelope_model_matches_the_avro_envelope() -> None:
    schema = current_schema()
    avro = [avro_field(f) for f in schema["fields"] if f["name"] not in ("type", "data")]
    model = model_fields(events._Envelope)
    attributes = ("sql", "nullable", "default")
    assert compare("envelope", "AuditEvent", avro, "model _Envelope", model, attributes) == []


@pytest.mark.parametrize("emitter", [Emitter, SyncEmitter])
def test_emitters_expose_the_checked_builders_unchanged(emitter: type) -> None:
    for etype in events.EVENT_TYPES:
        name = builder_method(etype)
        assert getattr(emitter, name) is getattr(EventBuilders, name), f"{emitter} overrides {name}"


def test_tables_are_derived_from_the_schema_in_field_order() -> None:
    schema = copy.deepcopy(current_schema())
    record = next(r for r in schema["fields"][-1]["type"] if r["name"] == "ActionPerformed")
    record["fields"].append({"name": "ticket", "type": ["null", "string"], "default": None})
    derived = columns.derive_tables(schema)
    assert derived["action.performed"][1][-1] == ("ticket", "VARCHAR")
    assert columns.derive_tables(current_schema()) == columns.TABLES
    table, cols, arrow = columns.SCHEMAS["delegation.granted"]
    assert [c for c, _ in cols] == ["seq", "event_id", "occurred_at", *(n for n, _ in cols[3:])]
    assert arrow.names == ["pos", *(n for n, _ in cols[1:])]
    assert table == "delegations"


@pytest.mark.parametrize(
    ("avro_type", "sql"),
    [
        ("string", "VARCHAR"),
        (["null", "string"], "VARCHAR"),
        ({"type": "enum", "name": "E", "symbols": ["a"]}, "VARCHAR"),
        ({"type": "array", "items": "string"}, "VARCHAR[]"),
        ({"type": "long", "logicalType": "timestamp-micros"}, "TIMESTAMPTZ"),
        (["null", {"type": "long", "logicalType": "timestamp-micros"}], "TIMESTAMPTZ"),
        ("boolean", "BOOLEAN"),
    ],
)
def test_sql_type_of_each_avro_type(avro_type: Any, sql: str) -> None:
    assert columns.sql_type(avro_type) == sql


@pytest.mark.parametrize(
    "avro_type", ["int", "long", {"type": "array", "items": "long"}, ["null", "string", "long"]]
)
def test_an_avro_type_without_a_column_type_is_refused(avro_type: Any) -> None:
    with pytest.raises(TypeError, match="no projection column type"):
        columns.sql_type(avro_type)


# -- the checker reports what it is meant to report -------------------------------------------


def _record(schema: dict[str, Any], name: str) -> dict[str, Any]:
    data = next(f for f in schema["fields"] if f["name"] == "data")
    record: dict[str, Any] = next(r for r in data["type"] if r["name"] == name)
    return record


def avro_with_extra_field(contract: Contract) -> Contract:
    schema = copy.deepcopy(dict(contract.schema))
    _record(schema, "DelegationGranted")["fields"].append(
        {"name": "ticket_id", "type": ["null", "string"], "default": None}
    )
    return contract._replace(schema=schema)


def avro_field_made_nullable(contract: Contract) -> Contract:
    schema = copy.deepcopy(dict(contract.schema))
    fields = _record(schema, "CredentialIssued")["fields"]
    fingerprint = next(f for f in fields if f["name"] == "fingerprint")
    fingerprint.update(type=["null", "string"], default=None)
    return contract._replace(schema=schema)


def avro_enum_symbol_added(contract: Contract) -> Contract:
    schema = copy.deepcopy(dict(contract.schema))
    fields = _record(schema, "PolicyDecided")["fields"]
    next(f for f in fields if f["name"] == "decision")["type"]["symbols"].append("abstain")
    return contract._replace(schema=schema)


def _tables_with(etype: str, cols: tuple[tuple[str, str], ...], tables: Tables) -> Tables:
    return {**tables, etype: (tables[etype][0], cols)}


def table_column_dropped(contract: Contract) -> Contract:
    cols = tuple(c for c in contract.tables["action.performed"][1] if c[0] != "tool")
    return contract._replace(tables=_tables_with("action.performed", cols, contract.tables))


def table_column_retyped(contract: Contract) -> Contract:
    cols = tuple(
        (n, "VARCHAR" if n == "cascade" else t) for n, t in contract.tables["delegation.revoked"][1]
    )
    return contract._replace(tables=_tables_with("delegation.revoked", cols, contract.tables))


def table_columns_swapped(contract: Contract) -> Contract:
    a, b, *rest = contract.tables["principal.retired"][1]
    return contract._replace(
        tables=_tables_with("principal.retired", (b, a, *rest), contract.tables)
    )


def model_with_extra_field(contract: Contract) -> Contract:
    model = pydantic.create_model(
        "ActionPerformed", __base__=events.ActionPerformed, ticket=(str | None, None)
    )
    return contract._replace(models={**contract.models, "action.performed": model})


def model_default_changed(contract: Contract) -> Contract:
    model = pydantic.create_model(
        "DelegationRevoked", __base__=events.DelegationRevoked, cascade=(bool, False)
    )
    return contract._replace(models={**contract.models, "delegation.revoked": model})


def builder_with_extra_parameter(contract: Contract) -> Contract:
    class Builders(contract.builders):  # type: ignore[name-defined,misc]
        def credential_revoked(
            self,
            credential_id: str,
            revoked_by: str,
            reason: str | None = None,
            *,
            ticket: str | None = None,
            **envelope: Any,
        ) -> Any:
            return super().credential_revoked(credential_id, revoked_by, reason, **envelope)

    return contract._replace(builders=Builders)


def builder_without_a_field(contract: Contract) -> Contract:
    class Builders(contract.builders):  # type: ignore[name-defined,misc]
        def principal_retired(self, principal_id: str, retired_by: str, **envelope: Any) -> Any:
            return super().principal_retired(principal_id, retired_by, **envelope)

    return contract._replace(builders=Builders)


def builder_defaulting_a_required_field(contract: Contract) -> Contract:
    class Builders(contract.builders):  # type: ignore[name-defined,misc]
        def credential_issued(
            self,
            credential_id: str,
            *,
            principal_id: str,
            kind: str,
            scopes: Iterable[str],
            fingerprint: str = "none",
            expires_at: datetime | str | None = None,
            delegation_id: str | None = None,
            **envelope: Any,
        ) -> Any:
            return super().credential_issued(
                credential_id,
                principal_id=principal_id,
                kind=kind,
                scopes=scopes,
                fingerprint=fingerprint,
                expires_at=expires_at,
                delegation_id=delegation_id,
                **envelope,
            )

    return contract._replace(builders=Builders)


def builder_dropping_a_field_from_data(contract: Contract) -> Contract:
    class Builders(contract.builders):  # type: ignore[name-defined,misc]
        def _event(self, etype: str, data: dict[str, Any], envelope: dict[str, Any]) -> Any:
            if etype == "action.performed":
                data = {k: v for k, v in data.items() if k != "tool"}
            return super()._event(etype, data, envelope)

    return contract._replace(builders=Builders)


MUTATIONS: list[tuple[Callable[[Contract], Contract], list[str]]] = [
    (
        avro_with_extra_field,
        [
            "delegation.granted: field 'ticket_id' is in Avro record ledger.v1.DelegationGranted "
            "but missing from TABLES['delegation.granted'] (delegations)",
            "delegation.granted: field 'ticket_id' is in Avro record ledger.v1.DelegationGranted "
            "but missing from model DelegationGranted",
        ],
    ),
    (
        avro_field_made_nullable,
        [
            "credential.issued: field 'fingerprint' has nullable True in Avro record "
            "ledger.v1.CredentialIssued but False in model CredentialIssued",
            "credential.issued: field 'fingerprint' has default None in Avro record "
            "ledger.v1.CredentialIssued but <required> in model CredentialIssued",
        ],
    ),
    (
        avro_enum_symbol_added,
        [
            "policy.decided: field 'decision' has symbols ('allow', 'deny', 'abstain') in Avro "
            "record ledger.v1.PolicyDecided but ('allow', 'deny') in model PolicyDecided"
        ],
    ),
    (
        table_column_dropped,
        [
            "action.performed: field 'tool' is in Avro record ledger.v1.ActionPerformed but "
            "missing from TABLES['action.performed'] (actions)"
        ],
    ),
    (
        table_column_retyped,
        [
            "delegation.revoked: field 'cascade' has sql 'BOOLEAN' in Avro record "
            "ledger.v1.DelegationRevoked but 'VARCHAR' in TABLES['delegation.revoked'] "
            "(revocations)"
        ],
    ),
    (
        table_columns_swapped,
        [
            "principal.retired: fields in a different order: Avro record "
            "ledger.v1.PrincipalRetired has ['principal_id', 'retired_by', 'reason'], "
            "TABLES['principal.retired'] (retirements) has ['retired_by', 'principal_id', "
            "'reason']"
        ],
    ),
    (
        model_with_extra_field,
        [
            "action.performed: field 'ticket' is in model ActionPerformed but missing from "
            "Avro record ledger.v1.ActionPerformed",
            "action.performed: field 'ticket' is in model ActionPerformed but missing from "
            "builder EventBuilders.action_performed()",
            "action.performed: field 'ticket' of model ActionPerformed is missing from the data "
            "builder EventBuilders.action_performed() builds",
        ],
    ),
    (
        model_default_changed,
        [
            "delegation.revoked: field 'cascade' has default True in Avro record "
            "ledger.v1.DelegationRevoked but False in model DelegationRevoked",
            "delegation.revoked: field 'cascade' defaults to False in model DelegationRevoked "
            "but to True in builder EventBuilders.delegation_revoked()",
        ],
    ),
    (
        builder_with_extra_parameter,
        [
            "credential.revoked: field 'ticket' is in builder Builders.credential_revoked() but "
            "missing from model CredentialRevoked",
        ],
    ),
    (
        builder_without_a_field,
        [
            "principal.retired: field 'reason' is in model PrincipalRetired but missing from "
            "builder Builders.principal_retired()",
        ],
    ),
    (
        builder_defaulting_a_required_field,
        [
            "credential.issued: field 'fingerprint' is required by model CredentialIssued but "
            "builder Builders.credential_issued() defaults it to 'none'",
        ],
    ),
    (
        builder_dropping_a_field_from_data,
        [
            "action.performed: field 'tool' of model ActionPerformed is missing from the data "
            "builder Builders.action_performed() builds",
        ],
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [pytest.param(m, e, id=m.__name__) for m, e in MUTATIONS]
)
def test_checker_names_the_type_and_field_of_a_mutation(
    mutate: Callable[[Contract], Contract], expected: list[str]
) -> None:
    assert contract_differences(real_contract()) == []
    assert contract_differences(mutate(real_contract())) == expected


def test_checker_reports_a_builder_whose_event_the_model_rejects() -> None:
    class Builders(EventBuilders[Any]):
        producer_name = ""  # every field right, but the envelope is not a valid event

    differences = contract_differences(real_contract()._replace(builders=Builders))
    assert len(differences) == len(events.EVENT_TYPES), differences
    assert differences[-1].startswith(
        "action.performed: the event builder Builders.action_performed() builds is rejected: "
        "producer: String should have at least 1 character"
    ), differences


def test_checker_reports_a_builder_that_changes_a_value() -> None:
    class Builders(EventBuilders[Any]):
        def _event(self, etype: str, data: dict[str, Any], envelope: dict[str, Any]) -> Any:
            return super()._event(
                etype, {**data, "scopes": []} if "scopes" in data else data, envelope
            )

    differences = contract_differences(real_contract()._replace(builders=Builders))
    assert [d.split(":")[0] for d in differences] == ["delegation.granted", "credential.issued"]
    assert differences[1].startswith(
        "credential.issued: field 'scopes': builder Builders.credential_issued() puts [] in data, "
        "given ['scopes-a', 'scopes-b']"
    ), differences
