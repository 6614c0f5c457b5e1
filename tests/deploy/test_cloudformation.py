"""CloudFormation stack template: cfn-lint clean, least-privilege IAM, wiring consistent with the zip."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

cfnlint_api = pytest.importorskip("cfnlint.api", reason="cfn-lint (dev extra) not installed")
from cfnlint.decode import decode  # noqa: E402

from deploy.package import RUN_OPTIONS, RUN_OPTIONS_GROUP  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "cloudformation" / "asset-cycle.yaml"
PARAMETERS = ROOT / "deploy" / "cloudformation" / "parameters.example.json"
REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2"]

KINESIS_READ = {
    "kinesis:DescribeStream",
    "kinesis:DescribeStreamSummary",
    "kinesis:GetRecords",
    "kinesis:GetShardIterator",
    "kinesis:ListShards",
}
ENI_ACTIONS = {
    "ec2:CreateNetworkInterface",
    "ec2:CreateNetworkInterfacePermission",
    "ec2:DeleteNetworkInterface",
    "ec2:DescribeDhcpOptions",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets",
    "ec2:DescribeVpcs",
}
ALLOWED_ACTIONS = (
    KINESIS_READ
    | ENI_ACTIONS
    | {
        "s3:GetObject",
        "s3:GetObjectVersion",
        "secretsmanager:GetSecretValue",
        "logs:DescribeLogGroups",
        "logs:DescribeLogStreams",
        "logs:PutLogEvents",
        "cloudwatch:PutMetricData",
    }
)
STAR_OK = ENI_ACTIONS | {"cloudwatch:PutMetricData"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    data, errors = decode(str(TEMPLATE))
    assert not errors, errors
    return data


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    roles = {k: r for k, r in template["Resources"].items() if r["Type"] == "AWS::IAM::Role"}
    assert list(roles) == ["ApplicationRole"]
    props = roles["ApplicationRole"]["Properties"]
    assert "ManagedPolicyArns" not in props
    out = []
    for policy in props["Policies"]:
        out.extend(policy["PolicyDocument"]["Statement"])
    assert not [
        r
        for r in template["Resources"].values()
        if r["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
    ]
    return out


def _refs(resource: Any) -> str:
    """A resource expression as text (for asserting what it points at)."""
    return json.dumps(resource, sort_keys=True)


def test_cfn_lint_clean() -> None:
    matches = cfnlint_api.lint_file(TEMPLATE, config=cfnlint_api.ManualArgs(regions=REGIONS))
    assert [f"{m.rule.id} {m.message} (line {m.linenumber})" for m in matches] == []


def test_cfn_lint_catches_errors() -> None:
    """Guard: the lint call really validates (a broken copy must fail)."""
    broken = TEMPLATE.read_text().replace("CheckpointingEnabled: true", "CheckpointingEnabled: [1, 2]")
    matches = cfnlint_api.lint(broken, config=cfnlint_api.ManualArgs(regions=["us-east-1"]))
    assert [m for m in matches if m.rule.id.startswith("E")]


def test_iam_actions_are_the_allowed_ones_only(template: dict[str, Any]) -> None:
    seen: set[str] = set()
    for st in _statements(template):
        assert st["Effect"] == "Allow"
        assert "NotAction" not in st and "NotResource" not in st
        actions = set(_as_list(st["Action"]))
        assert not [a for a in actions if "*" in a], f"wildcard action in {st.get('Sid')}"
        assert actions <= ALLOWED_ACTIONS, actions - ALLOWED_ACTIONS
        seen |= actions
    assert seen == ALLOWED_ACTIONS


def test_iam_star_resource_only_for_eni_and_metrics(template: dict[str, Any]) -> None:
    for st in _statements(template):
        resources = _as_list(st["Resource"])
        actions = set(_as_list(st["Action"]))
        if "*" in resources:
            assert resources == ["*"]
            assert actions <= STAR_OK, f"Resource '*' for {actions - STAR_OK}"
        else:
            assert not actions & STAR_OK
        if "cloudwatch:PutMetricData" in actions:
            assert st["Condition"] == {"StringEquals": {"cloudwatch:namespace": "AWS/KinesisAnalytics"}}
    # the reason for Resource "*" is documented next to the statements
    text = TEMPLATE.read_text()
    assert 'need Resource "*"' in text and "PutMetricData has no resource type" in text


def test_iam_resources_are_scoped(template: dict[str, Any]) -> None:
    by_action: dict[str, list[str]] = {}
    for st in _statements(template):
        for action in _as_list(st["Action"]):
            by_action[action] = [_refs(r) for r in _as_list(st["Resource"])]
    for action in KINESIS_READ:
        assert by_action[action] == [_refs({"Fn::GetAtt": ["TelemetryStream", "Arn"]})]
    for action in ("s3:GetObject", "s3:GetObjectVersion"):
        assert by_action[action] == [_refs({"Fn::Sub": "${CodeBucket.Arn}/${CodeKey}"})]
    assert sorted(by_action["secretsmanager:GetSecretValue"]) == sorted(
        [_refs({"Ref": "PostgresSecretArn"}), _refs({"Ref": "RedisSecretArn"})]
    )
    for action in ("logs:PutLogEvents", "logs:DescribeLogStreams"):
        assert all("LogGroup" in r for r in by_action[action])
    (groups,) = by_action["logs:DescribeLogGroups"]
    assert "${AWS::AccountId}:log-group:*" in groups


def test_trust_policy_is_msf_with_confused_deputy_guard(template: dict[str, Any]) -> None:
    trust = template["Resources"]["ApplicationRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert len(trust) == 1
    assert trust[0]["Principal"] == {"Service": "kinesisanalytics.amazonaws.com"}
    assert "aws:SourceAccount" in trust[0]["Condition"]["StringEquals"]


def test_application_wiring(template: dict[str, Any]) -> None:
    app = template["Resources"]["Application"]
    assert app["Type"] == "AWS::KinesisAnalyticsV2::Application"
    props = app["Properties"]
    assert template["Parameters"]["RuntimeEnvironment"]["Default"] == "FLINK-2_2"
    conf = props["ApplicationConfiguration"]
    assert conf["ApplicationSnapshotConfiguration"] == {"SnapshotsEnabled": True}
    code = conf["ApplicationCodeConfiguration"]
    assert code["CodeContentType"] == "ZIPFILE"
    assert code["CodeContent"]["S3ContentLocation"]["FileKey"] == {"Ref": "CodeKey"}
    groups = {g["PropertyGroupId"]: g["PropertyMap"] for g in conf["EnvironmentProperties"]["PropertyGroups"]}
    assert set(groups) == {
        RUN_OPTIONS_GROUP,
        "SourceConfig",
        "SinkConfig",
        "ReferenceConfig",
        "SecretsConfig",
        "EngineConfig",
    }
    assert groups[RUN_OPTIONS_GROUP] == RUN_OPTIONS  # same as what `asset-cycle package` builds
    for key in (
        "stream.arn",
        "aws.region",
        "source.init.position",
        "source.reader.type",
        "source.uid.suffix",
    ):
        assert key in groups["SourceConfig"]
    assert {"postgres.secret.name", "redis.secret.name"} == set(groups["SecretsConfig"])
    assert "thresholds.json" in groups["EngineConfig"]
    assert {"jdbc.url", "schema", "sink.batch.size", "sink.batch.interval.ms"} <= set(groups["SinkConfig"])
    assert {"redis.host", "redis.port", "redis.tls", "reference.poll.interval.s"} <= set(
        groups["ReferenceConfig"]
    )
    flink = conf["FlinkApplicationConfiguration"]
    assert flink["CheckpointConfiguration"]["ConfigurationType"] == "CUSTOM"
    assert flink["ParallelismConfiguration"]["AutoScalingEnabled"] == {"Ref": "AutoScalingEnabled"}
    assert flink["MonitoringConfiguration"]["ConfigurationType"] == "CUSTOM"
    vpc = conf["VpcConfigurations"][0]
    assert vpc == {"SubnetIds": {"Ref": "SubnetIds"}, "SecurityGroupIds": {"Ref": "SecurityGroupIds"}}
    logging = template["Resources"]["ApplicationLogging"]
    assert logging["Type"] == "AWS::KinesisAnalyticsV2::ApplicationCloudWatchLoggingOption"


def test_bucket_is_private_encrypted_versioned(template: dict[str, Any]) -> None:
    props = template["Resources"]["CodeBucket"]["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]


def test_alarms(template: dict[str, Any]) -> None:
    alarms = {
        k: r["Properties"] for k, r in template["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"
    }
    metrics: dict[str, dict[str, Any]] = {}
    for props in alarms.values():
        if "MetricName" in props:
            metrics[props["MetricName"]] = props
        else:
            for m in props["Metrics"]:
                if "MetricStat" in m:
                    metrics[m["MetricStat"]["Metric"]["MetricName"]] = m["MetricStat"]["Metric"]
        assert props["AlarmActions"]["Fn::If"][0] == "HasAlarmTopic"
    for name in ("millisBehindLatest", "downtime", "numberOfFailedCheckpoints", "deadLetterRecords"):
        assert metrics[name]["Namespace"] == "AWS/KinesisAnalytics"
        assert metrics[name]["Dimensions"] == [{"Name": "Application", "Value": {"Ref": "Application"}}]
    assert "GetRecords.IteratorAgeMilliseconds" in metrics


def test_example_parameters_match_template(template: dict[str, Any]) -> None:
    params = {p["ParameterKey"]: p["ParameterValue"] for p in json.loads(PARAMETERS.read_text())}
    declared = template["Parameters"]
    assert set(params) <= set(declared)
    required = {k for k, v in declared.items() if "Default" not in v}
    assert required <= set(params)
    for key, value in params.items():
        allowed = declared[key].get("AllowedValues")
        if allowed:
            assert value in [str(a) for a in allowed], key
        pattern = declared[key].get("AllowedPattern")
        if pattern:
            assert re.fullmatch(pattern, value), key


def _resolve(value: Any, params: dict[str, str]) -> str:
    """A property value of the template with the example parameters filled in."""
    if isinstance(value, dict) and "Ref" in value:
        return (
            {"AWS::Region": "eu-west-1"}.get(value["Ref"])
            or params.get(value["Ref"])
            or _default(value["Ref"])
        )
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        assert value["Fn::GetAtt"] == ["TelemetryStream", "Arn"]
        return "arn:aws:kinesis:eu-west-1:123456789012:stream/asset-telemetry"
    return str(value)


def _default(name: str) -> str:
    data, _ = decode(str(TEMPLATE))
    return str(data["Parameters"][name]["Default"])


def test_property_groups_pass_the_jobs_settings_validation(
    template: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The keys the template sets are the ones job.properties reads (no unused or invalid key)."""
    settings = pytest.importorskip("job.properties")
    params = {p["ParameterKey"]: p["ParameterValue"] for p in json.loads(PARAMETERS.read_text())}
    conf = template["Resources"]["Application"]["Properties"]["ApplicationConfiguration"]
    groups = {
        g["PropertyGroupId"]: {k: _resolve(v, params) for k, v in g["PropertyMap"].items()}
        for g in conf["EnvironmentProperties"]["PropertyGroups"]
    }
    with caplog.at_level("WARNING"):
        app = settings.settings_from_groups(groups)
    assert app.sink.schema == "dx"
    assert app.sink.table_dead_letter == "asset_cycle_dead_letter"
    assert not [r for r in caplog.records if "not used" in r.getMessage() or "unused" in r.getMessage()]
