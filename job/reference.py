"""Where the job's reference data comes from: PostgreSQL and Redis through stores.reference.

``ReferenceConnector`` is what the reference poller (udfs.reference_poller.ReferencePoller) calls in
the worker to open the stores; it is pickled with the job graph, so credentials from a secret are
resolved where the job runs, never shipped in the graph. ``load_reference_snapshot`` reads the data
once, for a bounded run that does not poll.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import redis
from psycopg2.extensions import connection

from job.settings import AppSettings, postgres_settings, redis_settings
from stores.connections import PostgresSettings, RedisSettings, RedisUnavailable, connect_redis
from stores.postgres import DatabaseUnavailable, TableNames
from stores.reference import StoreReader, load_reference_data
from udfs.reference_poller import snapshot_records

log = logging.getLogger("asset-cycle")

POSTGRES_HINT = "start PostgreSQL, or set ASSET_CYCLE_PG_HOST/PORT/DB/USER/PASSWORD"
REDIS_HINT = "start Redis, or set ASSET_CYCLE_REDIS_HOST/PORT/PASSWORD"


@dataclass(frozen=True)
class ReferenceConnector:
    """Picklable StoreReader factory for udfs.reference_poller.ReferencePoller (credentials are
    resolved in the worker unless given: local runs pass the ones they resolved)."""

    settings: AppSettings
    postgres: PostgresSettings | None = None
    redis: RedisSettings | None = None
    names: TableNames | None = None

    def __call__(self) -> StoreReader:
        pg = (self.postgres or postgres_settings(self.settings)).connect()
        pg.autocommit = True
        client = (self.redis or redis_settings(self.settings)).client()
        return StoreReader(pg, client, self.names or TableNames(), self.settings.reference.redis_key_prefix)


@contextlib.contextmanager
def open_stores(pg: PostgresSettings, rs: RedisSettings) -> Iterator[tuple[connection, redis.Redis]]:
    """Connections to both stores, closed at the end; an unreachable one is a one-line error saying
    what to do (DatabaseUnavailable / RedisUnavailable)."""
    try:
        pg_conn = pg.connect()
    except DatabaseUnavailable as exc:
        raise DatabaseUnavailable(f"{exc} ({POSTGRES_HINT})") from exc
    try:
        client = connect_redis(rs)
    except RedisUnavailable as exc:
        pg_conn.close()
        raise RedisUnavailable(f"{exc} ({REDIS_HINT})") from exc
    try:
        yield pg_conn, client
    finally:
        pg_conn.close()
        client.close()


def load_reference_snapshot(pg: PostgresSettings, rs: RedisSettings, names: TableNames,
                            redis_key_prefix: str) -> list[tuple[str, str, str]]:
    """The reference data as it is now, as the updates a bounded reference stream carries."""
    with open_stores(pg, rs) as (pg_conn, client):
        data = load_reference_data(pg_conn, client, names, redis_key_prefix=redis_key_prefix)
    log.info("reference data loaded once: %d site(s), %d asset(s)", len(data.sites), len(data.asset_types))
    return snapshot_records(data)
