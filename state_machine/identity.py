"""Deterministic ids and text cleaning of the job's output records (dead letters, alerts), so that a
replay of the same input produces the same rows and the sinks' upserts dedupe them."""

from __future__ import annotations

import hashlib

MAX_RAW_CHARS = 64 * 1024
"""A dead letter keeps at most this many characters of its raw record."""


def as_bytes(raw: str | bytes) -> bytes:
    """A raw record as bytes (text as UTF-8, lone surrogates kept)."""
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogatepass")
    return bytes(raw)


def clean_text(text: str | None, limit: int | None = None) -> str | None:
    """Text PostgreSQL accepts: no NUL characters, optionally truncated to ``limit`` characters."""
    if text is None:
        return None
    if limit is not None and len(text) > limit:
        text = text[:limit]
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _digest(parts: list[bytes]) -> str:
    h = hashlib.sha1()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def dead_letter_id(source: str, reason: str, raw: str | bytes) -> str:
    """Id (sha1 hex) of a dead letter from its source label, reason and raw record."""
    return _digest([source.encode("utf-8", "surrogatepass"), reason.encode(), as_bytes(raw)])


def alert_id(alert_type: str, asset_guid: str | None, event_ms: int | None, key: str = "") -> str:
    """Id (sha1 hex) of an alert; ``key`` distinguishes alerts of one truck at the same instant."""
    parts = (alert_type, asset_guid or "", "" if event_ms is None else str(event_ms), key)
    return _digest([part.encode("utf-8", "surrogatepass") for part in parts])
