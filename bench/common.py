"""Shared pieces of the benchmarks: bundles, a throwaway PostgreSQL schema with timing triggers, and
a Flink run of the real pipeline on a bundle (the same wiring as tests/job/flink_harness.py, plus
the knobs the benchmarks vary).

Timing triggers (bench schemas only): ``updated_at`` of the tmp / final / process-info tables is set
to ``clock_timestamp()`` on every INSERT *and* UPDATE (the JDBC connector's upsert does not touch
it), so ``max(updated_at)`` is the wall time of the last committed row. With ``log_rows`` every
tmp / process-info write is also appended to ``bench_row_log`` (for latency percentiles).
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stores.postgres import TableNames, apply_migrations
from workbench.simulator import SimulationSpec, write_simulation

PG_DSN = os.environ.get("ASSET_CYCLE_BENCH_PG_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres")
BENCH_DIR = Path(__file__).resolve().parents[1] / "build" / "bench"
SOURCE_LABEL = "file:bench"
TIMED_KINDS = ("cycle_tmp", "cycle", "process_info")
LOGGED_KINDS = ("cycle_tmp", "process_info")


def bundle_dir(trucks: int, hours: float, sites: int = 1, seed: int = 1) -> Path:
    """Where ``ensure_bundle`` keeps a degraded simulated site (same naming as engine_throughput)."""
    return BENCH_DIR / f"site_{trucks}t_{hours:g}h_{sites}s_seed{seed}"


def ensure_bundle(trucks: int, hours: float, sites: int = 1, seed: int = 1) -> Path:
    """A degraded simulated bundle, generated on first use and cached under build/bench/."""
    out = bundle_dir(trucks, hours, sites, seed)
    legacy = BENCH_DIR / f"site_{trucks}t_{hours:g}h_1s_seed{seed}" if sites == 1 else out
    if (legacy / "truth_cycles.csv").is_file():
        return legacy
    if not (out / "truth_cycles.csv").is_file():
        started = time.perf_counter()
        stats = write_simulation(SimulationSpec(trucks=trucks, hours=hours, sites=sites, seed=seed).degraded(), out)
        print(f"generated {out}: {stats.lines:,} lines in {time.perf_counter() - started:.1f} s", flush=True)
    return out


def count_lines(path: Path) -> int:
    """Lines of a file."""
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


# --------------------------------------------------------------------------- PostgreSQL

_TOUCH_FN = """
CREATE OR REPLACE FUNCTION {s}.bench_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END $$;
"""
_LOG_FN = """
CREATE TABLE IF NOT EXISTS {s}.bench_row_log (kind text, asset_guid text, last_event_utc timestamptz,
                                              at timestamptz);
CREATE OR REPLACE FUNCTION {s}.bench_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO {s}.bench_row_log VALUES (TG_ARGV[0], NEW.asset_guid, NEW.last_event_utc, clock_timestamp());
RETURN NULL; END $$;
"""


@contextmanager
def bench_schema(dsn: str = PG_DSN, log_rows: bool = False) -> Iterator[TableNames]:
    """A new schema with the job's tables and the timing triggers; dropped (CASCADE) afterwards."""
    import psycopg2

    names = TableNames(schema=f"bench_{uuid.uuid4().hex[:12]}")
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE SCHEMA {names.schema}")
        conn.commit()
        apply_migrations(conn, names)
        with conn.cursor() as cur:
            cur.execute(_TOUCH_FN.format(s=names.schema))
            for kind in TIMED_KINDS:
                cur.execute(f"CREATE TRIGGER bench_touch BEFORE INSERT OR UPDATE ON {names.qualified(kind)} "
                            f"FOR EACH ROW EXECUTE FUNCTION {names.schema}.bench_touch()")  # fmt: skip
            if log_rows:
                cur.execute(_LOG_FN.format(s=names.schema))
                for kind in LOGGED_KINDS:
                    cur.execute(f"CREATE TRIGGER bench_log AFTER INSERT OR UPDATE ON {names.qualified(kind)} "
                                f"FOR EACH ROW EXECUTE FUNCTION {names.schema}.bench_log('{kind}')")  # fmt: skip
        conn.commit()
        yield names
    finally:
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {names.schema} CASCADE")
        conn.commit()
        conn.close()


def commit_window(dsn: str, names: TableNames) -> tuple[float | None, float | None, dict[str, int]]:
    """(first, last) commit wall time (epoch s) over the timed tables, and row counts per kind."""
    import psycopg2

    conn = psycopg2.connect(dsn)
    first: float | None = None
    last: float | None = None
    counts: dict[str, int] = {}
    try:
        with conn.cursor() as cur:
            for kind in (*TIMED_KINDS, "dead_letter"):
                if kind == "dead_letter":
                    cur.execute(f"SELECT count(*) FROM {names.qualified(kind)}")
                    counts[kind] = cur.fetchone()[0]
                    continue
                cur.execute(f"SELECT count(*), extract(epoch FROM min(updated_at)), extract(epoch FROM max(updated_at)) "
                            f"FROM {names.qualified(kind)}")  # fmt: skip
                n, lo, hi = cur.fetchone()
                counts[kind] = n
                if lo is not None:
                    first = float(lo) if first is None else min(first, float(lo))
                    last = float(hi) if last is None else max(last, float(hi))
        conn.rollback()
    finally:
        conn.close()
    return first, last, counts


# --------------------------------------------------------------------------- CPU accounting


