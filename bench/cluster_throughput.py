"""The job on a session cluster of separate processes: 1 TaskManager against 2 (one slot each, thread
mode, parallelism = TaskManagers), on the same bundle, into PostgreSQL, and where a record's CPU goes.

Usage: python bench/cluster_throughput.py [--trucks 200] [--hours 24] [--bundle DIR] [--taskmanagers 1,2]
[--repeat 1] [--taskmanager-jvm-options OPTS]

For each cluster size a fresh cluster (cli.flink_cluster, a directory and free ports of its own; the
TaskManagers' JVMs with ``--taskmanager-jvm-options``, by default the cluster's own) runs the job
submitted through its entry point as ``asset-cycle run --cluster`` does (``flink run -d -pym
job.main``): the bundle as a bounded file source, its reference data loaded once from PostgreSQL and
Redis (seeded into a throwaway schema and key prefix, both removed afterwards), checkpoints every 10 s
on disk, into the PostgreSQL upsert sinks. Printed per size:

* events/s end to end: input lines / (``flink run`` started -> the job's end time in the REST API);
* events/s after start-up: input lines / (first -> last committed row; timing triggers of
  bench/common.py);
* CPU s per 1,000 records: CPU of the JobManager, the TaskManagers (their process groups) and every
  PostgreSQL process (those running plus those that exited, through the postmaster's children
  times), from /proc, over the run; the ``flink run`` client's CPU is printed apart;
* where the TaskManagers' CPU goes, per thread (/proc/<pid>/task/*, sampled every 0.2 s): the task
  threads whose chain holds a Python operator (with the Java operators chained to it: the file
  source's task is ``Source: file-by-truck -> batch -> parse+validate -> watermarks``, one per
  subtask), the Java-only tasks (the dead-letter sink), the source readers' fetcher threads (none for
  a file: its readers read in their task), the JDBC writers' flush threads, the JIT compilers, the
  garbage collector, the rest;
  threads that ended between two samples are counted as such;
* the speed-up of each size over the first.

With ``--repeat N`` the sizes run N times, interleaved (1, 2, 1, 2, ...: a drift of the machine
weighs on both), and the medians are printed at the end: two runs of the same size differ by up to
about 10 % here, so one run each does not tell a 10 % difference.

Then the pure engine (``workbench.replay.Replayer`` over the same lines in this process, as the job runs
a bounded input: no live rows), whose CPU per record is the Python engine's share; the task threads'
CPU per record minus it is the crossing between Java and Python and the Java operators chained with
the Python ones.

Every figure counts everything running on the machine's PostgreSQL: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import PG_DSN, bench_schema, commit_window, count_lines, ensure_bundle  # noqa: E402
from cli.console import ClusterJob, rest_json  # noqa: E402
from cli.flink_cluster import TASKMANAGER_JVM_OPTIONS, FlinkCluster  # noqa: E402
from cli.local_services import free_local_port  # noqa: E402
from job.properties import property_groups, write_properties  # noqa: E402
from job.settings import AppSettings, FlinkSettings, ReferenceSettings, SinkSettings, SourceSettings  # noqa: E402
from stores.postgres import TableNames  # noqa: E402

REDIS_URL = os.environ.get("ASSET_CYCLE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CHECKPOINT_INTERVAL_MS = 10_000
"""As ``asset-cycle run`` (cli.run_plan.LOCAL_CHECKPOINT_INTERVAL_MS)."""
SAMPLE_S = 0.2
JOB_TIMEOUT_S = 3600.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

PYTHON_OPERATORS = ("parse+validate", "cycle-engine", "loader-engine")
"""Names of the job's Python operators (job.pipeline): a task whose chain holds one is a Python task."""
PYTHON_TASKS = "Python operator tasks"
THREAD_KINDS = (
    ("source readers", ("Source Data Fet",)),
    ("JDBC flush", ("jdbc",)),
    ("JIT compiler", ("C1 CompilerThre", "C2 CompilerThre")),
    ("garbage collector", ("GC Thread", "G1 ", "VM Periodic", "VM Thread")),
)
"""Other threads by the start of their name; the rest is "other JVM threads" (network, RPC, heartbeats,
metrics, checkpoints)."""


