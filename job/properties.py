"""MSF application properties -> the job's settings (job.settings.AppSettings), validated at start-up.

On Amazon MSF the properties are read from ``/etc/flink/application_properties.json``. Locally a
file of the same shape (a JSON list of ``{"PropertyGroupId": ..., "PropertyMap": {...}}``) is
read when asked for explicitly: ``--local-properties FILE``, or ``ASSET_CYCLE_LOCAL=1`` (file from
``ASSET_CYCLE_PROPERTIES``, default ``./application_properties.json``), like AWS's PyFlink examples.

Groups and keys (all values are strings, as MSF delivers them):

* ``SourceConfig``: source.kind (kinesis, the default | file | simulator), then the kind's keys.
  Kinesis: stream.arn, aws.region, source.init.position (LATEST|TRIM_HORIZON|AT_TIMESTAMP),
  source.init.timestamp, source.reader.type (POLLING; EFO is rejected by the source),
  source.efo.consumer.name, aws.endpoint, source.uid.suffix; any other ``source.*`` / ``aws.*`` /
  ``retry-strategy.*`` key is passed to the Kinesis source as is (it rejects keys it does not know;
  see java/.../KinesisSourceOptions.java). File: file.path (a bundle directory, a .jsonl file, or a
  directory to watch), file.monitor.interval.s (watch the directory every N s; unset = read once).
  Simulator (a live simulated fleet, for demos): simulator.trucks (per site, 12), simulator.sites
  (1), simulator.speed (simulated seconds per second, 30; 0 = as fast as possible), simulator.seed
  (7), simulator.degraded (false), simulator.backfill.s (the past delivered at once, 1800).
* ``SinkConfig``: jdbc.url, schema, table.cycle.tmp, table.cycle, table.process.info,
  table.dead.letter, sink.batch.size, sink.batch.interval.ms, sink.max.retries
  (``batch.size`` / ``batch.interval.ms`` / ``max.retries`` accepted as aliases).
* ``ReferenceConfig``: redis.host, redis.port, redis.tls, reference.poll.interval.s (alias
  poll.interval.s; 0 = load once at start), redis.key.prefix, reference.wait.max.points,
  reference.wait.max.s.
* ``SecretsConfig``: postgres.secret.name, redis.secret.name (Secrets Manager names/ARNs).
* ``EngineConfig``: thresholds.json (the EngineConfig JSON) and/or individual threshold keys.
* ``FlinkConfig`` (all optional; MSF's own parallelism/checkpoint configuration wins when absent):
  parallelism, checkpoint.interval.ms, state.backend (hashmap|rocksdb), python.execution.mode
  (thread|process), rest.port, auto.watermark.interval.ms, source.idleness.ms, restart.attempts,
  restart.delay.ms, checkpoint.dir, metrics.port (local/self-managed runs: Prometheus reporter port),
  metrics.host (the address it binds to, default 127.0.0.1; 0.0.0.0 to let another host scrape it),
  savepoint.dir (where stops with a savepoint write it), from.savepoint (the savepoint or checkpoint
  to restore), jar.dir (where the job's jar is; default .jars/ of the checkout).
  On MSF the keys of MSF_MANAGED_FLINK_KEYS are rejected: the service manages those options.

Errors name the group and key (SettingsError).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

from job.settings import (
    AppSettings,
    FlinkSettings,
    ReferenceSettings,
    SecretsSettings,
    SinkSettings,
    SourceSettings,
    engine_config,
)
from state_machine.config import THRESHOLD_NAMES, EngineConfig
from stores.connections import mask_url
from stores.errors import SettingsError

log = logging.getLogger(__name__)

MSF_PROPERTIES_PATH = Path("/etc/flink/application_properties.json")
LOCAL_ENV = "ASSET_CYCLE_LOCAL"
PROPERTIES_ENV = "ASSET_CYCLE_PROPERTIES"
DEFAULT_LOCAL_PROPERTIES = "application_properties.json"

SOURCE_GROUP = "SourceConfig"
SINK_GROUP = "SinkConfig"
REFERENCE_GROUP = "ReferenceConfig"
SECRETS_GROUP = "SecretsConfig"
ENGINE_GROUP = "EngineConfig"
FLINK_GROUP = "FlinkConfig"
KNOWN_GROUPS = (SOURCE_GROUP, SINK_GROUP, REFERENCE_GROUP, SECRETS_GROUP, ENGINE_GROUP, FLINK_GROUP)

SOURCE_KINDS = ("kinesis", "file", "simulator")
INIT_POSITIONS = ("LATEST", "TRIM_HORIZON", "AT_TIMESTAMP")
READER_TYPES = ("POLLING", "EFO")
STATE_BACKENDS = ("hashmap", "rocksdb")
EXECUTION_MODES = ("thread", "process")
KINESIS_KEY_PREFIXES = ("source.", "aws.", "retry-strategy.")
"""SourceConfig keys passed to the Kinesis source as they are (it rejects unknown ones)."""

MSF_MANAGED_FLINK_KEYS: dict[str, str] = {
    "parallelism": "the application's ParallelismConfiguration (Parallelism, ParallelismPerKPU)",
    "checkpoint.interval.ms": "the application's CheckpointConfiguration (CheckpointInterval)",
    "checkpoint.dir": "MSF (checkpoints are managed by the service)",
    "state.backend": "MSF (RocksDB; a support case to change it)",
    "restart.attempts": "MSF (its restart strategy; a support case to change it)",
    "restart.delay.ms": "MSF (its restart strategy; a support case to change it)",
    "rest.port": "MSF (the Flink dashboard in the console)",
    "metrics.port": "MSF (metrics go to CloudWatch)",
    "metrics.host": "MSF (metrics go to CloudWatch)",
    "savepoint.dir": "MSF (snapshots: asset-cycle msf snapshot / stop)",
    "from.savepoint": "MSF (restores from snapshots: asset-cycle msf start / restore)",
    "jar.dir": "the application zip (lib/asset-cycle-flink.jar, run option jarfile)",
}
"""FlinkConfig keys whose Flink options MSF manages (setting them in code fails the application at
start-up from MSF 2.2 on) -> where they are set on MSF. Rejected on MSF."""

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")




# --------------------------------------------------------------------------- reading


def read_property_groups(path: str | Path) -> dict[str, dict[str, str]]:
    """{group id: {key: value}} from an MSF-shaped JSON file; SettingsError on any problem."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SettingsError(f"application properties file {path} not found") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise SettingsError(f"cannot read application properties {path}: {exc}") from exc
    if not isinstance(data, list):
        raise SettingsError(f"{path}: expected a JSON list of {{PropertyGroupId, PropertyMap}} objects")
    groups: dict[str, dict[str, str]] = {}
    for i, item in enumerate(data):
        if not isinstance(item, dict) or "PropertyGroupId" not in item:
            raise SettingsError(f"{path}: item {i} has no PropertyGroupId")
        pmap = item.get("PropertyMap") or {}
        if not isinstance(pmap, dict):
            raise SettingsError(f"{path}: PropertyMap of {item['PropertyGroupId']} is not an object")
        groups[str(item["PropertyGroupId"])] = {str(k): "" if v is None else str(v) for k, v in pmap.items()}
    return groups


