"""Helpers of the live view's tests: a served LiveServer, HTTP calls, and a TCP proxy that can cut the
server off from PostgreSQL (an outage) and reconnect it."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stores.postgres import TableNames
from web.server import LiveServer
from web.settings import ServeSettings
from workbench.replay import ReplayResult

STALE_TRUCK_S = 120.0
"""The bundle run's staleness threshold: its trucks end 0-200 s behind the newest point, some stale, some not."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 15.0) -> Answer:
    """GET ``url``; any status is an Answer (no exception for 4xx/5xx)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback test server
            return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


@contextlib.contextmanager
def serving(settings: ServeSettings) -> Iterator[str]:
    """A LiveServer over ``settings`` on a thread; yields its base URL (``http://127.0.0.1:PORT/``)."""
    server = LiveServer(settings)
    server.open()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


class TcpProxy:
    """127.0.0.1:``port`` forwarded to ``target``; ``cut()`` closes the listener and every connection (the
    database is gone for its clients), ``restore()`` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            self._listener.close()
            self._listener = None
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._connections.clear()

    def close(self) -> None:
        self.cut()


class BundleRun:
    """A job run on a bundle (tests/web/conftest.py): the bundle, its replay and the live view serving it."""

    def __init__(self, bundle: Path, names: TableNames, redis_prefix: str, expected: ReplayResult, url: str) -> None:
        self.bundle, self.names, self.redis_prefix, self.expected, self.url = bundle, names, redis_prefix, expected, url

    def get(self, path: str) -> Any:
        answer = get(self.url + path.lstrip("/"))
        assert answer.status == 200, (path, answer.status, answer.body[:500])
        return answer.json()


def drop_run_data(pg_dsn: str, redis_client: Any, schema: str, prefix: str) -> None:
    """Remove what a test's job run wrote: its schema (with every table) and its Redis keys."""
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(pg_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    conn.close()
    keys = list(redis_client.scan_iter(match=prefix + "*"))
    if keys:
        redis_client.delete(*keys)
