"""`asset-cycle msf ...`: operate the Managed Service for Apache Flink application (logic in deploy.msf)."""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable
from pathlib import Path

from botocore.exceptions import BotoCoreError, NoCredentialsError, NoRegionError, PartialCredentialsError

import deploy.msf
from cli.errors import CliError
from deploy.msf import (
    RESTORE_CUSTOM,
    RESTORE_LATEST,
    RESTORE_SKIP,
    Msf,
    MsfError,
    format_timestamp,
    parse_timestamp,
)

DEFAULT_APPLICATION = "asset-cycle"
DEFAULT_KEY = "asset-cycle/asset-cycle-msf.zip"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `msf` command group."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--application",
        default=os.environ.get("ASSET_CYCLE_MSF_APPLICATION", DEFAULT_APPLICATION),
        help="MSF application name (default $ASSET_CYCLE_MSF_APPLICATION or asset-cycle)",
    )
    common.add_argument("--region", default=os.environ.get("AWS_REGION"),
                        help="AWS region (default $AWS_REGION, else the AWS config)")
    common.add_argument("--profile", help="AWS profile (default: the AWS credential chain)")

    p = subparsers.add_parser("msf", help="deploy and operate the MSF application",
                              description="Deploy the job to Amazon Managed Service for Apache Flink and operate it "
                                          "(start, stop, snapshots, restore, reprocess); see docs/deploy.md.")
    sub = p.add_subparsers(dest="msf_command", required=True, metavar="ACTION")

    d = sub.add_parser(
        "deploy", parents=[common], help="upload the zip to S3 and update the application code"
    )
    d.add_argument(
        "--zip", type=Path, default=Path("dist/asset-cycle-msf.zip"), help="zip from `asset-cycle package`"
    )
    d.add_argument(
        "--bucket", default=os.environ.get("ASSET_CYCLE_CODE_BUCKET"), help="code bucket (stack output)"
    )
    d.add_argument("--key", default=DEFAULT_KEY, help=f"S3 key of the zip (default {DEFAULT_KEY})")
    mode = d.add_mutually_exclusive_group()
    mode.add_argument("--upload-only", action="store_true", help="only upload (first stack phase)")
    mode.add_argument(
        "--no-upload", action="store_true", help="the zip is already at bucket/key: only update"
    )
    d.set_defaults(func=_deploy)

    s = sub.add_parser("start", parents=[common], help="start (default: restore from the latest snapshot)")
    restore = s.add_mutually_exclusive_group()
    restore.add_argument(
        "--from-snapshot", metavar="NAME", help="RESTORE_FROM_CUSTOM_SNAPSHOT with this snapshot"
    )
    restore.add_argument(
        "--skip-restore", action="store_true", help="SKIP_RESTORE_FROM_SNAPSHOT: empty state"
    )
    s.add_argument(
        "--allow-non-restored-state", action="store_true", help="allow snapshot state without operator"
    )
    s.add_argument("--wait", action="store_true", help="wait until RUNNING")
    s.set_defaults(func=_start)

    st = sub.add_parser("stop", parents=[common], help="stop (takes a snapshot unless --force)")
    st.add_argument("--force", action="store_true", help="force stop without a snapshot")
    st.add_argument("--wait", action="store_true", help="wait until READY")
    st.set_defaults(func=_stop)

    sn = sub.add_parser("snapshot", parents=[common], help="create a snapshot of the running application")
    sn.add_argument("name", help="snapshot name")
    sn.add_argument("--no-wait", action="store_true", help="do not wait for the snapshot to be READY")
    sn.set_defaults(func=_snapshot)

    ls = sub.add_parser("snapshots", parents=[common], help="list the snapshots, newest first")
    ls.set_defaults(func=_snapshots)

    r = sub.add_parser("restore", parents=[common], help="(re)start from the latest or a named snapshot")
    which = r.add_mutually_exclusive_group(required=True)
    which.add_argument("--latest", action="store_true", help="RESTORE_FROM_LATEST_SNAPSHOT")
    which.add_argument("--snapshot", metavar="NAME", help="RESTORE_FROM_CUSTOM_SNAPSHOT")
    r.add_argument("--allow-non-restored-state", action="store_true",
                   help="allow snapshot state without operator")
    r.add_argument("--wait", action="store_true", help="wait until RUNNING")
    r.set_defaults(func=_restore)

    rp = sub.add_parser(
        "reprocess",
        parents=[common],
        help="replay the stream from a timestamp (see docs/reprocessing.md)",
        description="Safety snapshot, stop, reset the Kinesis source (new init position + source uid suffix), "
        "start with empty keyed state (default) or keyed state from --restore-snapshot.",
    )
    start = rp.add_mutually_exclusive_group(required=True)
    start.add_argument(
        "--from", dest="from_ts", metavar="TIMESTAMP", help="AT_TIMESTAMP (ISO-8601 or epoch s)"
    )
    start.add_argument("--from-trim-horizon", action="store_true", help="TRIM_HORIZON: all retained records")
    rp.add_argument(
        "--restore-snapshot", metavar="NAME", help="keep keyed state of this (pre-window) snapshot"
    )
    rp.add_argument(
        "--allow-non-restored-state", action="store_true", help="required with --restore-snapshot"
    )
    rp.add_argument(
        "--safety-snapshot", metavar="NAME", help="name of the safety snapshot (default generated)"
    )
    rp.add_argument("--uid-suffix", help="new source.uid.suffix (default: current + 1)")
    rp.add_argument("--no-wait", action="store_true", help="do not wait for RUNNING at the end")
    rp.add_argument("--yes", action="store_true", help="proceed (without it: print the plan and stop)")
    rp.set_defaults(func=_reprocess)


