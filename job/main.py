"""Entry point of the Flink job: ``main(argv)`` (MSF's main.py and ``asset-cycle run``).

Two ways to configure it:

* Application properties (production): on MSF ``/etc/flink/application_properties.json`` is read;
  locally the same file shape with ``--local-properties FILE`` or ``ASSET_CYCLE_LOCAL=1``. Source:
  Kinesis; reference data polled from PostgreSQL + Redis; JDBC sinks to ``SinkConfig``.
* Local demo (``asset-cycle run`` without properties): the simulated fleet as source (schema
  ``demo``, Redis prefix ``demo:``), its reference data seeded into the local PostgreSQL/Redis
  (started when none answers), tables created, the Flink Web UI on a local port. ``--source
  file:PATH`` replays a bundle or .jsonl file instead (schema ``dx``); ``--source kinesis`` reads a
  stream (``--stream-arn``; ``--aws-endpoint`` for a local emulator).

Local runs keep checkpoints on disk (``.checkpoints/<schema>`` in the project by default) and
``--resume`` restores the latest one; ``job.console`` prints what the job does and stops it.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from job.cli import CliError
from job.console import DEFAULT_PROGRESS_S, DEFAULT_STOP_TIMEOUT_S
from job.settings import (
    MSF_PROPERTIES_PATH,
    AppSettings,
    FlinkSettings,
    ReferenceSettings,
    SinkSettings,
    SourceSettings,
    load_settings,
    mask_url,
    properties_path,
)
from stores.errors import SettingsError, UserError

log = logging.getLogger("asset-cycle")

DEFAULT_REST_PORT = 8081
DEFAULT_METRICS_PORT = 9249
DEMO_TRUCKS = 12
DEMO_SPEED = 30.0
DEMO_SCHEMA = "demo"
DEMO_REDIS_PREFIX = "demo:"
DEMO_BACKFILL_MS = 30 * 60_000
"""The simulated fleet has been running this long when the demo starts: that past is replayed at
once, so the first cycles close within seconds, then the fleet runs on at --speed."""
LOCAL_CHECKPOINT_INTERVAL_MS = 10_000
LOCAL_THREAD_MODE_PARALLELISM = 1
"""Local runs in thread mode: the Python operators of all subtasks run in one interpreter (one GIL),
so a second subtask only adds contention (measured in bench/README.md)."""
RETAINED_CHECKPOINT_RUNS = 3
"""Checkpoint directories of this many earlier runs (per schema) are kept for --resume."""
NOISY_LOGGERS = ("apache_beam", "py4j", "urllib3", "botocore", "boto3", "s3transfer", "kafka")


class JobError(CliError):
    """A start-up problem to report as one clear line."""


# --------------------------------------------------------------------------- arguments


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``asset-cycle run`` and ``python -m job.main``."""
    src = parser.add_argument_group("source")
    src.add_argument("--source", default=None,
                     help="simulator (the demo's default) | file:PATH (a bundle directory or .jsonl file) | kinesis")
    src.add_argument("--monitor-s", type=float, default=None, metavar="S",
                     help="with --source file:DIR: watch DIR for new files every S seconds (unbounded; the files "
                          "already read are part of checkpoints and savepoints)")
    src.add_argument("--trucks", type=int, default=DEMO_TRUCKS, help=f"simulator: trucks per site (default {DEMO_TRUCKS})")
    src.add_argument("--sites", type=int, default=1, help="simulator: sites (default 1)")
    src.add_argument("--speed", type=float, default=DEMO_SPEED,
                     help=f"simulator: simulated seconds per wall-clock second (default {DEMO_SPEED:g}, so event time "
                          "runs ahead of the clock; 0 = as fast as possible)")
    src.add_argument("--seed", type=int, default=7, help="simulator: random seed (default 7)")
    src.add_argument("--degraded", action="store_true",
                     help="simulator: realistic degradations (duplicates, disorder, gaps, malformed lines)")
    src.add_argument("--stream-arn", default=None, help="kinesis: the stream ARN (else SourceConfig stream.arn)")
    src.add_argument("--aws-region", default=None, help="kinesis: AWS region (default: from the stream ARN)")
    src.add_argument("--aws-endpoint", default=None, help="kinesis: endpoint URL, e.g. a local emulator's")
    src.add_argument("--init-position", default=None, choices=("LATEST", "TRIM_HORIZON", "AT_TIMESTAMP"),
                     help="kinesis: where a job without state starts reading (default LATEST)")
    out = parser.add_argument_group("tables and reference data")
    out.add_argument("--schema", default=None,
                     help=f"PostgreSQL schema of the tables (default: {DEMO_SCHEMA} for the simulator, dx otherwise, "
                          "or SinkConfig schema)")
    out.add_argument("--redis-prefix", default=None,
                     help=f"Redis key prefix of the region hashes (default: {DEMO_REDIS_PREFIX!r} for the simulator, "
                          "none otherwise)")
    out.add_argument("--reference-poll-s", type=float, default=None, metavar="S",
                     help="poll reference data every S s (0 = load once; demo default 10, file default 0)")
    out.add_argument("--no-seed", action="store_true",
                     help="do not seed the simulator's or bundle's reference data into PostgreSQL/Redis")
    out.add_argument("--local-properties", metavar="FILE", default=None,
                     help="MSF-shaped application_properties.json to use locally (the production graph)")
    out.add_argument("--config", metavar="ENGINE_JSON", default=None, help="engine thresholds JSON")
    st = parser.add_argument_group("state, stop and resume")
    st.add_argument("--checkpoint-interval", type=int, default=None, metavar="MS",
                    help=f"checkpoint interval in ms (local default {LOCAL_CHECKPOINT_INTERVAL_MS})")
    st.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                    help="where checkpoints are kept (default .checkpoints/<schema> in the project; the latest is "
                         "retained when the job is cancelled or killed)")
    st.add_argument("--resume", action="store_true",
                    help="restore from the latest retained checkpoint in the checkpoint directory (after a crash, "
                         "kill or cancel)")
    st.add_argument("--savepoint-dir", default=None, metavar="DIR",
                    help="stop with a savepoint here (at the end of --duration-s, on Ctrl-C or SIGTERM)")
    st.add_argument("--from-savepoint", default=None, metavar="PATH", help="restore from a savepoint or checkpoint")
    st.add_argument("--drain", action="store_true",
                    help="with --savepoint-dir: advance to the end of event time before the savepoint (fires every "
                         "timer as at the end of a file; for a final stop, not a pause)")
    st.add_argument("--stop-timeout-s", type=float, default=DEFAULT_STOP_TIMEOUT_S, metavar="S",
                    help=f"give up on the savepoint after S s and cancel (default {DEFAULT_STOP_TIMEOUT_S:g})")
    st.add_argument("--duration-s", type=float, default=None, metavar="S", help="stop the job after S seconds")
    fl = parser.add_argument_group("Flink")
    fl.add_argument("--parallelism", type=int, default=None, metavar="N",
                    help="parallelism of every operator (default: 1 in thread mode, where the Python operators "
                         "of every subtask share one interpreter; the number of cores with --process-mode)")
    fl.add_argument("--process-mode", action="store_true",
                    help="python.execution-mode=process (default thread: 5-20x faster)")
    fl.add_argument("--state-backend", choices=("hashmap", "rocksdb"), default=None,
                    help="keyed state backend (default hashmap)")
    fl.add_argument("--rest-port", type=int, default=None, metavar="PORT",
                    help=f"Flink Web UI port on 127.0.0.1 (default {DEFAULT_REST_PORT}, another free port when taken)")
    fl.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                    help=f"Prometheus metrics port (demo default {DEFAULT_METRICS_PORT}; FlinkConfig metrics.port with "
                         "properties; not used on MSF)")
    fl.add_argument("--metrics-host", default=None, metavar="ADDRESS",
                    help="address the metrics port binds to (default 127.0.0.1; 0.0.0.0 lets a Prometheus on "
                         "another host scrape it)")
    fl.add_argument("--jar-dir", default=None, metavar="DIR", help="where the job's jar is (default .jars/)")
    parser.add_argument("--progress-s", type=float, default=DEFAULT_PROGRESS_S, metavar="S",
                        help=f"print a progress line every S seconds (default {DEFAULT_PROGRESS_S:g}; 0 = never)")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="also log what is set up (settings, Flink configuration; passwords masked)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m job.main`` (MSF's entry point; ``asset-cycle run`` has the same options)."""
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
    resume: bool = False

    @property
    def bounded(self) -> bool:
        """Whether the input ends (a file or bundle without --monitor-s)."""
        return self.source_kind == "file" and self.monitor_s is None


