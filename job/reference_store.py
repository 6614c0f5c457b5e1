"""Reference data in the legacy stores: assets/loaders in PostgreSQL, dump regions in Redis.

* PostgreSQL: ``asset`` (asset types) and ``asset_info`` (loader positions), see ``sql/``.
* Redis: one hash per site, ``{prefix}site:{site_guid}:regions``; field = region_name,
  value = ``Region.to_redis_value()`` JSON (legacy format).

Also the connection settings of both services (environment variables or AWS Secrets Manager,
legacy secret shape ``{"host", "port", "dbname", "username", "password"}``). Passwords never
appear in ``repr``/``str``, logs or error messages.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

from job.db import TableNames, connect
from job.errors import SettingsError
from state_machine.model import LOADER
from state_machine.reference import Loader, ReferenceData, Region, group_sites

log = logging.getLogger(__name__)

MASK = "***"
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})




def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {text!r}") from None


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    text = env.get(name)
    if text is None:
        return default
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name} must be true/false, got {text!r}")


def _port(value: Any, what: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{what} port must be an integer, got {value!r}") from None
    if not 0 < port < 65536:
        raise SettingsError(f"{what} port out of range: {port}")
    return port


def read_secret(secret_name: str, region: str | None = None, client: Any = None) -> dict[str, Any]:
    """The JSON object stored in an AWS Secrets Manager secret (SecretString).

    ``client`` is an optional boto3 ``secretsmanager`` client (tests pass a stubbed one).
    Errors name the secret but never include its content.
    """
    if client is None:
        import boto3

        client = boto3.client("secretsmanager", region_name=region)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = client.get_secret_value(SecretId=secret_name)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "ClientError")
        raise SettingsError(f"cannot read secret {secret_name!r} ({region or 'default region'}): {code}") from None
    except BotoCoreError as exc:
        raise SettingsError(f"cannot read secret {secret_name!r}: {type(exc).__name__}") from None
    text = response.get("SecretString")
    if text is None:
        raise SettingsError(f"secret {secret_name!r} has no SecretString (binary secrets are not supported)")
    try:
        data = json.loads(text)
    except ValueError:
        raise SettingsError(f"secret {secret_name!r} is not a JSON object") from None
    if not isinstance(data, dict):
        raise SettingsError(f"secret {secret_name!r} is not a JSON object")
    return data


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    """PostgreSQL connection settings; the password is masked in repr/str."""

    host: str = "127.0.0.1"
    port: int = 5432
    dbname: str = "postgres"
    user: str = "postgres"
    password: str | None = None
    sslmode: str | None = None
    sslrootcert: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "port", _port(self.port, "PostgreSQL"))
        if self.sslmode is not None and self.sslmode not in SSL_MODES:
            raise SettingsError(f"sslmode must be one of {SSL_MODES}, got {self.sslmode!r}")

    def __repr__(self) -> str:
        pw = None if self.password is None else MASK
        return (f"PostgresSettings(host={self.host!r}, port={self.port}, dbname={self.dbname!r}, "
                f"user={self.user!r}, password={pw!r}, sslmode={self.sslmode!r}, "
                f"sslrootcert={self.sslrootcert!r})")

    __str__ = __repr__

    @property
    def address(self) -> str:
        """``host:port`` for messages."""
        return f"{self.host}:{self.port}"

    def connect_kwargs(self) -> dict[str, Any]:
        """libpq keyword parameters (includes the password: do not log)."""
        kwargs: dict[str, Any] = {"host": self.host, "port": self.port, "dbname": self.dbname, "user": self.user}
        for key in ("password", "sslmode", "sslrootcert"):
            if getattr(self, key) is not None:
                kwargs[key] = getattr(self, key)
        return kwargs

    def connect(self, **extra: Any) -> Any:
        """A psycopg2 connection (job.db.DatabaseUnavailable when unreachable)."""
        return connect(self.connect_kwargs(), **extra)

    def jdbc_url(self) -> str:
        """``jdbc:postgresql://host:port/db?sslmode=...`` without user or password."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        url = f"jdbc:postgresql://{host}:{self.port}/{quote(self.dbname, safe='')}"
        params = {k: v for k, v in (("sslmode", self.sslmode), ("sslrootcert", self.sslrootcert)) if v}
        return f"{url}?{urlencode(params)}" if params else url

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PostgresSettings:
        """From ASSET_CYCLE_PG_HOST/PORT/DB/USER/PASSWORD/SSLMODE/SSLROOTCERT (local defaults)."""
        env = os.environ if env is None else env
        sslmode = env.get("ASSET_CYCLE_PG_SSLMODE") or None
        if sslmode is not None and sslmode not in SSL_MODES:
            raise SettingsError(f"ASSET_CYCLE_PG_SSLMODE must be one of {', '.join(SSL_MODES)}, got {sslmode!r}")
        return cls(
            host=env.get("ASSET_CYCLE_PG_HOST") or "127.0.0.1",
            port=_env_int(env, "ASSET_CYCLE_PG_PORT", 5432),
            dbname=env.get("ASSET_CYCLE_PG_DB") or "postgres",
            user=env.get("ASSET_CYCLE_PG_USER") or "postgres",
            password=env.get("ASSET_CYCLE_PG_PASSWORD") or None,
            sslmode=sslmode,
            sslrootcert=env.get("ASSET_CYCLE_PG_SSLROOTCERT") or None,
        )

    @classmethod
    def from_secret_value(cls, data: Mapping[str, Any], sslmode: str | None = "require",
                          sslrootcert: str | None = None) -> PostgresSettings:
        """From the legacy secret JSON (host, port, dbname, username, password)."""
        missing = [k for k in ("host", "dbname", "username") if not data.get(k)]
        if missing:
            raise SettingsError(f"PostgreSQL secret lacks {', '.join(missing)}")
        return cls(
            host=str(data["host"]),
            port=data.get("port") or 5432,
            dbname=str(data["dbname"]),
            user=str(data["username"]),
            password=None if data.get("password") is None else str(data["password"]),
            sslmode=str(data.get("sslmode") or sslmode) if data.get("sslmode") or sslmode else None,
            sslrootcert=sslrootcert,
        )

    @classmethod
    def from_secret(cls, secret_name: str, region: str | None = None, client: Any = None,
                    sslmode: str | None = "require", sslrootcert: str | None = None) -> PostgresSettings:
        """From an AWS Secrets Manager secret (legacy shape); TLS required unless told otherwise."""
        return cls.from_secret_value(read_secret(secret_name, region, client), sslmode, sslrootcert)


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Redis connection settings; the password is masked in repr/str."""

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    tls_ca: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "port", _port(self.port, "Redis"))

    def __repr__(self) -> str:
        pw = None if self.password is None else MASK
        return (f"RedisSettings(host={self.host!r}, port={self.port}, db={self.db}, "
                f"username={self.username!r}, password={pw!r}, tls={self.tls}, tls_ca={self.tls_ca!r})")

    __str__ = __repr__

    @property
    def address(self) -> str:
        """``host:port`` for messages."""
        return f"{self.host}:{self.port}"

    def client(self, **extra: Any) -> Any:
        """A ``redis.Redis`` client (connects lazily)."""
        import redis

        kwargs: dict[str, Any] = {
            "host": self.host, "port": self.port, "db": self.db, "username": self.username,
            "password": self.password, "socket_connect_timeout": 10, "socket_timeout": 30,
        }
        if self.tls:
            kwargs.update(ssl=True, ssl_ca_certs=self.tls_ca)
        kwargs.update(extra)
        return redis.Redis(**kwargs)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RedisSettings:
        """From ASSET_CYCLE_REDIS_HOST/PORT/DB/USERNAME/PASSWORD/TLS/TLS_CA (local defaults)."""
        env = os.environ if env is None else env
        return cls(
            host=env.get("ASSET_CYCLE_REDIS_HOST") or "127.0.0.1",
            port=_env_int(env, "ASSET_CYCLE_REDIS_PORT", 6379),
            db=_env_int(env, "ASSET_CYCLE_REDIS_DB", 0),
            username=env.get("ASSET_CYCLE_REDIS_USERNAME") or None,
            password=env.get("ASSET_CYCLE_REDIS_PASSWORD") or None,
            tls=_env_bool(env, "ASSET_CYCLE_REDIS_TLS", False),
            tls_ca=env.get("ASSET_CYCLE_REDIS_TLS_CA") or None,
        )

    @classmethod
    def from_secret_value(cls, data: Mapping[str, Any], tls: bool | None = None,
                          tls_ca: str | None = None) -> RedisSettings:
        """From the legacy secret JSON (host, port, username, password; optional db, tls)."""
        if not data.get("host"):
            raise SettingsError("Redis secret lacks host")
        secret_tls = data.get("tls", data.get("ssl"))
        if tls is None:
            tls = secret_tls is True or str(secret_tls).strip().lower() in _TRUE
        return cls(
            host=str(data["host"]),
            port=data.get("port") or 6379,
            db=int(data.get("db") or 0),
            username=str(data["username"]) if data.get("username") else None,
            password=None if data.get("password") is None else str(data["password"]),
            tls=tls,
            tls_ca=tls_ca,
        )

    @classmethod
    def from_secret(cls, secret_name: str, region: str | None = None, client: Any = None,
                    tls: bool | None = None, tls_ca: str | None = None) -> RedisSettings:
        """From an AWS Secrets Manager secret (legacy shape)."""
        return cls.from_secret_value(read_secret(secret_name, region, client), tls, tls_ca)


def postgres_settings_from_env(env: Mapping[str, str] | None = None, client: Any = None) -> PostgresSettings:
    """The legacy secret when PGSQL_CREDENTIALS_SECRET_NAME is set, else PostgresSettings.from_env."""
    env = os.environ if env is None else env
    secret = env.get("PGSQL_CREDENTIALS_SECRET_NAME")
    if secret:
        return PostgresSettings.from_secret(secret, env.get("AWS_REGION"), client,
                                            sslmode=env.get("ASSET_CYCLE_PG_SSLMODE") or "require",
                                            sslrootcert=env.get("ASSET_CYCLE_PG_SSLROOTCERT") or None)
    return PostgresSettings.from_env(env)


def redis_settings_from_env(env: Mapping[str, str] | None = None, client: Any = None) -> RedisSettings:
    """The legacy secret when REDIS_CREDENTIALS_SECRET_NAME is set, else RedisSettings.from_env."""
    env = os.environ if env is None else env
    secret = env.get("REDIS_CREDENTIALS_SECRET_NAME")
    if secret:
        tls = _env_bool(env, "ASSET_CYCLE_REDIS_TLS", False) if "ASSET_CYCLE_REDIS_TLS" in env else None
        return RedisSettings.from_secret(secret, env.get("AWS_REGION"), client, tls=tls,
                                         tls_ca=env.get("ASSET_CYCLE_REDIS_TLS_CA") or None)
    return RedisSettings.from_env(env)


# ----------------------------------------------------------------------------- reference data

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


def region_keys(redis_client: Any, prefix: str = "") -> list[bytes]:
    """Every site's regions hash under ``prefix`` (``{prefix}site:*:regions``)."""
    return sorted(redis_client.scan_iter(match=f"{_glob_escape(prefix)}site:*:regions", count=500))


