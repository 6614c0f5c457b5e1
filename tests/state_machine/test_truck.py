"""Ordering, dedup, timers and serialisation of the per-truck engine, with property-based tests."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state_machine.model import COMPLETE, IDLING, WORKING, TelemetryPoint
from state_machine.truck import END_OF_INPUT, TruckEngine, TruckState
from tests.state_machine.track import T0, Track, offset, site_reference

SITE = site_reference()


def noisy(points: list[TelemetryPoint], rng: random.Random, sigma_m: float) -> list[TelemetryPoint]:
    out = []
    for p in points:
        lat, lon = offset(p.latitude, p.longitude, rng.gauss(0, sigma_m), rng.gauss(0, sigma_m))
        out.append(p._replace(latitude=lat, longitude=lon))
    return out


def build_track(seed: int) -> list[TelemetryPoint]:
    """A random multi-cycle track: varied load/dump times, ping intervals, noise, long idles."""
    rng = random.Random(seed)
    every = rng.choice([5.0, 10.0, 15.0, 20.0, 30.0])
    tr = Track().approach(every=every)
    for _ in range(rng.randint(2, 5)):
        tr.stand(rng.uniform(25, 300), every)
        tr.drive(rng.uniform(500, 900), speed=rng.uniform(5, 12), every=every)
        if rng.random() < 0.3:
            tr.stand(rng.uniform(100, 900), every=max(every, 30))
        if rng.random() < 0.85:
            tr.drive(1500, speed=rng.uniform(5, 12), every=every).stand(rng.uniform(25, 120), every)
        tr.drive(0, speed=rng.uniform(6, 14), every=every)
    tr.stand(60, every)
    return noisy(tr.points, rng, rng.choice([0.0, 2.0, 4.0]))


def run(engine: TruckEngine, arrivals: list[TelemetryPoint], roundtrip: bool = False):
    state = None
    closed, rejected, dups = [], [], 0
    for p in arrivals:
        if roundtrip and state is not None:
            state = TruckState.from_bytes(state.to_bytes())
        out, state = engine.on_point(state, p, SITE)
        closed += out.closed
        rejected += out.rejected
        dups += out.duplicates
    out, state = engine.on_timer(state, 0, END_OF_INPUT, SITE)
    closed += out.closed
    return closed, rejected, dups, state


def shuffled_within(points: list[TelemetryPoint], rng: random.Random, max_delay_s: float) -> list[TelemetryPoint]:
    """Delivery order when each point is delayed by 0..max_delay_s."""
    keyed = [(p.ts_ms + rng.uniform(0, max_delay_s) * 1000, i, p) for i, p in enumerate(points)]
    return [p for _, _, p in sorted(keyed)]


PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(seed=st.integers(0, 10**6), shuffle_seed=st.integers(0, 10**6))
def test_closed_cycles_identical_when_shuffled_within_max_disorder(seed: int, shuffle_seed: int):
    points = build_track(seed)
    engine = TruckEngine()
    expected, _, _, _ = run(engine, points)
    arrivals = shuffled_within(points, random.Random(shuffle_seed), 59.0)
    got, rejected, _, _ = run(engine, arrivals)
    assert rejected == []
    assert got == expected


@PROPERTY
@given(seed=st.integers(0, 10**6), dup_seed=st.integers(0, 10**6), rate=st.floats(0.05, 1.0))
def test_closed_cycles_identical_when_duplicated(seed: int, dup_seed: int, rate: float):
    points = build_track(seed)
    engine = TruckEngine()
    expected, _, _, _ = run(engine, points)
    rng = random.Random(dup_seed)
    with_dups = points + [p for p in points if rng.random() < rate]
    arrivals = shuffled_within(with_dups, rng, 59.0)
    got, rejected, dups, _ = run(engine, arrivals)
    assert rejected == []
    assert dups == len(with_dups) - len(points)
    assert got == expected


@PROPERTY
@given(seed=st.integers(0, 10**6), drop_seed=st.integers(0, 10**6), drop=st.floats(0.0, 0.5))
def test_gapped_input_yields_well_formed_cycles(seed: int, drop_seed: int, drop: float):
    rng = random.Random(drop_seed)
    points = [p for p in build_track(seed) if rng.random() >= drop]
    closed, rejected, _, _ = run(TruckEngine(), points)
    assert rejected == []
    starts = [c.load_start_ms for c in closed]
    assert starts == sorted(set(starts))
    for c in closed:
        assert c.total_cycle_seconds == (c.cycle_end_ms - c.load_start_ms) / 1000
        if c.cycle_status == COMPLETE:
            assert c.load_start_ms < c.load_end_ms <= c.dump_start_ms < c.dump_end_ms <= c.cycle_end_ms
            parts = c.load_seconds + c.load_travel_seconds + c.dump_seconds + c.empty_travel_seconds
            assert abs(parts - c.total_cycle_seconds) < 1e-6


@PROPERTY
@given(seed=st.integers(0, 10**6), shuffle_seed=st.integers(0, 10**6))
def test_state_roundtrips_through_bytes_at_every_step(seed: int, shuffle_seed: int):
    arrivals = shuffled_within(build_track(seed), random.Random(shuffle_seed), 40.0)
    engine = TruckEngine()
    plain = run(engine, arrivals)
    tripped = run(engine, arrivals, roundtrip=True)
    assert plain[0] == tripped[0]
    assert plain[3] == tripped[3]
    assert TruckState.from_bytes(plain[3].to_bytes()) == plain[3]


def test_state_is_small():
    engine = TruckEngine()
    state = None
    biggest = 0
    for p in shuffled_within(build_track(7), random.Random(1), 59.0):
        _, state = engine.on_point(state, p, SITE)
        biggest = max(biggest, len(state.to_bytes()))
    assert biggest <= 2048, biggest


def test_late_point_is_reported_not_lost():
    points = Track().approach().cycle().stand(200).points
    late = points[5]
    engine = TruckEngine()
    closed, rejected, dups, _ = run(engine, points[:5] + points[6:] + [late])
    assert [r.reason for r in rejected] == ["LATE"]
    assert rejected[0].point == late


def test_duplicate_of_committed_point_is_counted_not_late():
    points = Track().approach().cycle().stand(200).points
    _, rejected, dups, _ = run(TruckEngine(), points + [points[-15]])
    assert rejected == [] and dups == 1


def test_conflicting_duplicate_is_rejected():
    points = Track().approach().stand(60).points
    changed = points[3]._replace(work_state_id=WORKING if points[3].work_state_id == IDLING else IDLING)
    _, rejected, _, _ = run(TruckEngine(), points[:4] + [changed] + points[4:])
    assert [r.reason for r in rejected] == ["CONFLICTING_DUPLICATE"]


def test_single_forward_clock_glitch_is_rejected_and_cycles_unchanged():
    points = Track().approach().cycle().cycle().stand(100).points
    engine = TruckEngine()
    expected, _, _, _ = run(engine, points)
    glitch = points[20]._replace(ts_ms=points[20].ts_ms + 86_400_000 * 3)
    got, rejected, _, _ = run(engine, points[:21] + [glitch] + points[21:])
    assert [r.reason for r in rejected] == ["CLOCK_JUMP"]
    assert got == expected


def test_a_stray_held_beside_the_next_row_after_a_silence_is_not_taken_with_it():
    """The next row after a 90 s silence is held (ahead of the timeline); a stray a day ahead comes
    right after it. The rows that follow carry the truck's time on: the stray alone is rejected."""
    points = Track().approach().cycle().cycle().stand(100).points
    silent = points[:40] + [p for p in points[40:] if p.ts_ms - points[39].ts_ms > 90_000]
    expected, _, _, _ = run(TruckEngine(), silent)
    stray = silent[40]._replace(ts_ms=silent[40].ts_ms + 86_400_000)
    got, rejected, _, _ = run(TruckEngine(), silent[:41] + [stray] + silent[41:])
    assert [(r.reason, r.point) for r in rejected] == [("CLOCK_JUMP", stray)]
    assert got == expected