def on_msf_now(args: argparse.Namespace) -> bool:
    """Whether this process runs on MSF (its properties file exists and no local file was given)."""
    return not args.local_properties and MSF_PROPERTIES_PATH.is_file()


def _use_properties(args: argparse.Namespace) -> bool:
    if args.local_properties:
        return True
    if os.environ.get("ASSET_CYCLE_LOCAL", "").strip().lower() in ("1", "true", "yes"):
        return True
    return MSF_PROPERTIES_PATH.is_file()


def _engine_config(path: str | None, base: Any) -> Any:
    if not path:
        return base
    from job.settings import load_engine_config

    try:
        return load_engine_config(path)
    except SettingsError as exc:
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
            flink=FlinkSettings(checkpoint_interval_ms=LOCAL_CHECKPOINT_INTERVAL_MS, rest_port=DEFAULT_REST_PORT,
                                source_idleness_ms=None, metrics_port=DEFAULT_METRICS_PORT),
        )  # fmt: skip
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
    resume = bool(getattr(args, "resume", False))
    if resume and kind == "simulator":
        raise JobError("--resume needs a source that can be read again from a position (file: or kinesis); "
                       "the simulator starts a new simulation on every run")  # fmt: skip
    if resume and args.from_savepoint:
        raise JobError("give either --resume (the latest checkpoint) or --from-savepoint PATH, not both")
    if on_msf and resume:
        raise JobError("--resume is for local runs; on MSF the service restores from its snapshots")

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
    demo_fleet = mode == "demo" and kind == "simulator"
    ref = settings.reference
    poll = args.reference_poll_s
    if poll is None and mode == "demo" and kind == "file":
        poll = 0.0
    if poll is not None:
        ref = replace(ref, poll_interval_s=poll)
    if demo_fleet:  # the backfilled past arrives within seconds, maybe before the first reference poll
        ref = replace(ref, wait_max_s=max(ref.wait_max_s, 2 * DEMO_BACKFILL_MS / 1000))
    prefix = args.redis_prefix if args.redis_prefix is not None else (DEMO_REDIS_PREFIX if demo_fleet else None)
    if prefix is not None:
        ref = replace(ref, redis_key_prefix=prefix)
    sink = settings.sink
    schema = args.schema or (DEMO_SCHEMA if demo_fleet and not sink.schema else None)
    if schema:
        sink = replace(sink, schema=schema)
    fl = settings.flink
    checkpoint_dir = args.checkpoint_dir or fl.checkpoint_dir
    interval = args.checkpoint_interval if args.checkpoint_interval is not None else fl.checkpoint_interval_ms
    if not on_msf:  # local runs keep checkpoints on disk, every 10 s unless told otherwise
        checkpoint_dir = checkpoint_dir or str(default_checkpoint_dir(sink.schema or "dx"))
        interval = LOCAL_CHECKPOINT_INTERVAL_MS if interval is None else interval
    parallelism = args.parallelism if args.parallelism is not None else fl.parallelism
    mode_of_python = "process" if args.process_mode else fl.python_execution_mode
    if parallelism is None and not on_msf and mode_of_python == "thread":
        parallelism = LOCAL_THREAD_MODE_PARALLELISM
    fl = replace(
        fl,
        parallelism=parallelism,
        checkpoint_interval_ms=interval,
        checkpoint_dir=checkpoint_dir,
        savepoint_dir=args.savepoint_dir or fl.savepoint_dir,
        from_savepoint=args.from_savepoint or fl.from_savepoint,
        python_execution_mode=mode_of_python,
        state_backend=args.state_backend or fl.state_backend,
        rest_port=args.rest_port if args.rest_port is not None else fl.rest_port,
        metrics_port=args.metrics_port if getattr(args, "metrics_port", None) is not None else fl.metrics_port,
        metrics_host=getattr(args, "metrics_host", None) or fl.metrics_host,
        jar_dir=args.jar_dir or fl.jar_dir,
    )  # fmt: skip
    settings = replace(settings, source=src, reference=ref, sink=sink, flink=fl,
                       engine=_engine_config(args.config, settings.engine))  # fmt: skip
    seed_from = None
    if mode == "demo" and not args.no_seed:
        seed_from = "simulator" if kind == "simulator" else ("bundle" if kind == "file" else None)
    return Plan(settings, mode, on_msf, kind, file_path or None, seed_from, init_db=mode == "demo",
                monitor_s=monitor_s, resume=resume)


