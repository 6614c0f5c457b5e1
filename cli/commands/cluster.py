"""`asset-cycle cluster`: a standalone Flink session cluster on this machine (cli.flink_cluster)."""

from __future__ import annotations

import argparse

from cli.flink_cluster import FlinkCluster


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `cluster` sub-command."""
    parser = subparsers.add_parser(
        "cluster",
        help="start, show or stop a Flink session cluster of separate processes on this machine",
        description="A standalone Flink session cluster from the Flink distribution in the apache-flink wheel: one "
        "JobManager and N TaskManagers, each a JVM of its own (in thread mode each TaskManager runs its own Python "
        "interpreter, which is how the job's Python scales past one core), bound to 127.0.0.1, with its "
        "configuration, logs and pids in .services/flink-cluster/ and the job's jar on its class path. "
        "`asset-cycle run --cluster` submits the job to it. The processes get this command's environment (e.g. "
        "AWS credentials for a Kinesis source).",
    )
    parser.add_argument("action", choices=("up", "status", "down"), help="what to do")
    parser.add_argument("--taskmanagers", type=int, default=2, metavar="N", help="up: TaskManagers to start (default 2)")
    parser.add_argument("--slots", type=int, default=1, metavar="S",
                        help="up: task slots per TaskManager (default 1: in thread mode the slots of one TaskManager "
                             "share one Python interpreter)")
    parser.add_argument("--rest-port", type=int, default=None, metavar="PORT",
                        help="up: Web UI / REST port on 127.0.0.1 (default 8081, another free port when taken)")
    parser.add_argument("--jar-dir", default=None, metavar="DIR", help="up: where the job's jar is (default .jars/)")
    parser.set_defaults(func=_cluster)


def _cluster(args: argparse.Namespace) -> int:
    cluster = FlinkCluster()
    if args.action == "up":
        state = cluster.start(args.taskmanagers, args.slots, args.rest_port, jar_dir=args.jar_dir)
        print(f"Flink session cluster up: 1 JobManager, {len(state.taskmanagers)} TaskManager(s) x {state.slots} "
              f"slot(s)")  # fmt: skip
        print(cluster.status().describe())
        print("submit the job with: asset-cycle run --cluster ...; stop the cluster with: asset-cycle cluster down")
    elif args.action == "status":
        print(cluster.status().describe())
    else:
        stopped = cluster.stop()
        print("stopped: " + ", ".join(stopped) if stopped else "no cluster was running")
    return 0
