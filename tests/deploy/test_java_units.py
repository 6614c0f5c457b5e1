"""The Java part's own unit tests (java/src/test: RecordBatcher, BatchEndWatermarks on Flink's operator
test harness) run with the Python suite, so CI fails when they do."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.jars import JAVA_DIR

pytestmark = pytest.mark.skipif(shutil.which("mvn") is None, reason="Maven not installed")


def test_java_unit_tests_pass(tmp_path: Path):
    build_dir = tmp_path / "target"
    proc = subprocess.run(["mvn", "-B", "-f", str(JAVA_DIR / "pom.xml"), f"-Dbuild.dir={build_dir}", "test"],
                          capture_output=True, text=True, timeout=1200)  # fmt: skip
    summary = re.findall(r"Tests run: (\d+), Failures: (\d+), Errors: (\d+)", proc.stdout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert summary, proc.stdout[-2000:]
    ran, failures, errors = map(int, summary[-1])
    assert ran >= 12 and failures == 0 and errors == 0