def properties_path(local_properties: str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """Which properties file to read: explicit local file, local switch, or the MSF path."""
    env = os.environ if environ is None else environ
    if local_properties:
        return Path(local_properties)
    if env.get(LOCAL_ENV, "").strip().lower() in ("1", "true", "yes"):
        return Path(env.get(PROPERTIES_ENV) or DEFAULT_LOCAL_PROPERTIES)
    if not MSF_PROPERTIES_PATH.is_file():
        raise SettingsError(
            f"{MSF_PROPERTIES_PATH} not found (not running on MSF?); for a local run give "
            f"--local-properties FILE or set {LOCAL_ENV}=1 ({PROPERTIES_ENV}=FILE)"
        )
    return MSF_PROPERTIES_PATH


# --------------------------------------------------------------------------- value parsing


class _Group:
    """Typed access to one property group with errors naming group and key."""

    def __init__(self, name: str, values: Mapping[str, str] | None) -> None:
        self.name = name
        self.values = dict(values or {})
        self.used: set[str] = set()

    def raw(self, *keys: str) -> str | None:
        for key in keys:
            if key in self.values:
                self.used.add(key)
                value = self.values[key].strip()
                return value if value != "" else None
        return None

    def error(self, key: str, message: str) -> SettingsError:
        return SettingsError(f"{self.name}.{key}: {message}")

    def str(self, *keys: str, default: str | None = None, required: bool = False) -> str | None:
        value = self.raw(*keys)
        if value is None:
            if required:
                raise self.error(keys[0], "is required")
            return default
        return value

    def int(self, *keys: str, default: int | None = None, minimum: int | None = None) -> int | None:
        value = self.raw(*keys)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise self.error(keys[0], f"must be an integer, got {value!r}") from None
        if minimum is not None and number < minimum:
            raise self.error(keys[0], f"must be >= {minimum}, got {number}")
        return number

    def float(self, *keys: str, default: float | None = None, minimum: float | None = None) -> float | None:
        value = self.raw(*keys)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise self.error(keys[0], f"must be a number, got {value!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise self.error(keys[0], f"must be finite, got {value!r}")
        if minimum is not None and number < minimum:
            raise self.error(keys[0], f"must be >= {minimum}, got {number}")
        return number

    def bool(self, *keys: str, default: bool = False) -> bool:
        value = self.raw(*keys)
        if value is None:
            return default
        low = value.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise self.error(keys[0], f"must be true or false, got {value!r}")

    def choice(self, *keys: str, choices: tuple[str, ...], default: str | None, upper: bool = True) -> str | None:
        value = self.raw(*keys)
        if value is None:
            return default
        norm = value.upper() if upper else value.lower()
        if norm not in choices:
            raise self.error(keys[0], f"must be one of {', '.join(choices)}, got {value!r}")
        return norm

    def warn_unused(self) -> None:
        for key in sorted(set(self.values) - self.used):
            log.warning("property %s.%s is not used by asset-cycle", self.name, key)


# --------------------------------------------------------------------------- building


def _source(g: _Group) -> SourceSettings:
    kind = g.choice("source.kind", choices=SOURCE_KINDS, default="kinesis", upper=False)
    if kind == "file":
        return _file_source(g)
    if kind == "simulator":
        return _simulator_source(g)
    return _kinesis_source(g)


def _file_source(g: _Group) -> SourceSettings:
    monitor_s = g.float("file.monitor.interval.s")
    if monitor_s is not None and monitor_s <= 0:
        raise g.error("file.monitor.interval.s", f"must be > 0 (unset: the file is read once), got {monitor_s:g}")
    return SourceSettings(kind="file", file_path=g.str("file.path", required=True), monitor_interval_s=monitor_s)


def _simulator_source(g: _Group) -> SourceSettings:
    d = SourceSettings(kind="simulator")
    return SourceSettings(
        kind="simulator",
        simulator_trucks=g.int("simulator.trucks", default=d.simulator_trucks, minimum=1),
        simulator_sites=g.int("simulator.sites", default=d.simulator_sites, minimum=1),
        simulator_speed=g.float("simulator.speed", default=d.simulator_speed, minimum=0.0),
        simulator_seed=g.int("simulator.seed", default=d.simulator_seed),
        simulator_degraded=g.bool("simulator.degraded", default=d.simulator_degraded),
        simulator_backfill_s=g.float("simulator.backfill.s", default=d.simulator_backfill_s, minimum=0.0),
    )


def _kinesis_source(g: _Group) -> SourceSettings:
    arn = g.str("stream.arn", required=True)
    if not arn.startswith("arn:"):
        raise g.error("stream.arn", f"must be a Kinesis stream ARN (arn:aws:kinesis:...), got {arn!r}")
    init_position = g.choice("source.init.position", choices=INIT_POSITIONS, default="LATEST")
    init_timestamp = g.str("source.init.timestamp")
    if init_position == "AT_TIMESTAMP" and not init_timestamp:
        raise g.error("source.init.timestamp", "is required when source.init.position is AT_TIMESTAMP")
    reader_type = g.choice("source.reader.type", choices=READER_TYPES, default="POLLING")
    efo_name = g.str("source.efo.consumer.name")
    if reader_type == "EFO" and not efo_name:
        raise g.error("source.efo.consumer.name", "is required when source.reader.type is EFO")
    region = g.str("aws.region")
    if region is None:
        parts = arn.split(":")
        region = parts[3] if len(parts) > 3 and parts[3] else None
    if region is None:
        raise g.error("aws.region", "is required (and not derivable from stream.arn)")
    suffix = g.str("source.uid.suffix", default="") or ""
    if suffix and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", suffix):
        raise g.error("source.uid.suffix", f"must be 1-64 chars of [A-Za-z0-9_.-], got {suffix!r}")
    endpoint = g.str("aws.endpoint")
    extra = {k: v for k, v in g.values.items() if k not in g.used and k.startswith(KINESIS_KEY_PREFIXES)}
    g.used.update(extra)
    return SourceSettings(
        kind="kinesis",
        stream_arn=arn,
        aws_region=region,
        init_position=init_position,
        init_timestamp=init_timestamp,
        reader_type=reader_type,
        efo_consumer_name=efo_name,
        aws_endpoint=endpoint,
        uid_suffix=suffix,
        extra=extra,
    )


def _ident(g: _Group, key: str) -> str | None:
    value = g.str(key)
    if value is not None and not _IDENT.fullmatch(value):
        raise g.error(key, f"must be a plain lower-case SQL identifier ([a-z_][a-z0-9_]*), got {value!r}")
    return value


def _sink(g: _Group) -> SinkSettings:
    url = g.str("jdbc.url", required=True)
    if not url.startswith("jdbc:postgresql://"):
        raise g.error("jdbc.url", f"must start with jdbc:postgresql://, got {mask_url(url)!r}")
    return SinkSettings(
        jdbc_url=url,
        schema=_ident(g, "schema"),
        table_cycle_tmp=_ident(g, "table.cycle.tmp"),
        table_cycle=_ident(g, "table.cycle"),
        table_process_info=_ident(g, "table.process.info"),
        table_dead_letter=_ident(g, "table.dead.letter"),
        batch_size=g.int("sink.batch.size", "batch.size", default=2000, minimum=1),
        batch_interval_ms=g.int("sink.batch.interval.ms", "batch.interval.ms", default=200, minimum=0),
        max_retries=g.int("sink.max.retries", "max.retries", default=3, minimum=0),
    )


def _reference(g: _Group) -> ReferenceSettings:
    return ReferenceSettings(
        redis_host=g.str("redis.host", required=True),
        redis_port=g.int("redis.port", default=6379, minimum=1),
        redis_tls=g.bool("redis.tls", default=False),
        redis_db=g.int("redis.db", default=0, minimum=0),
        poll_interval_s=g.float("reference.poll.interval.s", "poll.interval.s", default=60.0, minimum=0.0),
        redis_key_prefix=g.str("redis.key.prefix", default="") or "",
        wait_max_points=g.int("reference.wait.max.points", default=5000, minimum=1),
        wait_max_s=g.float("reference.wait.max.s", default=600.0, minimum=0.0),
    )


def _secrets(g: _Group, region: str | None) -> SecretsSettings:
    return SecretsSettings(
        postgres_secret_name=g.str("postgres.secret.name"),
        redis_secret_name=g.str("redis.secret.name"),
        region=g.str("aws.region", default=region),
    )


def _engine(g: _Group) -> EngineConfig:
    singles = {key: g.float(key) for key in sorted(g.values) if key in THRESHOLD_NAMES}
    return engine_config(g.str("thresholds.json"), singles, where=f"{g.name}.thresholds.json")


def _flink(g: _Group, on_msf: bool) -> FlinkSettings:
    if on_msf:
        for key, where in MSF_MANAGED_FLINK_KEYS.items():
            if key in g.values:
                raise g.error(key, f"is managed by MSF on MSF: set it in {where}, and remove it from FlinkConfig")
    return FlinkSettings(
        parallelism=g.int("parallelism", minimum=1),
        checkpoint_interval_ms=g.int("checkpoint.interval.ms", minimum=0),
        checkpoint_dir=g.str("checkpoint.dir"),
        state_backend=g.choice("state.backend", choices=STATE_BACKENDS, default="hashmap", upper=False),
        python_execution_mode=g.choice(
            "python.execution.mode", choices=EXECUTION_MODES, default="thread", upper=False
        ),
        rest_port=g.int("rest.port", minimum=0),
        metrics_port=g.int("metrics.port", minimum=1),
        metrics_host=g.str("metrics.host", default="127.0.0.1"),
        auto_watermark_interval_ms=g.int("auto.watermark.interval.ms", default=200, minimum=1),
        source_idleness_ms=g.int("source.idleness.ms", default=30_000, minimum=0) or None,
        restart_attempts=g.int("restart.attempts", minimum=0),
        restart_delay_ms=g.int("restart.delay.ms", default=10_000, minimum=0),
        savepoint_dir=g.str("savepoint.dir"),
        from_savepoint=g.str("from.savepoint"),
        jar_dir=g.str("jar.dir"),
    )


def settings_from_groups(groups: Mapping[str, Mapping[str, str]], on_msf: bool = False) -> AppSettings:
    """Build and validate AppSettings from MSF property groups (a Kinesis source unless source.kind says otherwise).

    ``on_msf``: the FlinkConfig keys MSF manages (MSF_MANAGED_FLINK_KEYS) are errors."""
    missing = [name for name in (SOURCE_GROUP, SINK_GROUP, REFERENCE_GROUP) if name not in groups]
    if missing:
        raise SettingsError(f"missing property group(s): {', '.join(missing)}")
    for name in groups:
        if name not in KNOWN_GROUPS and not name.startswith("kinesis.analytics"):
            log.warning("property group %s is not used by asset-cycle", name)
    gs = {name: _Group(name, groups.get(name)) for name in KNOWN_GROUPS}
    source = _source(gs[SOURCE_GROUP])
    settings = AppSettings(
        source=source,
        sink=_sink(gs[SINK_GROUP]),
        reference=_reference(gs[REFERENCE_GROUP]),
        secrets=_secrets(gs[SECRETS_GROUP], source.aws_region),
        engine=_engine(gs[ENGINE_GROUP]),
        flink=_flink(gs[FLINK_GROUP], on_msf=on_msf),
    )
    for g in gs.values():
        g.warn_unused()
    return settings


def load_settings(local_properties: str | None = None, environ: Mapping[str, str] | None = None) -> AppSettings:
    """Read the properties file (MSF path or the local one) and build AppSettings."""
    path = properties_path(local_properties, environ)
    log.info("reading application properties from %s", path)
    return settings_from_groups(read_property_groups(path), on_msf=path == MSF_PROPERTIES_PATH)




# --------------------------------------------------------------------------- writing


def _text(value: object) -> str:
    """A property value as MSF delivers it: a string (``true``/``false`` for booleans, ``12.5`` not ``12.50``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}" if value == int(value) and abs(value) < 1e15 else repr(value)
    return str(value)


def _present(values: Mapping[str, object | None]) -> dict[str, str]:
    return {key: _text(value) for key, value in values.items() if value is not None}


def _source_groups(src: SourceSettings) -> dict[str, str]:
    if src.kind == "file":
        return _present({"source.kind": "file", "file.path": src.file_path,
                         "file.monitor.interval.s": src.monitor_interval_s})  # fmt: skip
    if src.kind == "simulator":
        return _present({"source.kind": "simulator", "simulator.trucks": src.simulator_trucks,
                         "simulator.sites": src.simulator_sites, "simulator.speed": src.simulator_speed,
                         "simulator.seed": src.simulator_seed, "simulator.degraded": src.simulator_degraded,
                         "simulator.backfill.s": src.simulator_backfill_s})  # fmt: skip
    return {**{str(k): str(v) for k, v in src.extra.items()},
            **_present({"source.kind": "kinesis", "stream.arn": src.stream_arn, "aws.region": src.aws_region,
                        "source.init.position": src.init_position, "source.init.timestamp": src.init_timestamp,
                        "source.reader.type": src.reader_type, "source.efo.consumer.name": src.efo_consumer_name,
                        "aws.endpoint": src.aws_endpoint, "source.uid.suffix": src.uid_suffix or None})}  # fmt: skip


def property_groups(settings: AppSettings) -> dict[str, dict[str, str]]:
    """The MSF property groups that ``settings_from_groups`` reads back into ``settings`` (the inverse:
    what ``asset-cycle run --cluster`` hands the job's entry point). Secrets are never part of them:
    credentials stay in the environment or in Secrets Manager. SettingsError when the sink has no
    JDBC URL (SinkConfig.jdbc.url is required)."""
    sink, ref, fl, sec = settings.sink, settings.reference, settings.flink, settings.secrets
    if not sink.jdbc_url:
        raise SettingsError("SinkConfig.jdbc.url: is required (the settings have none)")
    return {
        SOURCE_GROUP: _source_groups(settings.source),
        SINK_GROUP: _present({"jdbc.url": sink.jdbc_url, "schema": sink.schema, "table.cycle.tmp": sink.table_cycle_tmp,
                              "table.cycle": sink.table_cycle, "table.process.info": sink.table_process_info,
                              "table.dead.letter": sink.table_dead_letter, "sink.batch.size": sink.batch_size,
                              "sink.batch.interval.ms": sink.batch_interval_ms, "sink.max.retries": sink.max_retries}),
        REFERENCE_GROUP: _present({"redis.host": ref.redis_host, "redis.port": ref.redis_port, "redis.tls": ref.redis_tls,
                                   "redis.db": ref.redis_db, "reference.poll.interval.s": ref.poll_interval_s,
                                   "redis.key.prefix": ref.redis_key_prefix or None,
                                   "reference.wait.max.points": ref.wait_max_points,
                                   "reference.wait.max.s": ref.wait_max_s}),
        SECRETS_GROUP: _present({"postgres.secret.name": sec.postgres_secret_name,
                                 "redis.secret.name": sec.redis_secret_name, "aws.region": sec.region}),
        ENGINE_GROUP: {"thresholds.json": json.dumps(settings.engine.to_dict(), sort_keys=True)},
        FLINK_GROUP: _present({"parallelism": fl.parallelism, "checkpoint.interval.ms": fl.checkpoint_interval_ms,
                               "checkpoint.dir": fl.checkpoint_dir, "state.backend": fl.state_backend,
                               "python.execution.mode": fl.python_execution_mode, "rest.port": fl.rest_port,
                               "metrics.port": fl.metrics_port, "metrics.host": fl.metrics_host,
                               "auto.watermark.interval.ms": fl.auto_watermark_interval_ms,
                               "source.idleness.ms": fl.source_idleness_ms or 0,
                               "restart.attempts": fl.restart_attempts, "restart.delay.ms": fl.restart_delay_ms,
                               "savepoint.dir": fl.savepoint_dir, "from.savepoint": fl.from_savepoint,
                               "jar.dir": fl.jar_dir}),
    }  # fmt: skip


def write_properties(groups: Mapping[str, Mapping[str, str]], path: str | Path) -> Path:
    """Write property groups as an MSF-shaped application_properties.json, readable by its owner only
    (a JDBC URL may carry credentials)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = [{"PropertyGroupId": name, "PropertyMap": dict(values)} for name, values in groups.items()]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=1)
    return path
