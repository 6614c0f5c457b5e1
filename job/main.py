"""Entry point of the Flink job: ``main(argv)`` (MSF's main.py and ``asset-cycle run``).

Two ways to configure it:

* Application properties (production): on MSF ``/etc/flink/application_properties.json`` is read;
  locally the same file shape with ``--local-properties FILE`` or ``ASSET_CYCLE_LOCAL=1``. Source:
  Kinesis; reference data polled from PostgreSQL + Redis; JDBC sinks to ``SinkConfig``.
* Local demo (``asset-cycle run`` without properties): the simulated fleet as source, its reference
  data seeded into the local PostgreSQL/Redis, tables created, sinks to the local PostgreSQL, the
  Flink Web UI on a local port. ``--source file:PATH`` replays a bundle or .jsonl file instead;
  ``--source kinesis`` reads a stream (``--stream-arn``; ``--aws-endpoint`` for a local emulator).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from job.settings import (
    MSF_PROPERTIES_PATH,
    AppSettings,
    FlinkSettings,
    ReferenceSettings,
    SettingsError,
    SinkSettings,
    SourceSettings,
    load_settings,
    properties_path,
)

log = logging.getLogger("asset-cycle")

DEFAULT_REST_PORT = 8081
DEFAULT_METRICS_PORT = 9249
DEMO_TRUCKS = 12
DEMO_SPEED = 30.0


class JobError(RuntimeError):
    """A start-up problem to report as one clear line."""


# --------------------------------------------------------------------------- arguments


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``asset-cycle run`` and ``python -m job.main``."""
    parser.add_argument("--source", default=None,
                        help="simulator (default for the demo) | file:PATH (bundle dir or .jsonl) | kinesis")
    parser.add_argument("--local-properties", metavar="FILE", default=None,
                        help="MSF-shaped application_properties.json to use locally (production graph)")
    parser.add_argument("--config", metavar="ENGINE_JSON", default=None, help="engine thresholds JSON")
    parser.add_argument("--parallelism", type=int, default=None)
    parser.add_argument("--checkpoint-interval", type=int, default=None, metavar="MS",
                        help="checkpoint interval in ms (demo default 10000)")
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--savepoint-dir", default=None,
                        help="stop with a savepoint here (at the end of --duration-s, on Ctrl-C or SIGTERM)")
    parser.add_argument("--from-savepoint", default=None, metavar="PATH", help="restore state from a savepoint")
    parser.add_argument("--drain", action="store_true",
                        help="with --savepoint-dir: advance to the end of event time before the savepoint "
                             "(fires every timer as at the end of a file; for a final stop, not a pause)")
    parser.add_argument("--monitor-s", type=float, default=None, metavar="S",
                        help="with --source file:DIR: watch DIR for new files every S seconds (unbounded; "
                             "the files already read are part of the savepoint)")
    parser.add_argument("--duration-s", type=float, default=None, help="stop the job after N seconds")
    parser.add_argument("--process-mode", action="store_true", help="python.execution-mode=process (default thread)")
    parser.add_argument("--state-backend", choices=("hashmap", "rocksdb"), default=None)
    parser.add_argument("--rest-port", type=int, default=None, help=f"Flink Web UI port (default {DEFAULT_REST_PORT})")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help=f"Prometheus metrics port (demo default {DEFAULT_METRICS_PORT}; "
                             "FlinkConfig metrics.port with properties; not used on MSF)")
    parser.add_argument("--jar-dir", default=None, help="where the connector jars are (default .jars/)")
    parser.add_argument("--schema", default=None, help="PostgreSQL schema of the tables (default dx)")
    parser.add_argument("--redis-prefix", default=None, help="Redis key prefix of the region hashes")
    parser.add_argument("--reference-poll-s", type=float, default=None,
                        help="poll reference data every N s (0 = load once; demo default 10, file default 0)")
    parser.add_argument("--no-seed", action="store_true", help="do not seed reference data into PostgreSQL/Redis")
    parser.add_argument("--trucks", type=int, default=DEMO_TRUCKS, help="simulator: trucks per site")
    parser.add_argument("--sites", type=int, default=1, help="simulator: sites")
    parser.add_argument("--speed", type=float, default=DEMO_SPEED,
                        help="simulator: simulated seconds per second (0 = as fast as possible)")
    parser.add_argument("--seed", type=int, default=7, help="simulator: random seed")
    parser.add_argument("--degraded", action="store_true", help="simulator: realistic degradations")
    parser.add_argument("--stream-arn", default=None, help="kinesis: stream ARN (else from properties)")
    parser.add_argument("--aws-region", default=None)
    parser.add_argument("--aws-endpoint", default=None)
    parser.add_argument("--init-position", default=None, choices=("LATEST", "TRIM_HORIZON", "AT_TIMESTAMP"))
    parser.add_argument("--verbose", "-v", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asset-cycle-job", description="asset-cycle Flink job")
    add_run_arguments(parser)
    return parser


# --------------------------------------------------------------------------- plan


@dataclass
class Plan:
    """Everything decided before the job graph is built."""

    settings: AppSettings
    mode: str  # "properties" | "demo"
    on_msf: bool
    source_kind: str  # simulator | file | kinesis
    file_path: str | None = None
    seed_from: str | None = None  # "simulator" | "bundle" | None
    init_db: bool = False
    monitor_s: float | None = None  # file source: watch the directory every N s


def _use_properties(args: argparse.Namespace) -> bool:
    if args.local_properties:
        return True
    if os.environ.get("ASSET_CYCLE_LOCAL", "").strip().lower() in ("1", "true", "yes"):
        return True
    return MSF_PROPERTIES_PATH.is_file()


def _engine_config(path: str | None, base: Any) -> Any:
    if not path:
        return base
    from state_machine.config import ConfigError, EngineConfig

    try:
        return EngineConfig.from_json_file(path)
    except ConfigError as exc:
        raise JobError(str(exc)) from exc


def make_plan(args: argparse.Namespace) -> Plan:
    """Settings from properties or demo defaults, with command-line overrides."""
    source_arg = args.source or ""
    if _use_properties(args):
        path = properties_path(args.local_properties)
        settings = load_settings(args.local_properties)
        on_msf = path == MSF_PROPERTIES_PATH and not args.local_properties
        mode = "properties"
        default_kind = "kinesis"
    else:
        settings = AppSettings(
            source=SourceSettings(kind="simulator"),
            sink=SinkSettings(jdbc_url=""),
            reference=ReferenceSettings(poll_interval_s=10.0),
            flink=FlinkSettings(checkpoint_interval_ms=10_000, rest_port=DEFAULT_REST_PORT, source_idleness_ms=None,
                                metrics_port=DEFAULT_METRICS_PORT),
        )
        on_msf = False
        mode = "demo"
        default_kind = "simulator"
    kind, _, file_path = source_arg.partition(":") if source_arg else (default_kind, "", "")
    if kind not in ("simulator", "file", "kinesis"):
        raise JobError(f"--source must be simulator, file:PATH or kinesis, got {source_arg!r}")
    if kind == "file" and not file_path:
        raise JobError("--source file:PATH needs a path (bundle directory or .jsonl file)")
    monitor_s = getattr(args, "monitor_s", None)
    if monitor_s is not None and (kind != "file" or monitor_s <= 0):
        raise JobError("--monitor-s needs --source file:DIR and a positive interval")

    src = settings.source
    if kind == "kinesis":
        src = replace(
            src, kind="kinesis", stream_arn=args.stream_arn or src.stream_arn,
            aws_region=args.aws_region or src.aws_region, aws_endpoint=args.aws_endpoint or src.aws_endpoint,
            init_position=args.init_position or src.init_position,
        )  # fmt: skip
        if not src.stream_arn:
            raise JobError("--source kinesis needs a stream ARN (--stream-arn or SourceConfig.stream.arn)")
    else:
        src = replace(src, kind=kind, file_path=file_path or None, simulator_trucks=args.trucks,
                      simulator_speed=args.speed, simulator_seed=args.seed)  # fmt: skip
    ref = settings.reference
    poll = args.reference_poll_s
    if poll is None and mode == "demo" and kind == "file":
        poll = 0.0
    if poll is not None:
        ref = replace(ref, poll_interval_s=poll)
    if args.redis_prefix is not None:
        ref = replace(ref, redis_key_prefix=args.redis_prefix)
    sink = settings.sink
    if args.schema:
        sink = replace(sink, schema=args.schema)
    fl = settings.flink
    fl = replace(
        fl,
        parallelism=args.parallelism if args.parallelism is not None else fl.parallelism,
        checkpoint_interval_ms=args.checkpoint_interval if args.checkpoint_interval is not None
        else fl.checkpoint_interval_ms,
        checkpoint_dir=args.checkpoint_dir or fl.checkpoint_dir,
        savepoint_dir=args.savepoint_dir or fl.savepoint_dir,
        from_savepoint=args.from_savepoint or fl.from_savepoint,
        python_execution_mode="process" if args.process_mode else fl.python_execution_mode,
        state_backend=args.state_backend or fl.state_backend,
        rest_port=args.rest_port if args.rest_port is not None else fl.rest_port,
        metrics_port=args.metrics_port if getattr(args, "metrics_port", None) is not None else fl.metrics_port,
        jar_dir=args.jar_dir or fl.jar_dir,
    )  # fmt: skip
    settings = replace(settings, source=src, reference=ref, sink=sink, flink=fl,
                       engine=_engine_config(args.config, settings.engine))  # fmt: skip
    seed_from = None
    if mode == "demo" and not args.no_seed:
        seed_from = "simulator" if kind == "simulator" else ("bundle" if kind == "file" else None)
    return Plan(settings, mode, on_msf, kind, file_path or None, seed_from, init_db=mode == "demo",
                monitor_s=monitor_s)


# --------------------------------------------------------------------------- services


def _services(settings: AppSettings) -> tuple[Any, Any]:
    """(PostgresSettings, RedisSettings) with the properties' host/port overrides applied."""
    from job.settings import postgres_settings, redis_settings

    return postgres_settings(settings), redis_settings(settings)


def _bring_up_local_services(pg: Any, rs: Any, environ: Any = None) -> None:
    """Demo runs: start the local PostgreSQL / Redis when none answers (never when the user set
    ASSET_CYCLE_PG_* / ASSET_CYCLE_REDIS_*: then their servers are used as they are)."""
    from job.local_services import ServiceError, ensure_postgres, ensure_redis

    env = os.environ if environ is None else environ
    try:
        if not any(key.startswith("ASSET_CYCLE_PG_") for key in env):
            print(ensure_postgres(pg.host, pg.port, databases=(pg.dbname,)).describe(), flush=True)
        if not any(key.startswith("ASSET_CYCLE_REDIS_") for key in env):
            print(ensure_redis(rs.host, rs.port).describe(), flush=True)
    except ServiceError as exc:
        raise JobError(str(exc)) from exc


def _connect_pg(pg: Any) -> Any:
    from job.db import DatabaseUnavailable

    try:
        return pg.connect()
    except DatabaseUnavailable as exc:
        raise JobError(f"{exc} (start PostgreSQL or set ASSET_CYCLE_PG_HOST/PORT/DB/USER)") from exc


def _connect_redis(rs: Any) -> Any:
    import redis

    client = rs.client()
    try:
        client.ping()
    except redis.RedisError as exc:
        raise JobError(f"cannot connect to Redis at {rs.address}: {exc} (start Redis or set "
                       "ASSET_CYCLE_REDIS_HOST/PORT)") from exc  # fmt: skip
    return client


def _simulation_spec(settings: AppSettings, args: argparse.Namespace) -> Any:
    from state_machine.simulator import SimulationSpec

    now_ms = int(time.time() * 1000)
    spec = SimulationSpec(trucks=settings.source.simulator_trucks, sites=args.sites, hours=None,
                          seed=settings.source.simulator_seed, start_ms=now_ms - 60_000)  # fmt: skip
    return spec.degraded() if args.degraded else spec


# --------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    """Build and run the job described by ``args``; returns an exit code."""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    for noisy in ("py4j", "urllib3", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    plan = make_plan(args)
    settings = plan.settings
    log.info("settings: %s", settings.describe())

    from job.db import TableNames

    try:
        names = TableNames(schema=settings.sink.schema or "dx", **settings.sink.table_overrides())
    except ValueError as exc:
        raise JobError(f"SinkConfig: {exc}") from exc

    pg_settings, redis_settings = _services(settings)
    if plan.mode == "demo":
        _bring_up_local_services(pg_settings, redis_settings)
    from job.settings import jdbc_url_with_tls

    jdbc_url = jdbc_url_with_tls(settings.sink.jdbc_url, pg_settings) if settings.sink.jdbc_url else pg_settings.jdbc_url()

    spec = None
    if plan.init_db or plan.seed_from or settings.reference.poll_interval_s == 0:
        pg_conn = _connect_pg(pg_settings)
        redis_client = _connect_redis(redis_settings)
        try:
            if plan.init_db:
                from job.db import apply_migrations

                applied = apply_migrations(pg_conn, names)
                log.info("database schema %s ready (%d migration(s) applied)", names.schema, len(applied))
            if plan.seed_from:
                from job.reference_store import seed_reference

                if plan.seed_from == "simulator":
                    from state_machine.simulator import build_layout

                    spec = _simulation_spec(settings, args)
                    reference, assets = build_layout(spec)
                else:
                    from job.sources import SourceError
                    from state_machine.bundle import BundleError, read_reference

                    try:
                        bundle = bundle_dir(plan.file_path or "")
                        reference, assets = read_reference(bundle)
                    except (BundleError, SourceError, OSError) as exc:
                        raise JobError(f"cannot read the bundle's reference data: {exc} (or pass --no-seed)") from exc
                summary = seed_reference(pg_conn, redis_client, names, reference, assets,
                                         redis_key_prefix=settings.reference.redis_key_prefix)  # fmt: skip
                log.info("seeded reference data: %s", summary)
            snapshot = None
            if settings.reference.poll_interval_s == 0:
                from job.reference_store import load_reference_data
                from udfs.reference_poller import snapshot_records

                data = load_reference_data(pg_conn, redis_client, names,
                                           redis_key_prefix=settings.reference.redis_key_prefix)  # fmt: skip
                snapshot = snapshot_records(data)
                log.info("reference data loaded once: %d site(s), %d asset(s)", len(data.sites), len(data.asset_types))
        finally:
            pg_conn.close()
            redis_client.close()
    else:
        snapshot = None

    from job.flink_env import FlinkEnvError, create_environment

    try:
        env, info = create_environment(settings.flink, on_msf=plan.on_msf)
    except FlinkEnvError as exc:
        raise JobError(str(exc)) from exc

    from job.pipeline import bounded_reference_stream, build_pipeline, polling_reference_stream
    from job.sinks import JdbcTarget, SinkSet
    from job.sources import SourceError, file_source, kinesis_source, simulator_source
    from udfs.reference_poller import ReferenceConnector, ReferencePoller

    target = JdbcTarget(jdbc_url, pg_settings.user, pg_settings.password, settings.sink.batch_size,
                        settings.sink.batch_interval_ms, settings.sink.max_retries)  # fmt: skip
    sinks = SinkSet(env, names, target)
    try:
        if plan.source_kind == "kinesis":
            raw = kinesis_source(env, settings.source)
        elif plan.source_kind == "file":
            raw = file_source(env, plan.file_path or "", monitor_interval_s=plan.monitor_s,
                              label=f"file:{plan.file_path}")
        else:
            spec = spec or _simulation_spec(settings, args)
            raw = simulator_source(sinks.t_env, spec, speed=settings.source.simulator_speed or None)
    except SourceError as exc:
        raise JobError(str(exc)) from exc

    if snapshot is not None:
        reference_stream = bounded_reference_stream(env, snapshot)
    else:
        connector = ReferenceConnector(settings, None if plan.on_msf else pg_settings,
                                       None if plan.on_msf else redis_settings, names)  # fmt: skip
        poller = ReferencePoller(connector, settings.reference.poll_interval_s)
        reference_stream = polling_reference_stream(env, sinks.t_env, poller)
    # simulated time runs ahead of the wall clock when accelerated: no "too far in the future" check
    build_pipeline(env, raw.stream, reference_stream, sinks, settings, raw.label,
                   check_future=plan.source_kind != "simulator")  # fmt: skip
    sinks.attach()

    if info.web_ui:
        print(f"Flink Web UI: {info.web_ui}", flush=True)
    if info.metrics_url:
        print(f"Prometheus metrics: {info.metrics_url}", flush=True)
    return _execute(env, settings, args.duration_s, names, pg_settings, drain=getattr(args, "drain", False))


def bundle_dir(file_path: str | Path) -> Path:
    """Where a file source's reference data (regions.geojson, assets.csv) is: the bundle directory
    itself, or the parent of a telemetry file / of a monitored directory of telemetry files."""
    from job.sources import resolve_file_path

    p = Path(file_path)
    if p.is_dir() and (p / "assets.csv").is_file():
        return p
    return resolve_file_path(p).parent


def stop_with_savepoint(client: Any, directory: str | Path, drain: bool = False) -> str:
    """Stop the job with a canonical savepoint (Java client directly; PyFlink's wrapper is broken).

    ``drain``: advance to the end of event time first (MAX_WATERMARK fires every timer, as at the
    end of a bounded file); without it the job pauses and a restore continues where it stopped."""
    from pyflink.java_gateway import get_gateway

    fmt = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
    target = Path(directory).resolve().as_uri()
    return str(client._j_job_client.stopWithSavepoint(drain, target, fmt).get())


def local_path(uri: str) -> str:
    """``file:/x/y`` (what Flink reports) -> ``/x/y``, usable as ``--from-savepoint``; others unchanged."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _execute(env: Any, settings: AppSettings, duration_s: float | None, names: Any, pg_settings: Any,
             drain: bool = False) -> int:  # fmt: skip
    import signal

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM stops like Ctrl-C (savepoint if asked)
    if duration_s is None:
        client = env.execute_async("asset-cycle")
        log.info("job %s submitted; Ctrl-C to stop", client.get_job_id())
        try:
            client.get_job_execution_result().result()
        except KeyboardInterrupt:
            log.info("stopping the job")
            _stop(client, settings, drain)
            return 130
        return 0
    client = env.execute_async("asset-cycle")
    log.info("job %s submitted; running for %.0f s", client.get_job_id(), duration_s)
    reporter = _Progress(names, pg_settings)
    deadline = time.monotonic() + duration_s
    try:
        while time.monotonic() < deadline:
            status = str(client.get_job_status().result())
            if status in ("FINISHED", "FAILED", "CANCELED"):
                log.info("job %s", status)
                if status == "FAILED":
                    client.get_job_execution_result().result()  # raises with the cause
                return 0 if status == "FINISHED" else 1
            time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))
            reporter.report()
    except KeyboardInterrupt:
        log.info("stopping the job")
    _stop(client, settings, drain)
    reporter.report()
    return 0


def _stop(client: Any, settings: AppSettings, drain: bool = False) -> None:
    if settings.flink.savepoint_dir:
        log.info("stopping with a savepoint%s in %s", " (drain)" if drain else "", settings.flink.savepoint_dir)
        path = local_path(stop_with_savepoint(client, settings.flink.savepoint_dir, drain))
        print(f"savepoint: {path}", flush=True)
    else:
        client.cancel().result()
        log.info("job cancelled")


class _Progress:
    """Prints row counts of the job's tables now and then (demo runs)."""

    def __init__(self, names: Any, pg_settings: Any) -> None:
        self.names = names
        self.pg_settings = pg_settings
        self.last = 0.0
        self.lock = threading.Lock()

    def report(self) -> None:
        if time.monotonic() - self.last < 10:
            return
        self.last = time.monotonic()
        try:
            conn = self.pg_settings.connect()
        except Exception:  # noqa: BLE001 - progress is best effort
            return
        try:
            from psycopg2 import sql

            counts = {}
            with conn.cursor() as cur:
                for kind in ("cycle", "cycle_tmp", "process_info", "dead_letter"):
                    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(self.names.table(kind)))
                    counts[kind] = cur.fetchone()[0]
            print("rows: " + ", ".join(f"{k}={v}" for k, v in counts.items()), flush=True)
        except Exception:  # noqa: BLE001
            pass
        finally:
            conn.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point for MSF (``main.py``) and ``python -m job.main``."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (JobError, SettingsError) as exc:
        print(f"asset-cycle: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
