"""`asset-cycle run`: run the Flink job locally (simulated fleet by default, Web UI printed at start)."""

from __future__ import annotations

import argparse

from cli.console import DEFAULT_PROGRESS_S, DEFAULT_STOP_TIMEOUT_S
from cli.run_plan import (
    DEFAULT_METRICS_PORT,
    DEFAULT_REST_PORT,
    DEFAULT_SERVE_PORT,
    DEMO_REDIS_PREFIX,
    DEMO_SCHEMA,
    DEMO_SEED,
    DEMO_SPEED,
    DEMO_TRUCKS,
    LOCAL_CHECKPOINT_INTERVAL_MS,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `run` sub-command."""
    parser = subparsers.add_parser(
        "run",
        help="run the Flink job on the local minicluster",
        description="Run the cycle job locally and report what it does (state changes, progress, a summary at "
        "the end of a bounded input). Default: the demo, a simulated fleet at 30x real time into schema demo, "
        "reference data seeded into the local PostgreSQL/Redis (started when none answers), tables created, "
        "Flink Web UI on 127.0.0.1. --source file:PATH replays a bundle or .jsonl file (schema dx); --source "
        "kinesis reads a stream. Ctrl-C or SIGTERM stops it (with --savepoint-dir: with a savepoint); "
        "--resume continues from the latest retained checkpoint after a crash.",
    )
    add_run_arguments(parser)
    parser.set_defaults(func=_run)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``asset-cycle run``."""
    src = parser.add_argument_group("source")
    src.add_argument("--source", default=None,
                     help="simulator (the demo's default) | file:PATH (a bundle directory or .jsonl file) | kinesis")
    src.add_argument("--monitor-s", type=float, default=None, metavar="S",
                     help="with --source file:DIR: watch DIR for new files every S seconds (unbounded; the files "
                          "already read are part of checkpoints and savepoints)")
    src.add_argument("--trucks", type=int, default=None, help=f"simulator: trucks per site (default {DEMO_TRUCKS})")
    src.add_argument("--sites", type=int, default=None, help="simulator: sites (default 1)")
    src.add_argument("--speed", type=float, default=None,
                     help=f"simulator: simulated seconds per wall-clock second (default {DEMO_SPEED:g}, so event time "
                          "runs ahead of the clock; 0 = as fast as possible)")
    src.add_argument("--seed", type=int, default=None, help=f"simulator: random seed (default {DEMO_SEED})")
    src.add_argument("--degraded", action="store_true",
                     help="simulator: realistic degradations (duplicates, disorder, gaps, malformed lines)")
    src.add_argument("--stream-arn", default=None, help="kinesis: the stream ARN (else SourceConfig stream.arn)")
    src.add_argument("--aws-region", default=None, help="kinesis: AWS region (default: from the stream ARN)")
    src.add_argument("--aws-endpoint", default=None, help="kinesis: endpoint URL, e.g. a local emulator's")
    src.add_argument("--init-position", default=None, choices=("LATEST", "TRIM_HORIZON", "AT_TIMESTAMP"),
                     help="kinesis: where a job without state starts reading (default LATEST)")
    out = parser.add_argument_group("tables and reference data")
    out.add_argument("--schema", default=None,
                     help=f"PostgreSQL schema of the tables (default: {DEMO_SCHEMA} for the simulator, dx otherwise, "
                          "or SinkConfig schema)")
    out.add_argument("--redis-prefix", default=None,
                     help=f"Redis key prefix of the region hashes (default: {DEMO_REDIS_PREFIX!r} for the simulator, "
                          "none otherwise)")
    out.add_argument("--reference-poll-s", type=float, default=None, metavar="S",
                     help="poll reference data every S s (0 = load once; demo default 10, file default 0)")
    out.add_argument("--no-seed", action="store_true",
                     help="do not seed the simulator's or bundle's reference data into PostgreSQL/Redis")
    out.add_argument("--local-properties", metavar="FILE", default=None,
                     help="MSF-shaped application_properties.json to use locally (the production graph)")
    out.add_argument("--config", metavar="ENGINE_JSON", default=None, help="engine thresholds JSON")
    st = parser.add_argument_group("state, stop and resume")
    st.add_argument("--checkpoint-interval", type=int, default=None, metavar="MS",
                    help=f"checkpoint interval in ms (local default {LOCAL_CHECKPOINT_INTERVAL_MS})")
    st.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                    help="where checkpoints are kept (default .checkpoints/<schema> in the project; the latest is "
                         "retained when the job is cancelled or killed)")
    st.add_argument("--resume", action="store_true",
                    help="restore from the latest retained checkpoint in the checkpoint directory (after a crash, "
                         "kill or cancel)")
    st.add_argument("--savepoint-dir", default=None, metavar="DIR",
                    help="stop with a savepoint here (at the end of --duration-s, on Ctrl-C or SIGTERM)")
    st.add_argument("--from-savepoint", default=None, metavar="PATH", help="restore from a savepoint or checkpoint")
    st.add_argument("--drain", action="store_true",
                    help="with --savepoint-dir: advance to the end of event time before the savepoint (fires every "
                         "timer as at the end of a file; for a final stop, not a pause)")
    st.add_argument("--stop-timeout-s", type=float, default=DEFAULT_STOP_TIMEOUT_S, metavar="S",
                    help=f"give up on the savepoint after S s and cancel (default {DEFAULT_STOP_TIMEOUT_S:g})")
    st.add_argument("--duration-s", type=float, default=None, metavar="S", help="stop the job after S seconds")
    fl = parser.add_argument_group("Flink")
    fl.add_argument("--cluster", action="store_true",
                    help="submit the job to the session cluster of `asset-cycle cluster up` instead of the local "
                         "minicluster (through the job's entry point, as the Docker image runs it) and follow it "
                         "through its REST API")
    fl.add_argument("--jobmanager", default=None, metavar="HOST:PORT",
                    help="like --cluster, for the Flink session cluster whose REST API is at HOST:PORT (it must "
                         "share this machine's file system for checkpoints and savepoints)")
    fl.add_argument("--parallelism", type=int, default=None, metavar="N",
                    help="parallelism of every operator (default: 1 in thread mode, where the Python operators "
                         "of every subtask share one interpreter; the number of cores with --process-mode; on a "
                         "cluster every task slot, each TaskManager running its own interpreter)")
    fl.add_argument("--process-mode", action="store_true",
                    help="python.execution-mode=process (default thread: 5-20x faster)")
    fl.add_argument("--state-backend", choices=("hashmap", "rocksdb"), default=None,
                    help="keyed state backend (default hashmap)")
    fl.add_argument("--rest-port", type=int, default=None, metavar="PORT",
                    help=f"Flink Web UI port on 127.0.0.1 (default {DEFAULT_REST_PORT}, another free port when taken)")
    fl.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                    help=f"Prometheus metrics port (demo default {DEFAULT_METRICS_PORT}; FlinkConfig metrics.port with "
                         "properties; not used on MSF)")
    fl.add_argument("--metrics-host", default=None, metavar="ADDRESS",
                    help="address the metrics port binds to (default 127.0.0.1; 0.0.0.0 lets a Prometheus on "
                         "another host scrape it)")
    fl.add_argument("--jar-dir", default=None, metavar="DIR", help="where the job's jar is (default .jars/)")
    web = parser.add_argument_group("live view")
    web.add_argument("--serve", action="store_true",
                     help="also serve the live operations view (as `asset-cycle serve`: web page and read-only API "
                          "over this run's tables) on 127.0.0.1 while the job runs; its URL is printed")
    web.add_argument("--serve-port", type=int, default=None, metavar="PORT",
                     help=f"the live view's port (default {DEFAULT_SERVE_PORT}, another free port when taken)")
    parser.add_argument("--progress-s", type=float, default=DEFAULT_PROGRESS_S, metavar="S",
                        help=f"print a progress line every S seconds (default {DEFAULT_PROGRESS_S:g}; 0 = never)")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="also log what is set up (settings, Flink configuration; passwords masked)")


def _run(args: argparse.Namespace) -> int:
    # deferred: the job's modules (PyFlink, the engine, the simulator) load only when a job runs
    from cli.local_run import run_locally

    return run_locally(args)  # its errors are UserErrors: one line, no traceback
