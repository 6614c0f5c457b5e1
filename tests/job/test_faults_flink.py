"""Fault injection (tests.job.faults): the cycle operator and the sink path throw mid-run; Flink
restarts from the last checkpoint and the tables end identical to a failure-free run."""

from __future__ import annotations

import pytest

from tests.job.faults import (
    FAULTS_CHECKPOINTS_ENV,
    FAULTS_DIR_ENV,
    FAULTS_ENV,
    FaultPlan,
    FaultSpecError,
    FaultyEngine,
)
from tests.job.flink_harness import truncate_tables
from tests.job.reliability_support import run_job, snapshot
from workbench.simulator import SimulationSpec, write_simulation

FAULTS = "cycle:700,1100,1500;sink:150,300"
"""Counts are per attempt; each fault also waits for a checkpoint completed in its attempt, so every
restart restores from a checkpoint. Sink counts are envelope rows: with batching a truck's
tmp/status rows are one per batch."""


def test_fault_spec_parsing_and_once_only_markers(tmp_path):
    plan = FaultPlan.parse("cycle: 3, 1 ; sink:2", str(tmp_path))
    assert plan.at("cycle") == {1, 3} and plan.at("sink") == {2} and plan.at("other") == frozenset()
    for bad in ("cycle", "cycle:x", "disk:1", "cycle:0"):
        with pytest.raises(FaultSpecError):
            FaultPlan.parse(bad, str(tmp_path))
    assert FaultPlan.from_env({}) is None  # off by default

    class Engine:
        def on_point(self, *a):
            return "ok"

        other = 5

    engine = FaultyEngine(Engine(), plan)
    with pytest.raises(RuntimeError, match="injected cycle fault at record 1"):
        engine.on_point()
    assert engine.on_point() == "ok" and engine.other == 5
    with pytest.raises(RuntimeError):
        engine.on_point()
    # a restarted attempt (new instance, counts from 0) passes the faults that already fired
    again = FaultyEngine(Engine(), plan)
    assert [again.on_point() for _ in range(4)] == ["ok"] * 4
    assert plan.fired() == ["cycle-1", "cycle-3"]


@pytest.mark.flink
@pytest.mark.services
@pytest.mark.slow
def test_injected_failures_leave_tables_identical_to_a_clean_run(tmp_path, pg_dsn, table_names, monkeypatch, capsys):
    bundle = tmp_path / "bundle"
    # large enough for several parse batches (32k records), so checkpoints complete between them
    stats = write_simulation(SimulationSpec(trucks=60, hours=20, seed=21).degraded(), bundle)

    monkeypatch.delenv(FAULTS_ENV, raising=False)
    clean_run = run_job(bundle, table_names, pg_dsn, checkpoint_dir=tmp_path / "cp0", checkpoint_interval_ms=500,
                        restart_attempts=10, restart_delay_ms=200)  # fmt: skip
    clean = snapshot(pg_dsn, table_names)
    assert clean_run.status == "FINISHED" and not clean_run.failures
    assert len(clean["cycle"]) > 50

    truncate_tables(pg_dsn, table_names)
    monkeypatch.setenv(FAULTS_ENV, FAULTS)
    monkeypatch.setenv(FAULTS_DIR_ENV, str(tmp_path / "markers"))
    monkeypatch.setenv(FAULTS_CHECKPOINTS_ENV, str(tmp_path / "cp1"))
    faulty_run = run_job(bundle, table_names, pg_dsn, migrate=False, checkpoint_dir=tmp_path / "cp1",
                         checkpoint_interval_ms=500, restart_attempts=10, restart_delay_ms=200)  # fmt: skip
    monkeypatch.delenv(FAULTS_ENV)
    plan = FaultPlan.parse(FAULTS, str(tmp_path / "markers"))
    fired = plan.fired()
    faulty = snapshot(pg_dsn, table_names)

    assert faulty_run.status == "FINISHED"
    assert fired == ["cycle-1100", "cycle-1500", "cycle-700", "sink-150", "sink-300"]
    # every fault failed its attempt and Flink started a new one (the operator opened once per
    # attempt), each restored from a newer checkpoint than the one before (a fault waits for one);
    # the REST history, polled every 0.25 s while the minicluster lives, may miss failures of a fast
    # run, so it only bounds them
    attempts = plan.attempts()
    assert len(attempts) == 1 + len(fired), attempts
    assert attempts[0] == 0 and all(a < b for a, b in zip(attempts, attempts[1:], strict=False)), attempts
    assert len(faulty_run.failures) <= len(fired), faulty_run.failures
    # Flink's own word that state came back (REST latest.restored, polled while the job ran): the
    # last attempt, which runs to the end of the file, was restored from a checkpoint at least as new
    # as the one its operator saw at its start (a restart from scratch has no restored checkpoint)
    assert faulty_run.restores and max(faulty_run.restores) >= attempts[-1] > 0, (faulty_run.restores, attempts)
    for kind in ("cycle", "cycle_tmp", "process_info", "dead_letter"):
        assert len(faulty[kind]) == len(set(faulty[kind])), f"{kind}: duplicated rows"
        assert faulty[kind] == clean[kind], f"{kind} differs after injected failures"
    with capsys.disabled():
        print(f"\nfaults: {stats.lines} records, {len(fired)} injected failures, attempts restored from "
              f"checkpoints {attempts[1:]}, recovery ms {faulty_run.recovery_ms()}, "
              f"{faulty_run.completed_checkpoints} checkpoints; clean {clean_run.seconds:.1f} s, "
              f"with faults {faulty_run.seconds:.1f} s; rows: "
              + ", ".join(f"{k}={len(v)}" for k, v in faulty.items()))
