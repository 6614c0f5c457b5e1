"""The cluster tier's shared cluster: one JobManager and three TaskManagers of one slot each (separate
JVMs, each with its own Python interpreter), started from the Flink distribution of the apache-flink
wheel in a directory of the test session's own, on free ports of 127.0.0.1, with the Kinesis
emulator's test credentials in the TaskManagers' environment. It is shared by every test of the tier
(a test that kills a TaskManager starts a replacement) and stopped at the end of the session, also
when a test fails; its processes die with the test process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cli.flink_cluster import FlinkCluster
from cli.local_services import free_local_port
from stores.postgres import TableNames
from tests.job.kinesis_emulator import ACCESS_KEY, SECRET_KEY, KinesisEmulator
from tests.job.reliability_support import throwaway_schema

TASKMANAGERS = 3


@pytest.fixture(scope="session")
def flink_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlinkCluster]:
    cluster = FlinkCluster(tmp_path_factory.mktemp("flink-cluster"))
    cluster.start(TASKMANAGERS, slots=1, rest_port=free_local_port(), tied=True,
                  env={"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})  # fmt: skip
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kinesis() -> Iterator[KinesisEmulator]:
    with KinesisEmulator() as emulator:
        yield emulator


@pytest.fixture
def extra_schema(pg_dsn: str) -> Iterator[TableNames]:
    """A second throwaway schema (dropped afterwards, with everything in it)."""
    with throwaway_schema(pg_dsn) as names:
        yield names
