"""Connection settings of PostgreSQL and Redis, and the one way the project builds a Redis client.

Settings come from environment variables (``ASSET_CYCLE_PG_*`` / ``ASSET_CYCLE_REDIS_*``, local
defaults) or from an AWS Secrets Manager secret of the legacy shape ``{"host", "port", "dbname",
"username", "password"}``. Passwords never appear in ``repr``/``str``, logs or error messages.

* ``RedisSettings.client()`` builds every Redis client of the project (``RedisSettings.from_url``
  turns a ``redis://`` / ``rediss://`` URL into settings first); ``connect_redis`` also checks that
  the server answers, raising ``RedisUnavailable``.
* ``PostgresSettings.connect()`` opens a psycopg2 connection (stores.postgres.connect).
* ``mask_url``, ``parse_jdbc_url`` and ``jdbc_url_with_tls`` relate a ``jdbc:postgresql://`` URL (the
  sinks') to these settings (psycopg2's).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import redis
from redis.connection import SSLConnection, parse_url

from stores.errors import SettingsError, UserError
from stores.postgres import connect
from stores.secrets import read_secret

MASK = "***"
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
REDIS_CONNECT_TIMEOUT_S = 10
REDIS_TIMEOUT_S = 30
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_PASSWORD_IN_URL = re.compile(r"(?i)(password=)[^&;]*")


class RedisUnavailable(UserError):
    """Redis could not be reached; the message names host:port and never the password."""


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


# --------------------------------------------------------------------------- PostgreSQL


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
        """A psycopg2 connection (stores.postgres.DatabaseUnavailable when unreachable)."""
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


def postgres_settings_from_env(env: Mapping[str, str] | None = None, client: Any = None) -> PostgresSettings:
    """The legacy secret when PGSQL_CREDENTIALS_SECRET_NAME is set, else PostgresSettings.from_env."""
    env = os.environ if env is None else env
    secret = env.get("PGSQL_CREDENTIALS_SECRET_NAME")
    if secret:
        return PostgresSettings.from_secret(secret, env.get("AWS_REGION"), client,
                                            sslmode=env.get("ASSET_CYCLE_PG_SSLMODE") or "require",
                                            sslrootcert=env.get("ASSET_CYCLE_PG_SSLROOTCERT") or None)
    return PostgresSettings.from_env(env)


def mask_url(url: str) -> str:
    """A URL with any password=... parameter masked."""
    return _PASSWORD_IN_URL.sub(r"\1***", url)


def parse_jdbc_url(url: str) -> dict[str, Any]:
    """host, port, dbname (and query parameters) of a ``jdbc:postgresql://host:port/db?..`` URL."""
    if not url.startswith("jdbc:postgresql://"):
        raise SettingsError(f"SinkConfig.jdbc.url: not a jdbc:postgresql:// URL: {mask_url(url)!r}")
    parts = urlsplit(url[len("jdbc:"):])
    out: dict[str, Any] = {"host": parts.hostname or "127.0.0.1", "port": parts.port or 5432,
                           "dbname": unquote(parts.path.lstrip("/")) or "postgres"}  # fmt: skip
    out.update({k: v for k, v in parse_qsl(parts.query) if k in ("sslmode", "sslrootcert")})
    return out


def jdbc_url_with_tls(url: str, pg: PostgresSettings) -> str:
    """``url`` (``jdbc:postgresql://...``) with the PostgreSQL settings' ``sslmode`` and
    ``sslrootcert`` added where the URL has none, so the JDBC sinks use the same TLS as psycopg2
    (e.g. ``sslmode=require`` from a Secrets Manager secret with a plain SinkConfig.jdbc.url)."""
    base, _, query = url.partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    added = {k: v for k in ("sslmode", "sslrootcert") if (v := getattr(pg, k, None)) and k not in params}
    if not added:
        return url
    return f"{base}?{urlencode({**params, **added})}"


# --------------------------------------------------------------------------- Redis


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

    def client(self, *, connect_timeout_s: float = REDIS_CONNECT_TIMEOUT_S,
               timeout_s: float = REDIS_TIMEOUT_S) -> redis.Redis:
        """A ``redis.Redis`` client (connects lazily): the one way the project builds one."""
        kwargs: dict[str, Any] = {
            "host": self.host, "port": self.port, "db": self.db, "username": self.username,
            "password": self.password, "socket_connect_timeout": connect_timeout_s, "socket_timeout": timeout_s,
        }  # fmt: skip
        if self.tls:
            kwargs.update(ssl=True, ssl_ca_certs=self.tls_ca)
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
    def from_url(cls, url: str) -> RedisSettings:
        """From a ``redis://[user:password@]host[:port][/db]`` or ``rediss://`` (TLS) URL
        (``?ssl_ca_certs=FILE`` names the CA); SettingsError, without the password, when it is not one."""
        try:
            parts = parse_url(url)
        except ValueError as exc:  # its message names the problem, never the URL
            raise SettingsError(f"{exc} (expected redis://[USER:PASSWORD@]HOST[:PORT][/DB] or rediss://...)") from None
        if "host" not in parts:
            raise SettingsError("a Redis URL needs a host: redis://[USER:PASSWORD@]HOST[:PORT][/DB]")
        return cls(host=parts["host"], port=parts.get("port") or 6379, db=int(parts.get("db") or 0),
                   username=parts.get("username"), password=parts.get("password"),
                   tls=parts.get("connection_class") is SSLConnection, tls_ca=parts.get("ssl_ca_certs"))  # fmt: skip

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


def redis_settings_from_env(env: Mapping[str, str] | None = None, client: Any = None) -> RedisSettings:
    """The legacy secret when REDIS_CREDENTIALS_SECRET_NAME is set, else RedisSettings.from_env."""
    env = os.environ if env is None else env
    secret = env.get("REDIS_CREDENTIALS_SECRET_NAME")
    if secret:
        tls = _env_bool(env, "ASSET_CYCLE_REDIS_TLS", False) if "ASSET_CYCLE_REDIS_TLS" in env else None
        return RedisSettings.from_secret(secret, env.get("AWS_REGION"), client, tls=tls,
                                         tls_ca=env.get("ASSET_CYCLE_REDIS_TLS_CA") or None)
    return RedisSettings.from_env(env)


def connect_redis(settings: RedisSettings) -> redis.Redis:
    """A client whose server answered PING; RedisUnavailable (naming host:port, password masked) otherwise."""
    client = settings.client()
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        message = f"cannot connect to Redis at {settings.address}: {type(exc).__name__}: {exc}"
        raise RedisUnavailable(message.replace(settings.password, MASK) if settings.password else message) from None
    return client
