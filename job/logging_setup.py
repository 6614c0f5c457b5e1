"""Structured logging for the asset-cycle job and CLI.

``setup_logging()`` installs one handler on the root logger (idempotent: calling it again
reconfigures that handler instead of adding another):

* format: one JSON object per line (``ts``, ``level``, ``logger``, ``msg`` + context fields)
  or a human-readable text line; ``fmt`` argument, else ``$ASSET_CYCLE_LOG_FORMAT`` (``json`` |
  ``text``), default ``json``;
* level: ``level`` argument (name or number), else ``$ASSET_CYCLE_LOG_LEVEL``, default INFO;
* context: fields passed with ``extra={...}`` and those bound with ``log_context(...)`` (a
  contextvar, so it follows threads/asyncio tasks that copy the context) appear as keys;
* secrets: ``SecretMaskingFilter`` replaces values of environment variables whose names contain
  PASSWORD, SECRET or TOKEN, registered secrets (``register_secret``), ``password=...`` pairs and
  the password of ``scheme://user:password@host`` URLs with ``***`` in the message, the
  context/extra values and the exception text, before any formatter sees them.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

LEVEL_ENV = "ASSET_CYCLE_LOG_LEVEL"
FORMAT_ENV = "ASSET_CYCLE_LOG_FORMAT"
FORMATS = ("json", "text")
MASK = "***"
SECRET_ENV_MARKERS = ("PASSWORD", "SECRET", "TOKEN")
NOISY_LOGGERS = ("apache_beam", "py4j", "urllib3", "botocore", "boto3", "s3transfer", "kafka")
"""Third-party loggers whose INFO chatter stays off (quiet_third_party_loggers)."""
# Values of secret-looking variables that are flags, not secrets (masking them would garble logs).
_NOT_SECRETS = frozenset({"true", "false", "yes", "no", "on", "off", "none", "null"})
_MIN_SECRET_LEN = 3

_HANDLER_MARK = "_asset_cycle_handler"
_context: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "asset_cycle_log_context", default=None)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", "context",
}

_KEY_VALUE_RE = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|secret|token|api_key)\b\s*=\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&;,'\"]+)",
    re.IGNORECASE,
)
_QUOTED_KEY_RE = re.compile(
    r"(?P<key>(?P<q>['\"])(?:password|passwd|pwd|secret|token|api_key)(?P=q)\s*:\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")",
    re.IGNORECASE,
)
_URL_PASSWORD_RE = re.compile(r"(?P<key>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]*:)(?P<value>[^\s@/]+)(?=@)")


# ----------------------------------------------------------------------------- context

def current_context() -> dict[str, Any]:
    """The context fields bound in this execution context (a copy)."""
    return dict(_context.get() or {})


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[dict[str, Any]]:
    """Bind fields (e.g. ``asset_guid=..., site_guid=...``) to every log record inside the block.

    Nested blocks add to (and may override) the outer fields; ``None`` values remove a field.
    """
    merged = {**(_context.get() or {}), **fields}
    merged = {k: v for k, v in merged.items() if v is not None}
    token = _context.set(merged)
    try:
        yield dict(merged)
    finally:
        _context.reset(token)


# ----------------------------------------------------------------------------- secrets

_registered: set[str] = set()
_registered_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask ``value`` in every log record from now on (e.g. a password read from a secret store)."""
    if value and len(value) >= _MIN_SECRET_LEN:
        with _registered_lock:
            _registered.add(value)


def env_secrets(env: Mapping[str, str] | None = None) -> set[str]:
    """Values of variables whose names contain PASSWORD, SECRET or TOKEN (flags like 'true' excluded)."""
    env = os.environ if env is None else env
    out = set()
    for name, value in env.items():
        upper = name.upper()
        if (any(marker in upper for marker in SECRET_ENV_MARKERS) and value
                and len(value) >= _MIN_SECRET_LEN and value.strip().lower() not in _NOT_SECRETS):
            out.add(value)
    return out


def mask_secrets(text: str, secrets: set[str] | frozenset[str] = frozenset()) -> str:
    """``text`` with known secret values, ``password=...`` pairs and URL passwords replaced by ***."""
    if not text:
        return text
    for secret in sorted(secrets, key=len, reverse=True):  # longest first: no partial leftovers
        if secret in text:
            text = text.replace(secret, MASK)
    text = _KEY_VALUE_RE.sub(lambda m: m.group("key") + MASK, text)
    text = _QUOTED_KEY_RE.sub(lambda m: m.group("key") + m.group("q") + MASK + m.group("q"), text)
    return _URL_PASSWORD_RE.sub(lambda m: m.group("key") + MASK, text)