class ThreadCpu:
    """Samples the CPU time of the gateway JVM's threads (``/proc``) while a job runs.

    Wall-clock throughput on a shared 2-core machine depends on what else runs; CPU seconds per
    record of the job's threads do much less, so both are reported."""

    def __init__(self, interval_s: float = 0.5) -> None:
        import threading

        self.interval_s = interval_s
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.cpu: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.pid = self._java_pid()

    @staticmethod
    def _java_pid() -> int | None:
        me = str(os.getpid())
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().split()
            except OSError:
                continue
            if fields[3] == me and fields[1] == "(java)":
                return int(fields[0])
        return None

    def _sample(self) -> None:
        if self.pid is None:
            return
        for task in Path(f"/proc/{self.pid}/task").glob("*"):
            try:
                name = (task / "comm").read_text().strip()
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            self.cpu[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / self.ticks)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> ThreadCpu:
        self._sample()
        self.before = dict(self.cpu)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def seconds(self, prefix: str = "") -> float:
        """CPU seconds used during the run by threads whose name starts with ``prefix``."""
        return sum(cpu - self.before.get(tid, (name, 0.0))[1]
                   for tid, (name, cpu) in self.cpu.items() if name.startswith(prefix))  # fmt: skip


# --------------------------------------------------------------------------- Flink run


@dataclass
class FlinkRun:
    """One end-to-end run: wall times (epoch s) and what landed in the tables."""

    records: int
    submitted: float
    finished: float
    first_commit: float | None
    last_commit: float | None
    counts: dict[str, int] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    cpu_total_s: float = float("nan")
    cpu_engine_s: float = float("nan")
    """CPU seconds of the whole JVM and of the cycle-engine task thread during env.execute()."""

    @property
    def engine_cpu_us_per_record(self) -> float:
        """CPU microseconds of the cycle-engine thread per input record."""
        return self.cpu_engine_s / self.records * 1e6

    @property
    def wall_s(self) -> float:
        """env.execute() wall time, start-up included."""
        return self.finished - self.submitted

    @property
    def window_s(self) -> float:
        """First committed row -> last committed row (the throughput window)."""
        if self.first_commit is None or self.last_commit is None:
            return float("nan")
        return self.last_commit - self.first_commit

    @property
    def events_per_s(self) -> float:
        """Input records / commit window."""
        return self.records / self.window_s if self.window_s > 0 else float("nan")

    @property
    def wall_events_per_s(self) -> float:
        """Input records / wall time incl. start-up."""
        return self.records / self.wall_s


def build_job(
    bundle: Path,
    names: TableNames,
    dsn: str = PG_DSN,
    raw_factory: Any = None,
    parallelism: int = 1,
    execution_mode: str = "thread",
    batch_size: int = 2000,
    batch_interval_ms: int = 200,
    checkpoint_interval_ms: int | None = None,
    rest_port: int | None = None,
    extra_conf: dict[str, str] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The real pipeline (load-once reference from ``bundle``) into ``names``; ``raw_factory(env, t_env)``
    returns the raw stream (default: the bundle's telemetry as a bounded file source). -> (env, options)."""
    from psycopg2.extensions import parse_dsn

    from job.pipeline import assemble, bounded_reference_stream
    from job.settings import AppSettings, FlinkSettings, SinkSettings
    from job.sinks import JdbcTarget, SinkSet
    from job.sources import RawSource, file_source
    from state_machine.config import EngineConfig
    from udfs.reference_poller import snapshot_records
    from workbench.bundle import read_reference

    reference, _ = read_reference(bundle)
    params = parse_dsn(dsn)
    url = f"jdbc:postgresql://{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}/{params.get('dbname')}"
    settings = AppSettings(
        sink=SinkSettings(jdbc_url=url, batch_size=batch_size),
        engine=EngineConfig(),
        flink=FlinkSettings(parallelism=parallelism, checkpoint_interval_ms=checkpoint_interval_ms,
                            python_execution_mode=execution_mode, source_idleness_ms=None, rest_port=rest_port,
                            checkpoint_dir=str(BENCH_DIR / "checkpoints") if checkpoint_interval_ms else None),
    )  # fmt: skip
    target = JdbcTarget(url, params.get("user", "postgres"), params.get("password"), batch_size=batch_size,
                        batch_interval_ms=batch_interval_ms)  # fmt: skip

    def source(env: Any, t_env: Any) -> Any:
        if raw_factory is None:
            return file_source(env, bundle, label=SOURCE_LABEL)
        return RawSource(raw_factory(env, t_env), "simulator", bounded=False)

    env = assemble(settings, lambda env: SinkSet(env, names, target), source,
                   lambda env, t_env: bounded_reference_stream(env, snapshot_records(reference)),
                   extra_conf=extra_conf, check_future=False).env  # fmt: skip
    options = {"parallelism": parallelism, "mode": execution_mode, "batch_size": batch_size,
               "batch_interval_ms": batch_interval_ms, "checkpoint_ms": checkpoint_interval_ms, **(extra_conf or {})}
    return env, options


def run_flink_bundle(bundle: Path, names: TableNames, dsn: str = PG_DSN, **kwargs: Any) -> FlinkRun:
    """Run the pipeline on ``bundle`` (bounded) to the end; see build_job for the options."""
    from job.sources import resolve_file_path

    env, options = build_job(bundle, names, dsn, **kwargs)
    records = count_lines(resolve_file_path(bundle))
    with ThreadCpu() as cpu:
        submitted = time.time()
        env.execute("asset-cycle-bench")
        finished = time.time()
    first, last, counts = commit_window(dsn, names)
    return FlinkRun(records, submitted, finished, first, last, counts, options, cpu.seconds(), cpu.seconds("cycle-engine"))


def median_spread(values: list[float]) -> str:
    """``median (min-max, n=N)``."""
    if not values:
        return "n/a"
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f}, n={len(values)})"
