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
parent pattern? Decided on the grammar, soundly: never "covered" when a resource exists that
the child matches and the parent does not (tested against brute force over a small alphabet).
It may say "not covered" for unusual equivalent shapes; the answer then is an escalation
finding, never a silent grant. Cost: O(len(parent) x len(child)) per pair, cached.
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
    "sql_pattern_ok",
    "sql_pattern_simple",
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
    """Does any valid pattern of `patterns` match `resource`?"""
    return any(matches(p, resource) for p in patterns)


def _normalize(pattern: str) -> str:
    """Runs of wildcards in a fixed order (`?` before `*`, one `*`): `*?` and `?*` are the same
    language, and so are `**` and `*`; the order lets `covers` see that."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] not in _WILD:
            out.append(pattern[i])
            i += 1
            continue
        j = i
        while j < len(pattern) and pattern[j] in _WILD:
            j += 1
        run = pattern[i:j]
        out.append("?" * run.count("?") + ("*" if "*" in run else ""))
        i = j
    return "".join(out)


@lru_cache(maxsize=65_536)
def covers(parent: str, child: str) -> bool:
    """True only if every string `child` matches is matched by `parent` (both must be valid).

    A dynamic programme over (position in child, position in parent): a literal of the child
    is covered by the same literal, `?` or `*` of the parent; a `?` of the child by `?` or `*`
    (a literal cannot cover "any character"); a `*` of the child only by a `*`.
    """
    if pattern_problem(parent) is not None or pattern_problem(child) is not None:
        return False
    c, p = _normalize(child), _normalize(parent)
    n, m = len(c), len(p)
    # ok[i][j]: the child's suffix from i is covered by the parent's suffix from j
    ok = [[False] * (m + 1) for _ in range(n + 1)]
    ok[n][m] = True
    for j in range(m - 1, -1, -1):
        ok[n][j] = p[j] == "*" and ok[n][j + 1]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            a, b = c[i], p[j]
            if b == "*":
                ok[i][j] = ok[i][j + 1] or ok[i + 1][j]
            elif a == "*":
                ok[i][j] = False
            elif b == "?" or (a == b and a != "?"):
                ok[i][j] = ok[i + 1][j + 1]
    return ok[0][0]


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