def _mask_value(value: Any, secrets: frozenset[str]) -> Any:
    if isinstance(value, str):
        return mask_secrets(value, secrets)
    if isinstance(value, Mapping):
        return {k: _mask_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(v, secrets) for v in value]
    if isinstance(value, bool | int | float) or value is None:
        return value
    return mask_secrets(str(value), secrets)


class SecretMaskingFilter(logging.Filter):
    """Masks secrets in a record's message, extra/context fields and exception text (never drops)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.refresh(env)

    def refresh(self, env: Mapping[str, str] | None = None) -> None:
        """Re-read the secret values from the environment."""
        self._env_secrets = frozenset(env_secrets(env))

    @property
    def secrets(self) -> frozenset[str]:
        """Every value currently masked verbatim."""
        with _registered_lock:
            return self._env_secrets | frozenset(_registered)

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; always keeps it."""
        secrets = self.secrets
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not kill logging
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = mask_secrets(message, secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text, secrets)
        record.exc_info = None  # exc_text carries it (already masked)
        if record.stack_info:
            record.stack_info = mask_secrets(record.stack_info, secrets)
        for key, value in list(vars(record).items()):
            if key not in _RESERVED:
                setattr(record, key, _mask_value(value, secrets))
        context = getattr(record, "context", None)
        if isinstance(context, dict):
            record.context = _mask_value(context, secrets)
        return True


class ContextFilter(logging.Filter):
    """Copies the ``log_context`` fields onto the record (as ``record.context``) when it is emitted."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Attach the context; always keeps the record."""
        if not hasattr(record, "context"):
            record.context = current_context()
        return True


# ----------------------------------------------------------------------------- formatters

def _iso(created: float) -> str:
    stamp = datetime.fromtimestamp(created, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """Context fields then ``extra=`` fields of a record (extra wins on a clash)."""
    fields: dict[str, Any] = dict(getattr(record, "context", None) or {})
    for key, value in vars(record).items():
        if key not in _RESERVED and not key.startswith("_"):
            fields[key] = value
    return fields


def _exc_text(record: logging.LogRecord) -> str | None:
    if record.exc_text:
        return record.exc_text
    if record.exc_info:
        return "".join(traceback.format_exception(*record.exc_info)).rstrip()
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, context/extra fields, exc (if any)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single-line JSON object."""
        data: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            data.setdefault(key, value)
        exc = _exc_text(record)
        if exc:
            data["exc"] = exc
        if record.stack_info:
            data["stack"] = record.stack_info
        return json.dumps(data, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``2024-01-15T06:00:00.000Z INFO logger: message key=value ...`` (+ traceback lines)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as human-readable text."""
        line = f"{_iso(record.created)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = record_fields(record)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        exc = _exc_text(record)
        if exc:
            line += "\n" + exc
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


# ----------------------------------------------------------------------------- setup

def resolve_level(level: int | str | None = None) -> int:
    """A numeric level from an int, a name ('debug', 'INFO', '10'), $ASSET_CYCLE_LOG_LEVEL or INFO."""
    if level is None:
        level = os.environ.get(LEVEL_ENV) or logging.INFO
    if isinstance(level, int):
        return level
    text = str(level).strip()
    if text.isdigit():
        return int(text)
    value = logging.getLevelName(text.upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value


def resolve_format(fmt: str | None = None) -> str:
    """'json' or 'text' from the argument, $ASSET_CYCLE_LOG_FORMAT or the default (json)."""
    value = (fmt or os.environ.get(FORMAT_ENV) or "json").strip().lower()
    if value not in FORMATS:
        raise ValueError(f"unknown log format {value!r}; use one of {FORMATS}")
    return value


def setup_logging(level: int | str | None = None, fmt: str | None = None,
                  stream: TextIO | None = None) -> logging.Handler:
    """Configure the root logger once (later calls update the same handler) and return the handler.

    ``stream`` defaults to the current ``sys.stderr``.
    """
    numeric = resolve_level(level)
    chosen = resolve_format(fmt)
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, _HANDLER_MARK, False)), None)
    target = stream if stream is not None else sys.stderr
    if handler is None:
        handler = logging.StreamHandler(target)
        setattr(handler, _HANDLER_MARK, True)
        handler.addFilter(ContextFilter())
        handler.addFilter(SecretMaskingFilter())
        root.addHandler(handler)
    else:
        if isinstance(handler, logging.StreamHandler) and handler.stream is not target:
            handler.setStream(target)
        for flt in handler.filters:
            if isinstance(flt, SecretMaskingFilter):
                flt.refresh()
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    handler.setLevel(logging.NOTSET)
    root.setLevel(numeric)
    return handler


def quiet_third_party_loggers() -> None:
    """Third-party INFO chatter (Beam, py4j, botocore, ...) off: NOISY_LOGGERS log warnings and up."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