def test_a_stray_ahead_of_a_truck_gone_silent_waits_for_the_backlog_that_follows():
    """A stray 2 min ahead is the truck's last point before a 10-minute outage; the stream's time passes
    it by more than lead_hold_s before the outage's backlog arrives in order. Nothing the truck sent
    confirms the stray, so it is still held: the backlog is applied, none of it LATE, and the stray,
    reached by the backlog, is put in order (at most the cycle holding it changes)."""
    points = Track().approach(every=20).cycle(every=20).cycle(every=20).stand(100, every=20).points
    engine = TruckEngine()
    expected, _, _, _ = run(engine, points)
    for k in (12, 25, 40):
        stray = points[k - 1]._replace(ts_ms=points[k - 1].ts_ms + 120_000)
        state, closed, rejected = None, [], []
        for p in points[:k] + [stray]:
            out, state = engine.on_point(state, p, SITE, arrival_ms=p.ts_ms - 61_000)
            closed += out.closed
        silence_ends = stray.ts_ms + 600_000
        out, state = engine.on_timer(state, state.timer_due_ms(engine.config), silence_ends, SITE)
        closed += out.closed
        assert state.committed.prev_ts < stray.ts_ms and [e.ts_ms for e, _ in state.lead] == [stray.ts_ms]
        for p in points[k:]:
            out, state = engine.on_point(state, p, SITE, arrival_ms=silence_ends)
            closed += out.closed
            rejected += out.rejected
        out, state = engine.on_timer(state, 0, END_OF_INPUT, SITE)
        closed += out.closed
        assert rejected == [], k
        untouched = [c for c in expected if c.cycle_end_ms < points[k - 1].ts_ms or c.load_start_ms > stray.ts_ms]
        assert len(closed) == len(expected) and all(c in closed for c in untouched), k


