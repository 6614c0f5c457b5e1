"""The run console's lines and the local checkpoint bookkeeping, without a job."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cli.checkpoints import latest_checkpoint, prune_checkpoints
from cli.console import (
    ClusterJob,
    JobConsole,
    JobCounts,
    SavepointFailed,
    StopPlan,
    describe_event_time,
    own_metric_key,
    progress_line,
    root_cause,
    summary_line,
)

NOW_MS = 1_800_000_000_000


def test_progress_line_says_records_rate_cycles_dead_letters_and_lag() -> None:
    counts = JobCounts({"recordsIn": 12345, "recordsParsed": 12340, "cyclesClosedTotal": 37, "deadLetterRecords": 5, "eventTimeLagMs": 2100,
                        "sinkRetries{sink=cycle}": 4, "sinkTimeSinceLastWriteMs{sink=cycle}": 34_000})  # fmt: skip
    assert progress_line(counts, 410.4, NOW_MS) == (
        "progress: 12,345 records in (410/s), 37 cycles closed, 5 dead letters, event-time lag 2.1 s")
    assert progress_line(counts, 0, NOW_MS, sinks_waiting=True).endswith(
        "; waiting 34 s for PostgreSQL (4 retries)")
    idle = JobCounts({"recordsIn": 0, "eventTimeLagMs": 0.0})  # the gauge reads 0 before the first point
    assert progress_line(idle, 0, NOW_MS).endswith("0 dead letters, event time not known yet")


def test_event_time_is_a_lag_a_lead_or_a_date() -> None:
    assert describe_event_time(None, NOW_MS) == "event time not known yet"
    assert describe_event_time(1500, NOW_MS) == "event-time lag 1.5 s"
    assert describe_event_time(-240_000, NOW_MS) == "event time 4 min ahead of the clock"
    assert describe_event_time(NOW_MS - 1_705_298_400_000, NOW_MS) == "event time 2024-01-15 06:00Z"


def test_summary_of_a_bounded_run_like_replay() -> None:
    counts = JobCounts({"recordsIn": 5467, "recordsParsed": 5446, "pointsApplied": 5231, "duplicatesDropped": 130,
                        "reordered": 27, "latePoints": 2, "nonTruckFiltered": 48, "deadLetterRecords": 58,
                        "deadLetters{reason=BAD_JSON}": 21, "deadLetters{reason=LATE}": 2,
                        "deadLetters{reason=UNKNOWN_ASSET}": 35, "cyclesClosedTotal": 113,
                        "cyclesClosed{status=COMPLETE}": 104, "cyclesClosed{status=INVALID}": 9})  # fmt: skip
    assert summary_line(counts, 41.2, "file:/x", "dx.asset_cycle_dead_letter") == (
        "finished in 41.2 s: 5,467 records (5,231 applied, 130 duplicates, 27 re-ordered, 2 late, 48 non-truck), "
        "58 dead letters {BAD_JSON: 21, LATE: 2, UNKNOWN_ASSET: 35}; 113 closed cycles {COMPLETE: 104, INVALID: 9}; "
        "133 records/s")


def test_empty_and_all_bad_inputs_are_said_as_such() -> None:
    assert summary_line(JobCounts({}), 3.0, "file:/x", "dx.dl") == (
        "finished in 3.0 s: file:/x had no records; nothing was written")
    bad = JobCounts({"recordsIn": 8, "deadLetterRecords": 8, "deadLetters{reason=BAD_JSON}": 8})
    assert summary_line(bad, 3.0, "file:/x", "dx.dl") == (
        "finished in 3.0 s: every one of the 8 records of file:/x was rejected {BAD_JSON: 8}; nothing was applied "
        "(see dx.dl)")


def test_root_cause_is_the_innermost_caused_by() -> None:
    trace = ("org.apache.flink.runtime.JobException: Recovery is suppressed\n\tat x.y(Z.java:1)\n"
             "Caused by: java.io.IOException: cycle sink (subtask 0): writing 3 row(s) failed\n\tat a.b(C.java:2)\n"
             "Caused by: org.postgresql.util.PSQLException: ERROR: relation \"dx.x\" does not exist\n")  # fmt: skip
    assert root_cause(trace) == 'org.postgresql.util.PSQLException: ERROR: relation "dx.x" does not exist'
    assert root_cause("java.lang.RuntimeException: boom\n\tat a.b(C.java:1)") == "java.lang.RuntimeException: boom"


def _checkpoint(root: Path, job: str, n: int, mtime: float) -> Path:
    chk = root / job / f"chk-{n}"
    chk.mkdir(parents=True)
    (chk / "_metadata").write_bytes(b"x")
    os.utime(chk / "_metadata", (mtime, mtime))
    return chk


def test_latest_checkpoint_and_pruning(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    (tmp_path / "job0" / "chk-9").mkdir(parents=True)  # never completed: no _metadata
    runs = [_checkpoint(tmp_path, f"job{i}", i, 1_000_000 + i) for i in range(1, 6)]
    assert latest_checkpoint(tmp_path) == runs[-1]
    prune_checkpoints(tmp_path, keep_runs=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job0", "job3", "job4", "job5"]
    assert latest_checkpoint(tmp_path) == runs[-1]


class _Job:
    """A JobHandle that never ends and has no metrics."""

    job_id = "0" * 32
    rest_url = None
    counts_are_final = True

    def status(self) -> str:
        return "RUNNING"

    def ended(self) -> bool:
        return False

    def counts(self) -> JobCounts:
        return JobCounts()


def _sinks(retries: int, wait_ms: float, written: int) -> JobCounts:
    return JobCounts({"sinkRetries{sink=cycles}": retries, "sinkTimeSinceLastWriteMs{sink=cycles}": wait_ms,
                      "sinkRowsWritten{sink=cycles}": written})  # fmt: skip


def test_an_outage_is_said_once_and_its_end_once_even_on_the_last_look_before_stopping() -> None:
    lines: list[str] = []
    console = JobConsole(_Job(), StopPlan(), bounded=False, source="file:x", dead_letter_table="dl",
                         print_line=lines.append)  # fmt: skip
    console._track_outage(_sinks(1, 0, 10), 0.0)  # a retry that succeeded at once: no outage
    assert lines == []
    for t, retries in enumerate((2, 3, 4), 1):
        console._track_outage(_sinks(retries, 5000 * t, 10), float(t))
    assert lines == ["PostgreSQL is not accepting writes: the sinks retry with backoff until it does "
                     "(the job keeps its place)"]  # fmt: skip
    console._track_outage(_sinks(5, 0, 50), 4.0)  # written again, but this poll still saw a new retry
    assert len(lines) == 1
    console._track_outage(_sinks(5, 0, 60), 5.0)
    assert lines[1] == "PostgreSQL writes resumed after 9 s (5 retries so far)"
    console._track_outage(_sinks(6, 4000, 60), 6.0)  # a second outage ...
    console._track_outage(_sinks(7, 0, 80), 7.0, final=True)  # ... over when the job is stopped
    assert lines[2:] == [lines[0], "PostgreSQL writes resumed after 5 s (7 retries so far)"]


class _StopRecorder(JobConsole):
    """A console whose job keeps one task down; Ctrl-C is pressed again while it waits for it."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(_Job(), StopPlan(savepoint_dir="sp", timeout_s=30), bounded=False,
                         source="file:x", dead_letter_table="dl", print_line=lines.append)  # fmt: skip
        self.calls: list[str] = []
        self.stop_reason = "Ctrl-C"
        self.interrupts = 1

    def _status_now(self) -> str:
        return "RUNNING"

    def _tasks_not_running(self) -> list[str]:
        self.interrupts += 1  # the second Ctrl-C arrives during the wait
        return ["cycle-engine (DEPLOYING)"]

    def _savepoint(self, plan: StopPlan) -> tuple[str | None, str]:
        self.calls.append("savepoint")
        return "sp/savepoint-1", ""

    def _cancel(self) -> None:
        self.calls.append("cancel")