def _msf(args: argparse.Namespace, with_s3: bool = False) -> Msf:
    return deploy.msf.make_msf(args.application, region=args.region, profile=args.profile, with_s3=with_s3)


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn MsfError into a one-line CliError."""

    @functools.wraps(fn)
    def wrapper(args: argparse.Namespace) -> int:
        no_credentials = ("no AWS credentials: pass --profile or set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY, or run where an IAM role provides them")  # fmt: skip
        try:
            return fn(args)
        except MsfError as exc:
            if isinstance(exc.__cause__, NoCredentialsError | PartialCredentialsError):
                raise CliError(no_credentials) from None
            raise CliError(str(exc)) from exc
        except NoRegionError:
            raise CliError("no AWS region: pass --region or set AWS_REGION (or AWS_DEFAULT_REGION, or region in "
                           "~/.aws/config)") from None  # fmt: skip
        except (NoCredentialsError, PartialCredentialsError):
            raise CliError(no_credentials) from None
        except BotoCoreError as exc:
            raise CliError(f"AWS: {exc}") from None

    return wrapper


@_guard
def _deploy(args: argparse.Namespace) -> int:
    """Upload + update_application."""
    if not args.bucket:
        raise CliError(
            "--bucket is required (or set ASSET_CYCLE_CODE_BUCKET; the stack output CodeBucketName)"
        )
    msf = _msf(args, with_s3=not args.no_upload)
    msf.deploy(None if args.no_upload else args.zip, args.bucket, args.key, upload=not args.no_upload,
               update=not args.upload_only)  # fmt: skip
    return 0


@_guard
def _start(args: argparse.Namespace) -> int:
    if args.from_snapshot:
        restore_type = RESTORE_CUSTOM
    elif args.skip_restore:
        restore_type = RESTORE_SKIP
    else:
        restore_type = RESTORE_LATEST
    _msf(args).start(restore_type, args.from_snapshot, args.allow_non_restored_state, wait=args.wait)
    return 0


@_guard
def _stop(args: argparse.Namespace) -> int:
    _msf(args).stop(force=args.force, wait=args.wait)
    return 0


@_guard
def _snapshot(args: argparse.Namespace) -> int:
    _msf(args).snapshot(args.name, wait=not args.no_wait)
    return 0


@_guard
def _snapshots(args: argparse.Namespace) -> int:
    rows = _msf(args).snapshots()
    if not rows:
        print("no snapshots")
        return 0
    print(f"{'NAME':<48} {'STATUS':<9} {'VERSION':>7}  CREATED")
    for s in rows:
        created = s.get("SnapshotCreationTimestamp")
        created_text = created.isoformat(timespec="seconds") if created else "-"
        print(
            f"{s['SnapshotName']:<48} {s['SnapshotStatus']:<9} {s.get('ApplicationVersionId', ''):>7}  {created_text}"
        )
    return 0


@_guard
def _restore(args: argparse.Namespace) -> int:
    _msf(args).restore(args.snapshot, args.allow_non_restored_state, wait=args.wait)
    return 0


@_guard
def _reprocess(args: argparse.Namespace) -> int:
    ts = parse_timestamp(args.from_ts) if args.from_ts else None
    if args.restore_snapshot and not args.allow_non_restored_state:
        raise MsfError(
            "--restore-snapshot needs --allow-non-restored-state (the old source state stays unmatched)"
        )
    position = f"AT_TIMESTAMP {format_timestamp(ts)}" if ts else "TRIM_HORIZON"
    state = (
        f"keyed state from snapshot {args.restore_snapshot}" if args.restore_snapshot else "EMPTY keyed state"
    )
    print(f"reprocess {args.application}: safety snapshot, stop, source from {position} with a new source uid, "
          f"start with {state}")  # fmt: skip
    if not args.yes:
        raise MsfError("not started: add --yes to reprocess")
    plan = _msf(args).reprocess(
        from_timestamp=ts,
        trim_horizon=args.from_trim_horizon,
        restore_snapshot=args.restore_snapshot,
        allow_non_restored_state=args.allow_non_restored_state,
        safety_snapshot=args.safety_snapshot,
        uid_suffix=args.uid_suffix,
        wait=not args.no_wait,
    )
    for step in plan.steps:
        print(f"  done: {step}")
    print(
        f"next: set the stack parameter SourceUidSuffix={plan.uid_suffix} before the next CloudFormation update "
        "(an update with the old value would detach the source from its state again)"
    )
    if plan.safety_snapshot:
        print(
            f"rollback: asset-cycle msf restore --snapshot {plan.safety_snapshot} (after resetting SourceConfig)"
        )
    return 0
