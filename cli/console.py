"""What a local ``asset-cycle run`` prints while its job runs, and how it stops.

``JobConsole.watch()`` follows a submitted job until it ends or the user stops it:

* one line per state change: submitted (with the job id), running (once every task runs), restarting
  (with the cause from the Web UI's exception history), failed (with the root cause), stopping,
  savepoint path, stopped;
* a progress line every few seconds: records in, records/s, cycles closed, dead letters, event-time
  lag, and how long the sinks have been waiting for PostgreSQL when they are;
* once when PostgreSQL becomes unreachable (writes retried with backoff) and once when writes resume;
* at the end of a bounded run a summary like ``asset-cycle replay`` prints; an empty input or an
  input whose every record was rejected is said as such.

The job is followed through a ``JobHandle``: ``LocalJob`` for the local minicluster (the py4j
JobClient; metrics from the job jar's in-JVM reporter, ``assetcycle.metrics.LocalMetricsReporter``,
which keeps the last values of finished tasks, so the summary of a bounded run is complete) or
``ClusterJob`` for a job on a Flink cluster (its REST API: status, metrics summed over subtasks,
stop-with-savepoint, cancel; a finished task's metrics are gone from it, so a bounded run's summary
gives the last figures the cluster reported).

Stopping (Ctrl-C, SIGTERM, the end of ``--duration-s``): with a savepoint directory a
stop-with-savepoint is tried for at most ``stop_timeout_s`` (not at all while the job is not
running, e.g. restarting). A savepoint that fails for a passing reason while the job keeps running
(``RETRIED_SAVEPOINT_FAILURES``: e.g. a bounded source finished on its TaskManager an instant before
the JobManager knew, "Task local checkpoint failure") is said and tried again, within the same
timeout; when it cannot be taken the reason is printed and the job is cancelled (at most
``CANCEL_TIMEOUT_S``). A second Ctrl-C skips the savepoint, a third exits at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlparse

from pyflink.common import JobClient
from pyflink.common.completable_future import CompletableFuture
from pyflink.java_gateway import get_gateway

POLL_S = 0.5
CANCEL_TIMEOUT_S = 30.0
TASKS_UP_TIMEOUT_S = 20.0
"""On stop, how long a running job's tasks that are not running yet (slots, failover) are waited for
before the savepoint is tried anyway."""
DEFAULT_PROGRESS_S = 5.0
DEFAULT_STOP_TIMEOUT_S = 60.0
SINK_WAIT_NOTICE_MS = 3000
"""After a failed write, the outage is over once no sink has rows waiting longer than this."""
RETRIED_SAVEPOINT_FAILURES = frozenset({
    "TASK_CHECKPOINT_FAILURE",  # a task finished (or was finishing) when the barrier reached its TaskManager
    "UNKNOWN_TASK_CHECKPOINT_NOTIFICATION_FAILURE",
    "NOT_ALL_REQUIRED_TASKS_RUNNING",
    "TRIGGER_CHECKPOINT_FAILURE",
    "CHECKPOINT_DECLINED",
    "CHECKPOINT_DECLINED_TASK_NOT_READY",
    "CHECKPOINT_DECLINED_TASK_CLOSING",
    "CHECKPOINT_DECLINED_INPUT_END_OF_STREAM",
    "CHECKPOINT_DECLINED_SUBSUMED",
    "CHECKPOINT_SUBSUMED",
    "TOO_MANY_CHECKPOINT_REQUESTS",
    "MINIMUM_TIME_BETWEEN_CHECKPOINTS",
})
"""Flink's CheckpointFailureReason names after which a savepoint is tried again while the job runs:
the moment was wrong, not the job (an I/O error, a failing task or a timeout is not retried)."""
SAVEPOINT_RETRY_PAUSE_S = 0.5

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class JobCounts:
    """The job's metrics at one moment (summed over subtasks; see LocalMetricsReporter)."""

    values: Mapping[str, float] = field(default_factory=dict)

    def get(self, key: str) -> float:
        return float(self.values.get(key, 0.0))

    def labelled(self, name: str, label: str) -> dict[str, int]:
        """``{label value: count}`` of a labelled counter, e.g. dead letters by reason."""
        prefix = f"{name}{{{label}="
        return {k[len(prefix):-1]: int(v) for k, v in sorted(self.values.items()) if k.startswith(prefix) and v}

    def sink_values(self, name: str) -> list[float]:
        return [v for k, v in self.values.items() if k.startswith(name + "{sink=")]

    @property
    def records_in(self) -> int:
        return int(self.get("recordsIn"))

    @property
    def dead_letters(self) -> int:
        return int(self.get("deadLetterRecords"))

    @property
    def cycles_closed(self) -> int:
        return int(self.get("cyclesClosedTotal"))

    @property
    def lag_ms(self) -> float | None:
        """Wall clock - newest event time; None before the first point (the gauge then reads 0)."""
        return self.values.get("eventTimeLagMs") if self.get("pointsApplied") or self.get("recordsParsed") else None

    @property
    def sink_wait_ms(self) -> float:
        """How long the longest-waiting sink has been unable to write (0 when all are writing)."""
        return max(self.sink_values("sinkTimeSinceLastWriteMs"), default=0.0)

    @property
    def sink_retries(self) -> int:
        return int(sum(self.sink_values("sinkRetries")))

    @property
    def sink_rows_written(self) -> int:
        return int(sum(self.sink_values("sinkRowsWritten")))


