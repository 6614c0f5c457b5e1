"""Job wiring without running Flink: environment configuration, sink DDL, sources, run plans."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from pyflink.common import Types

from deploy import jars
from job import flink_env
from job.flink_env import FlinkEnvError, build_configuration
from job.properties import MSF_MANAGED_FLINK_KEYS
from job.settings import FlinkSettings, SourceSettings
from job.sinks import JdbcTarget, SinkError, check_row_type, sink_columns, sink_spec, source_field
from job.sources import SourceError, kinesis_configuration, kinesis_label, resolve_file_path
from stores.postgres import KEY_COLUMNS, TableNames, column_names

# --------------------------------------------------------------------------- flink_env


def test_local_configuration_defaults(tmp_path):
    conf = build_configuration(FlinkSettings(), [tmp_path / "a.jar", tmp_path / "b.jar"])
    assert conf["python.execution-mode"] == "thread"
    assert conf["state.backend.type"] == "hashmap"
    assert conf["execution.checkpointing.mode"] == "EXACTLY_ONCE"
    assert conf["execution.checkpointing.externalized-checkpoint-retention"] == "RETAIN_ON_CANCELLATION"
    assert conf["pipeline.jars"] == ";".join(p.resolve().as_uri() for p in (tmp_path / "a.jar", tmp_path / "b.jar"))
    assert conf["pipeline.auto-watermark-interval"] == "200 ms"
    assert "site-packages" in conf["python.pythonpath"]
    assert "parallelism.default" not in conf and "execution.checkpointing.interval" not in conf


def test_local_configuration_options(tmp_path):
    savepoint = tmp_path / "sp"
    savepoint.mkdir()
    conf = build_configuration(FlinkSettings(
        parallelism=2, checkpoint_interval_ms=5000, state_backend="rocksdb", python_execution_mode="process",
        rest_port=8099, restart_attempts=3, restart_delay_ms=2000, checkpoint_dir=str(tmp_path / "ck"),
        savepoint_dir=str(tmp_path / "sps"), from_savepoint=str(savepoint),
    ))  # fmt: skip
    assert conf["python.execution-mode"] == "process"
    assert conf["parallelism.default"] == "2"
    assert conf["execution.checkpointing.interval"] == "5000 ms"
    assert conf["state.backend.type"] == "rocksdb"
    assert conf["rest.port"] == "8099" and conf["rest.bind-address"] == "127.0.0.1"
    assert conf["restart-strategy.type"] == "fixed-delay"
    assert conf["restart-strategy.fixed-delay.attempts"] == "3"
    assert conf["restart-strategy.fixed-delay.delay"] == "2000 ms"
    assert conf["execution.checkpointing.dir"] == (tmp_path / "ck").resolve().as_uri()
    assert conf["execution.state-recovery.path"] == savepoint.resolve().as_uri()


def test_missing_savepoint_is_an_error(tmp_path):
    with pytest.raises(FlinkEnvError, match="does not exist"):
        build_configuration(FlinkSettings(from_savepoint=str(tmp_path / "nope")))


def test_msf_configuration_leaves_the_service_settings_alone():
    conf = build_configuration(FlinkSettings(), [Path("x.jar")], on_msf=True)
    assert conf["python.execution-mode"] == "thread"
    for key in ("pipeline.jars", "state.backend.type", "python.executable", "rest.port", "parallelism.default"):
        assert key not in conf


def test_on_msf_every_option_set_in_code_is_on_msfs_programmatic_list(tmp_path):
    """MSF 2.2 fails an application that sets in code any Flink option off its programmatic list:
    with every FlinkSettings knob set, the on-MSF configuration stays a subset of that list."""
    everything = FlinkSettings(
        parallelism=4, checkpoint_interval_ms=60_000, checkpoint_dir=str(tmp_path), state_backend="rocksdb",
        python_execution_mode="process", rest_port=8081, metrics_port=9249, auto_watermark_interval_ms=500,
        restart_attempts=3, restart_delay_ms=1000, savepoint_dir=str(tmp_path), from_savepoint=str(tmp_path),
    )  # fmt: skip
    conf = build_configuration(everything, [tmp_path / "x.jar"], on_msf=True)
    assert conf and all(flink_env.msf_allows(key) for key in conf)
    assert conf == {"python.execution-mode": "process", "pipeline.auto-watermark-interval": "500 ms",
                    "python.operator-chaining.enabled": "true", "pipeline.max-parallelism": "128"}  # fmt: skip
    local = build_configuration(everything, [tmp_path / "x.jar"])
    assert not all(flink_env.msf_allows(key) for key in local)  # the check is not vacuous


def test_msf_programmatic_list():
    for key in ("pipeline.jars", "pipeline.auto-watermark-interval", "python.execution-mode",
                "python.operator-chaining.enabled", "execution.runtime-mode", "python.internal.x"):
        assert flink_env.msf_allows(key), key
    for key in ("parallelism.default", "execution.checkpointing.interval", "restart-strategy.type",
                "state.backend.type", "python.fn-execution.bundle.size", "taskmanager.memory.process.size"):
        assert not flink_env.msf_allows(key), key


def test_extra_options_off_the_msf_list_are_refused_on_msf():
    with pytest.raises(FlinkEnvError, match="parallelism.default"):
        flink_env.create_environment(FlinkSettings(), on_msf=True, extra_conf={"parallelism.default": "2"})


def test_missing_java_is_reported(monkeypatch, tmp_path):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FlinkEnvError, match="Java not found"):
        flink_env.check_java()


def test_the_uber_jar_is_the_only_pipeline_jar():
    [jar] = flink_env.required_jars(None)
    assert jar.name == jars.jar_name() and jar.parent == flink_env.DEFAULT_JAR_DIR
    assert jar.match(flink_env.JOB_JAR_GLOB)


def test_a_missing_jar_says_how_to_build_it(tmp_path):
    with pytest.raises(FlinkEnvError, match="make setup"):
        flink_env.required_jars(tmp_path)


# --------------------------------------------------------------------------- sinks


def test_sink_columns_follow_job_db():
    for kind in ("cycle_tmp", "cycle", "process_info", "dead_letter"):
        assert [c for c, _ in sink_columns(kind)] == column_names(kind)
    types = dict(sink_columns("cycle"))
    assert types["load_start_utc"] == "LONG" and types["point_count"] == "INT"
    assert dict(sink_columns("process_info"))["work_state_id"] == "INT"
    assert source_field("load_start_utc") == "load_start_ms" and source_field("asset_guid") == "asset_guid"
    with pytest.raises(SinkError):
        sink_columns("alerts_nope")


def test_sink_spec_has_the_upsert_key_and_batching():
    names = TableNames(schema="mine", cycle="cycles")
    spec = sink_spec("cycle", names, JdbcTarget("jdbc:postgresql://h:5432/d", "u", "p'w", 3000, 150, 4))
    assert KEY_COLUMNS["cycle"] == ("asset_guid", "load_start_utc")
    assert [column_names("cycle")[i] for i in spec.key_fields] == ["asset_guid", "load_start_utc"]
    assert spec.upsert_sql.startswith('INSERT INTO "mine"."cycles"')
    assert 'ON CONFLICT ("asset_guid", "load_start_utc") DO UPDATE' in spec.upsert_sql
    assert (spec.batch_size, spec.flush_interval_ms, spec.max_retries) == (3000, 150, 4)
    # the buffer keeps what the statement keeps: the last row of an upsert, the first of DO NOTHING
    assert not spec.first_row_wins
    dead = sink_spec("dead_letter", names, JdbcTarget("jdbc:postgresql://h:5432/d"))
    assert dead.first_row_wins and dead.upsert_sql.endswith("DO NOTHING")
    assert "p'w" not in repr(spec) and "p'w" not in repr(JdbcTarget("u", password="p'w"))


# --------------------------------------------------------------------------- sources


def test_kinesis_configuration_and_label():
    src = SourceSettings(stream_arn="arn:aws:kinesis:us-east-1:1:stream/telemetry", aws_region="us-east-1",
                         init_position="AT_TIMESTAMP", init_timestamp="2024-05-01T04:00:00Z",
                         aws_endpoint="http://127.0.0.1:4567", extra={"source.shard.discovery.interval": "5 s"})
    assert kinesis_configuration(src, checkpointing=True) == {
        "source.init.position": "AT_TIMESTAMP",
        "source.init.timestamp": "2024-05-01T04:00:00Z",
        "source.reader.type": "POLLING",
        "aws.region": "us-east-1",
        "aws.endpoint": "http://127.0.0.1:4567",
        "source.shard.discovery.interval": "5 s",
    }
    assert kinesis_label(src) == "kinesis:telemetry"
    with pytest.raises(SourceError, match="stream.arn"):
        kinesis_configuration(SourceSettings(), checkpointing=True)


def test_without_checkpointing_a_child_shard_does_not_wait_for_a_checkpoint():
    src = SourceSettings(stream_arn="arn:aws:kinesis:us-east-1:1:stream/telemetry", aws_region="us-east-1")
    assert kinesis_configuration(src, checkpointing=False)["source.shard.children-after-checkpoint"] == "false"
    asked = replace(src, extra={"source.shard.children-after-checkpoint": "true"})
    assert kinesis_configuration(asked, checkpointing=True)["source.shard.children-after-checkpoint"] == "true"
    with pytest.raises(SourceError, match="children-after-checkpoint=true needs checkpointing") as err:
        kinesis_configuration(asked, checkpointing=False)
    assert "\n" not in str(err.value)
    for checkpointing in (False, True):
        with pytest.raises(SourceError, match="children-after-checkpoint must be true or false, not 'yes'"):
            kinesis_configuration(replace(src, extra={"source.shard.children-after-checkpoint": "yes"}), checkpointing)


def test_resolve_file_path(tmp_path):
    (tmp_path / "telemetry.jsonl").write_text("{}\n")
    assert resolve_file_path(tmp_path) == tmp_path / "telemetry.jsonl"
    assert resolve_file_path(tmp_path / "telemetry.jsonl") == tmp_path / "telemetry.jsonl"
    with pytest.raises(SourceError, match="does not exist"):
        resolve_file_path(tmp_path / "nope")


ARN = "arn:aws:kinesis:us-east-1:000000000000:stream/t"


@pytest.fixture(scope="module")
def flink_env_with_jar():
    env, _ = flink_env.create_environment(FlinkSettings(parallelism=1))
    return env


def test_kinesis_source_builds_from_the_jar(flink_env_with_jar):
    from job.sources import kinesis_source

    raw = kinesis_source(flink_env_with_jar, SourceSettings(stream_arn=ARN, aws_region="us-east-1",
                                                            aws_endpoint="http://127.0.0.1:4567"))  # fmt: skip
    assert raw.label == "kinesis:t" and not raw.bounded


def test_the_kinesis_source_follows_the_environments_checkpointing(flink_env_with_jar):
    from job.sources import kinesis_source

    checkpointing, _ = flink_env.create_environment(FlinkSettings(parallelism=1, checkpoint_interval_ms=1000))
    source = SourceSettings(stream_arn=ARN, aws_region="us-east-1")
    for env, expected in ((flink_env_with_jar, "childrenAfterCheckpoint=false"),
                          (checkpointing, "childrenAfterCheckpoint=true")):  # fmt: skip
        j_source = kinesis_source(env, source).stream._j_data_stream.getTransformation().getSource()
        assert expected in j_source.describe()


@pytest.mark.parametrize(("settings", "message"), [
    (SourceSettings(stream_arn=ARN, reader_type="EFO", efo_consumer_name="c"),
     "source.reader.type=EFO is not supported by asset-cycle's Kinesis source"),
    (SourceSettings(stream_arn=ARN, extra={"source.shard.discovery.intervall": "5 s"}),
     "unknown Kinesis source option source.shard.discovery.intervall"),
    (SourceSettings(stream_arn=ARN, init_position="AT_TIMESTAMP", init_timestamp="yesterday"),
     "source.init.timestamp must be ISO-8601"),
    (SourceSettings(stream_arn=ARN, extra={"source.shard.get-records.max-record-count": "20000"}),
     "max-record-count must be between 1 and 10000"),
    (SourceSettings(stream_arn="arn:aws:kinesis:us-east-1:0:table/t"), "stream ARN must look like"),
])  # fmt: skip
def test_bad_kinesis_options_are_one_clear_error(flink_env_with_jar, settings, message):
    from job.sources import kinesis_source

    with pytest.raises(SourceError, match=message) as err:
        kinesis_source(flink_env_with_jar, settings)
    assert str(err.value).startswith("SourceConfig: ") and "\n" not in str(err.value)


# --------------------------------------------------------------------------- MSF rules


def _groups(flink: dict[str, str]) -> dict[str, dict[str, str]]:
    return {
        "SourceConfig": {"stream.arn": ARN},
        "SinkConfig": {"jdbc.url": "jdbc:postgresql://db:5432/postgres"},
        "ReferenceConfig": {"redis.host": "redis"},
        "FlinkConfig": flink,
    }


@pytest.mark.parametrize("key", sorted(MSF_MANAGED_FLINK_KEYS))
def test_flink_keys_msf_manages_are_rejected_on_msf(key):
    from job.properties import SettingsError, settings_from_groups

    with pytest.raises(SettingsError, match=rf"^FlinkConfig\.{key}: is managed by MSF on MSF: set it in "):
        settings_from_groups(_groups({key: "1"}), on_msf=True)
    settings_from_groups(_groups({key: "1" if key != "state.backend" else "rocksdb"}))  # fine elsewhere


def test_the_keys_the_job_decides_are_accepted_on_msf():
    from job.properties import settings_from_groups

    settings = settings_from_groups(_groups({"python.execution.mode": "process", "auto.watermark.interval.ms": "500",
                                             "source.idleness.ms": "60000"}), on_msf=True)  # fmt: skip
    conf = build_configuration(settings.flink, on_msf=True)
    assert conf["python.execution-mode"] == "process" and all(flink_env.msf_allows(k) for k in conf)


def test_sink_rows_must_match_their_table_in_order_and_type():
    from udfs.rows import ALERT_ROW_TYPE, CYCLE_ROW_TYPE, DEAD_LETTER_ROW_TYPE, STATUS_ROW_TYPE

    def java(row_type) -> str:
        return row_type.get_java_type_info().toString()

    for kind, row_type in (("cycle_tmp", CYCLE_ROW_TYPE), ("cycle", CYCLE_ROW_TYPE), ("alerts", ALERT_ROW_TYPE),
                           ("process_info", STATUS_ROW_TYPE), ("dead_letter", DEAD_LETTER_ROW_TYPE)):  # fmt: skip
        check_row_type(kind, java(row_type))
    with pytest.raises(SinkError, match="rows for cycle"):
        check_row_type("cycle", java(STATUS_ROW_TYPE))
    fields = list(STATUS_ROW_TYPE.get_field_names())
    types = list(STATUS_ROW_TYPE.get_field_types())
    types[2] = Types.INT()  # last_event_ms as INT: not epoch milliseconds
    with pytest.raises(SinkError, match="process_info"):
        check_row_type("process_info", java(Types.ROW_NAMED(fields, types)))
    fields[0], fields[1] = fields[1], fields[0]  # two fields swapped
    with pytest.raises(SinkError, match="process_info"):
        check_row_type("process_info", java(Types.ROW_NAMED(fields, list(STATUS_ROW_TYPE.get_field_types()))))


def test_class_data_sharing_dumps_once_then_maps_the_archive(tmp_path, monkeypatch):
    from pyflink import java_gateway

    monkeypatch.setattr(java_gateway, "_gateway", None)
    java, jar = tmp_path / "java", tmp_path / "job.jar"
    java.write_text("jvm")
    jar.write_text("jar")
    cds = tmp_path / "cds"

    def share(jvm_args: str = "-Duser.timezone=UTC") -> tuple[str, str | None, str]:
        monkeypatch.setenv("JVM_ARGS", jvm_args)
        done, part = flink_env.share_jvm_classes(str(java), [jar], cds)
        return done, part, flink_env.os.environ["JVM_ARGS"]

    _, part, args = share()  # no archive yet: this run's JVM dumps one at exit
    assert part and f"-XX:ArchiveClassesAtExit={part}" in args and args.startswith("-Duser.timezone=UTC ")
    Path(part).write_bytes(b"archive")
    Path(part + ".jvm").write_text(str(flink_env.os.getpid()))  # a live JVM: still writing it
    done, again, args = share()
    assert again is None and "Archive" not in args and "being written" in done
    Path(part + ".jvm").write_text("999999999")  # that JVM has exited: the dump is complete
    _, again, args = share()
    archive = cds / Path(part).name.split(".jsa")[0]
    assert again is None and f"-XX:SharedArchiveFile={archive}.jsa" in args
    assert sorted(p.name for p in cds.iterdir()) == [archive.name + ".jsa"]
    (cds / "gateway-0000000000000000.jsa.1.part").write_bytes(b"an old dump")
    jar.write_text("a new jar")  # another key: a new archive, the old ones are removed
    _, part, args = share()
    assert part and "ArchiveClassesAtExit" in args and list(cds.iterdir()) == []
    _, part, args = share("-Xshare:off")  # the user's own sharing options win
    assert part is None and args == "-Xshare:off"
