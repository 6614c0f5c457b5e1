"""Typed job settings from MSF application property groups, validated at start-up.

On Amazon MSF the properties are read from ``/etc/flink/application_properties.json``. Locally a
file of the same shape (a JSON list of ``{"PropertyGroupId": ..., "PropertyMap": {...}}``) is
read when asked for explicitly: ``--local-properties FILE``, or ``ASSET_CYCLE_LOCAL=1`` (file from
``ASSET_CYCLE_PROPERTIES``, default ``./application_properties.json``), like AWS's PyFlink examples.

Groups and keys (all values are strings, as MSF delivers them):

* ``SourceConfig``: stream.arn, aws.region, source.init.position (LATEST|TRIM_HORIZON|AT_TIMESTAMP),
  source.init.timestamp, source.reader.type (POLLING; EFO is rejected by the source),
  source.efo.consumer.name, aws.endpoint, source.uid.suffix; any other ``source.*`` / ``aws.*`` /
  ``retry-strategy.*`` key is passed to the Kinesis source as is (it rejects keys it does not know;
  see java/.../KinesisSourceOptions.java).
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
  metrics.host (the address it binds to, default 127.0.0.1; 0.0.0.0 to let another host scrape it).
  On MSF the keys of MSF_MANAGED_FLINK_KEYS are rejected: the service manages those options.

Errors name the group and key. Secrets are never part of these objects; ``PostgresSettings`` and
``RedisSettings`` (stores.connections, built by ``postgres_settings`` / ``redis_settings``) carry
them and mask them in their repr.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from state_machine.config import THRESHOLD_NAMES, ConfigError, EngineConfig
from stores.connections import PostgresSettings, RedisSettings, mask_url, parse_jdbc_url
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


# --------------------------------------------------------------------------- settings objects


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """Where telemetry comes from. ``kind`` kinesis (MSF), file (replay) or simulator (demo)."""

    kind: str = "kinesis"
    stream_arn: str | None = None
    aws_region: str | None = None
    init_position: str = "LATEST"
    init_timestamp: str | None = None
    reader_type: str = "POLLING"
    efo_consumer_name: str | None = None
    aws_endpoint: str | None = None
    uid_suffix: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)
    """Other ``source.*`` / ``aws.*`` keys, passed to the Kinesis source configuration unchanged."""
    file_path: str | None = None
    """file source: a bundle directory, a .jsonl file, or a directory to monitor."""
    monitor_interval_s: float | None = None
    """file source: continuously monitor ``file_path`` (a directory) at this interval; None = bounded."""
    simulator_speed: float = 30.0
    """simulator source: simulated seconds per wall-clock second (1.0 = real time; 0 = as fast as possible)."""
    simulator_trucks: int = 12
    """simulator source: haul trucks per site."""
    simulator_sites: int = 1
    simulator_seed: int = 7
    simulator_degraded: bool = False
    """simulator source: realistic degradations (duplicates, disorder, gaps, malformed lines)."""
    simulator_backfill_s: float = 1800.0
    """simulator source: the fleet has been running this long when the job starts; that past is
    delivered at once, so the first cycles close within seconds."""

    def kinesis_config(self) -> dict[str, str]:
        """The Kinesis source ``Configuration`` as a plain dict of key -> string value."""
        conf = {str(k): str(v) for k, v in self.extra.items()}
        conf["source.init.position"] = self.init_position
        conf["source.reader.type"] = self.reader_type
        if self.aws_region:
            conf["aws.region"] = self.aws_region
        if self.init_timestamp:
            conf["source.init.timestamp"] = self.init_timestamp
        if self.efo_consumer_name:
            conf["source.efo.consumer.name"] = self.efo_consumer_name
        if self.aws_endpoint:
            conf["aws.endpoint"] = self.aws_endpoint
        return conf

    @property
    def uid(self) -> str:
        """uid of the Kinesis source operator (``kinesis-source`` + optional suffix)."""
        return "kinesis-source" + (f"-{self.uid_suffix}" if self.uid_suffix else "")


@dataclass(frozen=True, slots=True)
class SinkSettings:
    """JDBC sink target and batching. Table names None = stores.postgres defaults."""

    jdbc_url: str = "jdbc:postgresql://127.0.0.1:5432/postgres"
    schema: str | None = None
    table_cycle_tmp: str | None = None
    table_cycle: str | None = None
    table_process_info: str | None = None
    table_dead_letter: str | None = None
    batch_size: int = 2000
    batch_interval_ms: int = 200
    max_retries: int = 3

    def __repr__(self) -> str:
        safe = mask_url(self.jdbc_url)
        return (
            f"SinkSettings(jdbc_url={safe!r}, schema={self.schema!r}, tables={self.table_overrides()!r}, "
            f"batch_size={self.batch_size}, batch_interval_ms={self.batch_interval_ms}, "
            f"max_retries={self.max_retries})"
        )

    def table_overrides(self) -> dict[str, str]:
        """Explicitly configured table names {role: name} (roles: cycle_tmp, cycle, process_info, dead_letter)."""
        out = {
            "cycle_tmp": self.table_cycle_tmp,
            "cycle": self.table_cycle,
            "process_info": self.table_process_info,
            "dead_letter": self.table_dead_letter,
        }
        return {k: v for k, v in out.items() if v}


@dataclass(frozen=True, slots=True)
class ReferenceSettings:
    """Reference data: Redis location, polling and how long to hold points waiting for it."""

    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_tls: bool = False
    redis_db: int = 0
    poll_interval_s: float = 60.0
    """0 = load once at start (bounded); > 0 = poll PostgreSQL+Redis and broadcast changes."""
    redis_key_prefix: str = ""
    wait_max_points: int = 5000
    """Points held per truck waiting for its site's reference data / asset type before dead-lettering."""
    wait_max_s: float = 600.0
    """Event-time span a truck's points are held for reference data before dead-lettering."""


