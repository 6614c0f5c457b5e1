"""Builds the StreamExecutionEnvironment (and its Configuration) for local runs and for MSF.

Locally everything is set here: Python execution mode (thread by default: 5-20x faster than process
mode for keyed state), parallelism, exactly-once checkpointing with retained (externalized)
checkpoints, state backend, ``pipeline.jars`` (the job's uber-jar, see deploy.jars),
REST/Web UI port, auto-watermark interval, fixed-delay restarts and the savepoint to restore from,
every port on loopback only (LOOPBACK_CONF), and the job jar's metric reporter
(``assetcycle.metrics.LocalMetricsReporter``: the run console's metric snapshots and, with
``metrics_port``, the Prometheus endpoint on ``metrics_host``, 127.0.0.1 unless widened; Flink's own
Prometheus reporter binds every interface). The minicluster loads reporter factories from the
gateway's class loader, where the job jar is added.

On MSF (``on_msf=True``) the service owns parallelism, checkpointing, restarts, state backend and
the jar (``jarfile`` run option), and from MSF 2.2 on any Flink option set in code that is not on
its "Programmatic Flink configuration properties" list fails the application at start-up: only
options of MSF_PROGRAMMATIC_OPTIONS are set (Python mode, operator chaining, watermark interval),
``enable_checkpointing``/``set_parallelism`` are not called, and the FlinkConfig keys MSF manages
are rejected when the settings are read (job.properties.MSF_MANAGED_FLINK_KEYS).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyflink
from pyflink import java_gateway
from pyflink.common import Configuration
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.java_gateway import get_gateway
from pyflink.util.java_utils import add_jars_to_context_class_loader

from job.settings import FlinkSettings

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JAR_DIR = PROJECT_ROOT / ".jars"
LOCAL_REPORTER_FACTORY = "assetcycle.metrics.LocalMetricsReporterFactory"
LOOPBACK_CONF = {
    "rest.address": "127.0.0.1",
    "rest.bind-address": "127.0.0.1",
    "jobmanager.rpc.address": "127.0.0.1",
    "jobmanager.bind-host": "127.0.0.1",
    "taskmanager.host": "127.0.0.1",
    "taskmanager.bind-host": "127.0.0.1",
}
"""Local runs: the minicluster's REST, RPC, BLOB and data ports bound to loopback (Flink binds
0.0.0.0 by default)."""
DEFAULT_METRICS_PORT = 9249
MAX_PARALLELISM = 128
"""``pipeline.max-parallelism``, fixed so that a savepoint restores at any parallelism up to it (the
number of key groups keyed state is split into is part of every savepoint; Flink derives it from the
first run's parallelism when unset: 128 for up to 85 subtasks, so savepoints taken before it was
fixed restore too). A job restored with another value fails; docs/deploy.md lists it with the uids."""
CLI_CLIENT_ENV = "PYFLINK_GATEWAY_PORT"
"""Set by Flink's ``flink run`` (PythonDriver) for the Python program it starts: the gateway JVM is the
client's, already running."""


MSF_PROGRAMMATIC_OPTIONS: tuple[str, ...] = (
    "pipeline.*",
    "execution.runtime-mode",
    "python.execution-mode",
    "python.operator-chaining.enabled",
    "python.job-options",
    "python.internal.*",
)
"""The Flink options MSF 2.2 lets a job set in code (its "Programmatic Flink configuration
properties"; ``x.*`` = every key under ``x.``). Anything else set in code fails on MSF."""


def msf_allows(key: str) -> bool:
    """Whether MSF lets the job set Flink option ``key`` in code."""
    return any(key.startswith(p[:-1]) if p.endswith("*") else key == p for p in MSF_PROGRAMMATIC_OPTIONS)


class FlinkEnvError(RuntimeError):
    """The Flink environment cannot be built (no Java, missing jar, bad option)."""


