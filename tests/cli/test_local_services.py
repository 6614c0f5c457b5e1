"""cli.local_services against a real throwaway redis-server (no Flink)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from cli.local_services import ServiceError, ensure_redis, redis_server_binary, refused_write
from tests.job.reliability_support import free_port


@pytest.fixture
def throwaway_redis(tmp_path):
    port = free_port()
    server = subprocess.Popen([str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield port, client
    client.close()
    server.terminate()
    server.wait(10)


def test_a_redis_that_answers_but_refuses_writes_is_reported_not_used(throwaway_redis):
    port, client = throwaway_redis
    assert refused_write("127.0.0.1", port) is None
    assert ensure_redis(port=port).state == "running"
    assert client.dbsize() == 0  # the probe key is gone
    client.config_set("min-replicas-to-write", 1)  # like MISCONF (a snapshot that cannot be saved): writes fail
    assert refused_write("127.0.0.1", port).startswith("NOREPLICAS")
    with pytest.raises(ServiceError, match=r"answers but refuses writes: NOREPLICAS"):
        ensure_redis(port=port)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as a service account")
def test_postgres_starts_from_binaries_under_a_private_directory(tmp_path, monkeypatch):
    """As root the server runs as the service account, which must reach the binaries: a checkout (and
    its .venv) under a 0700 directory works, whether or not other local servers already run."""
    import shutil

    from cli import local_services

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    wheel = local_services.postgres_bin_dir().parents[1]  # site-packages/pgserver (binaries, and their
    site = private / "checkout" / "site-packages"           # libraries in site-packages/pgserver.libs)
    shutil.copytree(wheel / "pginstall", site / "pgserver" / "pginstall", symlinks=True)
    shutil.copytree(wheel.parent / "pgserver.libs", site / "pgserver.libs", symlinks=True)
    install = site / "pgserver" / "pginstall"
    services = Path(tempfile.mkdtemp(prefix="asset-cycle-pg-"))  # data outside the private tree
    services.chmod(0o755)
    monkeypatch.setenv(local_services.SERVICES_DIR_ENV, str(services))
    monkeypatch.setattr(local_services, "postgres_bin_dir", lambda: install / "bin")
    port = free_port()
    try:
        status = local_services.ensure_postgres("127.0.0.1", port, databases=("test",))
        assert status.state == "started" and local_services.is_answering("127.0.0.1", port)
    finally:
        local_services.stop_services(pg_port=port, redis_port=0)
        shutil.rmtree(services, ignore_errors=True)
    assert private.stat().st_mode & 0o777 == 0o701  # entered, not listed