def test_a_second_ctrl_c_while_waiting_for_tasks_skips_the_savepoint() -> None:
    lines: list[str] = []
    console = _StopRecorder(lines)
    assert console._stop() != 0
    assert console.calls == ["cancel"]
    assert lines == ["stopping the job (Ctrl-C)",
                     "no savepoint: skipped (Ctrl-C pressed again) (tasks not running: cycle-engine (DEPLOYING))"]


class _FailingSavepoints(JobConsole):
    """A running job whose first savepoints fail with the given Flink reasons, then one succeeds."""

    def __init__(self, lines: list[str], reasons: list[str]) -> None:
        super().__init__(_Job(), StopPlan(savepoint_dir="sp", timeout_s=30), bounded=False, source="file:x",
                         dead_letter_table="dl", print_line=lines.append)  # fmt: skip
        self.reasons = list(reasons)
        self.stop_reason = "SIGTERM"
        self.calls: list[str] = []

    def _status_now(self) -> str:
        return "RUNNING"

    def _tasks_not_running(self) -> list[str]:
        return []

    def _one_savepoint(self, plan, target, interrupts, deadline):
        self.calls.append("savepoint")
        if self.reasons:
            reason = self.reasons.pop(0)
            message = f"org.apache.flink.runtime.checkpoint.CheckpointException: {reason}"
            return None, message, SavepointFailed(message, reason)
        return "sp/savepoint-1", "", None

    def _cancel(self) -> None:
        self.calls.append("cancel")

    def _wait(self, timeout_s: float) -> bool:
        return True


