"""Each site's map: its regions (dump polygons and any other region type) from Redis, in the legacy hashes
``{prefix}site:{site}:regions`` the job reads. Read at most every ``refresh_s`` seconds; when Redis does
not answer, the last regions read stay in force and the problem is reported as a warning."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import redis

from state_machine.reference import Region
from stores.connections import RedisSettings
from stores.reference import load_regions

REFRESH_S = 30.0
REDIS_TIMEOUT_S = 3.0


class RegionCache:
    """Regions per site, refreshed from Redis at most every ``refresh_s`` seconds (None: no Redis)."""

    def __init__(self, settings: RedisSettings | None, prefix: str = "", refresh_s: float = REFRESH_S) -> None:
        self._client = None if settings is None else settings.client(connect_timeout_s=REDIS_TIMEOUT_S,
                                                                        timeout_s=REDIS_TIMEOUT_S)  # fmt: skip
        self._prefix = prefix
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._regions: dict[str, list[Region]] = {}
        self._problem: str | None = None if settings is not None else "no Redis configured: the map has no regions"
        self._read_at = float("-inf")

    def regions(self) -> tuple[dict[str, list[Region]], str | None]:
        """(site -> regions, a problem to report or None)."""
        with self._lock:
            if self._client is not None and time.monotonic() - self._read_at >= self._refresh_s:
                self._read_at = time.monotonic()
                try:
                    by_site: dict[str, list[Region]] = defaultdict(list)
                    for region in load_regions(self._client, self._prefix):
                        by_site[region.site_guid].append(region)
                    self._regions, self._problem = dict(by_site), None
                except redis.RedisError as exc:
                    self._problem = f"Redis does not answer ({' '.join(str(exc).split())}): dump regions as last read"
            return self._regions, self._problem

    def close(self) -> None:
        """Close the Redis client."""
        if self._client is not None:
            self._client.close()