def test_a_sparse_devices_newest_point_waits_for_the_next_one_or_idle_close():
    """A device reporting every 10 min: each point is ahead of the truck's timeline. One joins once the
    stream's time passed it by lead_hold_s and a newer point came; the newest waits (shown in the live
    row), until idle_close_s of stream time passed it."""
    points = Track().stand(3600, every=600).points
    engine = TruckEngine()
    th = engine.config.for_site(points[0].site_guid)
    lead_hold, idle_close = int(th.lead_hold_s * 1000), int(th.idle_close_s * 1000)
    state = None
    for i, p in enumerate(points):
        _, state = engine.on_point(state, p, SITE, arrival_ms=p.ts_ms)
        out, state = engine.on_timer(state, p.ts_ms + lead_hold, p.ts_ms + lead_hold, SITE)
        assert out.rejected == []
        assert engine.current(state).prev_ts == p.ts_ms  # the live row shows the newest point
        if i:
            assert [e.ts_ms for e, _ in state.lead] == [p.ts_ms]
            assert state.committed.prev_ts == points[i - 1].ts_ms
            assert state.timer_due_ms(engine.config) >= points[i - 1].ts_ms + idle_close  # no timer before
    last = points[-1].ts_ms
    _, state = engine.on_timer(state, last + idle_close, last + idle_close, SITE)
    assert state.lead == [] and state.committed.prev_ts == last


def test_confirmed_forward_jump_is_accepted():
    points = Track().approach().cycle().stand(100).points
    later = Track(start_ms=points[-1].ts_ms + 86_400_000).approach().cycle().stand(100).points
    got, rejected, _, _ = run(TruckEngine(), points + later)
    assert rejected == []
    assert len(got) == 3  # the cycle before the jump closes DATA_GAP-free? it closes at the next load
    assert got[-1].load_start_ms > points[-1].ts_ms


