"""The Flink job's entry point: MSF's ``main.py``, the FlinkDeployment's ``-pym job.main`` and
``python -m job.main --local-properties FILE``.

``main()`` reads the application properties (on MSF ``/etc/flink/application_properties.json``;
elsewhere ``--local-properties FILE`` or ``ASSET_CYCLE_LOCAL=1``, see job.properties) and runs the job
they describe until it ends: ``run_job(settings)``, which is ``build_job(settings)`` then submit and
wait. ``asset-cycle run`` (cli.local_run) resolves its options into the same AppSettings and runs
the job ``build_job`` returns on the local minicluster, with a console that reports and stops it.

``build_job``: the source ``SourceConfig`` names (Kinesis, a file or a watched directory, the fleet
simulator), reference data polled from PostgreSQL and Redis (or, off MSF with
``reference.poll.interval.s`` 0, loaded once before the job starts) and the JDBC sinks.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.table import StreamTableEnvironment

from job.flink_env import FlinkEnvError
from job.logging_setup import FORMAT_ENV, LEVEL_ENV, quiet_third_party_loggers, setup_logging
from job.pipeline import AssembledJob, assemble, bounded_reference_stream, polling_reference_stream
from job.properties import MSF_PROPERTIES_PATH, load_settings, properties_path
from job.reference import ReferenceConnector, load_reference_snapshot
from job.settings import AppSettings, SinkSettings, postgres_settings, redis_settings
from job.sinks import JdbcTarget, SinkSet
from job.sources import SourceError, raw_source
from stores.connections import PostgresSettings, jdbc_url_with_tls
from stores.errors import UserError
from stores.postgres import TableNames
from udfs.reference_poller import ReferencePoller

log = logging.getLogger("asset-cycle")

JOB_NAME = "asset-cycle"


class JobError(UserError):
    """A start-up problem of the job, reported as one clear line."""


def table_names(sink: SinkSettings) -> TableNames:
    """The tables SinkConfig names (schema dx unless set); JobError for an invalid name."""
    try:
        return TableNames(schema=sink.schema or "dx", **sink.table_overrides())
    except ValueError as exc:
        raise JobError(f"SinkConfig: {exc}") from exc


def sink_jdbc_url(settings: AppSettings, pg: PostgresSettings) -> str:
    """The JDBC URL the sinks write to: SinkConfig.jdbc.url with the PostgreSQL settings' TLS, or the
    URL of the PostgreSQL settings themselves when SinkConfig has none (local runs)."""
    return jdbc_url_with_tls(settings.sink.jdbc_url, pg) if settings.sink.jdbc_url else pg.jdbc_url()


def build_job(settings: AppSettings, *, on_msf: bool = False) -> AssembledJob:
    """The job graph ``settings`` describe, ready to execute (not submitted). JobError on a problem a
    user can fix (a missing jar, a bad source option, an unreachable store when reference data is
    loaded once)."""
    names = table_names(settings.sink)
    pg, rs = postgres_settings(settings), redis_settings(settings)
    sink = settings.sink
    target = JdbcTarget(sink_jdbc_url(settings, pg), pg.user, pg.password, sink.batch_size, sink.batch_interval_ms,
                        sink.max_retries)  # fmt: skip
    reference = settings.reference
    snapshot = None
    if not on_msf and reference.poll_interval_s == 0:  # a bounded replay: reference data as it is now
        snapshot = load_reference_snapshot(pg, rs, names, reference.redis_key_prefix)
    # on MSF the worker resolves the credentials (secrets); locally the ones resolved here are passed on
    connector = ReferenceConnector(settings, None if on_msf else pg, None if on_msf else rs, names)

    def reference_stream(env: StreamExecutionEnvironment, t_env: StreamTableEnvironment) -> DataStream:
        if snapshot is not None:
            return bounded_reference_stream(env, snapshot)
        return polling_reference_stream(env, t_env, ReferencePoller(connector, reference.poll_interval_s))

    try:
        # simulated time runs ahead of the wall clock when accelerated: no "too far in the future" check
        return assemble(settings, lambda env: SinkSet(env, names, target),
                        lambda env, t_env: raw_source(env, t_env, settings.source), reference_stream,
                        on_msf=on_msf, check_future=settings.source.kind != "simulator")  # fmt: skip
    except (FlinkEnvError, SourceError) as exc:
        raise JobError(str(exc)) from exc


def run_job(settings: AppSettings, *, on_msf: bool = False) -> None:
    """Build the job, submit it and wait until it ends, or only submit it when the submission is
    detached (``flink run -d``), as ``env.execute()`` does."""
    job = build_job(settings, on_msf=on_msf)
    client = job.env.execute_async(JOB_NAME)
    log.info("job %s submitted (%s)", client.get_job_id(), job.source.label)
    if attached(job.env):
        client.get_job_execution_result().result()


def attached(env: StreamExecutionEnvironment) -> bool:
    """Whether the submitter follows the job to its end: false only for a detached ``flink run -d``
    (``execution.attached`` false; the local minicluster and MSF leave it unset or true)."""
    conf = env._j_stream_execution_environment.getConfiguration().toMap()
    return str(conf.get("execution.attached") or "true").lower() != "false"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``--local-properties FILE``: the job's only option (everything else is in the properties)."""
    parser = argparse.ArgumentParser(
        prog="python -m job.main", description="The asset-cycle Flink job, configured by MSF-shaped application "
        f"properties ({MSF_PROPERTIES_PATH} on MSF). Locally, `asset-cycle run` is the command to use.")  # fmt: skip
    parser.add_argument("--local-properties", metavar="FILE", default=None,
                        help="an application_properties.json of MSF's shape to run with (off MSF)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Read the application properties and run the job; a UserError is one line on stderr, exit 2."""
    args = parse_args(argv)
    try:
        path = properties_path(args.local_properties)
        on_msf = path == MSF_PROPERTIES_PATH and not args.local_properties
        # JSON lines on MSF (CloudWatch), text elsewhere, unless ASSET_CYCLE_LOG_FORMAT says otherwise
        setup_logging(level=os.environ.get(LEVEL_ENV) or "INFO",
                      fmt=os.environ.get(FORMAT_ENV) or ("json" if on_msf else "text"))  # fmt: skip
        quiet_third_party_loggers()
        run_job(load_settings(args.local_properties), on_msf=on_msf)
    except UserError as exc:
        print(f"asset-cycle: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