# --------------------------------------------------------------------------- checkpoints


def default_checkpoint_dir(schema: str) -> Path:
    """Where a local run into ``schema`` keeps its checkpoints (``.checkpoints/<schema>``)."""
    from job.local_services import state_dir

    return state_dir("checkpoints") / schema


def _completed_checkpoints(root: Path) -> list[Path]:
    """``<root>/<job id>/chk-<n>`` directories holding a completed checkpoint, oldest first."""
    found = [meta.parent for meta in root.glob("*/chk-*/_metadata") if meta.is_file()]
    return sorted(found, key=lambda p: p.joinpath("_metadata").stat().st_mtime)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest completed checkpoint retained under a checkpoint directory, or None."""
    found = _completed_checkpoints(Path(root))
    return found[-1] if found else None


def prune_checkpoints(root: Path, keep_runs: int = RETAINED_CHECKPOINT_RUNS) -> None:
    """Remove the checkpoint directories of all but the newest ``keep_runs`` earlier runs, and those of
    runs that left no completed checkpoint and are older than a day (a run that ended normally)."""
    import time

    runs = list(dict.fromkeys(chk.parent for chk in reversed(_completed_checkpoints(root))))
    for old in runs[keep_runs:]:
        shutil.rmtree(old, ignore_errors=True)
    day_ago = time.time() - 86_400
    for job_dir in root.glob("*"):
        if job_dir.is_dir() and job_dir not in runs and job_dir.stat().st_mtime < day_ago:
            shutil.rmtree(job_dir, ignore_errors=True)


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
    from stores.postgres import DatabaseUnavailable

    try:
        return pg.connect()
    except DatabaseUnavailable as exc:
        raise JobError(f"{exc} (start PostgreSQL, or set ASSET_CYCLE_PG_HOST/PORT/DB/USER/PASSWORD)") from exc


def _connect_redis(rs: Any) -> Any:
    from stores.connections import RedisUnavailable, connect_redis

    try:
        return connect_redis(rs)
    except RedisUnavailable as exc:
        raise JobError(f"{exc} (start Redis, or set ASSET_CYCLE_REDIS_HOST/PORT/PASSWORD)") from exc


def _simulation_spec(settings: AppSettings, args: argparse.Namespace) -> Any:
    """The demo fleet: unbounded, started DEMO_BACKFILL_MS ago (that past is delivered at once)."""
    import time

    from workbench.simulator import SimulationSpec

    now_ms = int(time.time() * 1000)
    spec = SimulationSpec(trucks=settings.source.simulator_trucks, sites=args.sites, hours=None,
                          seed=settings.source.simulator_seed, start_ms=now_ms - DEMO_BACKFILL_MS)  # fmt: skip
    return spec.degraded() if args.degraded else spec


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_local_port() -> int:
    """A TCP port free right now on 127.0.0.1, below the kernel's ephemeral range when possible: a
    port handed out by bind(0) comes from that range, and an outgoing connection (JDBC, Redis) may
    take it as its source port before the server that was meant to listen on it binds it."""
    import random

    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    if low > 11000:
        for port in random.sample(range(10000, low - 1000), 50):
            if _port_free(port):
                return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _local_port(requested: int | None, default: int | None, what: str, option: str) -> int | None:
    """An explicitly requested port must be free; a default one falls back to any free port."""
    if requested is not None:
        if requested and not _port_free(requested):
            raise JobError(f"{what} port {requested} is in use (another asset-cycle run?): pass another {option}")
        return requested
    if default is None:
        return None
    return default if _port_free(default) else free_local_port()


# --------------------------------------------------------------------------- run


def _setup_logging(args: argparse.Namespace, on_msf: bool) -> None:
    """Structured, masking logging (job.logging_setup): JSON at INFO on MSF; locally text on stderr,
    quiet (warnings only) unless --verbose. Third-party INFO chatter (Beam, py4j, ...) stays off."""
    from job.logging_setup import FORMAT_ENV, LEVEL_ENV, setup_logging

    if on_msf:
        setup_logging(level=os.environ.get(LEVEL_ENV) or "INFO")
    else:
        level = "INFO" if args.verbose else (os.environ.get(LEVEL_ENV) or "WARNING")
        setup_logging(level=level, fmt=os.environ.get(FORMAT_ENV) or "text")
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def describe_run(plan: Plan, names: Any, pg: Any, rs: Any) -> str:
    """One line: where the records come from and which database, schema and Redis prefix they go to."""
    settings = plan.settings
    if plan.source_kind == "simulator":
        speed = settings.source.simulator_speed
        what = (f"simulated fleet ({settings.source.simulator_trucks} trucks per site, "
                + (f"{speed:g}x real time" if speed else "as fast as possible") + ")")  # fmt: skip
    elif plan.source_kind == "file":
        what = f"file:{plan.file_path}" + (f" (watched every {plan.monitor_s:g} s)" if plan.monitor_s else "")
    else:
        what = f"kinesis {settings.source.stream_arn}"
    prefix = settings.reference.redis_key_prefix
    return (f"{what} -> PostgreSQL {pg.host}:{pg.port}/{pg.dbname} schema {names.schema} (user {pg.user}); "
            f"reference data: Redis {rs.address}" + (f" prefix {prefix!r}" if prefix else ""))


def describe_settings(plan: Plan, jdbc_url: str) -> str:
    """The settings in force, short and masked (for --verbose)."""
    s = plan.settings
    fl = s.flink
    parts = [
        f"mode={plan.mode}", f"sink={mask_url(jdbc_url)} batch={s.sink.batch_size}/{s.sink.batch_interval_ms}ms",
        f"reference poll={s.reference.poll_interval_s:g}s", f"parallelism={fl.parallelism or 'cores'}",
        f"python={fl.python_execution_mode}", f"state={fl.state_backend}",
        "checkpoints=" + (f"every {fl.checkpoint_interval_ms} ms in {fl.checkpoint_dir}" if fl.checkpoint_interval_ms
                          else "off"),
    ]  # fmt: skip
    if fl.from_savepoint:
        parts.append(f"restore={fl.from_savepoint}")
    if fl.savepoint_dir:
        parts.append(f"savepoints={fl.savepoint_dir}")
    return "settings: " + ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Build and run the job described by ``args``; returns an exit code."""
    _setup_logging(args, on_msf_now(args))
    plan = make_plan(args)
    settings = plan.settings

    from stores.postgres import TableNames

    try:
        names = TableNames(schema=settings.sink.schema or "dx", **settings.sink.table_overrides())
    except ValueError as exc:
        raise JobError(f"SinkConfig: {exc}") from exc

    pg_settings, redis_settings = _services(settings)
    if plan.mode == "demo":
        _bring_up_local_services(pg_settings, redis_settings)
    from stores.connections import jdbc_url_with_tls

    jdbc_url = jdbc_url_with_tls(settings.sink.jdbc_url, pg_settings) if settings.sink.jdbc_url else pg_settings.jdbc_url()
    if not plan.on_msf:
        print(describe_run(plan, names, pg_settings, redis_settings), flush=True)
        log.info("%s", describe_settings(plan, jdbc_url))

    spec = None
    snapshot = None
    if not plan.on_msf:  # a clear one-line error now rather than a job that cannot write
        pg_conn = _connect_pg(pg_settings)
        redis_client = _connect_redis(redis_settings)
        try:
            if plan.init_db:
                from stores.postgres import apply_migrations

                applied = apply_migrations(pg_conn, names)
                log.info("database schema %s ready (%d migration(s) applied)", names.schema, len(applied))
            if plan.seed_from:
                from stores.reference import seed_reference

                if plan.seed_from == "simulator":
                    from workbench.simulator import build_layout

                    spec = _simulation_spec(settings, args)
                    reference, assets = build_layout(spec)
                else:
                    from job.sources import SourceError
                    from workbench.bundle import BundleError, read_reference

                    try:
                        bundle = bundle_dir(plan.file_path or "")
                        reference, assets = read_reference(bundle)
                    except (BundleError, SourceError, OSError) as exc:
                        raise JobError(f"cannot read the bundle's reference data: {exc} (or pass --no-seed)") from exc
                summary = seed_reference(pg_conn, redis_client, names, reference, assets,
                                         redis_key_prefix=settings.reference.redis_key_prefix)  # fmt: skip
                log.info("seeded reference data: %s", summary)
            if settings.reference.poll_interval_s == 0:
                from stores.reference import load_reference_data
                from udfs.reference_poller import snapshot_records

                data = load_reference_data(pg_conn, redis_client, names,
                                           redis_key_prefix=settings.reference.redis_key_prefix)  # fmt: skip
                snapshot = snapshot_records(data)
                log.info("reference data loaded once: %d site(s), %d asset(s)", len(data.sites), len(data.asset_types))
        finally:
            pg_conn.close()
            redis_client.close()

    fl = settings.flink
    if not plan.on_msf:
        fl = _local_flink(plan, fl)
        settings = replace(settings, flink=fl)
        plan = replace(plan, settings=settings)

    from job.flink_env import FlinkEnvError
    from job.pipeline import assemble, bounded_reference_stream, polling_reference_stream
    from job.reference import ReferenceConnector
    from job.sinks import JdbcTarget, SinkSet
    from job.sources import SourceError, file_source, kinesis_source, simulator_source
    from udfs.reference_poller import ReferencePoller

    target = JdbcTarget(jdbc_url, pg_settings.user, pg_settings.password, settings.sink.batch_size,
                        settings.sink.batch_interval_ms, settings.sink.max_retries)  # fmt: skip

    def source(env: Any, t_env: Any) -> Any:
        if plan.source_kind == "kinesis":
            return kinesis_source(env, settings.source)
        if plan.source_kind == "file":
            return file_source(env, plan.file_path or "", monitor_interval_s=plan.monitor_s,
                               label=f"file:{plan.file_path}")  # fmt: skip
        return simulator_source(t_env, spec or _simulation_spec(settings, args),
                                speed=settings.source.simulator_speed or None)  # fmt: skip

    def reference(env: Any, t_env: Any) -> Any:
        if snapshot is not None:
            return bounded_reference_stream(env, snapshot)
        connector = ReferenceConnector(settings, None if plan.on_msf else pg_settings,
                                       None if plan.on_msf else redis_settings, names)  # fmt: skip
        return polling_reference_stream(env, t_env, ReferencePoller(connector, settings.reference.poll_interval_s))

    try:
        # simulated time runs ahead of the wall clock when accelerated: no "too far in the future" check
        job = assemble(replace(settings, flink=fl), lambda env: SinkSet(env, names, target), source, reference, on_msf=plan.on_msf,
                       check_future=plan.source_kind != "simulator")  # fmt: skip
    except (FlinkEnvError, SourceError) as exc:
        raise JobError(str(exc)) from exc
    env, info, raw = job.env, job.info, job.source

    if plan.on_msf:  # MSF follows the job itself: build, submit, wait
        env.execute_async("asset-cycle").get_job_execution_result().result()
        return 0
    if info.web_ui:
        print(f"Flink Web UI: {info.web_ui}", flush=True)
    if info.metrics_url:
        print(f"Prometheus metrics: {info.metrics_url}", flush=True)
    return _watch(env, plan, names, raw.label, args)


