"""``asset-cycle run``'s options resolved into the job's AppSettings: the local run plan.

The base is an application properties file (``--local-properties FILE`` or ``ASSET_CYCLE_LOCAL=1``:
the production shape, a Kinesis source unless SourceConfig ``source.kind`` says otherwise) or the
demo's defaults (no properties: the fleet simulator, schema ``demo``, Redis prefix ``demo:``,
PostgreSQL/Redis from ASSET_CYCLE_PG_* / ASSET_CYCLE_REDIS_*). Small resolvers then apply the
command line: the source, the reference data, the schema, checkpoints and Flink options, the engine
thresholds, and what to seed. ``make_plan`` has no side effects; ``with_local_resources`` then picks
the ports and the checkpoint to resume from on this machine.

Everything the job needs ends up in ``Plan.settings``, the AppSettings that job.main.build_job
builds the job from (an application properties file of the same content drives ``python -m job.main``
the same way); the rest of the plan (seeding, creating the tables, resuming) is for the local run.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, replace
from pathlib import Path

from cli.checkpoints import default_checkpoint_dir, latest_checkpoint
from cli.errors import CliError
from cli.local_services import free_local_port, port_free
from job.properties import MSF_PROPERTIES_PATH, load_settings, properties_path
from job.settings import (
    AppSettings,
    FlinkSettings,
    ReferenceSettings,
    SinkSettings,
    SourceSettings,
    load_engine_config,
)
from state_machine.config import EngineConfig

DEFAULT_REST_PORT = 8081
DEFAULT_METRICS_PORT = 9249
DEFAULT_SERVE_PORT = 8080
_SIMULATOR = SourceSettings(kind="simulator")
DEMO_TRUCKS = _SIMULATOR.simulator_trucks
DEMO_SPEED = _SIMULATOR.simulator_speed
DEMO_SEED = _SIMULATOR.simulator_seed
DEMO_SCHEMA = "demo"
DEMO_REDIS_PREFIX = "demo:"
LOCAL_CHECKPOINT_INTERVAL_MS = 10_000
LOCAL_THREAD_MODE_PARALLELISM = 1
"""Local runs in thread mode: the Python operators of all subtasks run in one interpreter (one GIL),
so a second subtask only adds contention (measured in bench/README.md)."""
SOURCE_KINDS = ("simulator", "file", "kinesis")


@dataclass
class Plan:
    """Everything decided before the job graph is built: the job's settings and the local run's extras."""

    settings: AppSettings
    mode: str  # "properties" | "demo"
    on_msf: bool
    seed_from: str | None = None  # "simulator" | "bundle" | None
    init_db: bool = False
    resume: bool = False

    @property
    def source_kind(self) -> str:
        """simulator | file | kinesis."""
        return self.settings.source.kind

    @property
    def file_path(self) -> str | None:
        """A file source's bundle directory, .jsonl file or watched directory."""
        return self.settings.source.file_path

    @property
    def monitor_s(self) -> float | None:
        """A file source's directory watch interval (None: the file is read once)."""
        return self.settings.source.monitor_interval_s

    @property
    def bounded(self) -> bool:
        """Whether the input ends (a file or bundle without --monitor-s)."""
        return self.source_kind == "file" and self.monitor_s is None


def _use_properties(args: argparse.Namespace) -> bool:
    if args.local_properties:
        return True
    if os.environ.get("ASSET_CYCLE_LOCAL", "").strip().lower() in ("1", "true", "yes"):
        return True
    return MSF_PROPERTIES_PATH.is_file()


def demo_settings() -> AppSettings:
    """The demo's base: the simulated fleet, PostgreSQL and Redis from the environment, reference data
    polled every 10 s, checkpoints every 10 s, the Web UI and Prometheus on their usual ports."""
    return AppSettings(
        source=_SIMULATOR,
        sink=SinkSettings(jdbc_url=""),
        reference=ReferenceSettings(poll_interval_s=10.0),
        flink=FlinkSettings(checkpoint_interval_ms=LOCAL_CHECKPOINT_INTERVAL_MS, rest_port=DEFAULT_REST_PORT,
                            source_idleness_ms=None, metrics_port=DEFAULT_METRICS_PORT),
    )  # fmt: skip


def _base(args: argparse.Namespace) -> tuple[AppSettings, str, bool]:
    """(settings, mode, on_msf): the properties file's settings, or the demo's."""
    if not _use_properties(args):
        return demo_settings(), "demo", False
    path = properties_path(args.local_properties)
    on_msf = path == MSF_PROPERTIES_PATH and not args.local_properties
    return load_settings(args.local_properties), "properties", on_msf


def _source_kind(args: argparse.Namespace, base: SourceSettings) -> tuple[str, str | None]:
    """(kind, file path) from --source, else the base settings'."""
    if not args.source:
        return base.kind, base.file_path
    kind, _, file_path = args.source.partition(":")
    if kind not in SOURCE_KINDS:
        raise CliError(f"--source must be simulator, file:PATH or kinesis, got {args.source!r}")
    if kind == "file" and not file_path:
        raise CliError("--source file:PATH needs a path (bundle directory or .jsonl file)")
    return kind, file_path or None


