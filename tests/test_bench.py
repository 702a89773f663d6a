"""bench/results.py: each benchmark rewrites only its own section of RESULTS.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import results
from bench.__main__ import available


def test_sections_are_replaced_in_place_and_others_kept(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    results.write_section("ingest", "first", path)
    results.write_section("queries", "| a |\n|---|", path)
    results.write_section("ingest", "second\nrun", path)
    text = path.read_text()
    assert text.startswith("# Benchmark results")
    assert text.count("<!-- bench:ingest -->") == 1
    assert "first" not in text
    assert results.read_section("ingest", path) == "second\nrun"
    assert results.read_section("queries", path) == "| a |\n|---|"
    assert results.read_section("nope", path) is None
    assert text.index("bench:ingest") < text.index("bench:queries")


def test_section_text_with_backslashes_is_kept_verbatim(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    results.write_section("x", "a", path)
    results.write_section("x", r"C:\new \1 \g<0>", path)
    assert results.read_section("x", path) == r"C:\new \1 \g<0>"


def test_bad_section_name() -> None:
    with pytest.raises(ValueError, match="bad section name"):
        results.replace_section("", "a -->", "x")


def test_environment_line_names_the_malloc_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in results.MALLOC_TUNING:
        monkeypatch.delenv(key, raising=False)
    assert "defaults" in results.environment()
    monkeypatch.setenv("MALLOC_TOP_PAD_", "1000000000")
    assert "MALLOC_TOP_PAD_=1000000000" in results.environment()


def test_benchmarks_are_discovered() -> None:
    assert "ingest" in available()