def reporter_snapshot(job_id: str) -> JobCounts:
    """The job's metrics from the in-JVM reporter (empty when the job jar's reporter is not there)."""
    try:
        snapshot = get_gateway().jvm.assetcycle.metrics.LocalMetricsReporter.snapshot(job_id)
        return JobCounts({str(k): float(snapshot.get(k)) for k in snapshot.keySet()})
    except Exception:  # noqa: BLE001 - progress is informative; a failed read shows nothing new
        return JobCounts()


def release_snapshot(job_id: str) -> None:
    """Let the reporter forget a finished job."""
    with contextlib.suppress(Exception):  # the JVM may be gone already
        get_gateway().jvm.assetcycle.metrics.LocalMetricsReporter.release(job_id)


def _count(n: float) -> str:
    return f"{int(n):,}"


def _by(counts: dict[str, int]) -> str:
    return "{" + ", ".join(f"{k}: {_count(v)}" for k, v in counts.items()) + "}" if counts else ""


def describe_event_time(lag_ms: float | None, now_ms: float) -> str:
    """The event-time position for a progress line: a lag, a lead (simulator) or a date (replays)."""
    if lag_ms is None:
        return "event time not known yet"
    if abs(lag_ms) >= 3_600_000:
        moment = datetime.fromtimestamp((now_ms - lag_ms) / 1000, tz=UTC)
        return f"event time {moment:%Y-%m-%d %H:%M}Z"
    if lag_ms < 0:
        return f"event time {_duration(-lag_ms / 1000)} ahead of the clock"
    return f"event-time lag {_duration(lag_ms / 1000)}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def progress_line(counts: JobCounts, rate: float, now_ms: float, sinks_waiting: bool = False) -> str:
    """``progress: 12,345 records in (410/s), 37 cycles closed, 5 dead letters, event-time lag 2.1 s``."""
    line = (f"progress: {_count(counts.records_in)} records in ({rate:,.0f}/s), {_count(counts.cycles_closed)} "
            f"cycles closed, {_count(counts.dead_letters)} dead letters, {describe_event_time(counts.lag_ms, now_ms)}")
    if sinks_waiting:
        line += f"; waiting {counts.sink_wait_ms / 1000:.0f} s for PostgreSQL ({_count(counts.sink_retries)} retries)"
    return line