def test_idle_timer_closes_silent_truck_but_end_of_input_does_not():
    points = Track().approach().stand(120).drive(900).points
    engine = TruckEngine()
    state = None
    for p in points:
        _, state = engine.on_point(state, p, SITE)
    out, ended = engine.on_timer(TruckState.from_bytes(state.to_bytes()), 0, END_OF_INPUT, SITE)
    assert out.closed == [] and ended.committed.phase == "LOAD_TRAVEL"
    due = ended.timer_due_ms(engine.config)
    assert due == points[-1].ts_ms + 14_400_000
    out, closed_state = engine.on_timer(ended, due, due, SITE)
    assert [(c.cycle_status, c.invalid_reason) for c in out.closed] == [("INVALID", "IDLE_TIMEOUT")]
    assert closed_state.timer_due_ms(engine.config) is None


def test_speculative_row_has_low_latency_and_final_row_matches_committed():
    points = Track().approach().cycle().stand(40).points
    engine = TruckEngine(speculative=True)
    state = None
    first_load_row_at = None
    for p in points:
        out, state = engine.on_point(state, p, SITE)
        if out.in_progress and out.in_progress.current_segment == "LOAD_TIME" and first_load_row_at is None:
            first_load_row_at = p.ts_ms
    assert first_load_row_at == T0 + 30_000 + 20_000  # approach 30 s, then 20 s standing
    out, state = engine.on_timer(state, 0, END_OF_INPUT, SITE)
    assert out.in_progress == state.committed.in_progress_record()


V1_STATE = (  # written by the version-1 engine (commit 1e7e8bc): loading, six held points, a clock-jump suspect
    b'[1,"TRUCK-1",["TRUCK-1","SITE-T","LOAD_TIME","LOADER-1",null,1705313290000,null,null,null,null,null,0.0,0.0,2,0.0,0.0,null,0.0,0.0,0.0,1705313320000,-22.7,118.7,2,"L","LOADER-1",null,"L","LOADER-1",1705313290000,1705313320000,-22.7,118.7,true,null,false,null,null,false],[[1705313330000,"SITE-T",-22.7,118.7,2,"L","LOADER-1"],[1705313340000,"SITE-T",-22.7,118.7,2,"L","LOADER-1"],[1705313350000,"SITE-T",-22.7,118.7,3,"L","LOADER-1"],[1705313360000,"SITE-T",-22.699101688825007,118.7,3,"T",null],[1705313370000,"SITE-T",-22.698203377650017,118.7,3,"T",null],[1705313380000,"SITE-T",-22.697305066475025,118.7,3,"T",null]],1705313380000,[520000,58868,510000,761,500000,8190,490000,15618,480000,15618,470000,15618,460000,15618,450000,15618,440000,15618,430000,15618,420000,15618,410000,15618,400000,15618,390000,15618,380000,15618,370000,15619,360000,23048,350000,30477,340000,37906,330000,45335,320000,4191,310000,11620,300000,19049,290000,26478,280000,33907,270000,41336,260000,48765,250000,56194,240000,63623,230000,22479,220000,29907,210000,29907,200000,29907,190000,29907,180000,29908,170000,22479,160000,63623,150000,56194,140000,48765,130000,41336,120000,33907,110000,26478,100000,19049,90000,11620,80000,4191,70000,45335,60000,37906,50000,30477,40000,23048,30000,15618,20000,15618,10000,15618,0,15618],[1705338590000,"SITE-T",-22.696406755300035,118.7,3,"T",null]]'
)


