"""Structured logging: JSON lines, context fields, levels, text format, secret masking, idempotence."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from job.logging_setup import (
    MASK,
    JsonFormatter,
    SecretMaskingFilter,
    current_context,
    env_secrets,
    log_context,
    mask_secrets,
    register_secret,
    resolve_format,
    resolve_level,
    setup_logging,
)


def _remove_our_handlers() -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_asset_cycle_handler", False)]:
        root.removeHandler(handler)


@pytest.fixture(autouse=True)
def _clean_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("ASSET_CYCLE_LOG_LEVEL", raising=False)
    monkeypatch.delenv("ASSET_CYCLE_LOG_FORMAT", raising=False)
    root = logging.getLogger()
    level = root.level
    _remove_our_handlers()
    yield
    _remove_our_handlers()
    root.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_parse_with_core_and_context_fields() -> None:
    out = io.StringIO()
    setup_logging(stream=out)
    log = logging.getLogger("asset_cycle.test")
    with log_context(asset_guid="HT-001", site_guid="SITE-01"):
        log.info("closed %d cycles", 3, extra={"loader": "LDR-1"})
    log.info("outside")
    first, second = _lines(out)
    assert first["msg"] == "closed 3 cycles"
    assert first["level"] == "INFO" and first["logger"] == "asset_cycle.test"
    assert first["ts"].endswith("Z") and "T" in first["ts"]
    assert first["asset_guid"] == "HT-001" and first["site_guid"] == "SITE-01" and first["loader"] == "LDR-1"
    assert "asset_guid" not in second


def test_context_nests_overrides_and_resets() -> None:
    with log_context(site_guid="S1", asset_guid="A"):
        with log_context(asset_guid="B", extra_field=1):
            assert current_context() == {"site_guid": "S1", "asset_guid": "B", "extra_field": 1}
        with log_context(asset_guid=None):
            assert current_context() == {"site_guid": "S1"}
        assert current_context() == {"site_guid": "S1", "asset_guid": "A"}
    assert current_context() == {}


def test_context_is_per_thread() -> None:
    seen: dict[str, dict] = {}

    def worker() -> None:
        seen["thread"] = current_context()

    with log_context(asset_guid="A"):
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    assert seen["thread"] == {}


def test_exception_is_one_json_line() -> None:
    out = io.StringIO()
    setup_logging(stream=out)
    try:
        raise RuntimeError("bad thing")
    except RuntimeError:
        logging.getLogger("x").exception("failed")
    (line,) = _lines(out)
    assert line["level"] == "ERROR" and "RuntimeError: bad thing" in line["exc"]


def test_level_from_argument_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    setup_logging(level="warning", stream=out)
    log = logging.getLogger("lvl")
    log.info("hidden")
    log.warning("shown")
    assert [x["msg"] for x in _lines(out)] == ["shown"]

    monkeypatch.setenv("ASSET_CYCLE_LOG_LEVEL", "DEBUG")
    out2 = io.StringIO()
    setup_logging(stream=out2)
    log.debug("debug now")
    assert [x["msg"] for x in _lines(out2)] == ["debug now"]
    assert resolve_level("10") == 10 and resolve_level(logging.ERROR) == logging.ERROR
    with pytest.raises(ValueError, match="unknown log level"):
        resolve_level("chatty")


def test_text_format_from_env(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ASSET_CYCLE_LOG_FORMAT", "text")
    setup_logging()
    with log_context(asset_guid="HT-9"):
        logging.getLogger("human").warning("slow loader")
    err = capsys.readouterr().err.strip()
    assert "WARNING" in err and "human: slow loader" in err and "asset_guid=HT-9" in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err)
    with pytest.raises(ValueError, match="unknown log format"):
        resolve_format("xml")


def test_setup_is_idempotent() -> None:
    root = logging.getLogger()
    before = len(root.handlers)
    first = setup_logging(stream=io.StringIO())
    second = setup_logging(level="DEBUG", fmt="text", stream=io.StringIO())
    assert first is second
    assert len(root.handlers) == before + 1
    assert root.level == logging.DEBUG


def test_passwords_are_masked_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSET_CYCLE_PG_PASSWORD", "s3cr3t-pg")
    monkeypatch.setenv("SOME_API_TOKEN", "tok-123456")
    monkeypatch.setenv("FEATURE_TOKEN_ENABLED", "true")  # a flag, not a secret
    out = io.StringIO()
    setup_logging(stream=out)
    log = logging.getLogger("secrets")
    with log_context(dsn="host=db port=5432 password=inline-pw user=me"):
        log.info("connecting to %s with %s", "postgresql://me:url-pw@db:5432/x", "s3cr3t-pg",
                 extra={"token": "tok-123456", "nested": {"url": "redis://:redis-pw@cache:6379/0"}})
    try:
        raise ValueError("login failed for password='quoted pw'")
    except ValueError:
        log.exception("error with tok-123456")
    text = out.getvalue()
    for secret in ("s3cr3t-pg", "tok-123456", "inline-pw", "url-pw", "redis-pw", "quoted pw"):
        assert secret not in text
    first, second = _lines(out)
    assert first["msg"] == f"connecting to postgresql://me:{MASK}@db:5432/x with {MASK}"
    assert first["dsn"] == f"host=db port=5432 password={MASK} user=me"
    assert first["token"] == MASK
    assert first["nested"]["url"] == f"redis://:{MASK}@cache:6379/0"
    assert second["msg"] == f"error with {MASK}" and "ValueError" in second["exc"]
    assert "true" not in env_secrets({"FEATURE_TOKEN_ENABLED": "true"})


def test_caplog_sees_masked_records(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("REDIS_PASSWORD", "very-secret-value")
    handler = setup_logging(stream=io.StringIO())
    caplog.handler.addFilter(next(f for f in handler.filters if isinstance(f, SecretMaskingFilter)))
    with caplog.at_level(logging.INFO):
        logging.getLogger("cap").info("auth with very-secret-value")
    assert caplog.records[-1].getMessage() == f"auth with {MASK}"
    assert "very-secret-value" not in caplog.text


def test_register_secret_and_mask_helpers() -> None:
    register_secret("from-secrets-manager-42")
    flt = SecretMaskingFilter(env={})
    record = logging.LogRecord("r", logging.INFO, __file__, 1, "pw=%s", ("from-secrets-manager-42",), None)
    flt.filter(record)
    assert record.getMessage() == f"pw={MASK}"
    assert mask_secrets('{"password": "p1", "user": "u"}') == f'{{"password": "{MASK}", "user": "u"}}'
    assert mask_secrets("https://user:pw@host/path?token=abc&x=1") == f"https://user:{MASK}@host/path?token={MASK}&x=1"
    assert mask_secrets("no secrets here: 12 cycles") == "no secrets here: 12 cycles"


def test_json_formatter_handles_unserialisable_extra() -> None:
    record = logging.LogRecord("f", logging.INFO, __file__, 1, "msg", None, None)
    record.obj = object()
    data = json.loads(JsonFormatter().format(record))
    assert data["obj"].startswith("<object object")
