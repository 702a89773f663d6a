"""Resources and the resource-pattern language: canonical paths, one matcher, attenuation.

A resource is a `/`-separated path. It is matched in canonical form: Unicode NFC, no empty,
`.` or `..` segments (`a//b/./c/../d` is `a/b/d`); a path whose `..` climbs above its root
(`crm/../../hr`) has no canonical form and matches nothing.

A pattern (what a grant's `resources` holds) is, in this grammar:

    pattern  = segment *( "/" segment )
    segment  = 1*( literal / "*" / "?" )          ; not "." and not ".."
    literal  = any character except "*", "?", "[", "]", "\\", "/" and control characters
    "*"      = any run of characters, "/" included (as IAM resource patterns)
    "?"      = exactly one character, "/" included

A pattern must itself be canonical (NFC, no empty/`.`/`..` segments, no leading or trailing
`/`). Anything else, character classes and backslash escapes included, is outside the grammar:
`INVALID_PATTERN`, and it grants nothing. Matching is case-sensitive and over whole strings.

Python (`matches`, a compiled regular expression per pattern) is the one matcher; the SQL
pre-filter (`sql_pattern_ok`) is a LIKE over ASCII-only canonical inputs, and sends everything
else to Python, so it can only say "fine" where Python says so too (tested differentially).

`covers(parent, child)`: is every resource the child pattern matches also matched by the
parent pattern? Decided on the grammar as inclusion of two automata: never "covered" when a
string exists that the child matches and the parent does not, and "covered" whenever
inclusion holds over all strings (tested against brute force over a small alphabet). Cost:
usually well under a millisecond per pair (cached); bounded, and past the bound the answer is
"not covered", an escalation finding, never a silent grant.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache

__all__ = [
    "canonical_resource",
    "covers",
    "invalid_patterns",
    "is_valid_pattern",
    "matches",
    "matches_any",
    "pattern_problem",
    "sql_like",
    "sql_pattern_ok",
    "sql_pattern_simple",
    "sql_patterns_simple",
    "sql_resource_simple",
    "uncovered",
]

_FORBIDDEN = frozenset("[]\\")
_WILD = frozenset("*?")


def canonical_resource(resource: str) -> str | None:
    """The canonical form of `resource`, or None when its `..` segments climb above the root."""
    parts: list[str] = []
    for segment in unicodedata.normalize("NFC", resource).split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(segment)
    return "/".join(parts)


@lru_cache(maxsize=65_536)
def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` is outside the grammar (one short phrase), or None when it is valid."""
    if not pattern:
        return "is empty"
    if unicodedata.normalize("NFC", pattern) != pattern:
        return "is not in Unicode NFC form"
    bad = sorted({c for c in pattern if c in _FORBIDDEN or unicodedata.category(c) == "Cc"})
    if bad:
        return f"uses {', '.join(repr(c) for c in bad)}, outside the pattern grammar"
    for segment in pattern.split("/"):
        if segment in ("", ".", ".."):
            return f"has a {segment or 'empty'!r} segment (patterns are canonical paths)"
    return None


def is_valid_pattern(pattern: str) -> bool:
    """True when `pattern` is inside the grammar (and so can grant anything)."""
    return pattern_problem(pattern) is None


def invalid_patterns(patterns: Iterable[str]) -> list[str]:
    """The patterns of a grant that are outside the grammar, in their order."""
    return [p for p in patterns if pattern_problem(p) is not None]


@lru_cache(maxsize=65_536)
def _regex(pattern: str) -> re.Pattern[str]:
    out = []
    for c in pattern:
        out.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
    return re.compile("".join(out), re.DOTALL)


def matches(pattern: str, resource: str) -> bool:
    """Does the valid `pattern` match `resource` (canonicalized here)? An invalid pattern, or a
    resource escaping its root, matches nothing."""
    canonical = canonical_resource(resource)
    if canonical is None or pattern_problem(pattern) is not None:
        return False
    return _regex(pattern).fullmatch(canonical) is not None


def matches_any(patterns: Iterable[str], resource: str) -> bool:
    """Does any valid pattern of `patterns` match `resource` (canonicalized once here)?"""
    canonical = canonical_resource(resource)
    return canonical is not None and any(
        pattern_problem(p) is None and _regex(p).fullmatch(canonical) is not None for p in patterns
    )


#: product states explored before `covers` gives up and says "not covered" (fail closed)
COVERS_BUDGET = 20_000
_OTHER = ""  # the symbol standing for every character neither pattern names


def _closure(pattern: str, states: set[int]) -> frozenset[int]:
    """States reachable without reading: a `*` may match nothing."""
    todo = list(states)
    seen = set(states)
    while todo:
        i = todo.pop()
        if i < len(pattern) and pattern[i] == "*" and i + 1 not in seen:
            seen.add(i + 1)
            todo.append(i + 1)
    return frozenset(seen)


def _step(pattern: str, states: frozenset[int], symbol: str) -> frozenset[int]:
    nxt: set[int] = set()
    for i in states:
        if i >= len(pattern):
            continue
        c = pattern[i]
        if c == "*":
            nxt.add(i)
        elif c in ("?", symbol):
            nxt.add(i + 1)
    return _closure(pattern, nxt)


