"""Read-only PostgreSQL connections for the live view: a small bounded pool.

Every connection is opened with ``default_transaction_read_only=on`` and a statement timeout, in
autocommit mode (each SELECT is its own read-only transaction), so the server cannot write even through
a bug, and a slow query cannot hold a request forever. A database that is down, or a pooled connection
it dropped (a restart), is retried once on a fresh connection; if that fails too the caller gets
``DatabaseDown`` with a one-line reason (HTTP 503), and the next request tries again: the server
recovers by itself when the database is back.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection

from stores.postgres import DatabaseUnavailable, connect

DEFAULT_MAX_CONNECTIONS = 8
DEFAULT_STATEMENT_TIMEOUT_MS = 5_000
CONNECT_TIMEOUT_S = 3
WAIT_FOR_CONNECTION_S = 10.0
APPLICATION_NAME = "asset-cycle-serve"


class DatabaseDown(RuntimeError):
    """PostgreSQL cannot answer now (unreachable, restarting, or every connection busy); one line."""


class ReadOnlyPool:
    """At most ``max_connections`` read-only connections to the database ``target`` names (a libpq DSN /
    URI, or a mapping of libpq parameters). Thread-safe; connections are opened on demand."""

    def __init__(self, target: str | Mapping[str, Any], *, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS) -> None:  # fmt: skip
        self._target = target
        self._options = (f"-c default_transaction_read_only=on -c statement_timeout={int(statement_timeout_ms)} "
                         "-c idle_in_transaction_session_timeout=60000")  # fmt: skip
        self._idle: queue.LifoQueue[connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(max_connections)

    def _open(self) -> connection:
        conn = connect(self._target, connect_timeout=CONNECT_TIMEOUT_S, application_name=APPLICATION_NAME,
                       options=self._options, keepalives=1, keepalives_idle=10, keepalives_interval=3,
                       keepalives_count=3)  # fmt: skip
        conn.autocommit = True
        return conn

    @contextlib.contextmanager
    def _slot(self) -> Iterator[None]:
        if not self._slots.acquire(timeout=WAIT_FOR_CONNECTION_S):
            raise DatabaseDown(f"every database connection stayed busy for {WAIT_FOR_CONNECTION_S:g} s")
        try:
            yield
        finally:
            self._slots.release()

    def fetch(self, statement: sql.Composable | str, params: Mapping[str, Any] | Sequence[Any] | None = None
              ) -> list[dict[str, Any]]:  # fmt: skip
        """The rows of one SELECT as dicts (column name -> value). DatabaseDown when the database cannot
        answer; other database errors (a missing table, a timeout) propagate as psycopg2 errors."""
        with self._slot():
            for attempt in (1, 2):
                conn, pooled = self._take()
                try:
                    with conn.cursor() as cur:
                        cur.execute(statement, params)
                        names = [column.name for column in cur.description]
                        rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
                except psycopg2.Error as exc:
                    if not (conn.closed or _connection_lost(exc)):
                        self._idle.put(conn)  # the query failed (a missing table, a timeout): the session is fine
                        raise
                    self._discard(conn)
                    if pooled and attempt == 1:
                        continue  # a connection the server dropped (e.g. a restart): once more, afresh
                    raise DatabaseDown(f"the database connection was lost: {_one_line(exc)}") from None
                except BaseException:
                    self._discard(conn)
                    raise
                self._idle.put(conn)
                return rows
        raise AssertionError("unreachable")  # pragma: no cover

    def _take(self) -> tuple[connection, bool]:
        """An idle pooled connection (True) or a new one (False)."""
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                break
            if not conn.closed:
                return conn, True
        try:
            return self._open(), False
        except DatabaseUnavailable as exc:
            raise DatabaseDown(str(exc)) from None

    @staticmethod
    def _discard(conn: connection) -> None:
        with contextlib.suppress(Exception):  # it may be broken already
            conn.close()

    def check(self) -> None:
        """Open a connection and run ``SELECT 1`` (DatabaseDown when the database cannot answer)."""
        self.fetch("SELECT 1 AS ok")

    def close(self) -> None:
        """Close every idle connection."""
        while True:
            try:
                self._discard(self._idle.get_nowait())
            except queue.Empty:
                return


def _connection_lost(exc: psycopg2.Error) -> bool:
    """Whether a psycopg2 error means the connection is gone (rather than a query that failed)."""
    if isinstance(exc, psycopg2.InterfaceError):
        return True
    code = exc.pgcode
    if code is None:  # no answer from the server at all
        return isinstance(exc, psycopg2.OperationalError)
    return code.startswith("08") or code in ("57P01", "57P02", "57P03")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
