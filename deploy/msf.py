"""Operate the asset-cycle application on Amazon Managed Service for Apache Flink (boto3).

Commands (wrapped by ``asset-cycle msf``): deploy new code, start/stop, snapshots, restore and
reprocess. Reprocessing recipe (see docs/reprocessing.md): the Kinesis source ignores its initial
position whenever it restores state, so a replay (1) takes a safety snapshot, (2) stops the
application, (3) rewrites the ``SourceConfig`` property group (``source.init.position`` AT_TIMESTAMP
+ ``source.init.timestamp``, or TRIM_HORIZON) and bumps ``source.uid.suffix`` so the restored source
state no longer matches the source operator, and (4) starts with SKIP_RESTORE_FROM_SNAPSHOT (empty
keyed state: the sinks are idempotent, the replay rebuilds the cycles) - or, alternatively,
restores keyed state from a named snapshot with AllowNonRestoredState (only the source resets).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

RESTORE_LATEST = "RESTORE_FROM_LATEST_SNAPSHOT"
RESTORE_CUSTOM = "RESTORE_FROM_CUSTOM_SNAPSHOT"
RESTORE_SKIP = "SKIP_RESTORE_FROM_SNAPSHOT"

SOURCE_GROUP = "SourceConfig"
INIT_POSITION = "source.init.position"
INIT_TIMESTAMP = "source.init.timestamp"
INIT_TIMESTAMP_FORMAT = "source.init.timestamp.format"
UID_SUFFIX = "source.uid.suffix"
TIMESTAMP_JAVA_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSXXX"
"""Flink's Kinesis source default format for ``source.init.timestamp`` (written explicitly)."""

DEFAULT_POLL_S = 10.0
DEFAULT_TIMEOUT_S = 1800.0


class MsfError(Exception):
    """An MSF operation failed or the application is not in a state that allows it."""


def run_configuration(
    restore_type: str = RESTORE_LATEST,
    snapshot_name: str | None = None,
    allow_non_restored_state: bool = False,
) -> dict[str, Any]:
    """The ``RunConfiguration`` of ``start_application``."""
    if restore_type not in (RESTORE_LATEST, RESTORE_CUSTOM, RESTORE_SKIP):
        raise MsfError(f"unknown restore type {restore_type}")
    if (restore_type == RESTORE_CUSTOM) != bool(snapshot_name):
        raise MsfError("a snapshot name goes with RESTORE_FROM_CUSTOM_SNAPSHOT and only with it")
    restore: dict[str, Any] = {"ApplicationRestoreType": restore_type}
    if snapshot_name:
        restore["SnapshotName"] = snapshot_name
    return {
        "ApplicationRestoreConfiguration": restore,
        "FlinkRunConfiguration": {"AllowNonRestoredState": allow_non_restored_state},
    }


