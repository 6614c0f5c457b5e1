"""Reference data in the legacy stores: assets/loaders in PostgreSQL, dump regions in Redis.

* PostgreSQL: ``asset`` (asset types) and ``asset_info`` (loader positions), see ``sql/``.
* Redis: one hash per site, ``{prefix}site:{site_guid}:regions``; field = region_name,
  value = ``Region.to_redis_value()`` JSON (legacy format).

Connections come from stores.connections.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import redis
from psycopg2 import sql
from psycopg2.extensions import TRANSACTION_STATUS_IDLE, connection
from psycopg2.extras import execute_values

from state_machine.model import LOADER
from state_machine.reference import Loader, ReferenceData, Region, group_sites
from stores.postgres import TableNames

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ReferenceLoadStats:
    """What load_reference_data read and what it had to skip."""

    assets: int = 0
    loaders: int = 0
    skipped_loaders: int = 0
    region_keys: int = 0
    regions: int = 0
    skipped_regions: int = 0
    problems: list[str] = field(default_factory=list)


class SeedSummary(NamedTuple):
    """What seed_reference wrote."""

    assets: int
    loaders: int
    sites: int
    regions: int


def regions_key(site_guid: str, prefix: str = "") -> str:
    """Redis key of a site's regions hash: ``{prefix}site:{site_guid}:regions``."""
    return f"{prefix}site:{site_guid}:regions"


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "\\*?[]" else ch for ch in text)


def region_keys(redis_client: redis.Redis, prefix: str = "") -> list[bytes]:
    """Every site's regions hash under ``prefix`` (``{prefix}site:*:regions``)."""
    return sorted(redis_client.scan_iter(match=f"{_glob_escape(prefix)}site:*:regions", count=500))


def delete_region_keys(redis_client: redis.Redis, prefix: str = "") -> int:
    """Delete every site's regions hash under ``prefix``; returns how many were deleted."""
    keys = region_keys(redis_client, prefix)
    return int(redis_client.delete(*keys)) if keys else 0


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def _read_only(pg_conn: connection) -> bool:
    """True when the connection is idle outside a transaction (we may end the one we open)."""
    return not pg_conn.autocommit and pg_conn.get_transaction_status() == TRANSACTION_STATUS_IDLE


def load_reference_data(pg_conn: connection, redis_client: redis.Redis, names: TableNames, redis_key_prefix: str = "",
                        stats: ReferenceLoadStats | None = None) -> ReferenceData:
    """Asset types and loaders from PostgreSQL, regions from Redis, grouped per site.

    Malformed region values (and loaders without a usable position) are skipped with a warning
    naming the key and field; they are counted in ``stats`` when one is passed. Regions are
    sorted by region_guid and loaders by asset_guid within each site.
    """
    stats = ReferenceLoadStats() if stats is None else stats
    end_transaction = _read_only(pg_conn)
    try:
        with pg_conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT asset_guid, asset_type FROM {}").format(names.table("asset")))
            asset_types = {guid: kind for guid, kind in cur.fetchall()}
            cur.execute(
                sql.SQL(
                    "SELECT a.asset_guid, COALESCE(i.site_guid, a.site_guid), i.latitude, i.longitude "
                    "FROM {asset} a JOIN {info} i ON i.asset_guid = a.asset_guid "
                    "WHERE a.asset_type = %s ORDER BY a.asset_guid"
                ).format(asset=names.table("asset"), info=names.table("asset_info")),
                (LOADER,),
            )
            loader_rows = cur.fetchall()
    finally:
        if end_transaction:
            pg_conn.rollback()
    stats.assets = len(asset_types)

    loaders: list[Loader] = []
    for guid, site, lat, lon in loader_rows:
        if (lat is None or lon is None or not (math.isfinite(lat) and math.isfinite(lon))
                or abs(lat) > 90 or abs(lon) > 180):
            message = f"loader {guid!r} has no usable position ({lat!r}, {lon!r}); skipped"
            log.warning(message)
            stats.skipped_loaders += 1
            stats.problems.append(message)
            continue
        loaders.append(Loader(guid, site, float(lat), float(lon)))
    stats.loaders = len(loaders)

    regions = load_regions(redis_client, redis_key_prefix, stats)
    return ReferenceData(asset_types=asset_types, sites=group_sites(loaders, regions))


