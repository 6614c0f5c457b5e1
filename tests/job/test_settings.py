"""job.properties and job.settings: MSF property groups -> typed, validated settings; errors name group and key."""

from __future__ import annotations

import json

import pytest

from job import properties
from job import settings as s
from job.properties import SettingsError, load_settings, read_property_groups, settings_from_groups

ARN = "arn:aws:kinesis:eu-west-1:123456789012:stream/telemetry"


def groups(**overrides: dict) -> dict[str, dict[str, str]]:
    base = {
        "SourceConfig": {"stream.arn": ARN},
        "SinkConfig": {"jdbc.url": "jdbc:postgresql://db.internal:5432/mine"},
        "ReferenceConfig": {"redis.host": "redis.internal"},
    }
    for name, values in overrides.items():
        base.setdefault(name, {}).update(values)
    return base


def write_props(path, groups_: dict) -> str:
    path.write_text(json.dumps([{"PropertyGroupId": k, "PropertyMap": v} for k, v in groups_.items()]))
    return str(path)


def test_minimal_groups_give_defaults():
    st = settings_from_groups(groups())
    assert st.source.kind == "kinesis" and st.source.stream_arn == ARN
    assert st.source.aws_region == "eu-west-1"  # derived from the ARN
    assert (st.source.init_position, st.source.reader_type) == ("LATEST", "POLLING")
    assert st.source.uid == "kinesis-source"
    assert st.sink.batch_size == 2000 and st.sink.batch_interval_ms == 200
    assert st.reference.redis_host == "redis.internal" and st.reference.poll_interval_s == 60.0
    assert st.flink.python_execution_mode == "thread" and st.flink.parallelism is None
    assert st.engine.max_disorder_ms == 60_000


def test_all_groups_are_read():
    st = settings_from_groups(groups(
        SourceConfig={"source.init.position": "at_timestamp", "source.init.timestamp": "2024-01-15T06:00:00.000Z",
                      "source.reader.type": "EFO", "source.efo.consumer.name": "asset-cycle",
                      "aws.endpoint": "http://127.0.0.1:4567", "source.uid.suffix": "v2",
                      "source.efo.lifecycle": "SELF_MANAGED"},
        SinkConfig={"schema": "mine", "table.cycle": "cycles", "table.cycle.tmp": "cycles_tmp",
                    "sink.batch.size": "5000", "batch.interval.ms": "500", "sink.max.retries": "5"},
        ReferenceConfig={"redis.port": "6380", "redis.tls": "true", "poll.interval.s": "30",
                         "redis.key.prefix": "prod:"},
        SecretsConfig={"postgres.secret.name": "pg", "redis.secret.name": "rd"},
        EngineConfig={"thresholds.json": json.dumps({"defaults": {"load_idle_s": 30}}), "max_disorder_s": "90"},
        FlinkConfig={"parallelism": "4", "checkpoint.interval.ms": "60000", "state.backend": "rocksdb",
                     "python.execution.mode": "process", "rest.port": "8082"},
    ))  # fmt: skip
    assert st.source.init_position == "AT_TIMESTAMP" and st.source.reader_type == "EFO"
    assert st.source.uid == "kinesis-source-v2"
    assert st.sink.schema == "mine" and st.sink.table_overrides() == {"cycle_tmp": "cycles_tmp", "cycle": "cycles"}
    assert (st.sink.batch_size, st.sink.batch_interval_ms, st.sink.max_retries) == (5000, 500, 5)
    assert st.reference.redis_port == 6380 and st.reference.redis_tls and st.reference.poll_interval_s == 30
    assert st.secrets.postgres_secret_name == "pg" and st.secrets.region == "eu-west-1"
    assert st.engine.defaults.load_idle_s == 30 and st.engine.max_disorder_ms == 90_000
    assert st.flink.parallelism == 4 and st.flink.state_backend == "rocksdb"
    assert st.flink.python_execution_mode == "process" and st.flink.rest_port == 8082


def test_kinesis_configuration_mapping_is_a_plain_dict():
    st = settings_from_groups(groups(SourceConfig={
        "source.init.position": "TRIM_HORIZON", "aws.endpoint": "http://127.0.0.1:4567",
        "source.efo.lifecycle": "SELF_MANAGED", "source.shard.discovery.interval": "30 s",
    }))  # fmt: skip
    assert st.source.kinesis_config() == {
        "source.init.position": "TRIM_HORIZON",
        "source.reader.type": "POLLING",
        "aws.region": "eu-west-1",
        "aws.endpoint": "http://127.0.0.1:4567",
        "source.efo.lifecycle": "SELF_MANAGED",
        "source.shard.discovery.interval": "30 s",
    }


