"""The run console's lines and the local checkpoint bookkeeping, without a job."""

from __future__ import annotations

import os
from pathlib import Path

from cli.checkpoints import latest_checkpoint, prune_checkpoints
from cli.console import (
    JobConsole,
    JobCounts,
    StopPlan,
    describe_event_time,
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


class _Client:
    def get_job_id(self) -> str:
        return "0" * 32


def _sinks(retries: int, wait_ms: float, written: int) -> JobCounts:
    return JobCounts({"sinkRetries{sink=cycles}": retries, "sinkTimeSinceLastWriteMs{sink=cycles}": wait_ms,
                      "sinkRowsWritten{sink=cycles}": written})  # fmt: skip


def test_an_outage_is_said_once_and_its_end_once_even_on_the_last_look_before_stopping() -> None:
    lines: list[str] = []
    console = JobConsole(_Client(), None, StopPlan(), bounded=False, source="file:x", dead_letter_table="dl",
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
        super().__init__(_Client(), None, StopPlan(savepoint_dir="sp", timeout_s=30), bounded=False,
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

    def _cancel(self, result: object) -> None:
        self.calls.append("cancel")


def test_a_second_ctrl_c_while_waiting_for_tasks_skips_the_savepoint(monkeypatch) -> None:
    monkeypatch.setattr("cli.console.reporter_snapshot", lambda job_id: JobCounts())
    lines: list[str] = []
    console = _StopRecorder(lines)
    assert console._stop(result=None) != 0
    assert console.calls == ["cancel"]
    assert lines == ["stopping the job (Ctrl-C)",
                     "no savepoint: skipped (Ctrl-C pressed again) (tasks not running: cycle-engine (DEPLOYING))"]


class _Result:
    def done(self) -> bool:
        return True


class _FailingSavepoints(JobConsole):
    """A running job whose first savepoints fail with the given Flink reasons, then one succeeds."""

    def __init__(self, lines: list[str], reasons: list[str]) -> None:
        super().__init__(_Client(), None, StopPlan(savepoint_dir="sp", timeout_s=30), bounded=False,
                         source="file:x", dead_letter_table="dl", print_line=lines.append)  # fmt: skip
        self.reasons = list(reasons)
        self.stop_reason = "SIGTERM"
        self.calls: list[str] = []

    def _status_now(self) -> str:
        return "RUNNING"

    def _tasks_not_running(self) -> list[str]:
        return []

    def _one_savepoint(self, plan, interrupts, deadline):
        self.calls.append("savepoint")
        if self.reasons:
            reason = self.reasons.pop(0)
            return None, f"org.apache.flink.runtime.checkpoint.CheckpointException: {reason}", RuntimeError(reason)

        return "sp/savepoint-1", "", None

    def _cancel(self, result: object) -> None:
        self.calls.append("cancel")


def test_a_savepoint_that_races_a_finishing_task_is_tried_again(monkeypatch) -> None:
    """Stop-with-savepoint right as a bounded source finishes: the TaskManager has finished the task,
    the JobManager not yet ("Task local checkpoint failure"). The savepoint is tried again, not lost."""
    monkeypatch.setattr("cli.console.reporter_snapshot", lambda job_id: JobCounts())
    monkeypatch.setattr("cli.console.checkpoint_failure_reason", lambda exc: str(exc))
    monkeypatch.setattr("cli.console.SAVEPOINT_RETRY_PAUSE_S", 0.0)
    lines: list[str] = []
    console = _FailingSavepoints(lines, ["TASK_CHECKPOINT_FAILURE", "NOT_ALL_REQUIRED_TASKS_RUNNING"])
    assert console._stop(result=_Result()) == 0
    assert console.calls == ["savepoint"] * 3
    assert lines == [
        "stopping the job (SIGTERM)", "taking a savepoint in sp",
        "the savepoint failed (org.apache.flink.runtime.checkpoint.CheckpointException: TASK_CHECKPOINT_FAILURE); "
        "trying again",
        "the savepoint failed (org.apache.flink.runtime.checkpoint.CheckpointException: "
        "NOT_ALL_REQUIRED_TASKS_RUNNING); trying again",
        "savepoint: sp/savepoint-1", "job stopped"]  # fmt: skip


def test_a_savepoint_that_fails_for_good_is_not_tried_again(monkeypatch) -> None:
    monkeypatch.setattr("cli.console.reporter_snapshot", lambda job_id: JobCounts())
    monkeypatch.setattr("cli.console.checkpoint_failure_reason", lambda exc: str(exc))
    lines: list[str] = []
    console = _FailingSavepoints(lines, ["IO_EXCEPTION"])
    assert console._stop(result=_Result()) == 130
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