def summary_line(counts: JobCounts, seconds: float, source: str, dead_letter_table: str, final: bool = True) -> str:
    """The end of a bounded run, like ``asset-cycle replay``; an empty or all-bad input said as such.
    ``final`` False: ``counts`` are the last a cluster reported before the tasks ended, said as such."""
    records = counts.records_in
    reasons = counts.labelled("deadLetters", "reason")
    statuses = counts.labelled("cyclesClosed", "status")
    if not final:
        return (f"finished in {seconds:.1f} s; the cluster last reported {_count(records)} records in, "
                f"{_count(counts.cycles_closed)} closed cycles {_by(statuses)}".rstrip()
                + f", {_count(counts.dead_letters)} dead letters {_by(reasons)}".rstrip())
    if records == 0:
        return f"finished in {seconds:.1f} s: {source} had no records; nothing was written"
    if counts.get("recordsParsed") == 0 and counts.dead_letters >= records:
        return (f"finished in {seconds:.1f} s: every one of the {_count(records)} records of {source} was rejected "
                f"{_by(reasons)}; nothing was applied (see {dead_letter_table})")
    rate = records / seconds if seconds > 0 else 0.0
    return (f"finished in {seconds:.1f} s: {_count(records)} records ({_count(counts.get('pointsApplied'))} applied, "
            f"{_count(counts.get('duplicatesDropped'))} duplicates, {_count(counts.get('reordered'))} re-ordered, "
            f"{_count(counts.get('latePoints'))} late, {_count(counts.get('nonTruckFiltered'))} non-truck), "
            f"{_count(counts.dead_letters)} dead letters {_by(reasons)}".rstrip()
            + f"; {_count(counts.cycles_closed)} closed cycles {_by(statuses)}".rstrip()
            + f"; {rate:,.0f} records/s")


# --------------------------------------------------------------------------- REST (causes, task states)


def rest_json(base_url: str, path: str, timeout_s: float = 2.0, method: str = "GET", body: Any = None) -> Any:
    """A JSON resource of a Flink REST API / Web UI such as ``http://127.0.0.1:8081`` (None when it
    does not answer or refuses)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            text = resp.read()
            return json.loads(text) if text else {}
    except Exception:  # noqa: BLE001 - the cluster may be starting, busy or gone
        return None


def root_cause(stacktrace: str) -> str:
    """The innermost ``Caused by:`` of a Java stack trace (else its first line), one line."""
    lines = [line.strip() for line in stacktrace.splitlines() if line.strip()]
    causes = [line[len("Caused by: "):] for line in lines if line.startswith("Caused by: ")]
    text = causes[-1] if causes else (lines[0] if lines else "unknown cause")
    return text if len(text) <= 300 else text[:297] + "..."


def java_root_cause(exc: BaseException) -> str:
    """The innermost cause of a py4j Java exception (or the Python exception), one line."""
    java = getattr(exc, "java_exception", None)
    if java is None:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    while java.getCause() is not None:
        java = java.getCause()
    text = str(java.toString()).splitlines()[0]
    return text if len(text) <= 300 else text[:297] + "..."


# --------------------------------------------------------------------------- the job: local or on a cluster

TERMINAL_STATES = ("FINISHED", "CANCELED", "FAILED")
GAUGES = ("eventTimeLagMs", "trucksTracked", "referenceSites", "referenceAgeSeconds", "sinkTimeSinceLastWriteMs",
          "millisBehindLatest")  # fmt: skip
"""The job's own metrics that are gauges: over subtasks the highest counts (counters are summed)."""
OWN_GROUP = ".kinesisanalytics.assetCycle."


class SavepointRequest(Protocol):
    """A stop-with-savepoint under way."""

    def done(self) -> bool:
        """Whether it completed or failed."""

    def location(self) -> str:
        """Where the savepoint is (once done); raises SavepointFailed when it failed."""


class SavepointFailed(RuntimeError):
    """A savepoint was not taken (the message is the root cause; ``reason`` Flink's
    CheckpointFailureReason name when it is known)."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class JobHandle(Protocol):
    """A submitted job as the console follows it: LocalJob (the minicluster) or ClusterJob (a REST API)."""

    job_id: str
    rest_url: str | None
    counts_are_final: bool
    """Whether ``counts()`` still has a task's last values after the task ended."""

    def status(self) -> str:
        """Flink's JobStatus name ("" while not known)."""

    def ended(self) -> bool:
        """Whether the job reached a terminal state."""

    def failure(self) -> str | None:
        """Once ended: the root cause when the job failed, else None."""

    def counts(self) -> JobCounts:
        """The job's own metrics now."""

    def stop_with_savepoint(self, target: str, drain: bool) -> SavepointRequest:
        """Ask for a canonical savepoint into directory URI ``target``, then the stop."""

    def cancel(self) -> None:
        """Cancel the job (no error when it ended meanwhile)."""

    def release(self) -> None:
        """Forget what was kept for the job (its metrics)."""