def test_version_1_state_from_an_older_savepoint_is_migrated():
    state = TruckState.from_bytes(V1_STATE)
    assert state.committed.phase == "LOAD_TIME" and len(state.pending) == 6
    assert [e.ts_ms for e, _ in state.lead] == [1705338590000] and state.committed.iv_hist == []
    assert TruckState.from_bytes(state.to_bytes()) == state
    points = Track(start_ms=state.newest_ms + 10_000).stand(30).points  # the truck goes on
    engine = TruckEngine()
    for p in points:
        _, state = engine.on_point(state, p, SITE)
    assert state.committed.prev_ts is not None


V2_STATE = (  # written by the version-2 engine (commit 096cba6): loading, six held points, one far ahead
    b'[2,"TRUCK-1",["TRUCK-1","SITE-T","LOAD_TIME","LOADER-1",null,1705312830000,null,null,null,null,null,0.0,0.0,6,'
    b'0.0,0.0,null,0.0,0.0,0.0,1705312850000,-22.7,118.7,2,"L","LOADER-1",null,"L","LOADER-1",1705312830000,'
    b'1705312850000,-22.7,118.7,true,null,false,null,null,false,[10000,10000],[1000,999]],[[-55000,0,-22.7,118.7,2,'
    b'"L","LOADER-1"],[-45000,0,-22.7,118.7,2,"L","LOADER-1"],[-35000,0,-22.7,118.7,2,"L","LOADER-1"],[-25000,0,'
    b'-22.7,118.7,3,"L","LOADER-1"],[-12500,0,-22.699101688825007,118.7,3,"T",null],[0,0,-22.698203377650017,118.7,'
    b'3,"T",null]],1705312915000,[50000,58868,40000,761,30000,8190,20000,15618,10000,15618,0,15618],[[1800000,0,'
    b'-22.698203377650017,118.7,3,"T",null,0]]]'
)


def test_version_2_state_from_an_older_savepoint_is_migrated():
    state = TruckState.from_bytes(V2_STATE)
    assert len(state.pending) == 6 and [e.ts_ms - state.newest_ms for e, _ in state.lead] == [1_800_000]
    assert state.pending[-2].point.latitude == -22.699101688825007  # not a 1e-7 degree value: kept exactly
    assert state.hold_ms is None and state.arrival_ms is None  # the site's max_disorder_s, as before
    assert TruckState.from_bytes(state.to_bytes()) == state
    assert TruckState.from_bytes(state.to_bytes()).pending == state.pending
    engine = TruckEngine()
    for p in Track(start_ms=state.newest_ms + 10_000).stand(30).points:
        _, state = engine.on_point(state, p, SITE)
    assert state.committed.prev_ts is not None


@PROPERTY
@given(seed=st.integers(0, 10**6), shuffle_seed=st.integers(0, 10**6), hold_s=st.sampled_from([0, 120, 600]))
def test_held_points_roundtrip_exactly_whatever_their_coordinates(seed: int, shuffle_seed: int, hold_s: int):
    """The compact form keeps every held point exactly: 1e-7-degree positions as small integer
    differences, any other float as itself; arrival times and the hold with them."""
    arrivals = shuffled_within(build_track(seed), random.Random(shuffle_seed), 40.0)
    engine = TruckEngine()
    state = None
    for k, p in enumerate(arrivals):
        _, state = engine.on_point(state, p, SITE, hold_ms=hold_s * 1000, arrival_ms=p.ts_ms - 61_000 + k)
        decoded = TruckState.from_bytes(state.to_bytes())
        assert decoded.pending == state.pending and decoded.lead == state.lead
        assert (decoded.hold_ms, decoded.arrival_ms) == (state.hold_ms, state.arrival_ms)


def late_track() -> tuple[list[TelemetryPoint], list[TelemetryPoint]]:
    """A two-cycle track (pings every 10 s) and its delivery with every fifth point 4 min late."""
    points = Track().approach(every=10).cycle().cycle().stand(100).points
    keyed = [(p.ts_ms + (240_000 if i % 5 == 2 else 0), i, p) for i, p in enumerate(points)]
    return points, [p for _, _, p in sorted(keyed)]


