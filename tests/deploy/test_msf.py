"""`asset-cycle msf` against stubbed AWS clients (botocore Stubber): exact calls and parameters."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from deploy import msf as msf_mod
from deploy.msf import (
    RESTORE_CUSTOM,
    RESTORE_LATEST,
    RESTORE_SKIP,
    Msf,
    MsfError,
    format_timestamp,
    next_uid_suffix,
    parse_timestamp,
    run_configuration,
)

APP = "asset-cycle"
REGION = "eu-west-1"
NOW = datetime(2024, 5, 3, 12, 0, 0, tzinfo=UTC)
RUN_OPTIONS = {"python": "main.py", "jarfile": "lib/asset-cycle-flink.jar", "pyFiles": "lib/python/"}
SOURCE = {
    "stream.arn": "arn:aws:kinesis:eu-west-1:123456789012:stream/asset-telemetry",
    "aws.region": REGION,
    "source.init.position": "TRIM_HORIZON",
    "source.reader.type": "POLLING",
    "source.uid.suffix": "3",
}
SINK = {"jdbc.url": "jdbc:postgresql://db:5432/dx", "batch.size": "500"}


def _client(service: str) -> Any:
    return boto3.client(
        service, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


@pytest.fixture
def kda() -> Any:
    return _client("kinesisanalyticsv2")


@pytest.fixture
def s3() -> Any:
    return _client("s3")


def _msf(kda: Any, s3: Any = None, lines: list[str] | None = None) -> Msf:
    out = lines if lines is not None else []
    return Msf(client=kda, application=APP, s3=s3, sleep=lambda _s: None, poll_s=0, echo=out.append,
               clock=lambda: NOW)  # fmt: skip


def detail(status: str = "RUNNING", version: int = 7, source: dict[str, str] | None = None) -> dict[str, Any]:
    groups = [
        {"PropertyGroupId": "kinesis.analytics.flink.run.options", "PropertyMap": RUN_OPTIONS},
        {"PropertyGroupId": "SourceConfig", "PropertyMap": source or SOURCE},
        {"PropertyGroupId": "SinkConfig", "PropertyMap": SINK},
    ]
    return {
        "ApplicationDetail": {
            "ApplicationARN": f"arn:aws:kinesisanalytics:{REGION}:123456789012:application/{APP}",
            "ApplicationName": APP,
            "RuntimeEnvironment": "FLINK-2_2",
            "ApplicationStatus": status,
            "ApplicationVersionId": version,
            "ApplicationConfigurationDescription": {
                "EnvironmentPropertyDescriptions": {"PropertyGroupDescriptions": groups}
            },
        }
    }


def expect_describe(
    stub: Stubber, status: str = "RUNNING", version: int = 7, source: dict | None = None
) -> None:
    stub.add_response("describe_application", detail(status, version, source), {"ApplicationName": APP})


def snapshot_details(name: str, status: str) -> dict[str, Any]:
    return {
        "SnapshotDetails": {
            "SnapshotName": name,
            "SnapshotStatus": status,
            "ApplicationVersionId": 7,
            "SnapshotCreationTimestamp": NOW,
        }
    }


# ----------------------------------------------------------------------------- pure helpers


def test_run_configuration_shapes() -> None:
    assert run_configuration() == {
        "ApplicationRestoreConfiguration": {"ApplicationRestoreType": RESTORE_LATEST},
        "FlinkRunConfiguration": {"AllowNonRestoredState": False},
    }
    assert run_configuration(RESTORE_CUSTOM, "snap-1", True) == {
        "ApplicationRestoreConfiguration": {
            "ApplicationRestoreType": RESTORE_CUSTOM,
            "SnapshotName": "snap-1",
        },
        "FlinkRunConfiguration": {"AllowNonRestoredState": True},
    }
    with pytest.raises(MsfError):
        run_configuration(RESTORE_CUSTOM)
    with pytest.raises(MsfError):
        run_configuration(RESTORE_SKIP, "snap-1")


def test_timestamps_and_suffix() -> None:
    assert format_timestamp(parse_timestamp("2024-05-01T06:00:00Z")) == "2024-05-01T06:00:00.000Z"
    assert format_timestamp(parse_timestamp("2024-05-01T08:00:00.25+02:00")) == "2024-05-01T06:00:00.250Z"
    assert format_timestamp(parse_timestamp("2024-05-01 06:00")) == "2024-05-01T06:00:00.000Z"
    assert format_timestamp(parse_timestamp("1714543200")) == "2024-05-01T06:00:00.000Z"
    with pytest.raises(MsfError):
        parse_timestamp("yesterday")
    assert next_uid_suffix("3") == "4"
    assert next_uid_suffix(None) == "1"
    assert next_uid_suffix("blue") == "1"


# ----------------------------------------------------------------------------- deploy


def test_deploy_uploads_and_updates_code(kda: Any, s3: Any, tmp_path: Path) -> None:
    zip_path = tmp_path / "app.zip"
    zip_path.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    with Stubber(kda) as k, Stubber(s3) as s:
        s.add_response(
            "put_object",
            {"VersionId": "v-42", "ETag": '"abc"'},
            {
                "Bucket": "code-bucket",
                "Key": "asset-cycle/app.zip",
                "Body": ANY,
                "ContentType": "application/zip",
            },
        )
        expect_describe(k, "RUNNING", 7)
        k.add_response(
            "update_application",
            detail("UPDATING", 8),
            {
                "ApplicationName": APP,
                "CurrentApplicationVersionId": 7,
                "ApplicationConfigurationUpdate": {
                    "ApplicationCodeConfigurationUpdate": {
                        "CodeContentTypeUpdate": "ZIPFILE",
                        "CodeContentUpdate": {
                            "S3ContentLocationUpdate": {
                                "BucketARNUpdate": "arn:aws:s3:::code-bucket",
                                "FileKeyUpdate": "asset-cycle/app.zip",
                                "ObjectVersionUpdate": "v-42",
                            }
                        },
                    }
                },
            },
        )
        version = _msf(kda, s3).deploy(zip_path, "code-bucket", "asset-cycle/app.zip")
        k.assert_no_pending_responses()
        s.assert_no_pending_responses()
    assert version == "v-42"


def test_deploy_missing_zip_is_an_error(kda: Any, s3: Any, tmp_path: Path) -> None:
    with Stubber(kda), Stubber(s3), pytest.raises(MsfError, match="asset-cycle package"):
        _msf(kda, s3).deploy(tmp_path / "nope.zip", "b", "k")


def test_deploy_api_error_is_one_line(kda: Any) -> None:
    with Stubber(kda) as k:
        expect_describe(k, "RUNNING", 7)
        k.add_client_error(
            "update_application", "ConcurrentModificationException", "version 7 is not current", 400
        )
        with pytest.raises(MsfError, match="update_application: ConcurrentModificationException: version 7"):
            _msf(kda).deploy(None, "b", "k", upload=False)


# ----------------------------------------------------------------------------- start / stop / snapshots


@pytest.mark.parametrize(
    ("restore_type", "snapshot", "allow", "expected"),
    [
        (RESTORE_LATEST, None, False, {"ApplicationRestoreType": RESTORE_LATEST}),
        (
            RESTORE_CUSTOM,
            "nightly",
            True,
            {"ApplicationRestoreType": RESTORE_CUSTOM, "SnapshotName": "nightly"},
        ),
        (RESTORE_SKIP, None, False, {"ApplicationRestoreType": RESTORE_SKIP}),
    ],
)
def test_start(kda: Any, restore_type: str, snapshot: str | None, allow: bool, expected: dict) -> None:
    with Stubber(kda) as k:
        k.add_response(
            "start_application",
            {},
            {
                "ApplicationName": APP,
                "RunConfiguration": {
                    "ApplicationRestoreConfiguration": expected,
                    "FlinkRunConfiguration": {"AllowNonRestoredState": allow},
                },
            },
        )
        expect_describe(k, "STARTING")
        expect_describe(k, "RUNNING")
        _msf(kda).start(restore_type, snapshot, allow, wait=True)
        k.assert_no_pending_responses()


def test_start_that_falls_back_to_ready_fails(kda: Any) -> None:
    with Stubber(kda) as k:
        k.add_response("start_application", {}, {"ApplicationName": APP, "RunConfiguration": ANY})
        expect_describe(k, "STARTING")
        expect_describe(k, "READY")
        with pytest.raises(MsfError, match="READY while waiting for RUNNING"):
            _msf(kda).start(wait=True)


@pytest.mark.parametrize("force", [False, True])
def test_stop(kda: Any, force: bool) -> None:
    with Stubber(kda) as k:
        k.add_response("stop_application", {}, {"ApplicationName": APP, "Force": force})
        expect_describe(k, "STOPPING")
        expect_describe(k, "READY")
        _msf(kda).stop(force=force, wait=True)
        k.assert_no_pending_responses()


def test_snapshot_waits_until_ready(kda: Any) -> None:
    with Stubber(kda) as k:
        k.add_response("create_application_snapshot", {}, {"ApplicationName": APP, "SnapshotName": "s1"})
        params = {"ApplicationName": APP, "SnapshotName": "s1"}
        k.add_response("describe_application_snapshot", snapshot_details("s1", "CREATING"), params)
        k.add_response("describe_application_snapshot", snapshot_details("s1", "READY"), params)
        _msf(kda).snapshot("s1")
        k.assert_no_pending_responses()


def test_snapshot_failure(kda: Any) -> None:
    with Stubber(kda) as k:
        k.add_response("create_application_snapshot", {}, {"ApplicationName": APP, "SnapshotName": "s1"})
        k.add_response("describe_application_snapshot", snapshot_details("s1", "FAILED"), None)
        with pytest.raises(MsfError, match="snapshot s1 is FAILED"):
            _msf(kda).snapshot("s1")


def test_snapshots_paginates_newest_first(kda: Any) -> None:
    def summary(name: str, day: int) -> dict[str, Any]:
        return {
            "SnapshotName": name,
            "SnapshotStatus": "READY",
            "ApplicationVersionId": day,
            "SnapshotCreationTimestamp": datetime(2024, 5, day, tzinfo=UTC),
        }

    with Stubber(kda) as k:
        k.add_response(
            "list_application_snapshots",
            {"SnapshotSummaries": [summary("a", 1), summary("c", 3)], "NextToken": "t1"},
            {"ApplicationName": APP, "Limit": 50},
        )
        k.add_response(
            "list_application_snapshots",
            {"SnapshotSummaries": [summary("b", 2)]},
            {"ApplicationName": APP, "Limit": 50, "NextToken": "t1"},
        )
        names = [s["SnapshotName"] for s in _msf(kda).snapshots()]
        k.assert_no_pending_responses()
    assert names == ["c", "b", "a"]


def test_restore_latest_stops_a_running_application_first(kda: Any) -> None:
    with Stubber(kda) as k:
        expect_describe(k, "RUNNING")
        k.add_response("stop_application", {}, {"ApplicationName": APP, "Force": False})
        expect_describe(k, "READY")
        k.add_response(
            "start_application",
            {},
            {"ApplicationName": APP, "RunConfiguration": run_configuration(RESTORE_LATEST)},
        )
        _msf(kda).restore()
        k.assert_no_pending_responses()


def test_restore_named_snapshot_from_ready(kda: Any) -> None:
    with Stubber(kda) as k:
        expect_describe(k, "READY")
        k.add_response(
            "start_application",
            {},
            {"ApplicationName": APP, "RunConfiguration": run_configuration(RESTORE_CUSTOM, "nightly", True)},
        )
        _msf(kda).restore("nightly", allow_non_restored_state=True)
        k.assert_no_pending_responses()


# ----------------------------------------------------------------------------- reprocess


def _expected_groups(source: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {"PropertyGroupId": "kinesis.analytics.flink.run.options", "PropertyMap": RUN_OPTIONS},
        {"PropertyGroupId": "SourceConfig", "PropertyMap": source},
        {"PropertyGroupId": "SinkConfig", "PropertyMap": SINK},
    ]


def _stub_reprocess_prefix(k: Stubber, snapshot: str) -> None:
    expect_describe(k, "RUNNING", 7)
    # (1) safety snapshot, waited for
    k.add_response("create_application_snapshot", {}, {"ApplicationName": APP, "SnapshotName": snapshot})
    k.add_response(
        "describe_application_snapshot",
        snapshot_details(snapshot, "READY"),
        {"ApplicationName": APP, "SnapshotName": snapshot},
    )
    # (2) stop (with its own snapshot), wait for READY
    k.add_response("stop_application", {}, {"ApplicationName": APP, "Force": False})
    expect_describe(k, "STOPPING", 7)
    expect_describe(k, "READY", 7)
    expect_describe(k, "READY", 7)  # fresh version id + property groups for the update


def test_reprocess_from_timestamp_with_empty_state(kda: Any) -> None:
    new_source = dict(SOURCE)
    new_source.update(
        {
            "source.init.position": "AT_TIMESTAMP",
            "source.init.timestamp": "2024-05-01T06:00:00.000Z",
            "source.init.timestamp.format": "yyyy-MM-dd'T'HH:mm:ss.SSSXXX",
            "source.uid.suffix": "4",
        }
    )
    with Stubber(kda) as k:
        _stub_reprocess_prefix(k, "pre-reprocess-20240503T120000Z")
        # (3) SourceConfig rewritten; every other group passed through unchanged
        k.add_response(
            "update_application",
            detail("READY", 8, new_source),
            {
                "ApplicationName": APP,
                "CurrentApplicationVersionId": 7,
                "ApplicationConfigurationUpdate": {
                    "EnvironmentPropertyUpdates": {"PropertyGroups": _expected_groups(new_source)}
                },
            },
        )
        expect_describe(k, "READY", 8, new_source)
        # (4) start from EMPTY keyed state
        k.add_response(
            "start_application",
            {},
            {
                "ApplicationName": APP,
                "RunConfiguration": {
                    "ApplicationRestoreConfiguration": {
                        "ApplicationRestoreType": "SKIP_RESTORE_FROM_SNAPSHOT"
                    },
                    "FlinkRunConfiguration": {"AllowNonRestoredState": False},
                },
            },
        )
        expect_describe(k, "RUNNING", 8, new_source)
        plan = _msf(kda).reprocess(from_timestamp=parse_timestamp("2024-05-01T06:00:00Z"))
        k.assert_no_pending_responses()
    assert plan.safety_snapshot == "pre-reprocess-20240503T120000Z"
    assert plan.uid_suffix == "4"
    assert plan.restore_type == RESTORE_SKIP
    # the rewritten SourceConfig is valid for the job
    settings = pytest.importorskip("job.properties")
    app = settings.settings_from_groups(
        {"SourceConfig": plan.source_config, "SinkConfig": SINK, "ReferenceConfig": {"redis.host": "redis"}}
    )
    assert app.source.init_position == "AT_TIMESTAMP"
    assert app.source.init_timestamp == "2024-05-01T06:00:00.000Z"
    assert app.source.uid_suffix == "4"


def test_reprocess_trim_horizon_restoring_keyed_state(kda: Any) -> None:
    at_ts = dict(SOURCE, **{"source.init.position": "AT_TIMESTAMP", "source.init.timestamp": "x"})
    new_source = dict(SOURCE, **{"source.init.position": "TRIM_HORIZON", "source.uid.suffix": "v2"})
    with Stubber(kda) as k:
        expect_describe(k, "RUNNING", 7, at_ts)
        k.add_response("create_application_snapshot", {}, {"ApplicationName": APP, "SnapshotName": "safety"})
        k.add_response("describe_application_snapshot", snapshot_details("safety", "READY"), None)
        k.add_response("stop_application", {}, {"ApplicationName": APP, "Force": False})
        expect_describe(k, "READY", 7, at_ts)
        expect_describe(k, "READY", 7, at_ts)
        k.add_response(
            "update_application",
            detail("READY", 8, new_source),
            {
                "ApplicationName": APP,
                "CurrentApplicationVersionId": 7,
                "ApplicationConfigurationUpdate": {
                    "EnvironmentPropertyUpdates": {"PropertyGroups": _expected_groups(new_source)}
                },
            },
        )
        expect_describe(k, "READY", 8, new_source)
        k.add_response(
            "start_application",
            {},
            {
                "ApplicationName": APP,
                "RunConfiguration": {
                    "ApplicationRestoreConfiguration": {
                        "ApplicationRestoreType": "RESTORE_FROM_CUSTOM_SNAPSHOT",
                        "SnapshotName": "before-window",
                    },
                    "FlinkRunConfiguration": {"AllowNonRestoredState": True},
                },
            },
        )
        plan = _msf(kda).reprocess(
            trim_horizon=True,
            restore_snapshot="before-window",
            allow_non_restored_state=True,
            safety_snapshot="safety",
            uid_suffix="v2",
            wait=False,
        )
        k.assert_no_pending_responses()
    assert plan.restore_type == RESTORE_CUSTOM
    assert "source.init.timestamp" not in plan.source_config


def test_reprocess_from_ready_takes_no_snapshot(kda: Any) -> None:
    new_source = dict(SOURCE, **{"source.uid.suffix": "4"})
    with Stubber(kda) as k:
        expect_describe(k, "READY", 7)
        k.add_response("update_application", detail("READY", 8, new_source), None)
        expect_describe(k, "READY", 8, new_source)
        k.add_response(
            "start_application",
            {},
            {"ApplicationName": APP, "RunConfiguration": run_configuration(RESTORE_SKIP)},
        )
        plan = _msf(kda).reprocess(trim_horizon=True, wait=False)
        k.assert_no_pending_responses()
    assert plan.safety_snapshot is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"trim_horizon": True, "from_timestamp": NOW}, "exactly one"),
        ({"trim_horizon": True, "restore_snapshot": "s"}, "allow-non-restored-state"),
        ({"from_timestamp": datetime(2030, 1, 1, tzinfo=UTC)}, "in the future"),
    ],
)
def test_reprocess_rejects_bad_requests_before_any_call(kda: Any, kwargs: dict, message: str) -> None:
    with Stubber(kda) as k, pytest.raises(MsfError, match=message):
        _msf(kda).reprocess(**kwargs)
    k.assert_no_pending_responses()


def test_reprocess_refuses_a_transitional_state(kda: Any) -> None:
    with Stubber(kda) as k:
        expect_describe(k, "UPDATING")
        with pytest.raises(MsfError, match="UPDATING"):
            _msf(kda).reprocess(trim_horizon=True)


# ----------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_msf(monkeypatch: pytest.MonkeyPatch, kda: Any, s3: Any) -> list[str]:
    lines: list[str] = []
    monkeypatch.setattr(msf_mod, "make_msf", lambda *a, **kw: _msf(kda, s3, lines))
    return lines


def test_cli_stop_force(kda: Any, cli_msf: list[str]) -> None:
    from cli.main import main

    with Stubber(kda) as k:
        k.add_response("stop_application", {}, {"ApplicationName": APP, "Force": True})
        assert main(["msf", "stop", "--force"]) == 0
        k.assert_no_pending_responses()
    assert "force" in cli_msf[0]


def test_cli_start_from_snapshot(kda: Any, cli_msf: list[str]) -> None:
    from cli.main import main

    with Stubber(kda) as k:
        k.add_response(
            "start_application",
            {},
            {"ApplicationName": APP, "RunConfiguration": run_configuration(RESTORE_CUSTOM, "nightly", True)},
        )
        assert main(["msf", "start", "--from-snapshot", "nightly", "--allow-non-restored-state"]) == 0
        k.assert_no_pending_responses()


def test_cli_reprocess_needs_yes(kda: Any, cli_msf: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import main

    with Stubber(kda) as k:
        assert main(["msf", "reprocess", "--from", "2024-05-01T06:00:00Z"]) == 2
        k.assert_no_pending_responses()
    captured = capsys.readouterr()
    assert "AT_TIMESTAMP 2024-05-01T06:00:00.000Z" in captured.out
    assert "EMPTY keyed state" in captured.out
    assert captured.err.strip() == "asset-cycle msf: error: not started: add --yes to reprocess"


def test_cli_reprocess_restore_snapshot_needs_allow_flag(
    cli_msf: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.main import main

    assert main(["msf", "reprocess", "--from-trim-horizon", "--restore-snapshot", "s", "--yes"]) == 2
    assert "--allow-non-restored-state" in capsys.readouterr().err


def test_cli_deploy_needs_bucket(
    monkeypatch: pytest.MonkeyPatch, cli_msf: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.main import main

    monkeypatch.delenv("ASSET_CYCLE_CODE_BUCKET", raising=False)
    assert main(["msf", "deploy", "--bucket", ""]) == 2
    assert "--bucket is required" in capsys.readouterr().err


def test_cli_snapshots_table(kda: Any, cli_msf: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import main

    with Stubber(kda) as k:
        k.add_response(
            "list_application_snapshots",
            {
                "SnapshotSummaries": [
                    {
                        "SnapshotName": "nightly",
                        "SnapshotStatus": "READY",
                        "ApplicationVersionId": 7,
                        "SnapshotCreationTimestamp": NOW,
                    }  # fmt: skip
                ]
            },
            {"ApplicationName": APP, "Limit": 50},
        )
        assert main(["msf", "snapshots"]) == 0
    out = capsys.readouterr().out
    assert "nightly" in out and "READY" in out and "2024-05-03T12:00:00+00:00" in out


def test_start_tolerates_a_late_status_change(kda: Any) -> None:
    """READY right after the start request is not a failure while it has not moved yet."""
    with Stubber(kda) as k:
        k.add_response("start_application", {}, {"ApplicationName": APP, "RunConfiguration": ANY})
        expect_describe(k, "READY")
        expect_describe(k, "STARTING")
        expect_describe(k, "RUNNING")
        _msf(kda).start(wait=True)
        k.assert_no_pending_responses()


def test_start_that_never_leaves_ready_fails(kda: Any) -> None:
    with Stubber(kda) as k:
        k.add_response("start_application", {}, {"ApplicationName": APP, "RunConfiguration": ANY})
        for _ in range(4):
            expect_describe(k, "READY")
        with pytest.raises(MsfError, match="READY while waiting for RUNNING"):
            _msf(kda).start(wait=True)
        k.assert_no_pending_responses()