def delete_region_keys(redis_client: Any, prefix: str = "") -> int:
    """Delete every site's regions hash under ``prefix``; returns how many were deleted."""
    keys = region_keys(redis_client, prefix)
    return int(redis_client.delete(*keys)) if keys else 0


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def _read_only(pg_conn: Any) -> bool:
    """True when the connection is idle outside a transaction (we may end the one we open)."""
    from psycopg2.extensions import TRANSACTION_STATUS_IDLE

    return not pg_conn.autocommit and pg_conn.get_transaction_status() == TRANSACTION_STATUS_IDLE


def load_reference_data(pg_conn: Any, redis_client: Any, names: TableNames, redis_key_prefix: str = "",
                        stats: ReferenceLoadStats | None = None) -> ReferenceData:
    """Asset types and loaders from PostgreSQL, regions from Redis, grouped per site.

    Malformed region values (and loaders without a usable position) are skipped with a warning
    naming the key and field; they are counted in ``stats`` when one is passed. Regions are
    sorted by region_guid and loaders by asset_guid within each site.
    """
    from psycopg2 import sql

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

    regions = _load_regions(redis_client, redis_key_prefix, stats)
    return ReferenceData(asset_types=asset_types, sites=group_sites(loaders, regions))


def _load_regions(redis_client: Any, prefix: str, stats: ReferenceLoadStats) -> list[Region]:
    import redis

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