def test_a_savepoint_that_races_a_finishing_task_is_tried_again(monkeypatch) -> None:
    """Stop-with-savepoint right as a bounded source finishes: the TaskManager has finished the task,
    the JobManager not yet ("Task local checkpoint failure"). The savepoint is tried again, not lost."""
    monkeypatch.setattr("cli.console.SAVEPOINT_RETRY_PAUSE_S", 0.0)
    lines: list[str] = []
    console = _FailingSavepoints(lines, ["TASK_CHECKPOINT_FAILURE", "NOT_ALL_REQUIRED_TASKS_RUNNING"])
    assert console._stop() == 0
    assert console.calls == ["savepoint"] * 3
    assert lines == [
        "stopping the job (SIGTERM)", "taking a savepoint in sp",
        "the savepoint failed (org.apache.flink.runtime.checkpoint.CheckpointException: TASK_CHECKPOINT_FAILURE); "
        "trying again",
        "the savepoint failed (org.apache.flink.runtime.checkpoint.CheckpointException: "
        "NOT_ALL_REQUIRED_TASKS_RUNNING); trying again",
        "savepoint: sp/savepoint-1", "job stopped"]  # fmt: skip


def test_a_savepoint_that_fails_for_good_is_not_tried_again() -> None:
    lines: list[str] = []
    console = _FailingSavepoints(lines, ["IO_EXCEPTION"])
    assert console._stop() == 130
    assert console.calls == ["savepoint", "cancel"]
    assert lines[2] == "no savepoint: org.apache.flink.runtime.checkpoint.CheckpointException: IO_EXCEPTION"