def test_file_and_simulator_sources_and_local_flink_keys():
    """A local run plan in properties: a file or simulator source, savepoints and the jar directory."""
    st = settings_from_groups(groups(
        SourceConfig={"source.kind": "file", "file.path": "/data/incoming", "file.monitor.interval.s": "0.5"},
        FlinkConfig={"savepoint.dir": "/sp", "from.savepoint": "/sp/savepoint-1", "jar.dir": "/jars"},
    ))  # fmt: skip
    assert (st.source.kind, st.source.file_path, st.source.monitor_interval_s) == ("file", "/data/incoming", 0.5)
    assert st.source.stream_arn is None and not st.source.extra  # the Kinesis keys are not read for a file
    assert (st.flink.savepoint_dir, st.flink.from_savepoint, st.flink.jar_dir) == ("/sp", "/sp/savepoint-1", "/jars")
    st = settings_from_groups(groups(SourceConfig={"source.kind": "file", "file.path": "/data/site.jsonl"}))
    assert st.source.monitor_interval_s is None  # read once
    st = settings_from_groups({**groups(), "SourceConfig": {
        "source.kind": "simulator", "simulator.trucks": "20", "simulator.sites": "2", "simulator.speed": "0",
        "simulator.seed": "3", "simulator.degraded": "true", "simulator.backfill.s": "600"}})  # fmt: skip
    src = st.source
    assert (src.kind, src.simulator_trucks, src.simulator_sites, src.simulator_speed, src.simulator_seed,
            src.simulator_degraded, src.simulator_backfill_s) == ("simulator", 20, 2, 0.0, 3, True, 600.0)  # fmt: skip
    defaults = settings_from_groups({**groups(), "SourceConfig": {"source.kind": "simulator"}}).source
    assert (defaults.simulator_trucks, defaults.simulator_sites, defaults.simulator_speed, defaults.simulator_seed,
            defaults.simulator_degraded, defaults.simulator_backfill_s) == (12, 1, 30.0, 7, False, 1800.0)  # fmt: skip


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"source.kind": "ftp"}, "SourceConfig.source.kind: must be one of kinesis, file, simulator"),
        ({"source.kind": "file"}, "SourceConfig.file.path: is required"),
        ({"source.kind": "file", "file.path": "/d", "file.monitor.interval.s": "0"},
         "SourceConfig.file.monitor.interval.s: must be > 0"),
        ({"source.kind": "simulator", "simulator.trucks": "0"}, "SourceConfig.simulator.trucks: must be >= 1"),
        ({"source.kind": "simulator", "simulator.degraded": "sometimes"}, "SourceConfig.simulator.degraded"),
    ],
)  # fmt: skip
def test_file_and_simulator_source_errors_name_the_key(source, message):
    with pytest.raises(SettingsError, match=message.replace(".", r"\.")):
        settings_from_groups({**groups(), "SourceConfig": source})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"SourceConfig": {"stream.arn": "telemetry"}}, "SourceConfig.stream.arn"),
        ({"SourceConfig": {"source.init.position": "EARLIEST"}}, "SourceConfig.source.init.position"),
        ({"SourceConfig": {"source.init.position": "AT_TIMESTAMP"}}, "SourceConfig.source.init.timestamp"),
        ({"SourceConfig": {"source.reader.type": "EFO"}}, "SourceConfig.source.efo.consumer.name"),
        ({"SinkConfig": {"jdbc.url": "postgres://x"}}, "SinkConfig.jdbc.url"),
        ({"SinkConfig": {"sink.batch.size": "many"}}, "SinkConfig.sink.batch.size"),
        ({"SinkConfig": {"sink.batch.size": "0"}}, "SinkConfig.sink.batch.size: must be >= 1"),
        ({"SinkConfig": {"table.cycle": "Cycles; drop"}}, "SinkConfig.table.cycle"),
        ({"ReferenceConfig": {"redis.tls": "maybe"}}, "ReferenceConfig.redis.tls"),
        ({"ReferenceConfig": {"reference.poll.interval.s": "-1"}}, "ReferenceConfig.reference.poll.interval.s"),
        ({"EngineConfig": {"thresholds.json": "{"}}, "EngineConfig.thresholds.json"),
        ({"EngineConfig": {"load_idle_s": "-3"}}, "EngineConfig"),
        ({"FlinkConfig": {"state.backend": "memory"}}, "FlinkConfig.state.backend"),
        ({"FlinkConfig": {"python.execution.mode": "async"}}, "FlinkConfig.python.execution.mode"),
    ],
)
def test_errors_name_group_and_key(overrides, message):
    with pytest.raises(SettingsError, match=message.replace(".", r"\.")):
        settings_from_groups(groups(**overrides))


def test_missing_groups_and_required_keys():
    with pytest.raises(SettingsError, match="missing property group.*ReferenceConfig"):
        settings_from_groups({"SourceConfig": {"stream.arn": ARN}, "SinkConfig": {"jdbc.url": "jdbc:postgresql://h/d"}})
    with pytest.raises(SettingsError, match=r"ReferenceConfig\.redis\.host: is required"):
        settings_from_groups(groups(ReferenceConfig={"redis.host": ""}))