def _local_flink(plan: Plan, fl: FlinkSettings) -> FlinkSettings:
    """Local runs: ports (a default one that is taken falls back to a free one), the JVM log in the
    project, the checkpoint to resume from and the pruning of old checkpoints."""
    from job.local_services import state_dir

    rest_requested = None if fl.rest_port == DEFAULT_REST_PORT and plan.mode == "demo" else fl.rest_port
    rest_port = _local_port(rest_requested, DEFAULT_REST_PORT if plan.mode == "demo" else free_local_port(),
                            "Web UI", "--rest-port")  # fmt: skip
    metrics_requested = None if fl.metrics_port == DEFAULT_METRICS_PORT and plan.mode == "demo" else fl.metrics_port
    metrics_default = DEFAULT_METRICS_PORT if plan.mode == "demo" and fl.metrics_port is not None else None
    metrics_port = _local_port(metrics_requested, metrics_default, "metrics", "--metrics-port")
    os.environ.setdefault("FLINK_LOG_DIR", str(_run_log_dir(state_dir("logs"))))
    from_savepoint = fl.from_savepoint
    if fl.checkpoint_dir:
        root = Path(fl.checkpoint_dir)
        if plan.resume:
            found = latest_checkpoint(root)
            if found is None:
                raise JobError(f"--resume: no completed checkpoint in {root} (a run that ended normally, or that "
                               "was stopped with a savepoint, leaves none; --checkpoint-dir points elsewhere)")  # fmt: skip
            from_savepoint = str(found)
            print(f"resuming from checkpoint {found}", flush=True)
        prune_checkpoints(root)
    return replace(fl, rest_port=rest_port, metrics_port=metrics_port, from_savepoint=from_savepoint)