def _check_restore(args: argparse.Namespace, kind: str, on_msf: bool) -> None:
    if args.resume and kind == "simulator":
        raise CliError("--resume needs a source that can be read again from a position (file: or kinesis); "
                       "the simulator starts a new simulation on every run")  # fmt: skip
    if args.resume and args.from_savepoint:
        raise CliError("give either --resume (the latest checkpoint) or --from-savepoint PATH, not both")
    if on_msf and args.resume:
        raise CliError("--resume is for local runs; on MSF the service restores from its snapshots")


def _or(value: object, default: object) -> object:
    return default if value is None else value


def _source(args: argparse.Namespace, base: SourceSettings, kind: str, file_path: str | None) -> SourceSettings:
    """The source settings: Kinesis options, or the file / simulator ones, with the command line's on top."""
    if kind == "kinesis":
        src = replace(base, kind="kinesis", stream_arn=args.stream_arn or base.stream_arn,
                      aws_region=args.aws_region or base.aws_region, aws_endpoint=args.aws_endpoint or base.aws_endpoint,
                      init_position=args.init_position or base.init_position)  # fmt: skip
        if not src.stream_arn:
            raise CliError("--source kinesis needs a stream ARN (--stream-arn or SourceConfig.stream.arn)")
        return src
    monitor_s = _or(args.monitor_s, base.monitor_interval_s if kind == base.kind == "file" else None)
    if monitor_s is not None and (kind != "file" or monitor_s <= 0):
        raise CliError("--monitor-s needs --source file:DIR and a positive interval")
    return replace(base, kind=kind, file_path=file_path, monitor_interval_s=monitor_s,
                   simulator_trucks=_or(args.trucks, base.simulator_trucks),
                   simulator_sites=_or(args.sites, base.simulator_sites),
                   simulator_speed=_or(args.speed, base.simulator_speed),
                   simulator_seed=_or(args.seed, base.simulator_seed),
                   simulator_degraded=args.degraded or base.simulator_degraded)  # fmt: skip


def _reference(args: argparse.Namespace, ref: ReferenceSettings, mode: str, src: SourceSettings) -> ReferenceSettings:
    """Polling (a demo's file replay loads reference data once), the hold for the demo fleet's
    backfilled past, and the Redis key prefix (the demo fleet's: ``demo:``)."""
    demo_fleet = mode == "demo" and src.kind == "simulator"
    poll = args.reference_poll_s
    if poll is None and mode == "demo" and src.kind == "file":
        poll = 0.0
    if poll is not None:
        ref = replace(ref, poll_interval_s=poll)
    if demo_fleet:  # the backfilled past arrives within seconds, maybe before the first reference poll
        ref = replace(ref, wait_max_s=max(ref.wait_max_s, 2 * src.simulator_backfill_s))
    prefix = args.redis_prefix if args.redis_prefix is not None else (DEMO_REDIS_PREFIX if demo_fleet else None)
    return ref if prefix is None else replace(ref, redis_key_prefix=prefix)


def _sink(args: argparse.Namespace, sink: SinkSettings, demo_fleet: bool) -> SinkSettings:
    """The schema: --schema, else the demo fleet's ``demo`` (unless the properties name one)."""
    schema = args.schema or (DEMO_SCHEMA if demo_fleet and not sink.schema else None)
    return replace(sink, schema=schema) if schema else sink


def _flink(args: argparse.Namespace, fl: FlinkSettings, on_msf: bool, schema: str) -> FlinkSettings:
    """Checkpoints (local runs: on disk in .checkpoints/<schema>, every 10 s), parallelism (1 in thread
    mode locally), savepoints, ports and the other Flink options of the command line."""
    checkpoint_dir = args.checkpoint_dir or fl.checkpoint_dir
    interval = _or(args.checkpoint_interval, fl.checkpoint_interval_ms)
    if not on_msf:
        checkpoint_dir = checkpoint_dir or str(default_checkpoint_dir(schema))
        interval = _or(interval, LOCAL_CHECKPOINT_INTERVAL_MS)
    parallelism = _or(args.parallelism, fl.parallelism)
    python_mode = "process" if args.process_mode else fl.python_execution_mode
    if parallelism is None and not on_msf and python_mode == "thread" and not on_cluster(args):
        parallelism = LOCAL_THREAD_MODE_PARALLELISM
    return replace(
        fl, parallelism=parallelism, checkpoint_interval_ms=interval, checkpoint_dir=checkpoint_dir,
        savepoint_dir=args.savepoint_dir or fl.savepoint_dir, from_savepoint=args.from_savepoint or fl.from_savepoint,
        python_execution_mode=python_mode, state_backend=args.state_backend or fl.state_backend,
        rest_port=_or(args.rest_port, fl.rest_port), metrics_port=_or(args.metrics_port, fl.metrics_port),
        metrics_host=args.metrics_host or fl.metrics_host, jar_dir=args.jar_dir or fl.jar_dir,
    )  # fmt: skip