def parse_timestamp(text: str) -> datetime:
    """An ISO-8601 timestamp (naive = UTC) or epoch seconds, as an aware UTC datetime."""
    text = text.strip()
    try:
        value = datetime.fromtimestamp(float(text), tz=UTC)
    except ValueError:
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError as exc:
            raise MsfError(f"not a timestamp: {text!r} (use ISO-8601, e.g. 2024-05-01T06:00:00Z)") from exc
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_timestamp(value: datetime) -> str:
    """``value`` in TIMESTAMP_JAVA_FORMAT (UTC, milliseconds)."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def next_uid_suffix(current: str | None) -> str:
    """The next ``source.uid.suffix``: current + 1 when numeric, else 1."""
    return str(int(current) + 1) if current and current.isdigit() else "1"


def _partition(region: str | None) -> str:
    if region and region.startswith("cn-"):
        return "aws-cn"
    if region and region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


@dataclass
class ReprocessPlan:
    """What ``reprocess`` did (for the CLI report and the stack follow-up)."""

    safety_snapshot: str | None
    source_config: dict[str, str]
    uid_suffix: str
    restore_type: str
    restore_snapshot: str | None
    steps: list[str] = field(default_factory=list)


@dataclass
class Msf:
    """One MSF application, through a ``kinesisanalyticsv2`` client (and an S3 client for deploy)."""

    client: Any
    application: str
    s3: Any = None
    sleep: Callable[[float], None] = time.sleep
    poll_s: float = DEFAULT_POLL_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    echo: Callable[[str], None] = print
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    # ------------------------------------------------------------------ basics

    def _call(self, method: str, **params: Any) -> dict[str, Any]:
        try:
            return getattr(self.client, method)(**params)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise MsfError(f"{method}: {err.get('Code', 'error')}: {err.get('Message', exc)}") from exc
        except BotoCoreError as exc:
            raise MsfError(f"{method}: {exc}") from exc

    def describe(self) -> dict[str, Any]:
        """The ``ApplicationDetail`` of the application."""
        return self._call("describe_application", ApplicationName=self.application)["ApplicationDetail"]

    def wait_for(
        self, targets: Iterable[str], failing: Iterable[str] = (), grace_polls: int = 3
    ) -> dict[str, Any]:
        """Poll until the application status is one of ``targets``; MsfError on ``failing``/timeout.

        A ``failing`` status counts once a transitional status was seen (or after ``grace_polls``
        polls), so a status that has not yet left READY right after a start request is no failure.
        """
        targets, failing = set(targets), set(failing)
        deadline = time.monotonic() + self.timeout_s
        moved = False
        polls = 0
        while True:
            detail = self.describe()
            polls += 1
            status = detail["ApplicationStatus"]
            if status in targets:
                return detail
            if status in failing and (moved or polls > grace_polls):
                raise MsfError(
                    f"{self.application} is {status} while waiting for {'/'.join(sorted(targets))}"
                )
            moved = moved or status not in failing
            if time.monotonic() > deadline:
                raise MsfError(
                    f"timed out waiting for {self.application} to be {'/'.join(sorted(targets))} (is {status})"
                )
            self.sleep(self.poll_s)

    # ------------------------------------------------------------------ code

    def upload(self, zip_path: Path, bucket: str, key: str) -> str | None:
        """Upload the application zip; return the S3 object version (versioned bucket) or None."""
        if self.s3 is None:
            raise MsfError("no S3 client to upload with")
        if not zip_path.is_file():
            raise MsfError(f"application zip {zip_path} not found (run `asset-cycle package` first)")
        try:
            with zip_path.open("rb") as body:
                resp = self.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/zip")
        except (ClientError, BotoCoreError) as exc:
            raise MsfError(f"upload of {zip_path.name} to s3://{bucket}/{key} failed: {exc}") from exc
        version = resp.get("VersionId")
        self.echo(
            f"uploaded {zip_path} to s3://{bucket}/{key}" + (f" (version {version})" if version else "")
        )
        return version

    def update_code(self, bucket: str, key: str, object_version: str | None = None) -> int:
        """Point the application at the zip in S3 (``update_application``); return the new version id.

        A RUNNING application restarts with the new code (MSF snapshots and restores its state).
        """
        detail = self.describe()
        region = getattr(getattr(self.client, "meta", None), "region_name", None)
        location: dict[str, Any] = {
            "BucketARNUpdate": f"arn:{_partition(region)}:s3:::{bucket}",
            "FileKeyUpdate": key,
        }
        if object_version:
            location["ObjectVersionUpdate"] = object_version
        resp = self._call(
            "update_application",
            ApplicationName=self.application,
            CurrentApplicationVersionId=detail["ApplicationVersionId"],
            ApplicationConfigurationUpdate={
                "ApplicationCodeConfigurationUpdate": {
                    "CodeContentTypeUpdate": "ZIPFILE",
                    "CodeContentUpdate": {"S3ContentLocationUpdate": location},
                }
            },
        )
        version = int(resp["ApplicationDetail"]["ApplicationVersionId"])
        self.echo(f"{self.application}: code set to s3://{bucket}/{key} (application version {version})")
        return version

    def deploy(
        self, zip_path: Path | None, bucket: str, key: str, upload: bool = True, update: bool = True
    ) -> str | None:
        """Upload the zip (unless ``upload`` is False) and update the application code."""
        version = None
        if upload:
            if zip_path is None:
                raise MsfError("no zip to upload")
            version = self.upload(zip_path, bucket, key)
        if update:
            self.update_code(bucket, key, version)
        return version

    # ------------------------------------------------------------------ run state

    def start(
        self,
        restore_type: str = RESTORE_LATEST,
        snapshot_name: str | None = None,
        allow_non_restored_state: bool = False,
        wait: bool = False,
    ) -> None:
        """Start the application with the given restore configuration."""
        self._call(
            "start_application",
            ApplicationName=self.application,
            RunConfiguration=run_configuration(restore_type, snapshot_name, allow_non_restored_state),
        )
        what = restore_type + (f" {snapshot_name}" if snapshot_name else "")
        self.echo(f"{self.application}: starting ({what}, allowNonRestoredState={allow_non_restored_state})")
        if wait:
            self.wait_for({"RUNNING"}, failing={"READY"})
            self.echo(f"{self.application}: RUNNING")

    def stop(self, force: bool = False, wait: bool = False) -> None:
        """Stop the application (``force`` skips the final snapshot)."""
        self._call("stop_application", ApplicationName=self.application, Force=force)
        self.echo(f"{self.application}: stopping" + (" (force: no snapshot)" if force else ""))
        if wait:
            self.wait_for({"READY"})
            self.echo(f"{self.application}: READY")

    # ------------------------------------------------------------------ snapshots

    def snapshot(self, name: str, wait: bool = True) -> None:
        """Create a snapshot (the application must be RUNNING); wait until it is READY."""
        self._call("create_application_snapshot", ApplicationName=self.application, SnapshotName=name)
        self.echo(f"{self.application}: snapshot {name} requested")
        if not wait:
            return
        deadline = time.monotonic() + self.timeout_s
        while True:
            details = self._call(
                "describe_application_snapshot", ApplicationName=self.application, SnapshotName=name
            )["SnapshotDetails"]
            status = details["SnapshotStatus"]
            if status == "READY":
                self.echo(f"{self.application}: snapshot {name} READY")
                return
            if status in ("FAILED", "DELETING"):
                raise MsfError(f"snapshot {name} is {status}")
            if time.monotonic() > deadline:
                raise MsfError(f"timed out waiting for snapshot {name} (is {status})")
            self.sleep(self.poll_s)

    def snapshots(self) -> list[dict[str, Any]]:
        """All snapshot summaries, newest first."""
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {"ApplicationName": self.application, "Limit": 50}
        while True:
            resp = self._call("list_application_snapshots", **params)
            out.extend(resp.get("SnapshotSummaries", []))
            token = resp.get("NextToken")
            if not token:
                break
            params["NextToken"] = token
        epoch = datetime.fromtimestamp(0, UTC)
        return sorted(out, key=lambda s: s.get("SnapshotCreationTimestamp") or epoch, reverse=True)

    def restore(
        self, snapshot_name: str | None = None, allow_non_restored_state: bool = False, wait: bool = False
    ) -> None:
        """(Re)start from the latest snapshot or a named one; a RUNNING application is stopped first."""
        status = self.describe()["ApplicationStatus"]
        if status == "RUNNING":
            self.stop(wait=True)
        elif status != "READY":
            raise MsfError(f"{self.application} is {status}; restore needs RUNNING or READY")
        if snapshot_name:
            self.start(RESTORE_CUSTOM, snapshot_name, allow_non_restored_state, wait=wait)
        else:
            self.start(RESTORE_LATEST, None, allow_non_restored_state, wait=wait)

    # ------------------------------------------------------------------ reprocess

    def reprocess(
        self,
        from_timestamp: datetime | None = None,
        trim_horizon: bool = False,
        restore_snapshot: str | None = None,
        allow_non_restored_state: bool = False,
        safety_snapshot: str | None = None,
        uid_suffix: str | None = None,
        wait: bool = True,
    ) -> ReprocessPlan:
        """Replay the stream from a timestamp (or TRIM_HORIZON); see the module docstring."""
        if (from_timestamp is None) == (not trim_horizon):
            raise MsfError("give exactly one of a start timestamp or trim horizon")
        if restore_snapshot and not allow_non_restored_state:
            raise MsfError(
                "restoring keyed state while resetting the source needs --allow-non-restored-state "
                "(the old source state is left unmatched on purpose)"
            )
        now = self.clock()
        if from_timestamp is not None and from_timestamp > now:
            raise MsfError(f"start timestamp {format_timestamp(from_timestamp)} is in the future")

        detail = self.describe()
        status = detail["ApplicationStatus"]
        steps: list[str] = []
        snap_name: str | None = None
        if status == "RUNNING":
            snap_name = safety_snapshot or f"pre-reprocess-{now:%Y%m%dT%H%M%SZ}"
            self.snapshot(snap_name, wait=True)
            steps.append(f"safety snapshot {snap_name}")
            self.stop(wait=True)
            steps.append("stopped")
            detail = self.describe()
        elif status == "READY":
            self.echo(f"{self.application} is READY (not running): no safety snapshot taken")
        else:
            raise MsfError(f"{self.application} is {status}; reprocess needs RUNNING or READY")

        groups = _property_groups(detail)
        source = dict(groups.get(SOURCE_GROUP, {}))
        if not source:
            raise MsfError(f"{self.application} has no {SOURCE_GROUP} property group")
        new_suffix = uid_suffix or next_uid_suffix(source.get(UID_SUFFIX))
        if new_suffix == source.get(UID_SUFFIX):
            raise MsfError(f"{UID_SUFFIX} must change (is {new_suffix})")
        if trim_horizon:
            source[INIT_POSITION] = "TRIM_HORIZON"
            source.pop(INIT_TIMESTAMP, None)
            source.pop(INIT_TIMESTAMP_FORMAT, None)
        else:
            assert from_timestamp is not None
            source[INIT_POSITION] = "AT_TIMESTAMP"
            source[INIT_TIMESTAMP] = format_timestamp(from_timestamp)
            source[INIT_TIMESTAMP_FORMAT] = TIMESTAMP_JAVA_FORMAT
        source[UID_SUFFIX] = new_suffix
        groups[SOURCE_GROUP] = source
        self._call(
            "update_application",
            ApplicationName=self.application,
            CurrentApplicationVersionId=detail["ApplicationVersionId"],
            ApplicationConfigurationUpdate={
                "EnvironmentPropertyUpdates": {
                    "PropertyGroups": [
                        {"PropertyGroupId": gid, "PropertyMap": pmap} for gid, pmap in groups.items()
                    ]
                }
            },
        )
        steps.append(f"{SOURCE_GROUP}: {INIT_POSITION}={source[INIT_POSITION]}, {UID_SUFFIX}={new_suffix}")
        self.echo(f"{self.application}: {steps[-1]}")
        self.wait_for({"READY"})

        if restore_snapshot:
            self.start(RESTORE_CUSTOM, restore_snapshot, allow_non_restored_state=True, wait=wait)
            restore_type = RESTORE_CUSTOM
        else:
            self.start(RESTORE_SKIP, None, allow_non_restored_state=False, wait=wait)
            restore_type = RESTORE_SKIP
        steps.append(f"started with {restore_type}" + (f" {restore_snapshot}" if restore_snapshot else ""))
        return ReprocessPlan(snap_name, source, new_suffix, restore_type, restore_snapshot, steps)


def _property_groups(detail: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The application's property groups in order, as {group id: property map}."""
    conf = detail.get("ApplicationConfigurationDescription", {})
    groups = conf.get("EnvironmentPropertyDescriptions", {}).get("PropertyGroupDescriptions", [])
    return {g["PropertyGroupId"]: dict(g.get("PropertyMap", {})) for g in groups}


def make_msf(
    application: str, region: str | None = None, profile: str | None = None, with_s3: bool = False
) -> Msf:
    """An Msf on real boto3 clients (credentials from the usual AWS chain; never printed)."""
    import boto3  # deferred: a quarter of a second to import, and `asset-cycle --help` loads this module

    session = boto3.Session(profile_name=profile, region_name=region)
    return Msf(
        client=session.client("kinesisanalyticsv2"),
        application=application,
        s3=session.client("s3") if with_s3 else None,
    )