@dataclass(frozen=True, slots=True)
class EnvInfo:
    """What was configured, for printing at start."""

    rest_port: int | None
    jars: tuple[str, ...]
    config: dict[str, str]
    metrics_port: int | None = None

    @property
    def web_ui(self) -> str | None:
        """The local Web UI address, when a fixed port was chosen."""
        return f"http://127.0.0.1:{self.rest_port}" if self.rest_port else None

    @property
    def metrics_url(self) -> str | None:
        """The local Prometheus scrape address, when the reporter is on."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics" if self.metrics_port else None


def check_java() -> str:
    """Path of the java binary; FlinkEnvError when there is none (PyFlink needs Java 11+)."""
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise FlinkEnvError(
            "Java not found: PyFlink needs a Java 11/17 runtime (install openjdk-17-jre-headless or set JAVA_HOME)"
        )
    try:
        proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FlinkEnvError(f"cannot run {java}: {exc}") from exc
    if proc.returncode != 0:
        raise FlinkEnvError(f"{java} -version failed: {(proc.stderr or proc.stdout).strip()[:200]}")
    return java


JOB_JAR_GLOB = "asset-cycle-flink-*.jar"
"""The job's uber-jar as ``python -m deploy.jars build`` (``make setup``) names it."""


def required_jars(jar_dir: str | Path | None) -> list[Path]:
    """The job's uber-jar (Kinesis source, file format, PostgreSQL sink and driver, batching) for
    ``pipeline.jars``: the newest ``JOB_JAR_GLOB`` in ``jar_dir`` (default ``.jars/``)."""
    jar_dir = Path(jar_dir) if jar_dir else DEFAULT_JAR_DIR
    found = sorted(jar_dir.glob(JOB_JAR_GLOB), key=lambda path: path.stat().st_mtime)
    if not found:
        raise FlinkEnvError(f"the job's jar ({JOB_JAR_GLOB}) is not in {jar_dir}; build it with: make setup "
                            "(or python -m deploy.jars build)")  # fmt: skip
    return [found[-1]]


def jar_urls(paths: list[Path]) -> list[str]:
    """``file://`` URLs of jars (for ``pipeline.jars`` and class loaders)."""
    return [Path(p).resolve().as_uri() for p in paths]


def local_python_path() -> list[str]:
    """site-packages of the running interpreter (venv included) and the project root."""
    paths = [*site.getsitepackages(), str(PROJECT_ROOT)]
    return list(dict.fromkeys(p for p in paths if Path(p).is_dir()))


CDS_FLAGS = ("-Xshare", "SharedArchiveFile", "ArchiveClassesAtExit")
_CDS_QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"


def gateway_running() -> bool:
    """Whether PyFlink's gateway JVM runs already: an earlier environment of this process, or the
    ``flink run`` client whose JVM started this process."""
    return java_gateway._gateway is not None or bool(os.environ.get(CLI_CLIENT_ENV))


def share_jvm_classes(java: str | None, jar_paths: list[Path], cds_dir: Path | None = None) -> tuple[str, str | None]:
    """Class data sharing for the local gateway JVM (AppCDS, Java 13+), which saves 1.5-2 s of
    start-up: the first run dumps the classes it loaded into an archive when its JVM exits, later
    runs map it. The archive is named after a digest of the java binary, the Flink and job jars and
    JVM_ARGS, so a new JDK, PyFlink or jar makes a new one (a stale one is also just ignored by the
    JVM). A dump still being written (its JVM alive) is neither used nor started again. JVM_ARGS that
    set sharing themselves are left alone. Returns what was done (for the log) and the file a dump
    goes to (for note_archive_writer, once the gateway runs). Call before the gateway starts (``java``
    is None when it runs already)."""
    opts = os.environ.get("JVM_ARGS", "")
    if java is None or gateway_running():
        return "class data sharing: the gateway JVM runs already", None
    if any(flag in opts for flag in CDS_FLAGS):
        return "class data sharing left to JVM_ARGS", None
    cds_dir = cds_dir or DEFAULT_JAR_DIR / "cds"
    digest = hashlib.sha256(opts.encode())
    for path in [Path(java).resolve(), *sorted((Path(pyflink.__file__).parent / "lib").glob("*.jar")), *jar_paths]:
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    archive = cds_dir / f"gateway-{digest.hexdigest()[:16]}.jsa"
    if not archive.is_file() and not _adopt_finished_dump(archive):
        return "class data sharing: an archive is being written by another run", None
    part = None
    if archive.is_file():
        add, done = f"-XX:SharedArchiveFile={archive}", f"class data sharing from {archive}"
    else:
        try:
            cds_dir.mkdir(parents=True, exist_ok=True)
            for old in cds_dir.glob("gateway-*"):  # other JDKs or jars (archives, dumps): no longer loadable
                if not old.name.startswith(archive.name):
                    old.unlink(missing_ok=True)
        except OSError as exc:  # a read-only install: run without
            return f"class data sharing off ({cds_dir}: {exc.strerror})", None
        part = str(archive.with_name(f"{archive.name}.{os.getpid()}.part"))
        add, done = f"-XX:ArchiveClassesAtExit={part}", f"class data sharing: {archive} is written when this run ends"
    os.environ["JVM_ARGS"] = f"{opts} {add} {_CDS_QUIET}".strip()
    return done, part


