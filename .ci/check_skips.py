"""Fail CI on a skipped test that is not allowed: prints the skip count and every skip with its reason.

Usage: python .ci/check_skips.py JUNIT_XML [ALLOW_LIST]

The allow-list (default ``.ci/allowed-skips.txt``) has one ``test id pattern | why it may be
skipped in CI`` per line (``fnmatch`` patterns on ``path::name``; ``#`` comments). A skip that no
line allows fails the run: on a CI machine every tool and service the suite needs is set up, so a
skip means a test silently did not run.
"""

from __future__ import annotations

import fnmatch
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def allowed_patterns(path: Path) -> list[tuple[str, str]]:
    """(pattern, reason) of each allow-list line; a line without a reason is an error."""
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1) if path.is_file() else ():
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        pattern, _, reason = (part.strip() for part in text.partition("|"))
        if not reason:
            raise SystemExit(f"{path}:{number}: an allowed skip needs a reason ('pattern | why')")
        out.append((pattern, reason))
    return out


def skipped_tests(junit_xml: Path) -> list[tuple[str, str]]:
    """(test id ``path::name``, skip message) of every skipped test case in a JUnit XML report."""
    found = []
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        skipped = case.find("skipped")
        if skipped is None:
            continue
        path = case.get("file") or case.get("classname", "").replace(".", "/") + ".py"
        found.append((f"{path}::{case.get('name')}", skipped.get("message") or skipped.text or ""))
    return found


def main(argv: list[str]) -> int:
    junit_xml = Path(argv[1])
    allow = allowed_patterns(Path(argv[2]) if len(argv) > 2 else Path(__file__).with_name("allowed-skips.txt"))
    skips = skipped_tests(junit_xml)
    unexpected = [(test, why) for test, why in skips if not any(fnmatch.fnmatch(test, p) for p, _ in allow)]
    print(f"skipped tests: {len(skips)} ({len(skips) - len(unexpected)} allowed, {len(unexpected)} unexpected)")
    for test, why in skips:
        print(f"  {'UNEXPECTED ' if (test, why) in unexpected else 'allowed '}{test}: {why}")
    if unexpected:
        print("error: tests were skipped that CI must run (allow one only with a reason in .ci/allowed-skips.txt)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
