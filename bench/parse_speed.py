"""Parse and validation cost of one valid record (state_machine.telemetry.parse_record), in µs.

Usage: python bench/parse_speed.py [--records 20000] [--repeat 5]
Parses the same valid record ``--records`` times, ``--repeat`` times over, in one process, and prints
the median, fastest and slowest µs per record. (The earlier test bar: < 25 µs per record.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from state_machine.telemetry import parse_record  # noqa: E402

RECORD = json.dumps({"asset_guid": "S01-HT-001", "site_guid": "SITE-01", "timestamp": "2024-01-15T14:30:25.123Z",
                     "latitude": -22.7, "longitude": 118.7, "work_state_id": 3}).encode()  # fmt: skip
NOW_MS = 1_705_329_025_123


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    per_record = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        for _ in range(args.records):
            parse_record(RECORD, NOW_MS)
        per_record.append((time.perf_counter() - start) / args.records * 1e6)
    print(f"parse_record, valid record: {statistics.median(per_record):.2f} µs per record (median of {args.repeat}; "
          f"{min(per_record):.2f}-{max(per_record):.2f}) over {args.records:,} records")


if __name__ == "__main__":
    main()
