"""The job's operator ids and max parallelism are fixed, so that a savepoint or MSF snapshot restores at
another parallelism with every operator's state: Flink finds an operator's state by its id and splits
keyed state into max-parallelism key groups. Every operator has an explicit uid, except the Table API
tickers of the simulator and the reference poller (their generated ids do not change with the
parallelism; the conversion operator after them is stateless); the uids are the ones docs/deploy.md
lists, for every source; every operator's max parallelism is 128 (job.flink_env.MAX_PARALLELISM)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from job.flink_env import MAX_PARALLELISM
from job.pipeline import assemble, bounded_reference_stream, polling_reference_stream
from job.settings import AppSettings, FlinkSettings, SinkSettings, SourceSettings
from job.sinks import JdbcTarget, SinkSet
from job.sources import raw_source
from stores.postgres import TableNames
from udfs.reference_poller import ReferencePoller

pytestmark = pytest.mark.flink

DEPLOY_DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
ARN = "arn:aws:kinesis:eu-west-1:123456789012:stream/telemetry"
STATELESS_CONVERSION = "TableToDataStream"
"""The Table API's conversion after a ticker: no state, and an id that follows the chaining."""
WITHOUT_UID = {"Source: reference_ticker[]", "Source: simulator_ticker[]", STATELESS_CONVERSION}
"""The only operators whose uid the job cannot set (Table API ``datagen`` tickers and their conversion)."""


def _sources(tmp_path: Path) -> dict[str, SourceSettings]:
    (tmp_path / "telemetry.jsonl").write_text("")
    return {"kinesis": SourceSettings(kind="kinesis", stream_arn=ARN, aws_region="eu-west-1"),
            "file": SourceSettings(kind="file", file_path=str(tmp_path)),
            "watched directory": SourceSettings(kind="file", file_path=str(tmp_path), monitor_interval_s=1.0),
            "simulator": SourceSettings(kind="simulator")}  # fmt: skip


def stream_graph_nodes(source: SourceSettings, parallelism: int, polling: bool) -> list[dict[str, Any]]:
    """Each operator of the job graph (in creation order): name, uid, generated id, max parallelism."""
    from pyflink.java_gateway import get_gateway

    settings = AppSettings(source=source, sink=SinkSettings(), flink=FlinkSettings(parallelism=parallelism))

    def reference(env: Any, t_env: Any) -> Any:
        if polling:
            return polling_reference_stream(env, t_env, ReferencePoller(None, 60.0))
        return bounded_reference_stream(env, [])

    job = assemble(settings, lambda env: SinkSet(env, TableNames(schema="x"), JdbcTarget("jdbc:postgresql://h/x", "u", None)),
                   lambda env, t_env: raw_source(env, t_env, source), reference)  # fmt: skip
    graph = job.env._generate_stream_graph(clear_transformations=True)
    hashes = get_gateway().jvm.org.apache.flink.streaming.api.graph.StreamGraphHasherV2() \
        .traverseStreamGraphAndGenerateHashes(graph)
    nodes = sorted(graph.getStreamNodes().toArray(), key=lambda node: node.getId())
    # the planner numbers its nodes per JVM (``Source: reference_ticker[3]``): the number is not part of the id
    return [{"name": re.sub(r"\[\d+\]$", "[]", str(n.getOperatorName())), "uid": n.getTransformationUID(), "id": bytes(hashes.get(n.getId())).hex(),
             "max_parallelism": n.getMaxParallelism(), "parallelism": n.getParallelism()} for n in nodes]  # fmt: skip


def documented_uids() -> set[str]:
    """The uids in the first column of docs/deploy.md's table of operator uids."""
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    section = text.split("### Operator uids and max parallelism", 1)[1].split("\n#", 1)[0]
    return {uid for row in section.splitlines() if row.startswith("| `")
            for uid in re.findall(r"`([a-z][a-z0-9_-]*)`", row.split("|")[1])}  # fmt: skip


@pytest.mark.parametrize("kind", ["kinesis", "file", "watched directory", "simulator"])
def test_operator_ids_and_max_parallelism_are_the_same_at_any_parallelism(kind: str, tmp_path: Path) -> None:
    source = _sources(tmp_path)[kind]
    polling = kind != "file"
    one, three = (stream_graph_nodes(source, p, polling) for p in (1, 3))
    assert [n["name"] for n in one] == [n["name"] for n in three]
    for a, b in zip(one, three, strict=True):
        assert a["uid"] or a["name"] in WITHOUT_UID, f"{a['name']} has no uid"
        if a["name"] != STATELESS_CONVERSION:
            assert a["id"] == b["id"], f"{a['name']}: its state would not be found at another parallelism"
        assert a["max_parallelism"] == b["max_parallelism"] == (1 if a["name"] == "Source: reference-snapshot"
                                                                else MAX_PARALLELISM), a  # fmt: skip
    assert max(n["parallelism"] for n in three) == 3
    uids = {n["uid"] for n in one if n["uid"]}
    assert uids <= documented_uids(), f"not in docs/deploy.md: {sorted(uids - documented_uids())}"


def test_every_documented_uid_is_an_operator_of_some_graph(tmp_path: Path) -> None:
    uids = set()
    for kind, source in _sources(tmp_path).items():
        uids |= {n["uid"] for n in stream_graph_nodes(source, 1, kind != "file") if n["uid"]}
        uids |= {n["uid"] for n in stream_graph_nodes(source, 1, kind == "file") if n["uid"]}
    assert documented_uids() == uids