def test_points_within_the_hold_are_put_back_in_order_and_later_ones_are_late():
    points, arrivals = late_track()
    engine = TruckEngine()
    expected, _, _, _ = run(engine, points)
    state, closed, rejected = None, [], []
    for p in arrivals:
        out, state = engine.on_point(state, p, SITE, hold_ms=300_000)
        closed += out.closed
        rejected += out.rejected
    out, state = engine.on_timer(state, 0, END_OF_INPUT, SITE)
    assert rejected == [] and closed + out.closed == expected
    _, rejected, _, _ = run(engine, arrivals)  # the default hold (max_disorder_s, 60 s)
    assert {r.reason for r in rejected} == {"LATE"}


def test_the_hold_is_clamped_to_the_sites_bounds():
    engine = TruckEngine()
    p = Track().approach().points[0]
    _, state = engine.on_point(None, p, SITE, hold_ms=1)
    assert state.hold_ms is None  # max_disorder_s
    _, state = engine.on_point(None, p, SITE, hold_ms=10**12)
    assert state.hold_ms == 900_000  # max_hold_s


def test_a_truck_whose_points_arrive_behind_the_stream_is_flushed_only_after_the_hold_without_points():
    """A truck behind a slow link: its points arrive 5 min behind the stream, reordered by 30 s. The
    flush timer counts from its last arrival, not from its newest point, so none is late."""
    points = Track().approach(every=10).cycle().stand(100).points
    rng = random.Random(2)
    keyed = sorted((p.ts_ms + 300_000 + rng.uniform(0, 30_000), i, p) for i, p in enumerate(points))
    engine = TruckEngine()
    expected, _, _, _ = run(engine, points)
    state, closed = None, []
    for arrival, _, p in keyed:
        hint = int(arrival) - 61_000  # the stream's watermark as it arrives
        due = state.timer_due_ms(engine.config) if state is not None else None
        if due is not None and due <= hint:
            out, state = engine.on_timer(state, due, hint, SITE)
            closed += out.closed
        out, state = engine.on_point(state, p, SITE, arrival_ms=hint)
        closed += out.closed
        assert out.rejected == []
    out, state = engine.on_timer(state, 0, END_OF_INPUT, SITE)
    assert closed + out.closed == expected


def test_a_burst_is_kept_apart_until_the_stream_moves_on_so_copies_of_it_are_duplicates():
    """A 20-minute backlog arrives at once (the stream's watermark does not move), then copies of its
    first points: they are recognised as duplicates, not dead-lettered as late."""
    points = Track().approach(every=10).cycle().stand(100).points
    engine = TruckEngine()
    state = None
    burst_at = points[-1].ts_ms + 60_000
    dups = 0
    for p in points + points[:30]:
        out, state = engine.on_point(state, p, SITE, arrival_ms=burst_at)
        assert out.rejected == []
        dups += out.duplicates
    assert dups == 30


def test_a_live_point_before_a_burst_of_backlog_is_not_a_clock_jump():
    """Live point first, then the 20-minute backlog in one burst: the backlog goes on past the live
    point's anchor by more than lead_hold_s, but the stream did not: the live point joins in order."""
    points = Track().approach(every=10).cycle().stand(100).points
    engine = TruckEngine()
    expected, _, _, _ = run(engine, points)
    state = None
    for p in points[:5]:
        _, state = engine.on_point(state, p, SITE, arrival_ms=p.ts_ms - 61_000)
    burst_at = points[-1].ts_ms - 30_000
    closed = []
    for p in [points[-1]] + points[5:-1]:
        out, state = engine.on_point(state, p, SITE, arrival_ms=burst_at)
        assert out.rejected == []
        closed += out.closed
    out, state = engine.on_timer(state, 0, END_OF_INPUT, SITE)
    assert closed + out.closed == expected
