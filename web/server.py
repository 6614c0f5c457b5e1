"""Serving the live view with uvicorn: in the foreground (``asset-cycle serve``, Ctrl-C or SIGTERM stops it)
or on a thread beside a local job run (``asset-cycle run --serve``, stopped with the run).

``LiveServer.open`` does everything that can fail on a user's mistake before serving, each as one
line (``ServeError``): the page's JavaScript installed, the database reachable, the address free.
"""

from __future__ import annotations

import signal
import socket
import threading

import uvicorn

from stores.errors import UserError
from web.app import create_app, leaflet_installed
from web.db import DatabaseDown, ReadOnlyPool
from web.geometry import RegionCache
from web.settings import ServeSettings

STOP_TIMEOUT_S = 5.0


class ServeError(UserError):
    """The live view cannot start (one line: what is wrong and what to do)."""


class DatabaseUnreachable(ServeError):
    """The database does not answer at start (the message names host:port, never the password)."""


class LiveServer:
    """The live view over ``settings``: ``open()``, then ``run()`` (blocks) or ``start()``/``stop()``."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.pool = ReadOnlyPool(settings.database)
        self.regions = RegionCache(settings.redis, settings.redis_prefix)
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's address (the bound port once open)."""
        return self.settings.url if self._socket is None else self.settings.url.replace(
            f":{self.settings.port}/", f":{self._socket.getsockname()[1]}/")

    def open(self) -> None:
        """Check the page's files and the database, and bind the address (ServeError when one fails)."""
        if not leaflet_installed():
            raise ServeError("the page's JavaScript library (Leaflet) is not installed: run `make setup` "
                             "(npm ci --prefix tools/web)")  # fmt: skip
        try:
            self.pool.check()
        except DatabaseDown as exc:
            raise DatabaseUnreachable(str(exc)) from None
        self._socket = bind(self.settings.host, self.settings.port)
        config = uvicorn.Config(create_app(self.settings, self.pool, self.regions), log_config=None,
                                access_log=False, server_header=False, proxy_headers=False, lifespan="off",
                                log_level="warning", timeout_graceful_shutdown=2)  # fmt: skip
        self._server = uvicorn.Server(config)

    def schemas_with_tables(self) -> list[str]:
        """The schemas that hold a live-fleet table of this name (to tell a user who picked an empty one)."""
        rows = self.pool.fetch("SELECT table_schema FROM information_schema.tables WHERE table_name = %s "
                               "ORDER BY table_schema", (self.settings.names.process_info,))  # fmt: skip
        return [r["table_schema"] for r in rows]

    def run(self) -> None:
        """Serve until Ctrl-C or SIGTERM (in the main thread); returns normally on either."""
        assert self._server is not None and self._socket is not None, "open() first"
        previous = signal.signal(signal.SIGTERM, lambda *_: None)  # uvicorn re-raises it after its clean stop
        try:
            self._server.run(sockets=[self._socket])
        except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its clean stop
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.close()

    def start(self) -> None:
        """Serve on a daemon thread (beside a job run); ``stop()`` ends it."""
        assert self._server is not None and self._socket is not None, "open() first"
        server, sock = self._server, self._socket
        self._thread = threading.Thread(target=lambda: server.run(sockets=[sock]), name="live-view", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread ``start()`` began (waits a few seconds) and close the connections."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
        self.close()

    def close(self) -> None:
        """Close the socket, the pooled connections and the Redis client."""
        if self._socket is not None:
            self._socket.close()
        self.pool.close()
        self.regions.close()


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host:port`` (port 0: any free one); ServeError when it cannot be."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them: the URL works at once
    except OSError as exc:
        sock.close()
        hint = " (another asset-cycle serve? choose another port)" if exc.errno == 98 else ""
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None
    sock.set_inheritable(True)
    return sock
