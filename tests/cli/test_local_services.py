"""cli.local_services against a real throwaway redis-server (no Flink)."""

from __future__ import annotations

import subprocess
import time

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