def seed_reference(pg_conn: Any, redis_client: Any, names: TableNames, reference: ReferenceData,
                   assets: Iterable[Sequence[Any]], redis_key_prefix: str = "") -> SeedSummary:
    """Write reference data in the legacy formats.

    PostgreSQL (one transaction): upsert every asset row ``(asset_guid, site_guid, asset_type,
    lat, lon)`` into ``asset`` (asset_name untouched) and every loader position (loaders of
    ``reference`` plus LOADER rows with a position) into ``asset_info``. Redis: for every site of
    ``reference``, replace its regions hash atomically (MULTI: DEL + HSET); a site without
    regions ends up with no hash. Region names must be unique within a site (they are the
    hash fields); a clash raises ValueError before anything is written.
    """
    from psycopg2 import sql
    from psycopg2.extras import execute_values

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

    pg: Any
    redis: Any
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


@dataclass(frozen=True)
class ReferenceConnector:
    """Picklable StoreReader factory for udfs.reference_poller.ReferencePoller (credentials are
    resolved in the worker)."""

    settings: Any  # job.settings.AppSettings
    postgres: PostgresSettings | None = None  # override (local runs)
    redis: RedisSettings | None = None  # override (local runs)
    names: TableNames | None = None

    def __call__(self) -> StoreReader:
        from job import settings as app_settings

        pg_settings = self.postgres or app_settings.postgres_settings(self.settings)
        redis_settings = self.redis or app_settings.redis_settings(self.settings)
        pg = pg_settings.connect()
        pg.autocommit = True
        return StoreReader(pg, redis_settings.client(), self.names or TableNames(),
                           self.settings.reference.redis_key_prefix)  # fmt: skip