def _stat(path: Path) -> list[str] | None:
    """The fields of a /proc stat file after the command name (index 0 is the state), None when gone."""
    try:
        return path.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _cpu_s(fields: list[str], children: bool = False) -> float:
    """utime + stime (and, with ``children``, the reaped children's) in seconds."""
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return ticks / CLOCK_TICKS


def _processes() -> Iterator[tuple[int, str, list[str]]]:
    """(pid, comm, stat fields) of every process."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            comm = (stat.parent / "comm").read_text().strip()
        except OSError:
            continue
        fields = _stat(stat)
        if fields is not None:
            yield int(stat.parent.name), comm, fields


def group_cpu_s(leaders: list[int]) -> float:
    """CPU of every process in the process groups led by ``leaders`` (each cluster process leads its
    own), with their reaped children."""
    return sum(_cpu_s(f, children=True) for _, _, f in _processes() if int(f[2]) in leaders)


def postgres_cpu_s() -> float:
    """CPU of every PostgreSQL process: those running, plus (through each postmaster's children times)
    the backends that have exited."""
    procs = {pid: (comm, f) for pid, comm, f in _processes() if comm == "postgres"}
    postmasters = {pid for pid, (_, f) in procs.items() if int(f[1]) not in procs}
    return sum(_cpu_s(f, children=pid in postmasters) for pid, (_, f) in procs.items())


class ThreadSampler:
    """CPU of each thread of some processes, sampled every SAMPLE_S while a run lasts (a thread's last
    sample is kept after it ends)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.first: dict[tuple[int, int], float] = {}
        self.last: dict[tuple[int, int], tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, initial: bool = False) -> None:
        for pid in self.pids:
            for task in Path(f"/proc/{pid}/task").glob("*"):
                fields = _stat(task / "stat")
                try:
                    name = (task / "comm").read_text().strip()
                except OSError:
                    continue
                if fields is None:
                    continue
                key, cpu = (pid, int(task.name)), _cpu_s(fields)
                self.first.setdefault(key, cpu if initial else 0.0)
                self.last[key] = (name, cpu)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._sample()

    def __enter__(self) -> ThreadSampler:
        self._sample(initial=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def by_thread(self) -> dict[str, float]:
        """CPU seconds during the run per thread name (summed over processes and same-named threads)."""
        out: dict[str, float] = {}
        for key, (name, cpu) in self.last.items():
            out[name] = out.get(name, 0.0) + cpu - self.first[key]
        return out


def cpu_now(jobmanager: int, taskmanagers: list[int]) -> dict[str, float]:
    """CPU seconds so far of the JobManager, the TaskManagers, PostgreSQL, and this process's reaped
    children (the ``flink run`` clients)."""
    times = os.times()
    return {"JobManager": group_cpu_s([jobmanager]), "TaskManagers": group_cpu_s(taskmanagers),
            "PostgreSQL": postgres_cpu_s(), "client": times.children_user + times.children_system}  # fmt: skip


def thread_kind(name: str, tasks: list[str]) -> str:
    """What a thread (its name as /proc shows it: the first 15 characters) runs. A task thread is named
    after its task, a chain of operators (``tasks``, the job's vertex names): a Python task when the
    chain holds a Python operator, else a Java task (a source, a sink); other threads by THREAD_KINDS."""
    chains = [task for task in tasks if task.startswith(name)] if len(name) >= 15 else []
    if chains:
        return PYTHON_TASKS if any(op in chains[0] for op in PYTHON_OPERATORS) else "Java-only tasks (source, sinks)"
    for kind, prefixes in THREAD_KINDS:
        if name.startswith(prefixes):
            return kind
    return "other JVM threads"


@dataclass
class ClusterRun:
    """One run of the job on a cluster of ``taskmanagers`` TaskManagers."""

    taskmanagers: int
    records: int
    wall_s: float
    """``flink run`` started -> the job's end time."""
    submit_s: float
    """``flink run`` started -> the job's start time (client start-up and graph)."""
    window_s: float
    """First -> last committed row."""
    cpu_s: dict[str, float] = field(default_factory=dict)
    """CPU seconds of the JobManager, the TaskManagers, PostgreSQL and the client."""
    threads: dict[str, float] = field(default_factory=dict)
    """The TaskManagers' CPU seconds per thread name."""
    tasks: list[str] = field(default_factory=list)
    """The job's tasks (vertex names: chains of operators)."""

    def kind_cpu_s(self) -> dict[str, float]:
        """The TaskManagers' CPU seconds per thread_kind, and of the threads that ended between samples."""
        kinds: dict[str, float] = {}
        for name, seconds in self.threads.items():
            kind = thread_kind(name, self.tasks)
            kinds[kind] = kinds.get(kind, 0.0) + seconds
        kinds["threads that ended between samples"] = self.cpu_s["TaskManagers"] - sum(self.threads.values())
        return kinds

    def per_k(self, seconds: float) -> float:
        """CPU seconds per 1,000 records."""
        return seconds / self.records * 1000

    @property
    def server_cpu_s(self) -> float:
        return self.cpu_s["JobManager"] + self.cpu_s["TaskManagers"] + self.cpu_s["PostgreSQL"]


def settings_for(bundle: Path, names: TableNames, redis_prefix: str, parallelism: int, tmp: Path) -> AppSettings:
    """The bench job: the bundle as a bounded file source into ``names``, reference data loaded once."""
    from urllib.parse import urlparse

    from psycopg2.extensions import parse_dsn

    pg, redis = parse_dsn(PG_DSN), urlparse(REDIS_URL)
    url = f"jdbc:postgresql://{pg.get('host', '127.0.0.1')}:{pg.get('port', 5432)}/{pg.get('dbname')}"
    return AppSettings(
        source=SourceSettings(kind="file", file_path=str(bundle)),
        sink=SinkSettings(jdbc_url=url, schema=names.schema),
        reference=ReferenceSettings(redis_host=redis.hostname or "127.0.0.1", redis_port=redis.port or 6379,
                                    redis_db=int(redis.path.strip("/") or 0), redis_key_prefix=redis_prefix,
                                    poll_interval_s=0.0),
        flink=FlinkSettings(parallelism=parallelism, python_execution_mode="thread",
                            checkpoint_interval_ms=CHECKPOINT_INTERVAL_MS, checkpoint_dir=str(tmp / "checkpoints")),
    )  # fmt: skip


@contextmanager
def seeded_schema(bundle: Path) -> Iterator[tuple[TableNames, str]]:
    """A bench schema (bench.common.bench_schema) and a Redis key prefix holding the bundle's reference
    data, both removed afterwards."""
    import psycopg2
    import redis

    from stores.reference import seed_reference
    from workbench.bundle import read_reference

    reference, assets = read_reference(bundle)
    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"bench_{uuid.uuid4().hex[:12]}:"
    with bench_schema() as names:
        conn = psycopg2.connect(PG_DSN)
        try:
            seed_reference(conn, client, names, reference, assets, redis_key_prefix=prefix)
        finally:
            conn.close()
        try:
            yield names, prefix
        finally:
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)
            client.close()


def run_on_cluster(bundle: Path, records: int, taskmanagers: int, tmp: Path,
                   taskmanager_jvm_options: str = TASKMANAGER_JVM_OPTIONS) -> ClusterRun:  # fmt: skip
    """Start a cluster of ``taskmanagers`` TaskManagers (their JVMs with ``taskmanager_jvm_options``), run
    the job at that parallelism, stop it."""
    from psycopg2.extensions import parse_dsn

    cluster = FlinkCluster(tmp / f"cluster-{taskmanagers}")
    state = cluster.start(taskmanagers, slots=1, rest_port=free_local_port(), tied=True,
                          conf={"env.java.opts.taskmanager": taskmanager_jvm_options})
    try:
        with seeded_schema(bundle) as (names, prefix):
            settings = settings_for(bundle, names, prefix, taskmanagers, tmp / f"run-{taskmanagers}")
            properties = write_properties(property_groups(settings), tmp / f"run-{taskmanagers}.json")
            cpu0 = cpu_now(state.jobmanager, state.taskmanagers)
            with ThreadSampler(state.taskmanagers) as sampler:
                started = time.time()
                job = ClusterJob(cluster.rest_url, cluster.submit_job(
                    properties, env={"ASSET_CYCLE_PG_USER": parse_dsn(PG_DSN).get("user", "postgres")}))
                deadline = time.monotonic() + JOB_TIMEOUT_S
                while not job.ended():
                    if time.monotonic() > deadline:
                        job.cancel()
                        sys.exit(f"the job did not finish within {JOB_TIMEOUT_S:.0f} s")
                    time.sleep(SAMPLE_S)
            if job.status() != "FINISHED":
                sys.exit(f"the job {job.status()}: {job.failure()} (logs: {cluster.log_dir})")
            cpu1 = cpu_now(state.jobmanager, state.taskmanagers)
            detail = rest_json(cluster.rest_url, f"/jobs/{job.job_id}") or {}
            first, last, _ = commit_window(PG_DSN, names)
    finally:
        cluster.stop()
    window = (last - first) if first is not None and last is not None else float("nan")
    return ClusterRun(taskmanagers, records, detail["end-time"] / 1000 - started, detail["start-time"] / 1000 - started,
                      window, {k: cpu1[k] - cpu0[k] for k in cpu0}, sampler.by_thread(),
                      [str(v["name"]) for v in detail.get("vertices", [])])  # fmt: skip


def pure_engine_cpu_s(bundle: Path) -> tuple[int, float]:
    """(lines, CPU seconds) of the replay of the bundle in this process (parse, engine, loader stage)."""
    from workbench.bundle import iter_telemetry_lines, read_reference
    from workbench.replay import Replayer

    lines = [line for _, line in iter_telemetry_lines(bundle)]
    replayer = Replayer(read_reference(bundle)[0])
    feed = replayer.feed
    started = time.process_time()
    for line in lines:
        feed("bench", line)
    replayer.finish()
    return len(lines), time.process_time() - started


def print_run(run: ClusterRun, baseline: ClusterRun | None) -> None:
    """One cluster size's figures."""
    n = run.records
    print(f"\n{run.taskmanagers} TaskManager(s), parallelism {run.taskmanagers}:")
    speed_up = f"  speed-up {baseline.wall_s / run.wall_s:.2f}x end to end, " \
               f"{baseline.window_s / run.window_s:.2f}x after start-up" if baseline else ""  # fmt: skip
    print(f"  end to end     {run.wall_s:7.1f} s  {n / run.wall_s:9,.0f} events/s  (submission {run.submit_s:.1f} s)")
    print(f"  after start-up {run.window_s:7.1f} s  {n / run.window_s:9,.0f} events/s{speed_up}")
    print(f"  CPU s per 1,000 records: {run.per_k(run.server_cpu_s):.3f} (JobManager {run.per_k(run.cpu_s['JobManager']):.3f}, "
          f"TaskManagers {run.per_k(run.cpu_s['TaskManagers']):.3f}, PostgreSQL {run.per_k(run.cpu_s['PostgreSQL']):.3f}); "
          f"flink run client {run.cpu_s['client']:.1f} s")  # fmt: skip
    print("  TaskManagers' CPU by thread kind (µs per record):")
    for kind, seconds in sorted(run.kind_cpu_s().items(), key=lambda kv: -kv[1]):
        print(f"    {kind:36s} {seconds / n * 1e6:7.1f}")
    top = sorted(run.threads.items(), key=lambda kv: -kv[1])[:10]
    print("  busiest threads (µs per record): " + ", ".join(f"{name} {s / n * 1e6:.1f}" for name, s in top))


def print_medians(runs: list[ClusterRun], sizes: list[int]) -> None:
    """The median of each figure over the repetitions of each size, and each size's speed-up of medians."""
    from statistics import median

    print(f"\nmedians over {len(runs) // len(sizes)} runs of each size:")
    base: tuple[float, float] | None = None
    for taskmanagers in sizes:
        mine = [run for run in runs if run.taskmanagers == taskmanagers]
        n = mine[0].records
        wall, window = median(r.wall_s for r in mine), median(r.window_s for r in mine)
        cpu = median(r.per_k(r.server_cpu_s) for r in mine)
        spread = ", ".join(f"{n / r.wall_s:,.0f}" for r in mine)
        speed_up = f"; speed-up {base[0] / wall:.2f}x end to end, {base[1] / window:.2f}x after start-up" if base else ""
        print(f"  {taskmanagers} TM: {n / wall:,.0f} events/s end to end (runs: {spread}), {n / window:,.0f} after "
              f"start-up, CPU s per 1,000 records {cpu:.3f}{speed_up}")  # fmt: skip
        base = base or (wall, window)


def main() -> int:
    """Run every cluster size, then the pure engine, and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trucks", type=int, default=200)
    parser.add_argument("--hours", type=float, default=24)
    parser.add_argument("--bundle", type=Path, help="an existing bundle instead of the generated one")
    parser.add_argument("--taskmanagers", default="1,2", help="cluster sizes to run, in order (default 1,2)")
    parser.add_argument("--repeat", type=int, default=1, help="run the sizes this many times, interleaved, and "
                                                              "print the medians (default 1)")  # fmt: skip
    parser.add_argument("--taskmanager-jvm-options", default=TASKMANAGER_JVM_OPTIONS,
                        help=f"the TaskManagers' JVM options (default {TASKMANAGER_JVM_OPTIONS!r}, the cluster's; "
                             "'' for the JVM's defaults)")  # fmt: skip
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    bundle = args.bundle or ensure_bundle(args.trucks, args.hours)
    records = count_lines(bundle / "telemetry.jsonl")
    print(f"bundle {bundle}: {records:,} lines; {os.cpu_count()} CPUs", flush=True)
    sizes = [int(n) for n in args.taskmanagers.split(",")]
    runs: list[ClusterRun] = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        for repetition in range(args.repeat):
            first = len(runs)
            for n, taskmanagers in enumerate(sizes):
                runs.append(run_on_cluster(bundle, records, taskmanagers, Path(tmp) / f"r{repetition}",
                                           args.taskmanager_jvm_options))
                print_run(runs[-1], runs[first] if n else None)
    if args.repeat > 1:
        print_medians(runs, sizes)
    lines, pure_s = pure_engine_cpu_s(bundle)
    pure = pure_s / lines * 1e6
    print(f"\npure engine (replay in one process): {pure:.1f} µs CPU per record ({lines / pure_s:,.0f} events/s "
          f"of CPU)")  # fmt: skip
    print("where a record's CPU goes (µs per record): engine = the pure replay's; crossing + chained Java "
          "operators = Python operator tasks - engine")  # fmt: skip
    for run in runs:
        python_tasks = run.kind_cpu_s().get(PYTHON_TASKS, 0.0)
        rest_tm = run.cpu_s["TaskManagers"] - python_tasks
        print(f"  {run.taskmanagers} TM: engine {pure:.1f}, crossing + chained Java {python_tasks / lines * 1e6 - pure:.1f}, "
              f"other TaskManager threads {rest_tm / lines * 1e6:.1f}, PostgreSQL {run.cpu_s['PostgreSQL'] / lines * 1e6:.1f}, "
              f"JobManager {run.cpu_s['JobManager'] / lines * 1e6:.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
