"""Reference updates: diffs between snapshots, and a poller that survives PostgreSQL/Redis failures."""

from __future__ import annotations

from types import SimpleNamespace

from state_machine.model import HAUL_TRUCK, LOADER
from state_machine.reference import Loader, ReferenceData, Region, SiteReference
from udfs import reference_poller
from udfs.reference_poller import (
    ReferencePoller,
    Snapshot,
    reference_updates,
    snapshot_records,
)
from udfs.rows import LOADED_MARKER, REF_ASSET, REF_ASSET_DELETED, REF_SITE, REF_SITE_DELETED

SQUARE = ((118.70, -22.70), (118.71, -22.70), (118.71, -22.71), (118.70, -22.71))


def data(loader_lat: float = -22.7, regions: int = 1, assets: dict | None = None) -> ReferenceData:
    site = SiteReference(
        "S1",
        (Loader("L1", "S1", loader_lat, 118.7),),
        tuple(Region(f"R{i}", f"dump {i}", "dump", "S1", SQUARE) for i in range(regions)),
    )
    return ReferenceData(assets if assets is not None else {"T1": HAUL_TRUCK, "L1": LOADER}, {"S1": site})


def test_first_snapshot_emits_everything_assets_first_then_the_loaded_marker():
    updates = snapshot_records(data())
    assert [u[:2] for u in updates] == [(REF_ASSET, "L1"), (REF_ASSET, "T1"), (REF_SITE, "S1"), LOADED_MARKER[:2]]
    assert snapshot_records(ReferenceData({}, {})) == [LOADED_MARKER]


def test_only_changes_are_emitted():
    first, snap = reference_updates(Snapshot(), data())
    same, snap = reference_updates(snap, data())
    assert same == []
    moved, snap = reference_updates(snap, data(loader_lat=-22.71))
    assert [u[:2] for u in moved] == [(REF_SITE, "S1")]
    new_region, snap = reference_updates(snap, data(loader_lat=-22.71, regions=2))
    assert [u[:2] for u in new_region] == [(REF_SITE, "S1")]
    gone, snap = reference_updates(snap, ReferenceData({"T1": HAUL_TRUCK}, {}))
    assert [u[:2] for u in gone] == [(REF_ASSET_DELETED, "L1"), (REF_SITE_DELETED, "S1")]


class _Flaky:
    """A reader factory whose stores can be taken down; the reader loads data(loader_lat)."""

    def __init__(self) -> None:
        self.fail = False
        self.loader_lat = -22.7

    def connect(self):
        if self.fail:
            raise ConnectionError("redis down")
        return SimpleNamespace(load=self.load, close=lambda: None)

    def load(self) -> ReferenceData:
        if self.fail:
            raise ConnectionError("redis down")
        return data(loader_lat=self.loader_lat)


def test_poller_keeps_last_data_when_a_poll_fails():
    flaky = _Flaky()
    poller = ReferencePoller(flaky.connect, interval_s=0.0)
    poller.open(SimpleNamespace(get_metrics_group=lambda: (_ for _ in ()).throw(RuntimeError())))
    assert list(poller.flat_map(0))[-1] == LOADED_MARKER
    flaky.fail = True
    assert list(poller.flat_map(1)) == []
    assert poller.failures == 1
    flaky.fail, flaky.loader_lat = False, -22.72
    assert [u[:2] for u in poller.flat_map(2)] == [(REF_SITE, "S1")]  # the marker only once


def test_poller_marks_the_first_successful_load_even_when_it_fails_first_or_is_empty():
    flaky = _Flaky()
    flaky.fail = True
    poller = ReferencePoller(flaky.connect, interval_s=0.0)
    poller.open(SimpleNamespace(get_metrics_group=lambda: (_ for _ in ()).throw(RuntimeError())))
    assert list(poller.flat_map(0)) == []  # no marker before a load succeeded
    flaky.fail = False
    flaky.load = lambda: ReferenceData({}, {})
    assert list(poller.flat_map(1)) == [LOADED_MARKER]
    assert list(poller.flat_map(2)) == []


def test_poller_respects_its_interval(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(reference_poller.time, "monotonic", lambda: clock[0])
    poller = ReferencePoller(_Flaky().connect, interval_s=10.0)
    poller.open(SimpleNamespace(get_metrics_group=lambda: (_ for _ in ()).throw(RuntimeError())))
    assert list(poller.flat_map(0))
    clock[0] = 105.0
    assert poller.polls == 1 and list(poller.flat_map(1)) == [] and poller.polls == 1
    clock[0] = 111.0
    list(poller.flat_map(2))
    assert poller.polls == 2