class _JavaSavepoint:
    def __init__(self, future: Any) -> None:
        self.future = future

    def done(self) -> bool:
        return bool(self.future.isDone())

    def location(self) -> str:
        try:
            return local_path(str(self.future.get()))
        except Exception as exc:  # noqa: BLE001 - py4j wraps the Java failure
            raise SavepointFailed(java_root_cause(exc), checkpoint_failure_reason(exc)) from None


class LocalJob:
    """A job of the local minicluster, through PyFlink's JobClient (py4j) and the in-JVM reporter."""

    counts_are_final = True

    def __init__(self, client: JobClient, rest_port: int | None = None) -> None:
        self.client = client
        self.job_id = str(client.get_job_id())
        self.rest_url = f"http://127.0.0.1:{rest_port}" if rest_port else None
        self._result: CompletableFuture = client.get_job_execution_result()
        self._status = ""

    def status(self) -> str:
        try:
            unit = get_gateway().jvm.java.util.concurrent.TimeUnit.SECONDS
            self._status = str(self.client._j_job_client.getJobStatus().get(5, unit))
        except Exception:  # noqa: BLE001 - the cluster is busy or shutting down; try again
            pass
        return self._status

    def ended(self) -> bool:
        return bool(self._result.done())

    def failure(self) -> str | None:
        try:
            self._result.result()
        except Exception as exc:  # noqa: BLE001 - the job failed: its root cause
            return java_root_cause(exc)
        return None

    def counts(self) -> JobCounts:
        return reporter_snapshot(self.job_id)

    def stop_with_savepoint(self, target: str, drain: bool) -> SavepointRequest:
        fmt = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
        try:
            return _JavaSavepoint(self.client._j_job_client.stopWithSavepoint(drain, target, fmt))
        except Exception as exc:  # noqa: BLE001
            raise SavepointFailed(java_root_cause(exc), checkpoint_failure_reason(exc)) from None

    def cancel(self) -> None:
        with contextlib.suppress(Exception):  # it may have ended meanwhile
            self.client._j_job_client.cancel()

    def release(self) -> None:
        release_snapshot(self.job_id)


def own_metric_key(metric_id: str) -> str | None:
    """A REST metric id of the job's own group -> the console's key (as LocalMetricsReporter names
    them): ``cycle-engine.kinesisanalytics.assetCycle.reason.LATE.deadLetters`` ->
    ``deadLetters{reason=LATE}``; None for Flink's own metrics."""
    at = metric_id.find(OWN_GROUP)
    if at < 0:
        return None
    parts = metric_id[at + len(OWN_GROUP):].split(".")
    labels = ",".join(f"{parts[i]}={parts[i + 1]}" for i in range(0, len(parts) - 1, 2))
    return f"{parts[-1]}{{{labels}}}" if labels else parts[-1]


class _RestSavepoint:
    def __init__(self, base_url: str, job_id: str, request_id: str) -> None:
        self.path = f"/jobs/{job_id}/savepoints/{request_id}"
        self.base_url = base_url
        self._answer: dict[str, Any] = {}

    def done(self) -> bool:
        answer = rest_json(self.base_url, self.path) or {}
        if (answer.get("status") or {}).get("id") == "COMPLETED":
            self._answer = answer
            return True
        return False

    def location(self) -> str:
        operation = self._answer.get("operation") or {}
        if operation.get("location"):
            return local_path(str(operation["location"]))
        cause = operation.get("failure-cause") or {}
        trace = str(cause.get("stack-trace") or cause.get("class") or "unknown cause")
        raise SavepointFailed(root_cause(trace), checkpoint_failure_reason_in([trace]))


