"""The resource-pattern language: canonical paths, the grammar, one matcher, sound attenuation.

`covers` is checked against brute force: for every pair of small patterns over a small
alphabet, "covered" must never be claimed when some canonical resource (up to a length) is
matched by the child and not by the parent. The SQL pre-filter must never say "matches" where
Python says it does not.
"""

from __future__ import annotations

import itertools
import random

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.query.patterns import (
    canonical_resource,
    covers,
    is_valid_pattern,
    matches,
    pattern_problem,
    sql_pattern_ok,
    sql_resource_simple,
    uncovered,
)


@pytest.mark.parametrize(
    ("resource", "canonical"),
    [
        ("crm/accounts/1", "crm/accounts/1"),
        ("/crm//accounts/./1/", "crm/accounts/1"),
        ("crm/accounts/../../hr/payroll", "hr/payroll"),
        ("crm/accounts/x/../1", "crm/accounts/1"),
        ("crm/../../hr", None),
        ("..", None),
        ("e\u0301", "\u00e9"),  # NFD is read as NFC
        ("", ""),
    ],
)
def test_canonical_resource(resource: str, canonical: str | None) -> None:
    assert canonical_resource(resource) == canonical


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("crm/accounts/*", None),
        ("crm/?", None),
        ("*", None),
        ("a.b/..c/x..", None),  # dots inside a segment are literals
        ("crm/[ab]", "outside the pattern grammar"),
        ("files/report\\.csv", "outside the pattern grammar"),
        ("crm/accounts/../../hr/*", "'..' segment"),
        ("crm/./x", "'.' segment"),
        ("crm//x", "'empty' segment"),
        ("/crm/x", "'empty' segment"),
        ("crm/x/", "'empty' segment"),
        ("", "is empty"),
        ("e\u0301", "not in Unicode NFC"),
        ("a\x00b", "outside the pattern grammar"),
    ],
)
def test_the_grammar(pattern: str, problem: str | None) -> None:
    found = pattern_problem(pattern)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


@pytest.mark.parametrize(
    ("pattern", "resource", "ok"),
    [
        ("crm/*", "crm/accounts/1/notes", True),  # `*` crosses `/`
        ("crm/accounts/?", "crm/accounts/1", True),
        ("crm/accounts/?", "crm/accounts/12", False),
        ("c?m/*", "c/m/x", True),  # `?` is any one character, `/` included
        ("crm/*", "CRM/x", False),
        ("crm/accounts/*", "crm/accounts/../../hr/payroll", False),
        ("hr/*", "crm/accounts/../../hr/payroll", True),
        ("*", "../x", False),  # a resource above its root matches nothing
        ("files/report\\.csv", "files/report.csv", False),  # invalid: grants nothing
        ("files/report\\.csv", "files/report\\.csv", False),
        ("caf\u00e9/*", "cafe\u0301/menu", True),  # NFC on both sides
        ("a%b_c", "a%b_c", True),
        ("a%b", "aXYb", False),  # SQL wildcards are literals here
    ],
)
def test_matches(pattern: str, resource: str, ok: bool) -> None:
    assert matches(pattern, resource) is ok


_ALPHABET = "ab/."
_STRINGS = [
    s
    for n in range(6)
    for t in itertools.product(_ALPHABET, repeat=n)
    if canonical_resource(s := "".join(t)) == s
]
_PATTERNS = [
    p
    for n in range(1, 4)
    for t in itertools.product("ab/*?", repeat=n)
    if is_valid_pattern(p := "".join(t))
]


def _raw_match(pattern: str, s: str) -> bool:
    """A second, naive matcher over raw strings (no canonical form): recursion on the pattern."""
    if not pattern:
        return not s
    head, rest = pattern[0], pattern[1:]
    if head == "*":
        return any(_raw_match(rest, s[i:]) for i in range(len(s) + 1))
    return bool(s) and (head in ("?", s[0])) and _raw_match(rest, s[1:])


