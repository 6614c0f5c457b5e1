"""The live view's guard, an ASGI middleware in front of every route:

* security headers on every answer: a Content-Security-Policy that allows only the server's own scripts,
  styles and data (plus the configured tile server's images), no framing, no MIME sniffing, no referrer;
* a bearer token (``Authorization: Bearer ...``, compared in constant time) on the API and ``/health``
  when one is configured (required when the server is bound beyond loopback; the page's own files need
  none);
* bound to loopback, only a loopback ``Host`` header is accepted, so a web page elsewhere cannot reach the
  API through DNS rebinding.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from web.settings import LOOPBACK_NAMES, is_loopback

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROTECTED_PREFIXES = ("/api/", "/health")


def tile_source(tile_url: str | None) -> str:
    """The CSP source of a tile URL template (``https://{s}.tile.example.org/{z}/{x}/{y}.png`` ->
    ``https://*.tile.example.org``); empty without one."""
    if not tile_url:
        return ""
    parts = urlsplit(tile_url.replace("{s}", "tiles-subdomain"))
    host = (parts.netloc or "").replace("tiles-subdomain", "*")
    return f"{parts.scheme}://{host}" if host else ""


def content_security_policy(tile_url: str | None) -> str:
    """The page's CSP: its own files only (and the tile server's images)."""
    images = " ".join(filter(None, ("'self'", "data:", tile_source(tile_url))))
    return ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            f"img-src {images}; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class SecurityMiddleware:
    """Headers, bearer token and Host check (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, token: str | None, host: str, tile_url: str | None) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None
        self.allowed_hosts = ({*LOOPBACK_NAMES, host.strip("[]").lower()} if is_loopback(host) else None)
        self.headers = [
            (b"content-security-policy", content_security_policy(tile_url).encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"cross-origin-resource-policy", b"same-origin"),
            (b"permissions-policy", b"geolocation=(), camera=(), microphone=()"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        headers = Headers(scope=scope)
        refusal = self._refusal(headers, scope["path"])
        if refusal is not None:
            status, text = refusal
            extra = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
            response = JSONResponse({"error": text}, status_code=status, headers={"Cache-Control": "no-store", **extra})
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, headers: Headers, path: str) -> tuple[int, str] | None:
        if self.allowed_hosts is not None:
            host = urlsplit("//" + headers.get("host", "")).hostname or ""
            if host.lower() not in self.allowed_hosts:
                return 400, "this server answers on its loopback address only (unexpected Host header)"
        if self.expected is not None and path.startswith(PROTECTED_PREFIXES):
            given = headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, self.expected):
                return 401, "a bearer token is required (Authorization: Bearer TOKEN)"
        return None