def test_properties_file_shape_and_local_switch(tmp_path, monkeypatch):
    path = write_props(tmp_path / "props.json", groups())
    assert set(read_property_groups(path)) == {"SourceConfig", "SinkConfig", "ReferenceConfig"}
    assert load_settings(path).source.stream_arn == ARN
    monkeypatch.chdir(tmp_path)
    (tmp_path / "application_properties.json").write_text((tmp_path / "props.json").read_text())
    assert properties.properties_path(None, {"ASSET_CYCLE_LOCAL": "1"}).name == "application_properties.json"
    assert properties.properties_path(None, {"ASSET_CYCLE_LOCAL": "1", "ASSET_CYCLE_PROPERTIES": path}) == tmp_path / "props.json"
    monkeypatch.setattr(properties, "MSF_PROPERTIES_PATH", tmp_path / "missing.json")
    with pytest.raises(SettingsError, match="not running on MSF"):
        properties.properties_path(None, {})


def test_bad_properties_files(tmp_path):
    with pytest.raises(SettingsError, match="not found"):
        read_property_groups(tmp_path / "nope.json")
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(SettingsError, match="JSON list"):
        read_property_groups(tmp_path / "a.json")
    (tmp_path / "b.json").write_text('[{"PropertyMap": {}}]')
    with pytest.raises(SettingsError, match="PropertyGroupId"):
        read_property_groups(tmp_path / "b.json")


def test_secrets_are_masked_and_credentials_resolved(monkeypatch):
    st = settings_from_groups(groups(SinkConfig={"jdbc.url": "jdbc:postgresql://db:6543/mine?password=hunter2"}))
    assert "hunter2" not in repr(st.sink) and "hunter2" not in repr(st.describe())
    env = {"ASSET_CYCLE_PG_USER": "cycle", "ASSET_CYCLE_PG_PASSWORD": "s3cret"}
    pg = s.postgres_settings(st, env)
    assert (pg.host, pg.port, pg.dbname, pg.user) == ("db", 6543, "mine", "cycle")
    assert "s3cret" not in repr(pg)
    rd = s.redis_settings(st, {"ASSET_CYCLE_REDIS_PASSWORD": "r3dis"})
    assert (rd.host, rd.port) == ("redis.internal", 6379) and "r3dis" not in repr(rd)


def test_secrets_manager_is_used_when_a_secret_is_named(monkeypatch):
    from stores import connections

    seen = {}

    def fake_read(name, region=None, client=None):
        seen[name] = region
        return {"host": f"{name}.host", "port": 5432, "dbname": "mine", "username": "u", "password": "p"}

    monkeypatch.setattr(connections, "read_secret", fake_read)
    st = settings_from_groups(groups(SecretsConfig={"postgres.secret.name": "pg-secret", "redis.secret.name": "rd"}))
    pg = s.postgres_settings(st)
    assert pg.host == "pg-secret.host" and pg.password == "p" and "'p'" not in repr(pg)
    assert s.redis_settings(st).host == "rd.host"
    assert seen == {"pg-secret": "eu-west-1", "rd": "eu-west-1"}


@pytest.mark.parametrize("source", [
    {"stream.arn": ARN, "source.init.position": "AT_TIMESTAMP", "source.init.timestamp": "2024-01-15T06:00:00Z",
     "aws.endpoint": "http://127.0.0.1:4568", "source.uid.suffix": "v2", "source.shard.discovery.interval": "1 s"},
    {"source.kind": "file", "file.path": "/data/site", "file.monitor.interval.s": "2.5"},
    {"source.kind": "simulator", "simulator.trucks": "40", "simulator.speed": "0", "simulator.degraded": "true",
     "simulator.backfill.s": "60"},
])  # fmt: skip
def test_settings_written_as_properties_read_back_the_same(tmp_path, source):
    st = settings_from_groups(groups(
        SourceConfig=source,
        SinkConfig={"schema": "mine", "table.cycle": "cycles", "sink.batch.size": "5000", "sink.max.retries": "7"},
        ReferenceConfig={"redis.port": "6380", "redis.tls": "true", "reference.poll.interval.s": "0",
                         "redis.key.prefix": "prod:", "reference.wait.max.s": "90.5"},
        SecretsConfig={"postgres.secret.name": "pg"},
        EngineConfig={"max_disorder_s": "90"},
        FlinkConfig={"parallelism": "3", "checkpoint.interval.ms": "5000", "checkpoint.dir": "/ck",
                     "state.backend": "rocksdb", "source.idleness.ms": "0", "restart.attempts": "4",
                     "savepoint.dir": "/sp", "from.savepoint": "/sp/savepoint-1", "jar.dir": "/jars"},
    ))  # fmt: skip
    path = properties.write_properties(properties.property_groups(st), tmp_path / "props.json")
    assert path.stat().st_mode & 0o077 == 0  # a JDBC URL may carry a password
    assert load_settings(str(path)) == st
    if source.get("source.kind") is None:
        assert st.source.extra == {"source.shard.discovery.interval": "1 s"}


def test_settings_without_a_jdbc_url_cannot_be_written():
    with pytest.raises(SettingsError, match="jdbc.url"):
        properties.property_groups(s.AppSettings(sink=s.SinkSettings(jdbc_url="")))
