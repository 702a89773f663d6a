"""bench/results.py: each benchmark rewrites only its own section of RESULTS.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import bench_consume as bc
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


def _run(peaks_mib: list[float], limit: str = "512MB") -> bc.RssRun:
    n = bc.RSS_N
    samples = [bc.RssSample(0.0, 0, 200 << 10, 200 << 10, 100 << 10)]
    for i, peak in enumerate(peaks_mib, start=1):
        kib = int(peak * 1024)
        samples.append(bc.RssSample(float(i), n * i // len(peaks_mib), kib, kib, 120 << 10))
    return bc.RssRun(limit, samples, {"seconds": 10.0}, 100.0)


def test_the_rss_verdict_reads_the_peak_over_each_half() -> None:
    """Plateau: the peak grows over the second half of the events by less than 10 % of its
    growth over the first half (from the row before the first commit)."""
    table, verdict = bc._rss_section(_run([500, 700, 720, 730]))
    assert "**plateaus**" in verdict and "grew 500 MiB" in verdict and "30 MiB" in verdict
    assert table.count("\n") == len(bc.MILESTONES)  # the start row and one per milestone
    _, verdict = bc._rss_section(_run([500, 700, 900, 1100]))
    assert "**does not plateau**" in verdict
    assert "the limit + 612 MiB" in verdict  # 1100 MiB against 512MB = 488.3 MiB


def test_duckdb_sizes_are_read_as_duckdb_reads_them() -> None:
    assert bc._limit_kib("1GB") == 10**9 / 1024 and bc._limit_kib("1GiB") == 1 << 20
    assert bc._limit_kib("512MB") == 512 * 10**6 / 1024
