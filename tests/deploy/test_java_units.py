"""The Java part's own unit tests (java/src/test: the Kinesis source, the upsert sink against the test
PostgreSQL, the line-numbered file format, the metrics reporter, the pipeline operators) run with
the Python suite, so CI fails when they do. A full ``mvn test``: marked slow.

The PostgreSQL tests get the connection of ``pg_dsn`` as ``-Dassetcycle.test.pg.*`` properties; none of
them may be skipped here. JaCoCo writes the line coverage to ``<build dir>/site/jacoco/jacoco.csv``.
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.jars import JAVA_DIR

pytestmark = [
    pytest.mark.skipif(shutil.which("mvn") is None, reason="Maven not installed"),
    pytest.mark.slow,
    pytest.mark.services,
]

MIN_TESTS = 90
"""JUnit tests in java/src/test when this was last raised; fewer means tests went missing."""


def postgres_properties(dsn: str) -> list[str]:
    """``-Dassetcycle.test.pg.*`` Maven properties for the server of a libpq DSN (TCP only)."""
    from psycopg2.extensions import parse_dsn

    params = parse_dsn(dsn)
    host = params.get("host") or params.get("hostaddr") or "127.0.0.1"
    if host.startswith("/"):
        pytest.fail(f"the JUnit PostgreSQL tests need a TCP host, the test DSN has {host!r}", pytrace=False)
    props = {
        "host": host,
        "port": params.get("port", "5432"),
        "user": params.get("user", "postgres"),
        "database": params.get("dbname", params.get("user", "postgres")),
        "password": params.get("password", ""),
    }
    return [f"-Dassetcycle.test.pg.{key}={value}" for key, value in props.items()]


def line_coverage(report: Path) -> tuple[int, int]:
    """(covered, total) executable lines of the Java part in a JaCoCo CSV report."""
    covered = missed = 0
    with open(report, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            covered += int(row["LINE_COVERED"])
            missed += int(row["LINE_MISSED"])
    return covered, covered + missed


def test_java_unit_tests_pass(tmp_path: Path, pg_dsn: str, capsys: pytest.CaptureFixture[str]):
    build_dir = tmp_path / "target"
    proc = subprocess.run(["mvn", "-B", "-f", str(JAVA_DIR / "pom.xml"), f"-Dbuild.dir={build_dir}",
                           *postgres_properties(pg_dsn), "test"],
                          capture_output=True, text=True, timeout=1200)  # fmt: skip
    summary = re.findall(r"Tests run: (\d+), Failures: (\d+), Errors: (\d+), Skipped: (\d+)", proc.stdout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert summary, proc.stdout[-2000:]
    ran, failures, errors, skipped = map(int, summary[-1])
    assert failures == 0 and errors == 0
    assert skipped == 0, "a JUnit test was skipped: " + proc.stdout[-3000:]
    assert ran >= MIN_TESTS, f"only {ran} JUnit tests ran"
    covered, total = line_coverage(build_dir / "site" / "jacoco" / "jacoco.csv")
    assert 0 < covered <= total
    with capsys.disabled():
        print(f"\nJUnit: {ran} tests, {covered:,} of {total:,} Java lines covered ({covered / total:.0%})")