def test_the_failure_reason_is_found_in_flinks_cause_chain() -> None:
    """A CheckpointException anywhere in the chain, as itself or as a SerializedThrowable."""
    from py4j.protocol import Py4JJavaError
    from pyflink.java_gateway import get_gateway

    from cli.console import checkpoint_failure_reason

    jvm = get_gateway().jvm
    reason = jvm.org.apache.flink.runtime.checkpoint.CheckpointFailureReason.TASK_CHECKPOINT_FAILURE
    checkpoint = jvm.org.apache.flink.runtime.checkpoint.CheckpointException(reason)

    def failed(cause):
        stop = jvm.org.apache.flink.util.FlinkException("Stop with savepoint operation could not be completed.", cause)
        return Py4JJavaError("stopWithSavepoint", jvm.java.util.concurrent.ExecutionException(stop))

    assert checkpoint_failure_reason(failed(checkpoint)) == "TASK_CHECKPOINT_FAILURE"
    assert checkpoint_failure_reason(failed(jvm.org.apache.flink.util.SerializedThrowable(checkpoint))) == \
        "TASK_CHECKPOINT_FAILURE"
    assert checkpoint_failure_reason(failed(jvm.java.io.IOException("disk full"))) is None
    assert checkpoint_failure_reason(RuntimeError("not from Java")) is None


# --------------------------------------------------------------------------- a job on a cluster (REST API)