# The shape of a canonical path, as a small automaton over one character at a time:
# at the start, after "/", inside a segment that is so far "." or "..", inside a segment.
_START, _SLASH, _DOT1, _DOT2, _SEG, _DEAD = range(6)
_CANONICAL_END = frozenset({_START, _SEG})


def _path_step(state: int, ch: str) -> int:
    if state == _DEAD:
        return _DEAD
    if ch == "/":
        return _SLASH if state == _SEG else _DEAD  # no leading, double, "." or ".." segment
    if ch == "." and state in (_START, _SLASH):
        return _DOT1
    if ch == "." and state == _DOT1:
        return _DOT2
    return _SEG


@lru_cache(maxsize=65_536)
def covers(parent: str, child: str) -> bool:
    """True only if every canonical resource `child` matches is matched by `parent` (both must
    be valid patterns).

    Language inclusion of the two patterns read as automata, restricted to canonical paths (a
    third automaton: no empty, `.` or `..` segment, no leading or trailing `/`), over a finite
    alphabet: the characters either pattern names, `/` and `.`, plus one symbol for every other
    character (no pattern can tell those apart). Explored as a product of subset
    constructions; exact, except that NFC is not modelled (which only adds strings, so never
    "covered" wrongly). Past `COVERS_BUDGET` product states it answers "not covered": an
    escalation finding, never a silent grant.
    """
    if pattern_problem(parent) is not None or pattern_problem(child) is not None:
        return False
    if parent in (child, "*"):
        return True
    symbols = [*sorted({ch for ch in parent + child + "/." if ch not in _WILD}), _OTHER]
    start = (_closure(child, {0}), _closure(parent, {0}), _START)
    seen = {start}
    todo = [start]
    n, m = len(child), len(parent)
    while todo:
        c_states, p_states, path = todo.pop()
        if n in c_states and m not in p_states and path in _CANONICAL_END:
            return False
        for symbol in symbols:
            step = _path_step(path, symbol or "x")
            if step == _DEAD:
                continue
            nxt = (_step(child, c_states, symbol), _step(parent, p_states, symbol), step)
            if nxt[0] and nxt not in seen:
                if len(seen) >= COVERS_BUDGET:
                    return False
                seen.add(nxt)
                todo.append(nxt)
    return True


def uncovered(child: Sequence[str], parent: Sequence[str]) -> list[str]:
    """The child's patterns not covered by any one of the parent's (invalid ones included:
    a pattern outside the grammar is never covered)."""
    return [c for c in child if not any(covers(p, c) for p in parent)]


# -- the SQL pre-filter ------------------------------------------------------------------------

#: a canonical ASCII path: no empty, `.` or `..` segment, no leading/trailing `/`
_SIMPLE_PATH_RE = r"^([\x21-\x2e\x30-\x7e]+)(/[\x21-\x2e\x30-\x7e]+)*$"
_DOT_SEGMENT_RE = r"(^|/)\.\.?(/|$)"


def sql_resource_simple(resource: str) -> str:
    """SQL: `resource` (an expression) is already canonical and ASCII, so LIKE decides as
    Python would. Anything else is left to Python."""
    return (
        f"(regexp_full_match({resource}, '{_SIMPLE_PATH_RE}') "
        f"AND NOT regexp_matches({resource}, '{_DOT_SEGMENT_RE}'))"
    )


def sql_pattern_simple(pattern: str) -> str:
    """SQL: the pattern expression `pattern` is a valid, ASCII, canonical pattern (a subset of
    the valid ones: Python decides the rest)."""
    return f"({sql_resource_simple(pattern)} AND NOT regexp_matches({pattern}, '[\\[\\]\\\\]'))"


def sql_patterns_simple(patterns: str) -> str:
    """SQL: every pattern of the list expression `patterns` passes `sql_pattern_simple`, by one
    regular expression over the list joined with a newline (no simple pattern holds one)."""
    seg = r"[\x21-\x2e\x30-\x5a\x5e-\x7e]+"
    one = f"{seg}(/{seg})*"
    joined = f"array_to_string({patterns}, chr(10))"
    return (
        f"(len({patterns}) = 0 OR (regexp_full_match({joined}, '{one}(\\n{one})*') "
        f"AND len(string_split({joined}, chr(10))) = len({patterns}) "
        f"AND NOT regexp_matches({joined}, '(^|/|\\n)\\.\\.?(/|\\n|$)')))"
    )


def sql_like(pattern: str) -> str:
    """SQL: the LIKE form (escape `!`) of the pattern expression `pattern`."""
    like = (
        f"replace(replace(replace(replace({pattern}, '!', '!!'), '%', '!%'), '_', '!_'), '*', '%')"
    )
    return f"replace({like}, '?', '_')"


def sql_pattern_ok(pattern: str, resource: str) -> str:
    """SQL: the pattern expression `pattern` is valid, ASCII, and matches the simple `resource`.

    `*` becomes `%` and `?` becomes `_`; a literal `%` or `_` is escaped. Only true where
    `matches` is true (a superset pre-filter takes its negation as "maybe a finding").
    """
    like = (
        f"replace(replace(replace(replace({pattern}, '!', '!!'), '%', '!%'), '_', '!_'), '*', '%')"
    )
    like = f"replace({like}, '?', '_')"
    return f"({sql_pattern_simple(pattern)} AND {resource} LIKE {like} ESCAPE '!')"
