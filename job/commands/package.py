"""`asset-cycle package`: build the MSF application zip (logic in deploy.package)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `package` sub-command."""
    p = subparsers.add_parser(
        "package",
        help="build the Managed Service for Apache Flink application zip",
        description="Build the MSF zip: main.py, lib/asset-cycle-deps.jar, lib/python/ (project + vendored wheels).",
    )
    p.add_argument("-o", "--output", type=Path, default=Path("dist/asset-cycle-msf.zip"), help="zip to write")
    p.add_argument(
        "--wheel-dir",
        type=Path,
        help="use the .whl files in this dir instead of downloading (offline builds)",
    )
    p.add_argument("--wheel-cache", type=Path, help="cache dir for downloaded MSF wheels (default build/msf)")
    p.add_argument("--jar-dir", type=Path, help="where deploy.jars materialises the jars (default .jars)")
    p.add_argument("--maven-base-url", help="Maven repository base URL for the Kinesis connector jar")
    p.add_argument("--kinesis-jar-dir", type=Path, help="local dir holding the Kinesis connector jar")
    p.add_argument(
        "--allow-missing-kinesis",
        action="store_true",
        help="package without the Kinesis connector (local testing only; the job cannot read Kinesis)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the zip; report one clear error line on failure."""
    from deploy.package import RUN_OPTIONS, RUN_OPTIONS_GROUP, PackageError, build_package
    from job.cli import CliError

    try:
        result = build_package(
            args.output,
            wheel_dir=args.wheel_dir,
            wheel_cache=args.wheel_cache,
            jar_dir=args.jar_dir,
            maven_base_url=args.maven_base_url,
            kinesis_jar_dir=args.kinesis_jar_dir,
            allow_missing_kinesis=args.allow_missing_kinesis,
        )
    except PackageError as exc:
        raise CliError(str(exc)) from exc
    for warning in result.warnings:
        print(f"warning: {warning}")
    size_mb = result.zip_path.stat().st_size / 1e6
    print(f"wrote {result.zip_path} ({size_mb:.1f} MB, {result.entries} entries)")
    print(f"  jars merged into lib/asset-cycle-deps.jar: {', '.join(result.jars)}")
    print(f"  vendored wheels: {', '.join(result.wheels)}")
    if result.skipped_wheels:
        print(f"  provided by the MSF runtime, not vendored: {', '.join(result.skipped_wheels)}")
    print(f"  run options ({RUN_OPTIONS_GROUP}): " + ", ".join(f"{k}={v}" for k, v in RUN_OPTIONS.items()))
    return 0
