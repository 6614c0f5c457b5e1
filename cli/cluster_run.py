"""``asset-cycle run --cluster`` / ``--jobmanager HOST:PORT``: the job on a Flink session cluster.

The run plan is the local run's (cli.run_plan, the stores prepared by cli.local_run); then:

1. the cluster: ``asset-cycle cluster up``'s (cli.flink_cluster, its configuration directory) or
   any session cluster whose REST API is at HOST:PORT (a client configuration written for it);
2. the plan's settings for it (parallelism all its slots unless given, no local ports;
   ``run_plan.for_cluster``) written as an application properties file, with the resolved
   PostgreSQL URL (credentials stay in the environment);
3. that file submitted detached through the job's entry point, as the Docker image and the
   FlinkDeployment run it (``flink run -d -pym job.main --local-properties FILE``);
4. the job followed through the cluster's REST API by the same console as a local run
   (progress, Ctrl-C / SIGTERM / --duration-s with or without a savepoint, failures).

Checkpoint and savepoint directories are paths of this machine: the cluster must share its file
system (a cluster started here does).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from cli.checkpoints import latest_checkpoint
from cli.console import ClusterJob, JobConsole, StopPlan, rest_json
from cli.errors import CliError
from cli.flink_cluster import FlinkCluster, client_conf_dir, submit_job
from cli.local_services import services_dir
from cli.run_plan import Plan, for_cluster
from job.main import sink_jdbc_url
from job.properties import property_groups, write_properties
from job.sources import source_label
from stores.connections import PostgresSettings
from stores.postgres import TableNames


def cluster_target(args: argparse.Namespace) -> tuple[str, Path, FlinkCluster | None]:
    """(REST URL, client configuration directory, the cluster when it is ours) of --cluster /
    --jobmanager HOST:PORT; CliError when it does not answer."""
    if args.jobmanager:
        host, _, port = args.jobmanager.rpartition(":")
        if not host or not port.isdigit():
            raise CliError(f"--jobmanager must be HOST:PORT (the cluster's REST address), got {args.jobmanager!r}")
        url = f"http://{host}:{port}"
        conf_dir = client_conf_dir(host, int(port), services_dir() / "flink-client" / f"{host}-{port}")
        cluster = None
    else:
        cluster = FlinkCluster()
        if not cluster.running():
            raise CliError("no cluster is running: start one with `asset-cycle cluster up` (or give --jobmanager "
                           "HOST:PORT)")  # fmt: skip
        url, conf_dir = cluster.rest_url, cluster.conf_dir
    if rest_json(url, "/overview") is None:
        raise CliError(f"the cluster's REST API does not answer at {url}")
    return url, conf_dir, cluster


def run_on_cluster(args: argparse.Namespace, plan: Plan, names: TableNames, pg: PostgresSettings) -> int:
    """Submit the plan's job to the cluster and follow it (see the module docstring); the exit code."""
    url, conf_dir, cluster = cluster_target(args)
    slots = int((rest_json(url, "/overview") or {}).get("slots-total", 0))
    plan = for_cluster(plan, slots)
    settings = plan.settings
    settings = replace(settings, sink=replace(settings.sink, jdbc_url=sink_jdbc_url(settings, pg)))
    fl = settings.flink
    if plan.resume:
        print(f"resuming from checkpoint {fl.from_savepoint}", flush=True)
    jobs_dir = cluster.jobs_dir if cluster else services_dir() / "flink-client" / "jobs"
    properties = write_properties(property_groups(settings),
                                  jobs_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{names.schema}.json")  # fmt: skip
    log_dir = cluster.log_dir if cluster else None
    job_id = submit_job(properties, conf_dir, cluster.lib_dir if cluster else None, log_dir)
    print(f"Flink Web UI: {url} (parallelism {fl.parallelism}; job properties: {properties})", flush=True)

    def resume_hint() -> str | None:
        if not plan.bounded and plan.source_kind == "simulator":
            return None
        found = latest_checkpoint(fl.checkpoint_dir) if fl.checkpoint_dir else None
        return f"latest checkpoint: {found} (asset-cycle run --cluster --resume ... continues from it)" if found else None

    console = JobConsole(ClusterJob(url, job_id), StopPlan(fl.savepoint_dir, args.drain, args.stop_timeout_s),
                         bounded=plan.bounded, source=source_label(plan.settings.source),
                         dead_letter_table=f"{names.schema}.{names.table_name('dead_letter')}",
                         progress_s=args.progress_s if args.progress_s > 0 else float("inf"),
                         resume_hint=resume_hint, flink_log=str(log_dir) if log_dir else None)  # fmt: skip
    console.install_signal_handlers()
    return console.watch(args.duration_s)

