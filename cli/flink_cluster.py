"""A standalone Flink session cluster on this machine: one JobManager and N TaskManagers, each a JVM of
its own, from the Flink distribution inside the apache-flink wheel (``pyflink/bin``, ``lib``, ``opt``).
``asset-cycle cluster up|status|down`` manage it, ``asset-cycle run --cluster`` submits the job to it,
the cluster test tier and ``bench/cluster_throughput.py`` run on it.

A cluster's directory (``.services/flink-cluster/`` by default; tests and the bench use their own):

* ``conf/config.yaml``: its configuration (``cluster_configuration``), next to the distribution's
  logging files. Every address is 127.0.0.1 (REST, RPC, BLOB, data and metrics query ports).
* ``lib/``: links to the distribution's ``lib/*.jar``, its ``opt/flink-python-*.jar`` (the wheel
  leaves it out of ``lib/``) and the job's uber-jar, so the job's classes are on the cluster's class
  path as in the Docker image (FLINK_LIB_DIR points the scripts there; the wheel is not modified).
* ``log/``: the processes' logs, named by Flink (``flink-asset-cycle-taskexecutor-0-HOST.log``, ...).
* ``cluster.json``: what runs: the REST and RPC ports, slots per TaskManager, the JobManager's and
  each TaskManager's pid.
* ``jobs/``: the properties files of the jobs ``asset-cycle run --cluster`` submitted.

Each process is Flink's ``jobmanager.sh`` / ``taskmanager.sh start-foreground``, started in a
session of its own (its pid is the JVM's and its process group holds anything it starts, such as
process mode's Python workers), so it outlives the command that started it and is stopped by its
process group (``stop``). TaskManagers are started once the JobManager's REST API answers.

Jobs are submitted with the distribution's ``flink run -d -pym job.main --local-properties FILE``:
PythonDriver runs the job's entry point, as the Docker image and the FlinkDeployment do
(``submit_job``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyflink
import yaml

from cli.console import rest_json
from cli.errors import CliError
from cli.local_services import free_local_port, port_free, services_dir
from job.flink_env import DEFAULT_JAR_DIR, required_jars

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
SUBMIT_TIMEOUT_S = 300.0
DEFAULT_REST_PORT = 8081
JOB_ID = re.compile(r"Job has been submitted with JobID ([0-9a-f]{32})")
CONTROL_JVM_OPTIONS = "-XX:TieredStopAtLevel=1"
"""JIT of the JobManager's and the ``flink run`` client's JVMs: the quick compiler (C1) only. They
schedule, coordinate checkpoints and submit, and carry no records, so C2's optimised code gains them
nothing while compiling it kept a second core busy for seconds: on the 200-truck x 24 h bench
(bench/cluster_throughput.py) the JobManager fell from about 3.8 to 1.6 µs of CPU per record and the
client from 5.0 to 3.3 s of CPU. The TaskManagers keep both tiers (records run through their code,
where a long job earns C2's compile time back) with TASKMANAGER_JVM_OPTIONS (docs/deploy.md)."""
TASKMANAGER_JVM_OPTIONS = "-XX:CompileThresholdScaling=10"
"""JIT of the TaskManagers' JVMs: both tiers, with every compile threshold ten times the default, so
that C2 compiles the code that stays hot rather than all that was warm for a moment. Each TaskManager
compiles the same code on its own; on the 200-truck x 24 h bench five times the thresholds cut the
compiler threads from 4.1-4.7 (1 TM) and 9.2-9.8 (2 TMs) to 1.6-1.8 and 3.1-3.2 µs of CPU per record
(and on the 96 h bundle left the Java operators' code as fast as with the default thresholds), and
ten times cut them at 2 TMs from 3.0 to 2.4 µs (docs/deploy.md)."""


class ClusterError(CliError):
    """The cluster cannot be started, reached or used (the message says what to do)."""


def flink_home() -> Path:
    """The Flink distribution inside the installed apache-flink wheel."""
    return Path(pyflink.__file__).resolve().parent


def default_cluster_dir() -> Path:
    """``asset-cycle cluster``'s directory: ``flink-cluster`` in the local services' folder."""
    return services_dir() / "flink-cluster"


def distribution_java_options(home: Path | None = None) -> str:
    """``env.java.opts.all`` of the distribution's config.yaml (the JDK 17 module openings Flink needs)."""
    conf = yaml.safe_load((((home or flink_home()) / "conf" / "config.yaml")).read_text()) or {}
    return str(((conf.get("env") or {}).get("java") or {}).get("opts", {}).get("all") or "")


def cluster_configuration(rest_port: int, rpc_port: int, slots: int, python: str,
                          extra: Mapping[str, str] | None = None) -> dict[str, str]:  # fmt: skip
    """The cluster's config.yaml: every port on 127.0.0.1, ``slots`` slots per TaskManager, the Python
    of this environment for the job's client and its Python operators, JVMs in UTC (as the local
    minicluster), the JobManager and client JVMs with CONTROL_JVM_OPTIONS, the TaskManagers' with
    TASKMANAGER_JVM_OPTIONS, a lost TaskManager noticed within seconds, then ``extra`` on top."""
    conf = {
        "jobmanager.rpc.address": "127.0.0.1",
        "jobmanager.rpc.port": str(rpc_port),
        "jobmanager.bind-host": "127.0.0.1",
        "jobmanager.memory.process.size": "1024m",
        "taskmanager.host": "127.0.0.1",
        "taskmanager.bind-host": "127.0.0.1",
        "taskmanager.numberOfTaskSlots": str(slots),
        "taskmanager.memory.process.size": "1728m",
        "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1",
        "rest.port": str(rest_port),
        "parallelism.default": "1",
        "python.executable": python,
        "python.client.executable": python,
        "env.java.opts.all": f"{distribution_java_options()} -Duser.timezone=UTC".strip(),
        "env.java.opts.jobmanager": CONTROL_JVM_OPTIONS,
        "env.java.opts.client": CONTROL_JVM_OPTIONS,
        "env.java.opts.taskmanager": TASKMANAGER_JVM_OPTIONS,
        # a killed TaskManager is noticed after two failed heartbeats (2 s apart), not after 50 s
        "heartbeat.interval": "2000",
        "heartbeat.timeout": "20000",
        "cluster.registration.error-delay": "1000",
        # the REST API's metrics (the run console's progress) at most a second old
        "metrics.fetcher.update-interval": "1000",
    }
    conf.update(extra or {})
    return conf


@dataclass
class ClusterState:
    """What a cluster runs (``cluster.json``)."""

    rest_port: int
    rpc_port: int
    slots: int
    jobmanager: int = 0
    taskmanagers: list[int] = field(default_factory=list)
    started: float = 0.0


@dataclass(frozen=True)
class ClusterStatus:
    """A cluster as ``status`` sees it: its processes and what its REST API says."""

    rest_url: str
    jobmanager_alive: bool
    taskmanagers_alive: int
    taskmanagers_registered: int | None  # None: the REST API does not answer
    slots_total: int | None
    slots_available: int | None
    jobs_running: int | None
    log_dir: Path

    def describe(self) -> str:
        """One line per fact: the Web UI, processes, slots, running jobs, logs."""
        if not self.jobmanager_alive:
            return "no cluster running"
        registered = ("REST API not answering" if self.taskmanagers_registered is None
                      else f"{self.taskmanagers_registered} registered")  # fmt: skip
        lines = [f"Flink Web UI / REST: {self.rest_url}",
                 f"TaskManagers: {self.taskmanagers_alive} running, {registered}"]  # fmt: skip
        if self.slots_total is not None:
            lines.append(f"slots: {self.slots_total} ({self.slots_available} free); jobs running: {self.jobs_running}")
        lines.append(f"logs: {self.log_dir}")
        return "\n".join(lines)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (and is not a zombie)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class FlinkCluster:
    """The session cluster whose directory is ``root`` (see the module docstring)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root else default_cluster_dir()
        self.conf_dir = self.root / "conf"
        self.lib_dir = self.root / "lib"
        self.log_dir = self.root / "log"
        self.jobs_dir = self.root / "jobs"
        self.state_file = self.root / "cluster.json"
        self._env: dict[str, str] = {}
        self._tied = False

    # -- state -----------------------------------------------------------------------------------
    def state(self) -> ClusterState | None:
        """What ``cluster.json`` says runs (None when nothing was started)."""
        try:
            return ClusterState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _save(self, state: ClusterState) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state)))
        tmp.replace(self.state_file)

    def running(self) -> bool:
        """Whether this cluster's JobManager runs."""
        state = self.state()
        return state is not None and alive(state.jobmanager)

    @property
    def rest_url(self) -> str:
        state = self.state()
        if state is None:
            raise ClusterError(f"no cluster in {self.root}: start one with `asset-cycle cluster up`")
        return f"http://127.0.0.1:{state.rest_port}"

    def rest(self, path: str, method: str = "GET", body: Any = None) -> Any:
        """A call to this cluster's REST API (None when it does not answer)."""
        return rest_json(self.rest_url, path, timeout_s=5.0, method=method, body=body)

    # -- start -----------------------------------------------------------------------------------
    def start(self, taskmanagers: int = 1, slots: int = 1, rest_port: int | None = None,
              env: Mapping[str, str] | None = None, conf: Mapping[str, str] | None = None,
              jar_dir: Path | None = None, timeout_s: float = START_TIMEOUT_S, tied: bool = False) -> ClusterState:  # fmt: skip
        """Start the JobManager, then ``taskmanagers`` TaskManagers of ``slots`` slots, and wait until
        they are registered. ``rest_port``: the REST port (default 8081 when free, else any free port;
        an explicit one must be free). ``env``: added to the processes' environment (e.g. AWS
        credentials for the Kinesis source). ``tied``: the processes are killed when this process
        dies (a test's cluster; ``asset-cycle cluster up``'s outlives the command). Stops what it
        started when something does not come up."""
        if taskmanagers < 0 or slots < 1:
            raise ClusterError("a cluster needs at least 0 TaskManagers and 1 slot per TaskManager")
        if self.running():
            raise ClusterError(f"a cluster runs already ({self.rest_url}): `asset-cycle cluster down` stops it")
        if rest_port is None:
            rest_port = DEFAULT_REST_PORT if port_free(DEFAULT_REST_PORT) else free_local_port()
        elif not port_free(rest_port):
            raise ClusterError(f"port {rest_port} is in use: pass another --rest-port")
        jar = required_jars(jar_dir or DEFAULT_JAR_DIR)[0]
        state = ClusterState(rest_port=rest_port, rpc_port=free_local_port(), slots=slots, started=time.time())
        self._write_configuration(state, jar, conf or {})
        self._env = dict(env or {})
        self._tied = tied
        self._save(state)
        try:
            state.jobmanager = self._launch("jobmanager")
            self._save(state)
            self._wait(lambda: self.rest("/overview") is not None, timeout_s, "the JobManager's REST API")
            for _ in range(taskmanagers):
                self.add_taskmanager(wait=False)
            self.wait_for_taskmanagers(taskmanagers, timeout_s)
        except BaseException:
            self.stop()
            raise
        return self.state() or state

    def _write_configuration(self, state: ClusterState, jar: Path, extra: Mapping[str, str]) -> None:
        home = flink_home()
        for directory in (self.conf_dir, self.lib_dir, self.log_dir, self.jobs_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for old in self.lib_dir.iterdir():
            old.unlink()
        for source in [*sorted((home / "lib").glob("*.jar")), *sorted((home / "opt").glob("flink-python-*.jar")), jar]:
            (self.lib_dir / source.name).symlink_to(source.resolve())
        for name in ("log4j-console.properties", "log4j-cli.properties", "log4j.properties", "logback-console.xml"):
            if (home / "conf" / name).is_file():
                shutil.copyfile(home / "conf" / name, self.conf_dir / name)
        conf = cluster_configuration(state.rest_port, state.rpc_port, state.slots, sys.executable, extra)
        (self.conf_dir / "config.yaml").write_text(yaml.safe_dump(conf, default_flow_style=False, sort_keys=True))

    def script_env(self) -> dict[str, str]:
        """The environment of Flink's scripts for this cluster (its conf, lib and log directories)."""
        return {**os.environ, **self._env, "FLINK_CONF_DIR": str(self.conf_dir), "FLINK_LIB_DIR": str(self.lib_dir),
                "FLINK_LOG_DIR": str(self.log_dir), "FLINK_PID_DIR": str(self.root / "pid"),
                "FLINK_IDENT_STRING": "asset-cycle", "STD_REDIRECT_TO_FILE": "true"}  # fmt: skip

    def _launch(self, role: str) -> int:
        """``<role>.sh start-foreground`` in a session of its own; returns its pid (the JVM's)."""
        script = flink_home() / "bin" / f"{role}.sh"
        with open(self.log_dir / f"{role}-launch.out", "ab") as out:
            proc = subprocess.Popen([str(script), "start-foreground"], env=self.script_env(), cwd=self.root,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=_die_with_parent if self._tied else None)  # fmt: skip
        return proc.pid

    def add_taskmanager(self, wait: bool = True, timeout_s: float = START_TIMEOUT_S) -> int:
        """Start one more TaskManager (e.g. to replace a lost one); returns its pid. ``wait``: until
        the JobManager has registered it."""
        state = self.state()
        if state is None or not alive(state.jobmanager):
            raise ClusterError(f"no cluster runs in {self.root}")
        known = self.taskmanager_ids()
        pid = self._launch("taskmanager")
        state.taskmanagers = [p for p in state.taskmanagers if alive(p)] + [pid]
        self._save(state)
        if wait:
            self._wait(lambda: bool(self.taskmanager_ids() - known), timeout_s, "the new TaskManager to register")
        return pid

    def taskmanager_ids(self) -> set[str]:
        """Ids of the TaskManagers the JobManager knows (a lost one until its heartbeats have failed)."""
        listing = self.rest("/taskmanagers") or {}
        return {str(tm.get("id")) for tm in listing.get("taskmanagers", [])}

    def registered_taskmanagers(self) -> int | None:
        """How many TaskManagers the JobManager knows (None when its REST API does not answer)."""
        overview = self.rest("/overview")
        return None if overview is None else int(overview.get("taskmanagers", 0))

    def wait_for_taskmanagers(self, count: int, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until exactly ``count`` TaskManagers are registered (a lost one is unregistered after
        its heartbeats fail)."""
        self._wait(lambda: self.registered_taskmanagers() == count, timeout_s, f"{count} registered TaskManager(s)")

    def _wait(self, condition: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            state = self.state()
            if state is not None and not alive(state.jobmanager):
                raise ClusterError(f"the JobManager exited while waiting for {what} (logs: {self.log_dir})")
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out after {timeout_s:.0f} s waiting for {what} (logs: {self.log_dir})")
            time.sleep(0.25)

    # -- stop ------------------------------------------------------------------------------------
    def kill_taskmanager(self, pid: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (default SIGKILL, as a crashed machine) to a TaskManager and what it started."""
        state = self.state()
        if state is None or pid not in state.taskmanagers:
            raise ClusterError(f"{pid} is not a TaskManager of the cluster in {self.root}")
        _signal_group(pid, sig)
        if sig == signal.SIGKILL:
            _reap(pid, STOP_TIMEOUT_S)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
        """Stop every process of this cluster (SIGTERM, then SIGKILL after ``timeout_s``); returns what
        was stopped. Only the pids recorded in ``cluster.json`` are signalled."""
        state = self.state()
        if state is None:
            return []
        stopped = []
        processes = [(f"TaskManager {pid}", pid) for pid in state.taskmanagers] + [("JobManager", state.jobmanager)]
        running = [(name, pid) for name, pid in processes if alive(pid)]
        for _, pid in running:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for name, pid in running:
            if not _reap(pid, max(0.0, deadline - time.monotonic())):
                _signal_group(pid, signal.SIGKILL)
                _reap(pid, 10.0)
            stopped.append(name)
        for _, pid in processes:  # a process group's other members (process mode's Python workers)
            _signal_group(pid, signal.SIGKILL)
        self.state_file.unlink(missing_ok=True)
        return stopped

    def status(self) -> ClusterStatus:
        """The cluster's processes and what its REST API says."""
        state = self.state()
        if state is None:
            return ClusterStatus("", False, 0, None, None, None, None, self.log_dir)
        overview = self.rest("/overview") if alive(state.jobmanager) else None
        get = (lambda key: None if overview is None else int(overview.get(key, 0)))  # noqa: E731
        return ClusterStatus(self.rest_url, alive(state.jobmanager), sum(alive(p) for p in state.taskmanagers),
                             get("taskmanagers"), get("slots-total"), get("slots-available"), get("jobs-running"),
                             self.log_dir)  # fmt: skip

    # -- jobs ------------------------------------------------------------------------------------
    def submit_job(self, properties: Path, env: Mapping[str, str] | None = None) -> str:
        """Submit the job ``properties`` describe (see submit_job)."""
        if not self.running():
            raise ClusterError(f"no cluster runs in {self.root}: start one with `asset-cycle cluster up`")
        return submit_job(properties, self.conf_dir, self.lib_dir, self.log_dir, env)


def _die_with_parent() -> None:
    """In a child before exec: SIGKILL it when its parent dies (Linux prctl PR_SET_PDEATHSIG; the
    shell script execs the JVM, which keeps it)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


def _signal_group(pid: int, sig: int) -> None:
    """Signal the process group led by ``pid`` (each cluster process leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _reap(pid: int, timeout_s: float) -> bool:
    """Wait until ``pid`` has exited (reaping it when it is our child); False on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:  # not our child: its parent reaps it
            if not alive(pid):
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def client_conf_dir(rest_host: str, rest_port: int, into: Path) -> Path:
    """A configuration directory for ``flink run`` against the REST API at ``rest_host:rest_port`` (a
    cluster not started here: ``asset-cycle run --jobmanager HOST:PORT``)."""
    into.mkdir(parents=True, exist_ok=True)
    conf = {"rest.address": rest_host, "rest.port": str(rest_port),
            "env.java.opts.all": distribution_java_options(), "env.java.opts.client": CONTROL_JVM_OPTIONS}  # fmt: skip
    (into / "config.yaml").write_text(yaml.safe_dump(conf, default_flow_style=False))
    for name in ("log4j-cli.properties", "log4j.properties"):
        if (flink_home() / "conf" / name).is_file():
            shutil.copyfile(flink_home() / "conf" / name, into / name)
    return into


def submit_job(properties: Path, conf_dir: Path, lib_dir: Path | None = None, log_dir: Path | None = None,
               env: Mapping[str, str] | None = None, timeout_s: float = SUBMIT_TIMEOUT_S) -> str:  # fmt: skip
    """Submit the job an application properties file describes, detached, through the job's entry
    point as the Docker image and the FlinkDeployment run it (PythonDriver ``-pym job.main``), with
    the distribution's ``flink run`` and the client configuration in ``conf_dir``; returns the job id.
    ``env``: added to the client's environment (PostgreSQL and Redis credentials are resolved there)."""
    command = [str(flink_home() / "bin" / "flink"), "run", "--detached", "-pyclientexec", sys.executable,
               "-pym", "job.main", "--local-properties", str(Path(properties).resolve())]  # fmt: skip
    script_env = {**os.environ, **(env or {}), "FLINK_CONF_DIR": str(conf_dir)}
    if lib_dir is not None:
        script_env["FLINK_LIB_DIR"] = str(lib_dir)
    if log_dir is not None:
        script_env["FLINK_LOG_DIR"] = str(log_dir)
    try:
        proc = subprocess.run(command, env=script_env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout_s)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"`flink run` did not submit the job within {timeout_s:.0f} s") from exc
    output = proc.stdout + proc.stderr
    found = JOB_ID.search(output)
    if proc.returncode != 0 or not found:
        raise ClusterError(f"the job was not submitted: {submission_error(output)}")
    return found.group(1)


def submission_error(output: str) -> str:
    """The one line of ``flink run``'s output that says why a submission failed: the job's own error
    (``asset-cycle: error: ...``), else the innermost Java cause, else the last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("asset-cycle: error:"):
            return line[len("asset-cycle: error:"):].strip()
    causes = [line[len("Caused by: "):] for line in lines if line.startswith("Caused by: ")]
    return (causes[-1] if causes else lines[-1] if lines else "no output")[:500]