def load_regions(redis_client: redis.Redis, prefix: str = "",
                 stats: ReferenceLoadStats | None = None) -> list[Region]:
    """Every site's regions from Redis (``{prefix}site:*:regions``), sorted by region_guid within a site;
    malformed values are skipped with a warning (counted in ``stats`` when one is passed)."""
    stats = ReferenceLoadStats() if stats is None else stats
    head = f"{prefix}site:"
    tail = ":regions"
    regions: list[Region] = []
    keys = sorted(_text(k) for k in redis_client.scan_iter(match=_glob_escape(prefix) + "site:*:regions",
                                                            count=1000))
    for key in keys:
        site = key[len(head):-len(tail)]
        if not key.startswith(head) or not key.endswith(tail) or not site:
            continue
        try:
            values = redis_client.hgetall(key)
        except redis.ResponseError as exc:  # e.g. WRONGTYPE: the key is not a hash
            message = f"Redis key {key!r} is not a regions hash ({exc}); skipped"
            log.warning(message)
            stats.problems.append(message)
            continue
        stats.region_keys += 1
        site_regions = []
        for raw_field, value in values.items():
            field_name = _text(raw_field)
            try:
                region = Region.from_redis_value(site, value)
                if not all(math.isfinite(x) and math.isfinite(y) and abs(x) <= 180 and abs(y) <= 90
                           for x, y in region.points):
                    raise ValueError("region_points has a non-finite or out-of-range lon/lat")
                site_regions.append(region)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                message = (f"skipping malformed region in Redis hash {key!r} field {field_name!r}: "
                           f"{type(exc).__name__}: {str(exc)[:200]}")
                log.warning(message)
                stats.skipped_regions += 1
                stats.problems.append(message)
        site_regions.sort(key=lambda r: r.region_guid)
        regions.extend(site_regions)
    stats.regions = len(regions)
    return regions


def _asset_tuple(row: Sequence[Any]) -> tuple[str, str, str, float | None, float | None]:
    guid, site, kind, lat, lon = row
    return str(guid), str(site), str(kind), lat, lon


def seed_reference(pg_conn: connection, redis_client: redis.Redis, names: TableNames, reference: ReferenceData,
                   assets: Iterable[Sequence[Any]], redis_key_prefix: str = "") -> SeedSummary:
    """Write reference data in the legacy formats.

    PostgreSQL (one transaction): upsert every asset row ``(asset_guid, site_guid, asset_type,
    lat, lon)`` into ``asset`` (asset_name untouched) and every loader position (loaders of
    ``reference`` plus LOADER rows with a position) into ``asset_info``. Redis: for every site of
    ``reference``, replace its regions hash atomically (MULTI: DEL + HSET); a site without
    regions ends up with no hash. Region names must be unique within a site (they are the
    hash fields); a clash raises ValueError before anything is written.
    """
    rows = [_asset_tuple(r) for r in assets]
    hashes: dict[str, dict[str, str]] = {}
    for site_guid, site in sorted(reference.sites.items()):
        mapping: dict[str, str] = {}
        for region in site.regions:
            if region.region_name in mapping:
                raise ValueError(f"site {site_guid!r}: two regions named {region.region_name!r} "
                                 "(the Redis hash is keyed by region_name)")
            mapping[region.region_name] = region.to_redis_value()
        hashes[site_guid] = mapping

    positions: dict[str, tuple[str, float, float]] = {}
    for guid, site, kind, lat, lon in rows:
        if kind == LOADER and lat is not None and lon is not None:
            positions[guid] = (site, float(lat), float(lon))
    for site in reference.sites.values():
        for loader in site.loaders:
            positions[loader.asset_guid] = (loader.site_guid, loader.latitude, loader.longitude)
    asset_rows = {guid: (guid, site, kind) for guid, site, kind, _, _ in rows}
    for guid, (site, _, _) in positions.items():
        asset_rows.setdefault(guid, (guid, site, LOADER))

    try:
        with pg_conn.cursor() as cur:
            if asset_rows:
                execute_values(cur, sql.SQL(
                    "INSERT INTO {} (asset_guid, site_guid, asset_type) VALUES %s "
                    "ON CONFLICT (asset_guid) DO UPDATE SET site_guid = EXCLUDED.site_guid, "
                    "asset_type = EXCLUDED.asset_type, updated_at = now()"
                ).format(names.table("asset")), sorted(asset_rows.values()), page_size=500)
            if positions:
                execute_values(cur, sql.SQL(
                    "INSERT INTO {} (asset_guid, site_guid, latitude, longitude) VALUES %s "
                    "ON CONFLICT (asset_guid) DO UPDATE SET site_guid = EXCLUDED.site_guid, "
                    "latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude, updated_at = now()"
                ).format(names.table("asset_info")),
                    sorted((guid, *pos) for guid, pos in positions.items()), page_size=500)
        pg_conn.commit()
    except BaseException:
        pg_conn.rollback()
        raise

    for site_guid, mapping in hashes.items():
        key = regions_key(site_guid, redis_key_prefix)
        pipe = redis_client.pipeline(transaction=True)
        pipe.delete(key)
        if mapping:
            pipe.hset(key, mapping=mapping)
        pipe.execute()
    summary = SeedSummary(len(asset_rows), len(positions), len(hashes), sum(len(m) for m in hashes.values()))
    log.info("seeded %d assets, %d loader positions, %d regions in %d sites", summary.assets,
             summary.loaders, summary.regions, summary.sites)
    return summary


@dataclass(frozen=True)
class StoreReader:
    """Open PostgreSQL + Redis connections that load the reference data (udfs.reference_poller's
    ReferenceReader)."""

    pg: connection
    redis: redis.Redis
    names: TableNames
    redis_key_prefix: str = ""

    def load(self) -> ReferenceData:
        """Asset types, loader positions (PostgreSQL) and dump regions (Redis) as they are now."""
        return load_reference_data(self.pg, self.redis, self.names, redis_key_prefix=self.redis_key_prefix)

    def close(self) -> None:
        """Close both connections (errors of already broken ones ignored)."""
        for client in (self.pg, self.redis):
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                client.close()
