"""Where the job's reference data comes from: PostgreSQL and Redis through stores.reference.

``ReferenceConnector`` is what the reference poller (udfs.reference_poller.ReferencePoller) calls in
the worker to open the stores; it is pickled with the job graph, so credentials from a secret are
resolved where the job runs, never shipped in the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

from job.settings import AppSettings, postgres_settings, redis_settings
from stores.connections import PostgresSettings, RedisSettings
from stores.postgres import TableNames
from stores.reference import StoreReader


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