class _FakeRest:
    """A Flink REST API serving canned answers: ``routes[(method, path)]`` is a JSON value or a list of
    them (served in turn, the last one repeated); every request is recorded."""

    def __init__(self, routes: dict[tuple[str, str], Any]) -> None:
        import http.server
        import threading

        self.routes = routes
        self.requests: list[tuple[str, str, Any]] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.requests.append((self.command, self.path, body))
                answer = fake.routes.get((self.command, self.path))
                if isinstance(answer, list) and answer and isinstance(answer[0], _Turns):
                    answer = answer[0].next()
                if answer is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Turns:
    """Answers served one after the other, the last one repeated."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)

    def next(self) -> Any:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def _metrics_routes(job: str, vertices: dict[str, dict[str, tuple[float, float]]]) -> dict[tuple[str, str], Any]:
    """Routes of a job whose vertices have metrics {id: (sum, max)}."""
    routes: dict[tuple[str, str], Any] = {}
    for vid, metrics in vertices.items():
        base = f"/jobs/{job}/vertices/{vid}/subtasks/metrics"
        routes[("GET", base)] = [{"id": m} for m in metrics]
        own = [m for m in metrics if ".kinesisanalytics.assetCycle." in m]  # what is asked for: the job's own
        routes[("GET", f"{base}?agg=sum,max&get=" + ",".join(own).replace("+", "%2B"))] = [
            {"id": m, "sum": metrics[m][0], "max": metrics[m][1]} for m in own]
    return routes


def test_own_metric_keys_from_rest_ids() -> None:
    assert own_metric_key("cycle-engine.kinesisanalytics.assetCycle.reason.LATE.deadLetters") == "deadLetters{reason=LATE}"
    assert own_metric_key("parse+validate.kinesisanalytics.assetCycle.recordsIn") == "recordsIn"
    assert own_metric_key("sink__x__Writer.kinesisanalytics.assetCycle.sink.cycle.sinkRetries") == "sinkRetries{sink=cycle}"
    assert own_metric_key("cycle-engine.numRecordsOut") is None


def test_a_cluster_jobs_counters_are_summed_and_gauges_maxed_over_subtasks_and_kept_once_gone() -> None:
    job = "a" * 32
    routes = _metrics_routes(job, {
        "v1": {"parse+validate.kinesisanalytics.assetCycle.recordsIn": (1200.0, 700.0),
               "parse+validate.numRecordsOut": (50.0, 30.0)},
        "v2": {"cycle-engine.kinesisanalytics.assetCycle.cyclesClosedTotal": (17.0, 9.0),
               "cycle-engine.kinesisanalytics.assetCycle.status.COMPLETE.cyclesClosed": (15.0, 8.0),
               "cycle-engine.kinesisanalytics.assetCycle.eventTimeLagMs": (9000.0, 5000.0)},
    })  # fmt: skip
    routes[("GET", f"/jobs/{job}")] = _Turns({"state": "RUNNING", "vertices": [{"id": "v1"}, {"id": "v2"}]},
                                             {"state": "FINISHED", "vertices": [{"id": "v1"}, {"id": "v2"}]})
    routes[("GET", f"/jobs/{job}")] = [routes[("GET", f"/jobs/{job}")]]
    routes[("GET", f"/jobs/{job}/status")] = {"status": "FINISHED"}
    rest = _FakeRest(routes)
    try:
        cluster_job = ClusterJob(rest.url, job)
        counts = cluster_job.counts()
        assert counts.values == {"recordsIn": 1200.0, "cyclesClosedTotal": 17.0, "cyclesClosed{status=COMPLETE}": 15.0,
                                 "eventTimeLagMs": 5000.0}  # fmt: skip
        for key in [k for k in routes if "metrics" in k[1]]:  # the tasks ended: their metrics are gone
            del routes[key]
        assert cluster_job.counts().values == counts.values
        assert cluster_job.ended() and cluster_job.failure() is None
    finally:
        rest.close()


def test_a_cluster_job_is_stopped_with_a_savepoint_cancelled_and_its_failure_read() -> None:
    job = "b" * 32
    rest = _FakeRest({
        ("POST", f"/jobs/{job}/stop"): {"request-id": "r1"},
        ("GET", f"/jobs/{job}/savepoints/r1"): [_Turns(
            {"status": {"id": "IN_PROGRESS"}},
            {"status": {"id": "COMPLETED"}, "operation": {"location": "file:/tmp/sp/savepoint-b-1"}})],
        ("POST", f"/jobs/{'c' * 32}/stop"): {"request-id": "r2"},
        ("GET", f"/jobs/{'c' * 32}/savepoints/r2"): {"status": {"id": "COMPLETED"}, "operation": {"failure-cause": {
            "class": "x", "stack-trace": "java.util.concurrent.CompletionException: x\nCaused by: "
                                         "org.apache.flink.runtime.checkpoint.CheckpointException: Task local checkpoint failure."}}},
        ("PATCH", f"/jobs/{job}?mode=cancel"): {},
        ("GET", f"/jobs/{job}/status"): {"status": "FAILED"},
        ("GET", f"/jobs/{job}/exceptions?maxExceptions=1"): {"exceptionHistory": {"entries": [{
            "stacktrace": "org.apache.flink.runtime.JobException: Recovery is suppressed\nCaused by: "
                          "java.io.IOException: sink failed"}]}},
    })  # fmt: skip
    try:
        request = ClusterJob(rest.url, job).stop_with_savepoint("file:///tmp/sp", drain=True)
        assert not request.done() and request.done()
        assert request.location() == "/tmp/sp/savepoint-b-1"
        assert ("POST", f"/jobs/{job}/stop", {"targetDirectory": "file:///tmp/sp", "drain": True,
                                              "formatType": "CANONICAL"}) in rest.requests  # fmt: skip
        failed = ClusterJob(rest.url, "c" * 32).stop_with_savepoint("file:///tmp/sp", drain=False)
        assert failed.done()
        with pytest.raises(SavepointFailed, match="Task local checkpoint failure") as failure:
            failed.location()
        assert failure.value.reason == "TASK_CHECKPOINT_FAILURE"  # a passing failure: tried again
        ClusterJob(rest.url, job).cancel()
        assert ("PATCH", f"/jobs/{job}?mode=cancel", None) in rest.requests
        assert ClusterJob(rest.url, job).failure() == "java.io.IOException: sink failed"
    finally:
        rest.close()


def test_the_summary_of_a_cluster_run_says_its_figures_are_the_last_reported() -> None:
    counts = JobCounts({"recordsIn": 5467, "cyclesClosedTotal": 113, "cyclesClosed{status=COMPLETE}": 104,
                        "cyclesClosed{status=INVALID}": 9, "deadLetterRecords": 21, "deadLetters{reason=BAD_JSON}": 21})
    assert summary_line(counts, 41.2, "file:/x", "dx.dl", final=False) == (
        "finished in 41.2 s; the cluster last reported 5,467 records in, 113 closed cycles {COMPLETE: 104, "
        "INVALID: 9}, 21 dead letters {BAD_JSON: 21}")