_ALL_STRINGS = ["".join(t) for n in range(7) for t in itertools.product(_ALPHABET, repeat=n)]


def test_covers_is_sound_and_complete_against_brute_force() -> None:
    """Never "covered" when a canonical resource exists that the child matches and the parent
    does not; and "covered" whenever no canonical resource (up to a length that holds a
    witness for patterns this short) separates them. Matching is checked by a second, naive
    matcher over the enumerated canonical paths."""
    canonical = [s for s in _ALL_STRINGS if canonical_resource(s) == s]
    raw = {p: {s for s in canonical if _raw_match(p, s)} for p in _PATTERNS}
    claimed = 0
    for child, parent in itertools.product(_PATTERNS, repeat=2):
        got = covers(parent, child)
        escaped = raw[child] - raw[parent]
        assert not (got and escaped), (parent, child, sorted(escaped)[:3])
        assert got == (not escaped), (parent, child)
        claimed += got
    assert claimed > len(_PATTERNS)  # reflexive and more: the check is not vacuous


@pytest.mark.parametrize(
    ("parent", "child", "ok"),
    [
        ("crm/*", "crm/accounts/*", True),
        ("crm/accounts/*", "crm/*", False),
        ("*", "anything/at/all", True),
        ("crm/?", "crm/a", True),
        ("crm/a", "crm/?", False),
        ("crm/*", "crm/?", True),
        ("crm/?*", "crm/*?", True),  # the same language, written two ways
        ("?*", "*a", True),  # `*a` has at least one character
        ("a*b*", "a*b", True),
        ("a*b", "a*b*", False),
        ("crm/?*", "crm/*", True),  # a canonical resource never ends in "/"
        ("a/?*", "a/.*", True),
        ("a/?", "a/.", False),  # "a/." is outside the grammar: never covered
        ("a?", "a.", True),
        ("crm/accounts/*", "crm/accounts/../../hr/*", False),  # invalid child: never covered
        ("crm/[ab]", "crm/a", False),  # invalid parent covers nothing
    ],
)
def test_covers(parent: str, child: str, ok: bool) -> None:
    assert covers(parent, child) is ok


def test_uncovered_lists_what_escapes() -> None:
    assert uncovered(["crm/accounts/*", "hr/*", "crm/[x]"], ["crm/*"]) == ["hr/*", "crm/[x]"]


_CON = duckdb.connect()  # one in-memory database for every generated example
_NASTY = [*"ab/.*?%_![]\\ ", "\u00e9", "e", "\u0301", "\x00"]


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=_NASTY, max_size=7),
    st.text(alphabet=[c for c in _NASTY if c not in "*?"], max_size=7),
)
def test_sql_prefilter_never_matches_where_python_does_not(pattern: str, resource: str) -> None:
    sql = f"SELECT {sql_resource_simple('$r')} AND {sql_pattern_ok('$p', '$r')}"
    got = _CON.execute(sql, {"p": pattern, "r": resource}).fetchone()
    assert got is not None
    if got[0]:
        assert matches(pattern, resource), (pattern, resource)


def test_sql_prefilter_agrees_on_plain_paths() -> None:
    """On ASCII canonical inputs the SQL matcher is not just safe but equal to Python's."""
    rng = random.Random(7)
    con = duckdb.connect()
    sql = f"SELECT {sql_resource_simple('$r')} AND {sql_pattern_ok('$p', '$r')}"
    agreed = 0
    for _ in range(800):
        pattern = "/".join(
            "".join(rng.choice("ab*?_%") for _ in range(rng.randint(1, 3)))
            for _ in range(rng.randint(1, 3))
        )
        resource = "/".join(
            "".join(rng.choice("ab_%") for _ in range(rng.randint(1, 3)))
            for _ in range(rng.randint(1, 3))
        )
        got = con.execute(sql, {"p": pattern, "r": resource}).fetchone()
        assert got is not None
        assert bool(got[0]) == matches(pattern, resource), (pattern, resource)
        agreed += bool(got[0])
    assert agreed > 20
