"""Can data written with one Avro schema be read with another? Decided from the two schemas alone.

The rules are those of the Apache Avro 1.11 specification, "Schema Resolution", as fastavro
applies them when it reads: records match by unqualified name (or a reader alias) and their
fields by name, a reader field the writer lacks needs a default, an enum's writer symbols must
be reader symbols (or the reader enum has a default), arrays and maps resolve their items and
values, fixed types need the same size, primitives match or promote (int to long, float or
double; long to float or double; float to double; string and bytes either way). A writer
union resolves when every one of its branches does; a reader union takes the first branch
that matches the writer.

fastavro resolves lazily, one datum at a time, so a writer schema that cannot be read would
only fail on the first event that uses the branch in question. The ledger decides before it
accepts a schema resolved by id (`Codec.register_id`), so an unusable schema is refused once,
with a reason, instead of failing events one by one. One rule is stricter than the
specification: where the reader field carries a `logicalType`, the writer's must be the same.
The specification ignores logical types when resolving, but a `timestamp-millis` read as
`timestamp-micros` would shift every time by a factor of 1000 without any error.

Pure; called once per schema, never per event.
"""

from __future__ import annotations

import copy
from typing import Any

import fastavro

__all__ = ["resolution_problem"]

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})
#: writer type -> reader types it promotes to (Avro 1.11, "Schema Resolution")
_PROMOTIONS = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}

_Names = dict[str, Any]
_Path = tuple[str, ...]


def resolution_problem(writer: Any, reader: Any) -> str | None:
    """Why data written with `writer` cannot be read with `reader` (both Avro schemas as
    parsed JSON), as one line naming where (`field data, writer union branch 8: ...`); None
    when it can.

    A schema that does not parse (unknown type name, bad default) is a problem too."""
    try:
        w_names: _Names = {}
        r_names: _Names = {}
        w = fastavro.parse_schema(copy.deepcopy(writer), w_names, _write_hint=False)
        r = fastavro.parse_schema(copy.deepcopy(reader), r_names, _write_hint=False)
    except Exception as exc:  # fastavro raises several unrelated types for a bad schema
        return f"not a valid Avro schema: {type(exc).__name__}: {exc}"
    return _Resolver(w_names, r_names).resolve(w, r, ())


class _Resolver:
    def __init__(self, w_names: _Names, r_names: _Names) -> None:
        self.w_names = w_names
        self.r_names = r_names
        #: named pairs being resolved: a recursive type resolves if it does on first visit
        self.active: set[tuple[str, str]] = set()

    def resolve(self, w: Any, r: Any, path: _Path) -> str | None:
        w, r = _deref(w, self.w_names), _deref(r, self.r_names)
        if isinstance(w, list):
            for i, branch in enumerate(w):
                problem = self.resolve(branch, r, (*path, f"writer union branch {i}"))
                if problem:
                    return problem
            return None
        if isinstance(r, list):
            for branch in r:
                if self.matches(w, _deref(branch, self.r_names)):
                    return self.resolve(w, branch, path)
            return f"{_at(path)}the writer's {_describe(w)} matches no branch of the reader's union"
        w_kind, r_kind = _kind(w), _kind(r)
        logical = r.get("logicalType") if isinstance(r, dict) else None
        if logical is not None and (not isinstance(w, dict) or w.get("logicalType") != logical):
            return f"{_at(path)}the reader's {logical} is written as {_describe(w)}"
        if w_kind in _PRIMITIVES or r_kind in _PRIMITIVES:
            if w_kind == r_kind or r_kind in _PROMOTIONS.get(w_kind, ()):
                return None
            return f"{_at(path)}the writer's {_describe(w)} cannot be read as {_describe(r)}"
        if w_kind != r_kind and not {w_kind, r_kind} <= {"record", "error"}:
            return f"{_at(path)}the writer's {_describe(w)} cannot be read as {_describe(r)}"
        if w_kind == "array":
            return self.resolve(w["items"], r["items"], (*path, "array items"))
        if w_kind == "map":
            return self.resolve(w["values"], r["values"], (*path, "map values"))
        if not _same_name(w, r):
            return f"{_at(path)}the writer's {_describe(w)} is not the reader's {_describe(r)}"
        if w_kind == "fixed":
            if w["size"] != r["size"]:
                return f"{_at(path)}fixed {r['name']} has {w['size']} bytes, not {r['size']}"
            return None
        if w_kind == "enum":
            extra = [s for s in w["symbols"] if s not in r["symbols"]]
            if extra and "default" not in r:
                return f"{_at(path)}enum {r['name']} has no symbol {extra[0]!r} and no default"
            return None
        return self.record(w, r, path)

    def record(self, w: dict[str, Any], r: dict[str, Any], path: _Path) -> str | None:
        pair = (w["name"], r["name"])
        if pair in self.active:
            return None
        self.active.add(pair)
        try:
            written = {f["name"]: f for f in w["fields"]}
            for field in r["fields"]:
                names = [field["name"], *field.get("aliases", ())]
                source = next((written[n] for n in names if n in written), None)
                if source is None:
                    if "default" not in field:
                        where = _at((*path, f"field {field['name']}"))
                        return (
                            f"{where}the reader needs it, and the writer's record {w['name']} "
                            "has no such field (nor does the reader give a default)"
                        )
                    continue
                problem = self.resolve(
                    source["type"], field["type"], (*path, f"field {field['name']}")
                )
                if problem:
                    return problem
            return None
        finally:
            self.active.discard(pair)

    def matches(self, w: Any, r: Any) -> bool:
        """Whether a reader union branch `r` is the one a non-union writer `w` is read as (its
        kind, promotions included, and its name for named types), before resolving them."""
        if isinstance(w, list) or isinstance(r, list):
            return False
        w_kind, r_kind = _kind(w), _kind(r)
        if w_kind in _PRIMITIVES or r_kind in _PRIMITIVES:
            return w_kind == r_kind or r_kind in _PROMOTIONS.get(w_kind, ())
        if w_kind in _NAMED and r_kind in _NAMED:
            return (w_kind == r_kind or {w_kind, r_kind} <= {"record", "error"}) and _same_name(
                w, r
            )
        return w_kind == r_kind


def _at(path: _Path) -> str:
    """`field data, writer union branch 8: ` (empty at the top)."""
    return f"{', '.join(path)}: " if path else ""


def _deref(schema: Any, names: _Names) -> Any:
    """A named type referred to by name is its definition (fastavro gives full names)."""
    if isinstance(schema, str) and schema not in _PRIMITIVES and schema in names:
        return names[schema]
    return schema


def _kind(schema: Any) -> str:
    if isinstance(schema, dict):
        kind = schema.get("type")
        return kind if isinstance(kind, str) else "?"
    return schema if isinstance(schema, str) else "?"


def _same_name(w: dict[str, Any], r: dict[str, Any]) -> bool:
    """Named types match by unqualified name, or by a reader alias (as fastavro reads them)."""
    w_full = str(w.get("name", ""))
    short = w_full.rpartition(".")[2]
    aliases = r.get("aliases", ())
    return (
        short == str(r.get("name", "")).rpartition(".")[2] or w_full in aliases or short in aliases
    )


def _describe(schema: Any) -> str:
    kind = _kind(schema)
    if isinstance(schema, dict):
        if "logicalType" in schema:
            return f"{kind} ({schema['logicalType']})"
        if kind in _NAMED:
            return f"{kind} {schema.get('name')}"
    return kind
