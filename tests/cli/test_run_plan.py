"""The local run plan: `asset-cycle run`'s options resolved into the job's settings (no Flink runs)."""

from __future__ import annotations

import argparse

import pytest

from cli import run_plan
from cli.main import build_parser

# --------------------------------------------------------------------------- run plans


def _args(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv])


def test_demo_plan_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("ASSET_CYCLE_LOCAL", raising=False)
    monkeypatch.setattr(run_plan, "MSF_PROPERTIES_PATH", tmp_path / "absent.json")
    plan = run_plan.make_plan(_args([]))
    assert plan.mode == "demo" and plan.source_kind == "simulator" and plan.seed_from == "simulator"
    assert plan.settings.reference.poll_interval_s == 10.0
    assert plan.settings.flink.rest_port == run_plan.DEFAULT_REST_PORT
    assert plan.settings.flink.python_execution_mode == "thread"
    assert plan.settings.flink.parallelism == 1  # thread mode: one interpreter for every subtask
    assert run_plan.make_plan(_args(["--process-mode"])).settings.flink.parallelism is None  # Flink's default
    plan = run_plan.make_plan(_args(["--source", f"file:{tmp_path}", "--process-mode", "--parallelism", "2",
                                 "--checkpoint-interval", "3000", "--from-savepoint", "/sp"]))  # fmt: skip
    assert plan.source_kind == "file" and plan.file_path == str(tmp_path) and plan.seed_from == "bundle"
    assert plan.settings.reference.poll_interval_s == 0.0  # a bounded replay loads reference data once
    fl = plan.settings.flink
    assert (fl.python_execution_mode, fl.parallelism, fl.checkpoint_interval_ms, fl.from_savepoint) == (
        "process", 2, 3000, "/sp")


def test_plan_errors(monkeypatch, tmp_path):
    monkeypatch.delenv("ASSET_CYCLE_LOCAL", raising=False)
    monkeypatch.setattr(run_plan, "MSF_PROPERTIES_PATH", tmp_path / "absent.json")
    with pytest.raises(run_plan.CliError, match="stream ARN"):
        run_plan.make_plan(_args(["--source", "kinesis"]))
    with pytest.raises(run_plan.CliError, match="--source must be"):
        run_plan.make_plan(_args(["--source", "ftp:x"]))
    with pytest.raises(run_plan.CliError, match="needs a path"):
        run_plan.make_plan(_args(["--source", "file:"]))


def test_properties_plan(tmp_path, monkeypatch):
    import json

    props = tmp_path / "p.json"
    props.write_text(json.dumps([
        {"PropertyGroupId": "SourceConfig", "PropertyMap": {"stream.arn": "arn:aws:kinesis:eu-west-1:1:stream/s"}},
        {"PropertyGroupId": "SinkConfig", "PropertyMap": {"jdbc.url": "jdbc:postgresql://h:5432/d"}},
        {"PropertyGroupId": "ReferenceConfig", "PropertyMap": {"redis.host": "r"}},
    ]))  # fmt: skip
    plan = run_plan.make_plan(_args(["--local-properties", str(props)]))
    assert plan.mode == "properties" and plan.source_kind == "kinesis" and not plan.on_msf
    assert plan.settings.source.stream_arn.endswith("stream/s") and plan.seed_from is None and not plan.init_db