class ClusterJob:
    """A job on a Flink cluster, through its REST API at ``rest_url`` (see the module docstring)."""

    counts_are_final = False

    def __init__(self, rest_url: str, job_id: str) -> None:
        self.rest_url = rest_url
        self.job_id = job_id
        self._status = ""
        self._last = JobCounts()

    def status(self) -> str:
        # the status resource alone: the job's details would make the JobManager fetch every
        # TaskManager's metrics (once per metrics.fetcher.update-interval) on each poll
        job = rest_json(self.rest_url, f"/jobs/{self.job_id}/status")
        if job is not None and job.get("status"):
            self._status = str(job["status"])
        return self._status

    def ended(self) -> bool:
        return self.status() in TERMINAL_STATES

    def failure(self) -> str | None:
        if self.status() != "FAILED":
            return None
        history = rest_json(self.rest_url, f"/jobs/{self.job_id}/exceptions?maxExceptions=1") or {}
        root = (history.get("exceptionHistory") or {}).get("entries") or [history.get("root-exception")]
        first = root[0] if root and root[0] else None
        if isinstance(first, dict):
            return root_cause(str(first.get("stacktrace") or first.get("exceptionName") or "unknown cause"))
        return root_cause(str(first)) if first else "unknown cause (see the cluster's logs)"

    def counts(self) -> JobCounts:
        """The job's own metrics over every vertex, counters summed and gauges maxed over subtasks; the
        last figures seen once the tasks are gone."""
        job = rest_json(self.rest_url, f"/jobs/{self.job_id}") or {}
        values: dict[str, float] = {}
        for vertex in job.get("vertices") or []:
            base = f"/jobs/{self.job_id}/vertices/{vertex['id']}/subtasks/metrics"
            ids = [m["id"] for m in rest_json(self.rest_url, base) or [] if own_metric_key(m["id"])]
            if not ids:
                continue
            for metric in rest_json(self.rest_url, f"{base}?agg=sum,max&get=" + quote(",".join(ids), safe=",")) or []:
                key = own_metric_key(metric["id"])
                gauge = key.split("{")[0] in GAUGES
                value = float(metric.get("max" if gauge else "sum", 0.0))
                values[key] = max(values.get(key, value), value) if gauge else values.get(key, 0.0) + value
        if values:
            self._last = JobCounts(values)
        return self._last

    def stop_with_savepoint(self, target: str, drain: bool) -> SavepointRequest:
        answer = rest_json(self.rest_url, f"/jobs/{self.job_id}/stop", timeout_s=10.0, method="POST",
                           body={"targetDirectory": target, "drain": drain, "formatType": "CANONICAL"})  # fmt: skip
        if not answer or "request-id" not in answer:
            raise SavepointFailed(f"the cluster refused the stop ({self.rest_url})")
        return _RestSavepoint(self.rest_url, self.job_id, str(answer["request-id"]))

    def cancel(self) -> None:
        rest_json(self.rest_url, f"/jobs/{self.job_id}?mode=cancel", timeout_s=10.0, method="PATCH")

    def release(self) -> None:
        self._last = JobCounts()


# --------------------------------------------------------------------------- the console


@dataclass
class StopPlan:
    """How the job is stopped: with a savepoint into ``savepoint_dir`` (optionally draining) or not."""

    savepoint_dir: str | None = None
    drain: bool = False
    timeout_s: float = DEFAULT_STOP_TIMEOUT_S


