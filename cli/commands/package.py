"""`asset-cycle package`: build the MSF application zip (logic in deploy.package)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.errors import CliError
from deploy.package import RUN_OPTIONS, RUN_OPTIONS_GROUP, PackageError, build_package


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `package` sub-command."""
    p = subparsers.add_parser(
        "package",
        help="build the Managed Service for Apache Flink application zip",
        description="Build the MSF zip: main.py, lib/asset-cycle-flink.jar (the job's uber-jar, built by "
        "`make setup`), lib/python/ (project + vendored wheels).",
    )
    p.add_argument("-o", "--output", type=Path, default=Path("dist/asset-cycle-msf.zip"), help="zip to write")
    p.add_argument(
        "--wheel-dir",
        type=Path,
        help="use the .whl files in this dir instead of downloading (offline builds)",
    )
    p.add_argument("--wheel-cache", type=Path, help="cache dir for downloaded MSF wheels (default build/msf)")
    p.add_argument("--jar", type=Path, help="the job's uber-jar (default: .jars/asset-cycle-flink-*.jar from make setup)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the zip; report one clear error line on failure."""

    try:
        result = build_package(
            args.output,
            wheel_dir=args.wheel_dir,
            wheel_cache=args.wheel_cache,
            jar_path=args.jar,
        )
    except PackageError as exc:
        raise CliError(str(exc)) from exc
    size_mb = result.zip_path.stat().st_size / 1e6
    print(f"wrote {result.zip_path} ({size_mb:.1f} MB, {result.entries} entries)")
    print(f"  lib/asset-cycle-flink.jar: {result.jar} (Kinesis source, JDBC connector, PostgreSQL driver)")
    print(f"  vendored wheels: {', '.join(result.wheels)}")
    if result.skipped_wheels:
        print(f"  provided by the MSF runtime, not vendored: {', '.join(result.skipped_wheels)}")
    print(f"  run options ({RUN_OPTIONS_GROUP}): " + ", ".join(f"{k}={v}" for k, v in RUN_OPTIONS.items()))
    return 0