def _run_log_dir(root: Path, keep: int = 10) -> Path:
    """A fresh folder for this run's Flink (JVM) log under ``root``; older ones beyond ``keep`` go."""
    import time

    runs = sorted((p for p in root.glob("run-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in runs[: max(0, len(runs) - keep + 1)]:
        shutil.rmtree(old, ignore_errors=True)
    path = root / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    log.info("Flink's own log: %s", path)
    return path


def _watch(env: Any, plan: Plan, names: Any, source_label: str, args: argparse.Namespace) -> int:
    from job.console import JobConsole, StopPlan

    fl = plan.settings.flink

    def resume_hint() -> str | None:
        if not plan.bounded and plan.source_kind == "simulator":
            return None
        found = latest_checkpoint(fl.checkpoint_dir) if fl.checkpoint_dir else None
        return f"latest checkpoint: {found} (asset-cycle run --resume ... continues from it)" if found else None

    client = env.execute_async("asset-cycle")
    console = JobConsole(client, fl.rest_port, StopPlan(fl.savepoint_dir, getattr(args, "drain", False),
                                                        args.stop_timeout_s),
                         bounded=plan.bounded, source=source_label,
                         dead_letter_table=f"{names.schema}.{names.table_name('dead_letter')}",
                         progress_s=args.progress_s if args.progress_s > 0 else float("inf"),
                         resume_hint=resume_hint, flink_log=os.environ.get("FLINK_LOG_DIR"))  # fmt: skip
    console.install_signal_handlers()
    return console.watch(args.duration_s)


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


def main(argv: list[str] | None = None) -> int:
    """Entry point for MSF (``main.py``) and ``python -m job.main``."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        print(f"asset-cycle: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