class JobConsole:
    """Follows one submitted job (see module docstring). ``print_line`` receives every line."""

    def __init__(self, job: JobHandle, stop: StopPlan, *, bounded: bool, source: str, dead_letter_table: str,
                 progress_s: float = DEFAULT_PROGRESS_S, resume_hint: Callable[[], str | None] | None = None,
                 flink_log: str | None = None, print_line: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.job = job
        self.job_id = job.job_id
        self.stop_plan = stop
        self.bounded = bounded
        self.source = source
        self.dead_letter_table = dead_letter_table
        self.progress_s = progress_s
        self.resume_hint = resume_hint
        self.log_hint = f" (Flink's log: {flink_log})" if flink_log else ""
        self.print = print_line or (lambda text: print(text, flush=True))
        self.interrupts = 0
        self.stop_reason: str | None = None
        self.started = time.monotonic()
        self._status = ""
        self._announced_running = False
        self._waiting_since: float | None = None
        self._outage_announced = False
        self._last_progress = (time.monotonic(), 0)
        self._failures_seen = 0
        self._calm_retries = 0
        self._last_retries = 0
        self._written_at_outage = 0

    # -- signals ---------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        """Ctrl-C and SIGTERM only set flags (so that no call into the JVM is interrupted midway)."""
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.interrupts += 1
        if self.stop_reason is None:
            self.stop_reason = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        if self.interrupts >= 3:
            print("asset-cycle: exiting now (the job was not stopped cleanly)", flush=True)
            os._exit(EXIT_INTERRUPTED)

    def request_stop(self, reason: str) -> None:
        """Stop at the next poll (e.g. the end of --duration-s)."""
        if self.stop_reason is None:
            self.stop_reason = reason

    # -- main loop -------------------------------------------------------------------------------
    def watch(self, duration_s: float | None = None) -> int:
        """Follow the job until it ends or is stopped; returns the process exit code."""
        self.print(f"job {self.job_id} submitted")
        deadline = None if duration_s is None else time.monotonic() + duration_s
        try:
            while True:
                if self.job.ended():
                    return self._ended()
                if deadline is not None and time.monotonic() >= deadline:
                    self.request_stop(f"--duration-s {duration_s:g} reached")
                if self.stop_reason is not None:
                    return self._stop()
                self._poll_state()
                self._poll_progress()
                time.sleep(POLL_S)
        finally:
            self.job.release()

    def _status_now(self) -> str:
        return self.job.status() or self._status

    def _poll_state(self) -> None:
        status = self._status_now()
        if status == "RESTARTING" and self._status != "RESTARTING":
            self.print(f"job restarting: {self._latest_failure() or 'cause not reported yet'}{self.log_hint}")
            self._announced_running = False
        elif status in ("FAILING", "CANCELLING") and self._status != status:
            self.print(f"job {status.lower()}")
        self._status = status
        if status == "RUNNING" and not self._announced_running and self._tasks_look_running():
            self._announced_running = True
            self.print("job running" + (" again" if self._failures_seen else "") + "; Ctrl-C stops it")

    def _tasks_look_running(self) -> bool:
        """Every task runs, per the REST API (or it has not answered for 30 s: then trust the job status)."""
        waiting = self._tasks_not_running()
        return waiting == [] or (waiting is None and time.monotonic() - self.started > 30)

    def _tasks_not_running(self) -> list[str] | None:
        """``name (STATUS)`` of each task that neither runs nor has finished (a job can be RUNNING with
        tasks waiting for slots or being redeployed after a failure); None when the REST API does not
        answer."""
        if self.job.rest_url is None:
            return None
        job = rest_json(self.job.rest_url, f"/jobs/{self.job_id}")
        vertices = (job or {}).get("vertices") or []
        if not vertices:
            return None
        return [f"{v.get('name', '?')[:60]} ({v.get('status')})" for v in vertices
                if v.get("status") not in ("RUNNING", "FINISHED")]  # fmt: skip

    def _latest_failure(self) -> str | None:
        if self.job.rest_url is None:
            return None
        history = rest_json(self.job.rest_url, f"/jobs/{self.job_id}/exceptions?maxExceptions=1")
        entries = ((history or {}).get("exceptionHistory") or {}).get("entries") or []
        self._failures_seen += 1
        return root_cause(entries[0].get("stacktrace") or entries[0].get("exceptionName", "")) if entries else None

    def _poll_progress(self) -> None:
        counts = self.job.counts()
        now = time.monotonic()
        self._track_outage(counts, now)
        last_time, last_records = self._last_progress
        if now - last_time >= self.progress_s and self._announced_running:
            rate = (counts.records_in - last_records) / (now - last_time)
            self._last_progress = (now, counts.records_in)
            self.print(progress_line(counts, max(rate, 0.0), time.time() * 1000, self._outage_announced))

    def _track_outage(self, counts: JobCounts, now: float, *, final: bool = False) -> None:
        """Announce a PostgreSQL outage once, and once its end: rows written again, none waiting and
        (except for the last look before the job stops) no new retries since the previous poll."""
        retries = counts.sink_retries
        waiting = counts.sink_wait_ms >= SINK_WAIT_NOTICE_MS
        if not self._outage_announced:
            if retries > self._calm_retries and waiting and not final:  # writes fail and rows wait
                self._outage_announced = True
                self._waiting_since = now - counts.sink_wait_ms / 1000
                self._written_at_outage = counts.sink_rows_written
                self.print("PostgreSQL is not accepting writes: the sinks retry with backoff until it does "
                           "(the job keeps its place)")  # fmt: skip
            elif not waiting:  # a retry that succeeded at once (e.g. a reconnect) is no outage
                self._calm_retries = retries
        elif (not waiting and (final or retries == self._last_retries)
              and counts.sink_rows_written > self._written_at_outage):  # fmt: skip
            self._outage_announced = False
            self._calm_retries = retries
            waited = now - (self._waiting_since or now)
            self.print(f"PostgreSQL writes resumed after {waited:.0f} s ({_count(retries)} retries so far)")
        self._last_retries = retries

    # -- endings ---------------------------------------------------------------------------------
    def _ended(self) -> int:
        seconds = time.monotonic() - self.started
        failure = self.job.failure()
        if failure is not None:
            self.print(f"job failed: {failure}{self.log_hint}")
            return EXIT_FAILED
        status = self._status_now() if not self.bounded else "FINISHED"
        if status != "CANCELED" and not self._announced_running:  # it ran, faster than one status poll
            self._announced_running = True
            self.print("job running; Ctrl-C stops it")
        if status == "CANCELED":
            self.print("job cancelled")
            return EXIT_OK
        self.print(summary_line(self.job.counts(), seconds, self.source, self.dead_letter_table,
                                final=self.job.counts_are_final))  # fmt: skip
        return EXIT_OK

    def _stop(self) -> int:
        plan = self.stop_plan
        self._track_outage(self.job.counts(), time.monotonic(), final=True)
        self.print(f"stopping the job ({self.stop_reason})")
        stopped_as_asked = True
        if plan.savepoint_dir:
            status = self._status_now()
            if status != "RUNNING":
                self.print(f"no savepoint: the job is {status.lower() or 'not running'} (a savepoint needs a "
                           "running job)")  # fmt: skip
                stopped_as_asked = False
            else:
                interrupts = self.interrupts
                waiting = self._await_tasks(min(TASKS_UP_TIMEOUT_S, plan.timeout_s))
                if self.interrupts > interrupts:
                    path, why = None, "skipped (Ctrl-C pressed again)"
                else:
                    path, why = self._savepoint(plan)
                if path:
                    self.print(f"savepoint: {path}")
                    self._wait(CANCEL_TIMEOUT_S)
                    self.print("job stopped")
                    return EXIT_OK
                self.print(f"no savepoint: {why}" + (f" (tasks not running: {', '.join(waiting)})" if waiting else ""))
                stopped_as_asked = False
        self._cancel()
        hint = self.resume_hint() if self.resume_hint else None
        if hint:
            self.print(hint)
        return EXIT_OK if stopped_as_asked else EXIT_INTERRUPTED

    def _await_tasks(self, timeout_s: float) -> list[str]:
        """Wait (bounded) until every task runs, e.g. after a failover; returns those still not running."""
        deadline = time.monotonic() + timeout_s
        interrupts = self.interrupts
        while True:
            waiting = self._tasks_not_running() or []
            if not waiting or time.monotonic() >= deadline or self.interrupts > interrupts:
                return waiting
            time.sleep(POLL_S)

    def _savepoint(self, plan: StopPlan) -> tuple[str | None, str]:
        """Stop with a savepoint (tried again after a passing failure, see RETRIED_SAVEPOINT_FAILURES);
        returns (path, "") or (None, why not)."""
        target = savepoint_target(plan.savepoint_dir or ".")
        self.print(f"taking a savepoint{' (draining: every timer fires)' if plan.drain else ''} in {plan.savepoint_dir}")
        interrupts = self.interrupts
        deadline = time.monotonic() + plan.timeout_s
        while True:
            path, why, failure = self._one_savepoint(plan, target, interrupts, deadline)
            if path or failure is None:
                return path, why
            if (failure.reason not in RETRIED_SAVEPOINT_FAILURES
                    or time.monotonic() + SAVEPOINT_RETRY_PAUSE_S >= deadline or self._status_now() != "RUNNING"):
                return None, why
            self.print(f"the savepoint failed ({why}); trying again")
            time.sleep(SAVEPOINT_RETRY_PAUSE_S)
            if self.interrupts > interrupts:
                return None, "skipped (Ctrl-C pressed again)"

    def _one_savepoint(self, plan: StopPlan, target: str, interrupts: int,
                       deadline: float) -> tuple[str | None, str, SavepointFailed | None]:
        """One stop-with-savepoint: (path, "", None), or (None, why not, the failure if Flink reported one)."""
        try:
            request = self.job.stop_with_savepoint(target, plan.drain)
        except SavepointFailed as exc:
            return None, str(exc), exc
        while not request.done():
            if self.interrupts > interrupts:
                return None, "skipped (Ctrl-C pressed again)", None
            if time.monotonic() >= deadline:
                counts = self.job.counts()
                why = (" while the sinks wait for PostgreSQL" if counts.sink_wait_ms >= SINK_WAIT_NOTICE_MS else "")
                return None, f"not completed within {plan.timeout_s:.0f} s{why}", None
            time.sleep(POLL_S)
        try:
            return request.location(), "", None
        except SavepointFailed as exc:
            return None, str(exc), exc

    def _cancel(self) -> None:
        self.print("cancelling the job")
        self.job.cancel()
        if self._wait(CANCEL_TIMEOUT_S):
            self.print("job stopped")
        else:
            self.print(f"the job did not stop within {CANCEL_TIMEOUT_S:.0f} s; exiting (the local cluster ends "
                       "with this process)")  # fmt: skip

    def _wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.job.ended():
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
        return True


def checkpoint_failure_reason(exc: BaseException) -> str | None:
    """The name of Flink's CheckpointFailureReason behind a failed savepoint (from a
    CheckpointException anywhere in the Java cause chain, also one carried as a SerializedThrowable),
    or None."""
    java = getattr(exc, "java_exception", None)
    messages: list[str] = []
    while java is not None:
        if str(java.getClass().getName()).endswith(".CheckpointException"):
            return str(java.getCheckpointFailureReason().name())
        messages.append(str(java.toString()))
        java = java.getCause()
    return checkpoint_failure_reason_in(messages)


def checkpoint_failure_reason_in(texts: list[str]) -> str | None:
    """The name of the CheckpointFailureReason whose message a CheckpointException in these texts (Java
    exceptions as text, a REST API's stack trace) carries, or None."""
    texts = [text for text in texts if "CheckpointException" in text]
    if not texts:
        return None
    reasons = get_gateway().jvm.org.apache.flink.runtime.checkpoint.CheckpointFailureReason.values()
    found = [(len(str(r.message())), str(r.name())) for r in reasons
             if any(str(r.message()) in text for text in texts)]  # fmt: skip
    return max(found)[1] if found else None  # the most specific (longest) matching message


def savepoint_target(directory: str | Path) -> str:
    """A savepoint directory as the URI Flink takes (local paths made absolute)."""
    return directory if "://" in str(directory) else Path(directory).resolve().as_uri()


def local_path(uri: str) -> str:
    """``file:/x/y`` (what Flink reports) -> ``/x/y``, usable as ``--from-savepoint``; others unchanged."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri


def stop_with_savepoint(client: JobClient, directory: str | Path, drain: bool = False) -> str:
    """Stop the job with a canonical savepoint (Java client directly; PyFlink's wrapper is broken).

    ``drain``: advance to the end of event time first (MAX_WATERMARK fires every timer, as at the
    end of a bounded file); without it the job pauses and a restore continues where it stopped."""
    fmt = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
    return str(client._j_job_client.stopWithSavepoint(drain, savepoint_target(directory), fmt).get())