def note_archive_writer(archive_part: str | None) -> None:
    """Record the gateway JVM's pid next to the archive it dumps at exit (see share_jvm_classes)."""
    if not archive_part:
        return

    Path(archive_part + ".jvm").write_text(str(get_gateway().jvm.ProcessHandle.current().pid()))


def _adopt_finished_dump(archive: Path) -> bool:
    """Rename a finished dump of an earlier run into place. False while one is still being written."""
    for marker in sorted(archive.parent.glob(f"{archive.name}.*.part.jvm")):
        part = Path(str(marker)[: -len(".jvm")])
        try:
            os.kill(int(marker.read_text().strip() or 0), 0)
        except (ProcessLookupError, ValueError):  # its JVM has exited: the dump is complete (or was never made)
            marker.unlink(missing_ok=True)
            if part.is_file():
                os.replace(part, archive)
                return True
            continue
        except PermissionError:
            pass
        return False
    for orphan in archive.parent.glob(f"{archive.name}.*.part"):  # no marker: its run died before the gateway
        orphan.unlink(missing_ok=True)
    return True


def pin_jvm_utc() -> None:
    """Run the local JVM in UTC: ``-Duser.timezone=UTC`` for a gateway not started yet, and
    ``TimeZone.setDefault(UTC)`` for one already running (local minicluster only)."""
    opts = os.environ.get("JVM_ARGS", "")
    if "-Duser.timezone=" not in opts:
        os.environ["JVM_ARGS"] = (opts + " -Duser.timezone=UTC").strip()

    jvm = get_gateway().jvm
    jvm.java.util.TimeZone.setDefault(jvm.java.util.TimeZone.getTimeZone("UTC"))


def _duration_ms(ms: int) -> str:
    return f"{int(ms)} ms"


