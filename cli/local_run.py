"""``asset-cycle run``: the job on the local minicluster, followed by a console until it ends or is stopped.

1. The run plan (cli.run_plan): the job's AppSettings from properties or demo defaults and the options.
2. The demo's local PostgreSQL and Redis, started when none answers (cli.local_services).
3. One line saying where records come from and go to; then both stores are connected (an unreachable
   one is a one-line error now rather than a job that cannot write), the demo's tables created and
   its reference data seeded (the simulated fleet's layout, or a bundle's assets and regions).
4. This machine's ports and the checkpoint to resume from; old checkpoints pruned; Flink's own log in
   a fresh folder of ``.logs/``.
5. With --serve, the live operations view (web.server, as ``asset-cycle serve``) on a thread, over the
   same tables, until the run ends.
6. The job built by job.main.build_job, the function the job's entry point runs on MSF, submitted to
   the minicluster and followed by cli.console.JobConsole; with --cluster / --jobmanager, steps 4 and 6
   are cli.cluster_run's: the same settings submitted to a Flink session cluster.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from cli.checkpoints import latest_checkpoint, prune_checkpoints
from cli.cluster_run import run_on_cluster
from cli.console import JobConsole, LocalJob, StopPlan, java_root_cause
from cli.errors import CliError
from cli.local_services import (
    ServiceError,
    ensure_postgres,
    ensure_redis,
    free_local_port,
    port_free,
    state_dir,
)
from cli.run_plan import DEFAULT_SERVE_PORT, Plan, make_plan, on_cluster, with_local_resources
from job.logging_setup import FORMAT_ENV, LEVEL_ENV, quiet_third_party_loggers, setup_logging
from job.main import JOB_NAME, build_job, run_job, sink_jdbc_url, table_names
from job.pipeline import AssembledJob
from job.properties import MSF_PROPERTIES_PATH
from job.reference import open_stores
from job.settings import postgres_settings, redis_settings
from job.sources import SourceError, resolve_file_path, simulation_spec
from state_machine.reference import ReferenceData
from stores.connections import PostgresSettings, RedisSettings, mask_url
from stores.postgres import TableNames, apply_migrations
from stores.reference import seed_reference
from web.server import LiveServer
from web.settings import ServeSettings
from workbench.bundle import BundleError, read_reference
from workbench.simulator import AssetTuple, build_layout

log = logging.getLogger("asset-cycle")


def run_locally(args: argparse.Namespace) -> int:
    """Run the job ``args`` describe on the local minicluster; returns the process exit code."""
    _setup_logging(args.verbose, on_msf=not args.local_properties and MSF_PROPERTIES_PATH.is_file())
    plan = make_plan(args)
    if plan.on_msf:  # MSF follows the job itself: build, submit, wait
        run_job(plan.settings, on_msf=True)
        return 0
    settings = plan.settings
    names = table_names(settings.sink)
    pg, rs = postgres_settings(settings), redis_settings(settings)
    if plan.mode == "demo":
        bring_up_local_services(pg, rs)
    print(describe_run(plan, names, pg, rs), flush=True)
    log.info("%s", describe_settings(plan, sink_jdbc_url(settings, pg)))
    prepare_stores(plan, pg, rs, names)
    live_view = start_live_view(plan, pg, rs, names, args.serve_port) if args.serve else None
    try:
        if on_cluster(args):
            if live_view is not None:
                print(f"Live view: {live_view.url}", flush=True)
            return run_on_cluster(args, plan, names, pg)
        plan = with_local_resources(plan)
        fl = plan.settings.flink
        if plan.resume:
            print(f"resuming from checkpoint {fl.from_savepoint}", flush=True)
        if fl.checkpoint_dir:
            prune_checkpoints(Path(fl.checkpoint_dir))
        os.environ.setdefault("FLINK_LOG_DIR", str(_run_log_dir(state_dir("logs"))))
        job = build_job(plan.settings)
        if job.info.web_ui:
            print(f"Flink Web UI: {job.info.web_ui}", flush=True)
        if job.info.metrics_url:
            print(f"Prometheus metrics: {job.info.metrics_url}", flush=True)
        if live_view is not None:
            print(f"Live view: {live_view.url}", flush=True)
        return _watch(job, plan, names, args)
    finally:
        if live_view is not None:
            live_view.stop()


def start_live_view(plan: Plan, pg: PostgresSettings, rs: RedisSettings, names: TableNames,
                    port: int | None) -> LiveServer:  # fmt: skip
    """``asset-cycle serve`` over this run's tables, on 127.0.0.1 (the requested port, else 8080 or any free
    one), serving on a thread until the run ends."""
    if port is None:
        port = DEFAULT_SERVE_PORT if port_free(DEFAULT_SERVE_PORT) else free_local_port()
    settings = ServeSettings(database=pg.connect_kwargs(), names=names, redis=rs,
                             redis_prefix=plan.settings.reference.redis_key_prefix, engine=plan.settings.engine,
                             port=port)  # fmt: skip
    server = LiveServer(settings)
    server.open()
    server.start()
    return server


def _setup_logging(verbose: bool, on_msf: bool) -> None:
    """Structured, masking logging (job.logging_setup): JSON at INFO on MSF; locally text on stderr,
    quiet (warnings only) unless --verbose. Third-party INFO chatter (Beam, py4j, ...) stays off."""
    if on_msf:
        setup_logging(level=os.environ.get(LEVEL_ENV) or "INFO")
    else:
        level = "INFO" if verbose else (os.environ.get(LEVEL_ENV) or "WARNING")
        setup_logging(level=level, fmt=os.environ.get(FORMAT_ENV) or "text")
    quiet_third_party_loggers()


def bring_up_local_services(pg: PostgresSettings, rs: RedisSettings, environ: Mapping[str, str] | None = None) -> None:
    """Demo runs: start the local PostgreSQL / Redis when none answers (never when the user set
    ASSET_CYCLE_PG_* / ASSET_CYCLE_REDIS_*: then their servers are used as they are)."""
    env = os.environ if environ is None else environ
    try:
        if not any(key.startswith("ASSET_CYCLE_PG_") for key in env):
            print(ensure_postgres(pg.host, pg.port, databases=(pg.dbname,)).describe(), flush=True)
        if not any(key.startswith("ASSET_CYCLE_REDIS_") for key in env):
            print(ensure_redis(rs.host, rs.port).describe(), flush=True)
    except ServiceError as exc:
        raise CliError(str(exc)) from exc


def describe_run(plan: Plan, names: TableNames, pg: PostgresSettings, rs: RedisSettings) -> str:
    """One line: where the records come from and which database, schema and Redis prefix they go to."""
    src = plan.settings.source
    if plan.source_kind == "simulator":
        speed = src.simulator_speed
        what = (f"simulated fleet ({src.simulator_trucks} trucks per site, "
                + (f"{speed:g}x real time" if speed else "as fast as possible") + ")")  # fmt: skip
    elif plan.source_kind == "file":
        what = f"file:{plan.file_path}" + (f" (watched every {plan.monitor_s:g} s)" if plan.monitor_s else "")
    else:
        what = f"kinesis {src.stream_arn}"
    prefix = plan.settings.reference.redis_key_prefix
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


def prepare_stores(plan: Plan, pg: PostgresSettings, rs: RedisSettings, names: TableNames) -> None:
    """Connect to both stores (a one-line error when one does not answer), then create the demo's tables
    and seed its reference data."""
    with open_stores(pg, rs) as (pg_conn, redis_client):
        if plan.init_db:
            applied = apply_migrations(pg_conn, names)
            log.info("database schema %s ready (%d migration(s) applied)", names.schema, len(applied))
        if plan.seed_from:
            reference, assets = reference_to_seed(plan)
            summary = seed_reference(pg_conn, redis_client, names, reference, assets,
                                     redis_key_prefix=plan.settings.reference.redis_key_prefix)  # fmt: skip
            log.info("seeded reference data: %s", summary)


def reference_to_seed(plan: Plan) -> tuple[ReferenceData, list[AssetTuple]]:
    """The simulated fleet's layout (the job simulates the same sites), or the bundle's reference data."""
    if plan.seed_from == "simulator":
        return build_layout(simulation_spec(plan.settings.source, int(time.time() * 1000)))
    try:
        return read_reference(bundle_dir(plan.file_path or ""))
    except (BundleError, SourceError, OSError) as exc:
        raise CliError(f"cannot read the bundle's reference data: {exc} (or pass --no-seed)") from exc


def bundle_dir(file_path: str | Path) -> Path:
    """Where a file source's reference data (regions.geojson, assets.csv) is: the bundle directory
    itself, or the parent of a telemetry file / of a monitored directory of telemetry files."""
    p = Path(file_path)
    if p.is_dir() and (p / "assets.csv").is_file():
        return p
    return resolve_file_path(p).parent


def _run_log_dir(root: Path, keep: int = 10) -> Path:
    """A fresh folder for this run's Flink (JVM) log under ``root``; older ones beyond ``keep`` go."""
    runs = sorted((p for p in root.glob("run-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in runs[: max(0, len(runs) - keep + 1)]:
        shutil.rmtree(old, ignore_errors=True)
    path = root / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    log.info("Flink's own log: %s", path)
    return path


def _watch(job: AssembledJob, plan: Plan, names: TableNames, args: argparse.Namespace) -> int:
    fl = plan.settings.flink

    def resume_hint() -> str | None:
        if not plan.bounded and plan.source_kind == "simulator":
            return None
        found = latest_checkpoint(fl.checkpoint_dir) if fl.checkpoint_dir else None
        return f"latest checkpoint: {found} (asset-cycle run --resume ... continues from it)" if found else None

    try:
        client = job.env.execute_async(JOB_NAME)
    except Exception as exc:  # noqa: BLE001 - e.g. a savepoint or checkpoint whose state cannot be read
        if fl.from_savepoint:
            raise CliError(f"the job could not start from {fl.from_savepoint}: {java_root_cause(exc)} (is it a "
                           "complete savepoint or checkpoint of this job?)") from None  # fmt: skip
        raise CliError(f"the job could not start: {java_root_cause(exc)}") from None
    console = JobConsole(LocalJob(client, fl.rest_port), StopPlan(fl.savepoint_dir, args.drain, args.stop_timeout_s),
                         bounded=plan.bounded, source=job.source.label,
                         dead_letter_table=f"{names.schema}.{names.table_name('dead_letter')}",
                         progress_s=args.progress_s if args.progress_s > 0 else float("inf"),
                         resume_hint=resume_hint, flink_log=os.environ.get("FLINK_LOG_DIR"))  # fmt: skip
    console.install_signal_handlers()
    return console.watch(args.duration_s)
