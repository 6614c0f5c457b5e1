"""Operator alerts raised by the engine: once per occurrence, from committed points only."""

from __future__ import annotations

from state_machine.model import (
    ALERT_CLOCK_JUMP,
    ALERT_DUMP_OUTSIDE_REGION,
    ALERT_LONG_IDLE,
    ALERT_NO_REFERENCE_DATA,
    ALERT_RESTRICTED_REGION,
)
from state_machine.reference import Region, SiteReference
from state_machine.telemetry import format_record
from state_machine.truck import END_OF_INPUT, TruckEngine
from tests.state_machine.track import SITE, Track, offset, reference_data, site_reference, square
from workbench.replay import replay


def alerts_of(points, site: SiteReference | None = None):
    engine = TruckEngine(speculative=True)
    site = site or site_reference()
    state, alerts = None, []
    for p in points:
        out, state = engine.on_point(state, p, site)
        alerts += out.alerts
    out, state = engine.on_timer(state, 0, END_OF_INPUT, site)
    return alerts + out.alerts


def test_long_idle_alert_once_per_standstill_with_position():
    tr = Track().approach().stand(120).drive(700).stand(900, every=30).drive(1500).stand(40).drive(0).stand(60)
    alerts = alerts_of(tr.points)
    long_idle = [a for a in alerts if a.alert_type == ALERT_LONG_IDLE]
    assert len(long_idle) == 1
    lat, lon = offset(-22.70, 118.70, 700, 0)
    assert abs(long_idle[0].latitude - lat) < 1e-4 and abs(long_idle[0].longitude - lon) < 1e-4


def test_dump_outside_region_alert_at_the_likely_dump_spot():
    tr = Track().approach().stand(120).drive(900).stand(60).drive(0).stand(120).drive(1500).stand(40).drive(0).stand(60)
    alerts = [a for a in alerts_of(tr.points) if a.alert_type == ALERT_DUMP_OUTSIDE_REGION]
    assert len(alerts) == 1
    lat, _ = offset(-22.70, 118.70, 900, 0)
    assert abs(alerts[0].latitude - lat) < 1e-4


def test_restricted_region_entry_alert_once_per_entry():
    base = site_reference()
    restricted = Region("NO-GO", "Blast zone", "restricted", SITE, square(offset(-22.70, 118.70, 700, 0), 50))
    site = SiteReference(SITE, base.loaders, (*base.regions, restricted))
    tr = Track().approach().stand(120).drive(1500).stand(40).drive(0).stand(120).drive(1500).stand(40).drive(0).stand(60)
    alerts = [a for a in alerts_of(tr.points, site) if a.alert_type == ALERT_RESTRICTED_REGION]
    assert len(alerts) == 4  # through the zone on each of four passes
    assert {a.key for a in alerts} == {"NO-GO"}


def test_no_alerts_on_clean_cycles():
    assert alerts_of(Track().approach().cycle().cycle().stand(60).points) == []


def test_clock_jump_alert():
    points = Track().approach().cycle().stand(100).points
    glitch = points[10]._replace(ts_ms=points[10].ts_ms + 86_400_000)
    alerts = alerts_of(points[:11] + [glitch] + points[11:])
    assert [a.alert_type for a in alerts] == [ALERT_CLOCK_JUMP]


def test_replay_alerts_missing_reference_once_per_site():
    tr = Track(site="SITE-UNKNOWN").approach().stand(60)
    ref = reference_data()
    lines = [(str(i), format_record(p)) for i, p in enumerate(tr.points)]
    result = replay(lines, ref)
    assert [a.alert_type for a in result.alerts] == [ALERT_NO_REFERENCE_DATA]
    assert {d.reason for d in result.dead_letters} == {"NO_REFERENCE_DATA"}
    # every point is dead-lettered, once: none applied, none lost
    assert sorted(d.ts_ms for d in result.dead_letters) == [p.ts_ms for p in tr.points]
    assert result.applied_points == 0
