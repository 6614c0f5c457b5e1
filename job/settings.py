"""The job's typed settings: where telemetry comes from, where rows go, reference data, secrets,
engine thresholds and Flink options (frozen dataclasses, validated when built).

They are read from MSF-shaped application properties (job.properties) or resolved from
``asset-cycle run``'s options (cli.run_plan). Secrets are never part of these objects: ``postgres_settings`` / ``redis_settings`` resolve them into
stores.connections' PostgresSettings / RedisSettings, which mask them in their repr.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from state_machine.config import ConfigError, EngineConfig
from stores.connections import PostgresSettings, RedisSettings, mask_url, parse_jdbc_url
from stores.errors import SettingsError


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
    """Prometheus reporter port (None: no reporter; never set on MSF)."""
    metrics_host: str = "127.0.0.1"
    """Address the Prometheus endpoint binds to: loopback unless a self-managed cluster's Prometheus
    scrapes it from another host (then e.g. 0.0.0.0)."""
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


# --------------------------------------------------------------------------- engine thresholds


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