def build_configuration(
    flink: FlinkSettings, jar_paths: list[Path] | None = None, on_msf: bool = False
) -> dict[str, str]:
    """The Flink configuration as a plain dict (testable without a JVM)."""
    conf: dict[str, str] = {
        "python.execution-mode": flink.python_execution_mode,
        "pipeline.auto-watermark-interval": _duration_ms(flink.auto_watermark_interval_ms),
        # keep consecutive Python operators fused in one Python function call chain
        "python.operator-chaining.enabled": "true",
        "pipeline.max-parallelism": str(MAX_PARALLELISM),
    }
    if not on_msf:
        conf["python.executable"] = sys.executable
        conf["python.client.executable"] = sys.executable
        # thread mode embeds the interpreter behind python.executable, which does not read a
        # venv's pyvenv.cfg: put this environment's site-packages and the project on its path
        conf["python.pythonpath"] = os.pathsep.join(local_python_path())
        conf["state.backend.type"] = flink.state_backend
        conf["execution.checkpointing.mode"] = "EXACTLY_ONCE"
        conf["execution.checkpointing.externalized-checkpoint-retention"] = "RETAIN_ON_CANCELLATION"
        # every port of the local cluster on loopback only (REST/Web UI, RPC, BLOB server, data)
        conf.update(LOOPBACK_CONF)
        if flink.rest_port is not None:
            conf["rest.port"] = str(flink.rest_port)
            conf["rest.bind-port"] = str(flink.rest_port)
        if jar_paths:
            conf["pipeline.jars"] = ";".join(jar_urls(jar_paths))
        if flink.checkpoint_dir:
            conf["execution.checkpointing.dir"] = Path(flink.checkpoint_dir).resolve().as_uri()
        if flink.savepoint_dir:
            conf["execution.checkpointing.savepoint-dir"] = Path(flink.savepoint_dir).resolve().as_uri()
        if flink.from_savepoint:
            path = flink.from_savepoint
            if "://" not in path:
                if not Path(path).exists():
                    raise FlinkEnvError(f"savepoint {path} does not exist")
                path = Path(path).resolve().as_uri()
            conf["execution.state-recovery.path"] = path
        if flink.state_backend == "rocksdb":
            conf["state.backend.incremental"] = "true"
        # the run console's metric snapshots and (with a port) the Prometheus endpoint, on metrics_host
        conf["metrics.reporter.local.factory.class"] = LOCAL_REPORTER_FACTORY
        if flink.metrics_port is not None:
            conf["metrics.reporter.local.port"] = str(flink.metrics_port)
            conf["metrics.reporter.local.host"] = flink.metrics_host
        if flink.parallelism is not None:
            conf["parallelism.default"] = str(flink.parallelism)
        if flink.checkpoint_interval_ms:
            conf["execution.checkpointing.interval"] = _duration_ms(flink.checkpoint_interval_ms)
        if flink.restart_attempts is not None:
            conf["restart-strategy.type"] = "fixed-delay"
            conf["restart-strategy.fixed-delay.attempts"] = str(flink.restart_attempts)
            conf["restart-strategy.fixed-delay.delay"] = _duration_ms(flink.restart_delay_ms)
    else:
        refused = sorted(k for k in conf if not msf_allows(k))
        if refused:
            raise FlinkEnvError(f"Flink option(s) {', '.join(refused)} cannot be set in code on MSF")
    return conf


def create_environment(
    flink: FlinkSettings, on_msf: bool = False, extra_conf: dict[str, str] | None = None
) -> tuple[StreamExecutionEnvironment, EnvInfo]:
    """(StreamExecutionEnvironment, EnvInfo). Raises FlinkEnvError with a clear message.

    ``extra_conf``: raw Flink options set on top (benchmarks, experiments)."""
    java = None if on_msf or gateway_running() else check_java()  # a running JVM needs no check
    jar_paths = [] if on_msf else required_jars(flink.jar_dir)
    conf_dict = build_configuration(flink, jar_paths, on_msf=on_msf)
    if on_msf and extra_conf and any(not msf_allows(k) for k in extra_conf):
        raise FlinkEnvError(f"Flink option(s) {sorted(k for k in extra_conf if not msf_allows(k))} "
                            "cannot be set in code on MSF")  # fmt: skip
    conf_dict.update(extra_conf or {})
    if not on_msf:
        # PyFlink serves a "loopback" Python worker pool on every interface for process mode; the
        # minicluster can start its Python workers itself instead (thread mode needs neither)
        os.environ.setdefault("_python_worker_execution_mode", "process")
        sharing, archive_part = share_jvm_classes(java, jar_paths)
        log.info("%s", sharing)
        pin_jvm_utc()  # starts the gateway JVM
        note_archive_writer(archive_part)
    conf = Configuration()
    for key, value in conf_dict.items():
        conf.set_string(key, value)
    try:
        env = StreamExecutionEnvironment.get_execution_environment(conf)
    except Exception as exc:  # py4j / gateway start-up
        raise FlinkEnvError(f"cannot start the Flink environment: {exc}") from exc
    if jar_paths:
        add_jars_to_context_class_loader(jar_urls(jar_paths))
    metrics_port = flink.metrics_port if "metrics.reporter.local.port" in conf_dict else None
    if not on_msf:  # on MSF the application configuration decides (setting them would fail there)
        if flink.parallelism is not None:
            env.set_parallelism(flink.parallelism)
        if flink.checkpoint_interval_ms:
            env.enable_checkpointing(flink.checkpoint_interval_ms)
    env.get_config().set_auto_watermark_interval(flink.auto_watermark_interval_ms)
    info = EnvInfo(flink.rest_port, tuple(str(p) for p in jar_paths), conf_dict, metrics_port)
    log.info("Flink configuration: %s", {k: v for k, v in conf_dict.items() if k != "pipeline.jars"})
    return env, info