def on_cluster(args: argparse.Namespace) -> bool:
    """Whether the job goes to a Flink cluster (--cluster, --jobmanager) instead of the minicluster."""
    return bool(getattr(args, "cluster", False) or getattr(args, "jobmanager", None))


def _engine(path: str | None, base: EngineConfig) -> EngineConfig:
    """--config's thresholds, else the base settings'."""
    return load_engine_config(path) if path else base


def _seed_from(args: argparse.Namespace, mode: str, kind: str) -> str | None:
    """The demo seeds the simulated fleet's or the bundle's reference data (not with --no-seed)."""
    if mode != "demo" or args.no_seed:
        return None
    return {"simulator": "simulator", "file": "bundle"}.get(kind)


def make_plan(args: argparse.Namespace) -> Plan:
    """Settings from properties or demo defaults, with the command line's options on top."""
    settings, mode, on_msf = _base(args)
    kind, file_path = _source_kind(args, settings.source)
    _check_restore(args, kind, on_msf)
    src = _source(args, settings.source, kind, file_path)
    sink = _sink(args, settings.sink, demo_fleet=mode == "demo" and kind == "simulator")
    settings = replace(settings, source=src, reference=_reference(args, settings.reference, mode, src), sink=sink,
                       flink=_flink(args, settings.flink, on_msf, sink.schema or "dx"),
                       engine=_engine(args.config, settings.engine))  # fmt: skip
    return Plan(settings, mode, on_msf, _seed_from(args, mode, kind), init_db=mode == "demo", resume=args.resume)


# --------------------------------------------------------------------------- this machine


def _local_port(requested: int | None, default: int | None, what: str, option: str) -> int | None:
    """An explicitly requested port must be free; a default one falls back to any free port."""
    if requested is not None:
        if requested and not port_free(requested):
            raise CliError(f"{what} port {requested} is in use (another asset-cycle run?): pass another {option}")
        return requested
    if default is None:
        return None
    return default if port_free(default) else free_local_port()


def _ports(fl: FlinkSettings, demo: bool) -> FlinkSettings:
    """The Web UI and metrics ports: the demo's usual ones when free (else any free one), a requested
    one only when free; a run from properties without a Web UI port gets a free one."""
    rest_requested = None if fl.rest_port == DEFAULT_REST_PORT and demo else fl.rest_port
    rest_port = _local_port(rest_requested, DEFAULT_REST_PORT if demo else free_local_port(), "Web UI", "--rest-port")
    metrics_requested = None if fl.metrics_port == DEFAULT_METRICS_PORT and demo else fl.metrics_port
    metrics_default = DEFAULT_METRICS_PORT if demo and fl.metrics_port is not None else None
    metrics_port = _local_port(metrics_requested, metrics_default, "metrics", "--metrics-port")
    return replace(fl, rest_port=rest_port, metrics_port=metrics_port)


def _restore_point(fl: FlinkSettings, resume: bool) -> FlinkSettings:
    """With --resume: the latest checkpoint retained in the checkpoint directory."""
    if not resume or not fl.checkpoint_dir:
        return fl
    root = Path(fl.checkpoint_dir)
    found = latest_checkpoint(root)
    if found is None:
        raise CliError(f"--resume: no completed checkpoint in {root} (a run that ended normally, or that "
                       "was stopped with a savepoint, leaves none; --checkpoint-dir points elsewhere)")  # fmt: skip
    return replace(fl, from_savepoint=str(found))


def with_local_resources(plan: Plan) -> Plan:
    """The plan with this machine's ports and, for --resume, the checkpoint to restore from."""
    fl = _restore_point(_ports(plan.settings.flink, plan.mode == "demo"), plan.resume)
    return replace(plan, settings=replace(plan.settings, flink=fl))


def for_cluster(plan: Plan, slots: int) -> Plan:
    """The plan for a session cluster of ``slots`` slots: no ports of its own (the cluster has its Web
    UI and no local metrics reporter), parallelism all the slots unless given, and for --resume the
    checkpoint to restore from. CliError when the parallelism needs more slots than there are."""
    fl = _restore_point(plan.settings.flink, plan.resume)
    parallelism = fl.parallelism or max(1, slots)
    if parallelism > slots:
        raise CliError(f"parallelism {parallelism} needs {parallelism} task slots and the cluster has {slots} "
                       "(asset-cycle cluster up --taskmanagers N --slots S)")  # fmt: skip
    fl = replace(fl, rest_port=None, metrics_port=None, parallelism=parallelism)
    return replace(plan, settings=replace(plan.settings, flink=fl))
