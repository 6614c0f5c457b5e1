"""Reference data as a stream of broadcast updates ``(kind, key, payload)`` (udfs.rows REF_*).

* ``reference_updates(previous, data)``: what changed between two snapshots (pure, tested).
* ``ReferencePoller``: a FlatMapFunction driven by a 1-per-second ticker; every
  ``interval_s`` it loads the reference data (PostgreSQL asset types and loader positions, Redis
  dump regions) through the reader the job gives it and emits only changed sites / asset types,
  and LOADED_MARKER after the first load that succeeded (even an empty one). A failing poll keeps
  the last known data, logs a warning and is counted (``referencePollFailures``).
  On every tick it also sets ``referenceAgeSeconds{site}``: seconds since the site's reference
  data was last loaded by a successful poll (changed or confirmed unchanged); it keeps growing
  while polls fail or after the site disappeared.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pyflink.datastream import FlatMapFunction

from state_machine.reference import ReferenceData, site_reference_to_mapping
from udfs.metrics import OperatorMetrics
from udfs.rows import LOADED_MARKER, REF_ASSET, REF_ASSET_DELETED, REF_SITE, REF_SITE_DELETED

log = logging.getLogger(__name__)


@dataclass
class Snapshot:
    """What was last broadcast: site guid -> JSON payload, asset guid -> type."""

    sites: dict[str, str] = field(default_factory=dict)
    assets: dict[str, str] = field(default_factory=dict)


def site_payload(site: Any) -> str:
    """Canonical JSON of a SiteReference (stable order, so equal content compares equal)."""
    return json.dumps(site_reference_to_mapping(site), sort_keys=True, separators=(",", ":"))


def reference_updates(previous: Snapshot, data: ReferenceData) -> tuple[list[tuple[str, str, str]], Snapshot]:
    """(updates, new snapshot): asset types first, then sites; deletions for what disappeared."""
    current = Snapshot(
        sites={guid: site_payload(site) for guid, site in sorted(data.sites.items())},
        assets={str(guid): str(kind) for guid, kind in sorted(data.asset_types.items())},
    )
    updates: list[tuple[str, str, str]] = []
    for guid, kind in current.assets.items():
        if previous.assets.get(guid) != kind:
            updates.append((REF_ASSET, guid, kind))
    for guid in sorted(set(previous.assets) - set(current.assets)):
        updates.append((REF_ASSET_DELETED, guid, ""))
    for guid, payload in current.sites.items():
        if previous.sites.get(guid) != payload:
            updates.append((REF_SITE, guid, payload))
    for guid in sorted(set(previous.sites) - set(current.sites)):
        updates.append((REF_SITE_DELETED, guid, ""))
    return updates, current


def snapshot_records(data: ReferenceData) -> list[tuple[str, str, str]]:
    """All records of one full snapshot, then LOADED_MARKER (the bounded, load-once mode)."""
    return [*reference_updates(Snapshot(), data)[0], LOADED_MARKER]


class ReferenceReader(Protocol):
    """An open connection to the reference stores."""

    def load(self) -> ReferenceData:
        """The current reference data (raises on any store failure)."""

    def close(self) -> None:
        """Release the connections."""


class ReferencePoller(FlatMapFunction):
    """tick -> changed reference records, polling every ``interval_s`` (see module docstring).

    ``open_reader`` is a picklable zero-argument callable returning a ReferenceReader; it is called
    lazily in the worker (credentials are resolved there) and again after a failed poll.
    """

    def __init__(self, open_reader: Callable[[], ReferenceReader], interval_s: float) -> None:
        self.open_reader = open_reader
        self.interval_s = float(interval_s)

    def open(self, runtime_context) -> None:
        self.snapshot = Snapshot()
        self.loaded = False  # LOADED_MARKER sent (once per attempt: the keyed operator's watermark waits for it)
        self.next_poll = 0.0
        self.reader: ReferenceReader | None = None
        self.polls = 0
        self.failures = 0
        self.confirmed: dict[str, float] = {}  # site guid -> wall time of the last successful poll with it
        m = self.metrics = OperatorMetrics(runtime_context)
        self._c_fail = m.counter("referencePollFailures", batch=1)
        self._c_updates = m.counter("referenceUpdates", batch=1)
        self._g_age = m.labelled_gauges("site", "referenceAgeSeconds")
        self._g_sites = m.gauge("referenceSites")

    def close(self) -> None:
        self._drop_reader()

    def _drop_reader(self) -> None:
        if self.reader is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                self.reader.close()
        self.reader = None

    def poll(self) -> list[tuple[str, str, str]]:
        """Load once and return the updates since the last successful poll ([] on failure), the
        first successful one followed by LOADED_MARKER."""
        self.polls += 1
        try:
            if self.reader is None:
                self.reader = self.open_reader()
            data = self.reader.load()
        except Exception as exc:  # noqa: BLE001 - any PG/Redis failure keeps the last data
            self.failures += 1
            self._c_fail.inc()
            log.warning("reference poll failed (keeping the last known data): %s: %s",
                        type(exc).__name__, str(exc)[:300])  # fmt: skip
            self._drop_reader()
            return []
        updates, self.snapshot = reference_updates(self.snapshot, data)
        loaded_at = time.time()
        for guid in data.sites:
            self.confirmed[guid] = loaded_at
        self._g_sites.set(len(data.sites))
        if updates:
            log.info("reference data changed: %d update(s)", len(updates))
            self._c_updates.inc(len(updates))
        if not self.loaded:
            self.loaded = True
            log.info("reference data loaded: %d site(s), %d asset(s)", len(data.sites), len(data.asset_types))
            updates.append(LOADED_MARKER)
        return updates

    def update_ages(self) -> None:
        """Set referenceAgeSeconds for every site seen so far (called on every tick)."""
        now = time.time()
        for guid, loaded_at in self.confirmed.items():
            self._g_age.set(guid, int(now - loaded_at))

    def flat_map(self, value):
        now = time.monotonic()
        if now < self.next_poll:
            self.update_ages()
            return
        self.next_poll = now + self.interval_s
        yield from self.poll()
        self.update_ages()