@dataclass(frozen=True, slots=True)
class SecretsSettings:
    """Secrets Manager names (None = credentials from the environment)."""

    postgres_secret_name: str | None = None
    redis_secret_name: str | None = None
    region: str | None = None


@dataclass(frozen=True, slots=True)
class FlinkSettings:
    """Runtime knobs; None leaves Flink's/MSF's own configuration in force."""

    parallelism: int | None = None
    checkpoint_interval_ms: int | None = None
    checkpoint_dir: str | None = None
    state_backend: str = "hashmap"
    python_execution_mode: str = "thread"
    rest_port: int | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    """Address the Prometheus endpoint binds to: loopback unless a self-managed cluster's Prometheus
    scrapes it from another host (then e.g. 0.0.0.0)."""
    """Prometheus reporter port (None: no reporter; never set on MSF)."""
    auto_watermark_interval_ms: int = 200
    source_idleness_ms: int | None = 30_000
    restart_attempts: int | None = None
    restart_delay_ms: int = 10_000
    savepoint_dir: str | None = None
    from_savepoint: str | None = None
    jar_dir: str | None = None


@dataclass(frozen=True, slots=True)
class AppSettings:
    """Everything the job needs, validated."""

    source: SourceSettings = field(default_factory=SourceSettings)
    sink: SinkSettings = field(default_factory=SinkSettings)
    reference: ReferenceSettings = field(default_factory=ReferenceSettings)
    secrets: SecretsSettings = field(default_factory=SecretsSettings)
    engine: EngineConfig = field(default_factory=EngineConfig)
    flink: FlinkSettings = field(default_factory=FlinkSettings)

    def describe(self) -> dict[str, Any]:
        """A log-safe summary (no secrets)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, EngineConfig) else repr(value)
        return out


# --------------------------------------------------------------------------- building


def _source(g: _Group) -> SourceSettings:
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


def engine_config(thresholds_json: str | None, overrides: Mapping[str, float] | None = None,
                  where: str = "thresholds") -> EngineConfig:
    """The one path from configuration to the engine's thresholds: an EngineConfig JSON text
    (``{"defaults": .., "sites": ..}`` or a flat thresholds object) plus single default overrides.
    Used for the EngineConfig property group and for ``--config`` files; SettingsError names ``where``."""
    data: dict[str, Any] = {}
    if thresholds_json:
        try:
            data = json.loads(thresholds_json)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"{where}: is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise SettingsError(f"{where}: must be a JSON object")
        if "defaults" not in data and "sites" not in data:
            data = {"defaults": data}
    if overrides:
        data = {"defaults": {**dict(data.get("defaults") or {}), **overrides}, "sites": data.get("sites") or {}}
    try:
        return EngineConfig.from_dict(data)
    except ConfigError as exc:
        raise SettingsError(f"{where}: {exc}") from exc


def load_engine_config(path: str | Path) -> EngineConfig:
    """An EngineConfig JSON file (``--config``) through ``engine_config``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read engine config {path}: {exc}") from exc
    return engine_config(text, where=str(path))


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
    )


def settings_from_groups(groups: Mapping[str, Mapping[str, str]], on_msf: bool = False) -> AppSettings:
    """Build and validate AppSettings from MSF property groups (the production shape: Kinesis source).

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


# --------------------------------------------------------------------------- connections


def postgres_settings(settings: AppSettings, environ: Mapping[str, str] | None = None) -> PostgresSettings:
    """PostgreSQL settings: the Secrets Manager secret when one is named; otherwise host/port/db from
    SinkConfig.jdbc.url (when set) and user/password from ASSET_CYCLE_PG_* variables."""
    if settings.secrets.postgres_secret_name:
        return PostgresSettings.from_secret(settings.secrets.postgres_secret_name, settings.secrets.region)
    base = PostgresSettings.from_env(environ)
    if settings.sink.jdbc_url:
        return replace(base, **parse_jdbc_url(settings.sink.jdbc_url))
    return base


def redis_settings(settings: AppSettings, environ: Mapping[str, str] | None = None) -> RedisSettings:
    """Redis settings: the secret when one is named (host from the secret), otherwise
    ASSET_CYCLE_REDIS_* variables with the ReferenceConfig host/port/db/tls that differ from the
    defaults on top. ReferenceConfig's TLS flag applies in both cases."""
    ref = settings.reference
    if settings.secrets.redis_secret_name:
        return RedisSettings.from_secret(settings.secrets.redis_secret_name, settings.secrets.region,
                                         tls=ref.redis_tls or None)  # fmt: skip
    base = RedisSettings.from_env(environ)
    default = ReferenceSettings()
    overrides: dict[str, Any] = {}
    if ref.redis_host != default.redis_host:
        overrides["host"] = ref.redis_host
    if ref.redis_port != default.redis_port:
        overrides["port"] = ref.redis_port
    if ref.redis_db != default.redis_db:
        overrides["db"] = ref.redis_db
    if ref.redis_tls:
        overrides["tls"] = True
    return replace(base, **overrides)
