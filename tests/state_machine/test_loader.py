"""The loader stage (state_machine.loader): order of service, queue and hang, hourly figures, live
status, and results that do not depend on the order in which visits arrive."""

from __future__ import annotations

import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from state_machine.loader import (
    HOUR_MS,
    LoaderOperator,
    LoaderState,
    LoaderStep,
    hour_figures,
    serve,
    store_parts,
)
from state_machine.model import (
    AT_LOADER,
    COMPLETE,
    LEFT,
    WAITING,
    CycleRecord,
    LoaderPresence,
    LoadVisit,
)

T0 = 1_705_300_000_000 - 1_705_300_000_000 % HOUR_MS  # an hour boundary
S = 1000


def visit(asset: str, first_stop: int, arrival: int, departure: int, open_: bool = False) -> LoadVisit:
    """A visit with times in seconds after T0 (load start: the first stop)."""
    return LoadVisit(asset, "SITE", "LDR", T0 + first_stop * S, T0 + arrival * S, T0 + first_stop * S,
                     T0 + departure * S, open_)


def test_a_truck_arriving_at_an_idle_loader_does_not_queue_and_the_loader_hangs_until_it_arrives():
    served = serve([visit("A", 100, 90, 300), visit("B", 500, 480, 700)])
    assert [(sv.service_start_ms - T0) // S for sv in served] == [90, 480]
    assert [sv.queue_seconds for sv in served] == [0.0, 0.0]
    hour = hour_figures("LDR", "SITE", served, T0)
    assert (hour.loads, hour.busy_seconds, hour.hang_seconds) == (2, 210 + 220, 180)


def test_a_truck_that_stops_while_another_is_served_waits_until_that_one_leaves():
    # B stops at 200 s (in the bay or at staging) while A is loaded until 300 s; C stops at 250 s
    served = serve([visit("A", 100, 90, 300), visit("B", 200, 150, 450), visit("C", 250, 400, 600)])
    assert [(sv.service_start_ms - T0) // S for sv in served] == [90, 300, 450]
    assert [sv.queue_seconds for sv in served] == [0.0, 100.0, 200.0]
    hour = hour_figures("LDR", "SITE", served, T0)
    assert hour.hang_seconds == 0 and hour.queue_seconds == 300 and hour.busy_seconds == 510


def test_a_stop_after_the_previous_truck_left_is_no_queue_and_service_starts_on_arrival():
    served = serve([visit("A", 100, 90, 300), visit("B", 320, 310, 500)])
    assert served[1].queue_seconds == 0.0 and (served[1].service_start_ms - T0) // S == 310


def test_of_the_visits_open_at_the_end_the_first_to_arrive_is_served_and_the_others_still_wait():
    rows = _run(LoaderOperator(), [("visit", visit("A", 100, 90, 300)), ("visit", visit("C", 260, 250, 900, True)),
                                   ("visit", visit("B", 200, 150, 905, True))])  # fmt: skip
    b, c = rows[("served", "B", T0 + 200 * S)], rows[("served", "C", T0 + 260 * S)]
    assert b.service_start_ms == T0 + 300 * S and b.queue_seconds == 100.0  # in service when the input ended
    assert c.service_start_ms is None and c.queue_seconds == 900 - 260  # still waiting behind it
    assert rows[("hour", T0)].loads == 2


def test_hours_split_services_and_gaps_and_add_up_to_the_whole_window():
    served = serve([visit("A", 3000, 2990, 3700), visit("B", 4000, 3990, 7500), visit("C", 7700, 7690, 7900)])
    hours = [hour_figures("LDR", "SITE", served, T0 + k * HOUR_MS) for k in range(3)]
    assert [h.loads for h in hours] == [1, 1, 1]  # by the hour the service started
    assert [h.busy_seconds for h in hours] == [610, 100 + 3210, 300 + 210]
    assert [h.hang_seconds for h in hours] == [0, 290, 190]
    assert sum(h.busy_seconds for h in hours) == (3700 - 2990) + (7500 - 3990) + (7900 - 7690)
    assert sum(h.hang_seconds for h in hours) == (3990 - 3700) + (7690 - 7500)


def _cycle(asset: str, load_start_s: int) -> CycleRecord:
    return CycleRecord(asset, "SITE", COMPLETE, "EMPTY_TRAVEL", loader_asset_guid="LDR",
                       load_start_ms=T0 + load_start_s * S, cycle_end_ms=T0 + load_start_s * S + 1800 * S)


class Stored:
    """One loader's stored state and parts, kept as Flink's keyed state and the replay keep them."""

    def __init__(self) -> None:
        self.state: bytes | None = None
        self.parts: dict[int, bytes] = {}

    def step(self, operator: LoaderOperator, kind: str, event) -> LoaderStep:
        step = getattr(operator, f"on_{kind}")("LDR", self.state, event, self.parts.copy)
        self.state = step.state
        store_parts(self.parts, step.parts)
        return step

    def decoded(self) -> LoaderState:
        return LoaderState.decode(self.state, self.parts)


def _run(operator: LoaderOperator, events: list) -> dict:
    """Feed events in order; return the final rows by key (what the tables hold)."""
    stored = Stored()
    rows: dict = {}
    for kind, event in events:
        out = stored.step(operator, kind, event).output
        for sv in out.served:
            rows[("served", sv.visit.asset_guid, sv.visit.load_start_ms)] = sv
        for cycle in out.cycles:
            rows[("cycle", cycle.asset_guid, cycle.load_start_ms)] = cycle
        for hour in out.hours:
            rows[("hour", hour.hour_start_ms)] = hour
        if out.status is not None:
            rows["status"] = out.status
    return rows


def _without_empty_hours(rows: dict) -> dict:
    """The rows less the hours left with nothing in them (a visit that came late moved a service out of
    an hour that an earlier order had put it in: the row stays, all zeros)."""
    return {key: row for key, row in rows.items()
            if not (key[0] == "hour" and row.loads == 0 and row.busy_seconds == 0 and row.hang_seconds == 0)}


@st.composite
def visit_sets(draw: st.DrawFn) -> list[LoadVisit]:
    """A loader's visits over a few hours: trucks arriving, some waiting for the one being served."""
    n = draw(st.integers(2, 25))
    visits = {}
    t = 0
    for k in range(n):
        t += draw(st.integers(0, 900))
        first_stop = t
        arrival = first_stop + draw(st.integers(-60, 20))
        v = visit(f"T{k % 7}", first_stop, arrival, first_stop + draw(st.integers(60, 600)))
        visits.setdefault((v.asset_guid, v.load_start_ms), v)  # a truck's load starts once at an instant
    return list(visits.values())


@settings(max_examples=300, deadline=None)
@given(visit_sets(), st.randoms(use_true_random=False))
def test_the_rows_do_not_depend_on_the_order_visits_and_cycles_arrive_in(visits, rnd):
    """Trucks' data arrives late and out of order across trucks: the tables end the same."""
    events = [("visit", v) for v in visits] + [("cycle", _cycle(v.asset_guid, (v.load_start_ms - T0) // S))
                                               for v in visits]  # fmt: skip
    in_order = _run(LoaderOperator(), sorted(events, key=lambda e: e[1].departure_ms if e[0] == "visit" else 0))
    shuffled = events[:]
    rnd.shuffle(shuffled)
    resent = shuffled + [e for e in shuffled if rnd.random() < 0.3]  # duplicates (a restart re-sends them)
    assert _without_empty_hours(_run(LoaderOperator(), resent)) == _without_empty_hours(in_order)
    cycles = [row for key, row in in_order.items() if key[0] == "cycle"]
    assert all(c.queue_seconds is not None for c in cycles)


@st.composite
def reported_visits(draw: st.DrawFn) -> tuple[list[LoadVisit], list[LoadVisit]]:
    """A loader's visits as the cycle operators report them, in an order of arrival: some first while
    still open (the input paused while the truck was at the loader; departure = its last point so far),
    then ended; some sent again (a restart); a few still open at the end. Returns (reports, final set)."""
    final = draw(visit_sets())
    reports = []
    for k, v in enumerate(final):
        if draw(st.booleans()):  # reported open first, its last point before it left
            reports.append(v._replace(departure_ms=draw(st.integers(v.first_stop_ms, v.departure_ms)), open=True))
        if k >= len(final) - 2 and draw(st.booleans()):  # still open when the input ended
            final[k] = v = v._replace(open=True)
        reports.append(v)
    order = draw(st.permutations(range(len(reports))))
    shuffled = [reports[i] for i in order]
    # an open report that arrives after the ended one is the older news: the operators never send it
    latest = {}
    for v in shuffled:
        key = (v.asset_guid, v.load_start_ms)
        if not (latest.get(key) is not None and not latest[key].open and v.open):
            latest[key] = v
    arrived = [v for v in shuffled if latest[(v.asset_guid, v.load_start_ms)] is v or not v.open]
    resent = [v for v in arrived if not v.open and draw(st.booleans())]
    return arrived + resent, list(latest.values())


@settings(max_examples=300, deadline=None)
@given(reported_visits())
def test_every_row_is_what_the_final_set_of_visits_gives_served_from_scratch(reports):
    """Each visit re-serves only the visits from the first one it moves: the rows equal the order of
    service and the hours computed from scratch from the set of visits the loader ends with."""
    arrived, final = reports
    rows = _run(LoaderOperator(), [("visit", v) for v in arrived])
    served = serve(sorted(final, key=lambda v: (v.open, v.first_stop_ms if v.open else v.departure_ms,
                                                v.asset_guid, v.load_start_ms)))  # fmt: skip
    assert {key: row for key, row in rows.items() if key[0] == "served"} == {
        ("served", sv.visit.asset_guid, sv.visit.load_start_ms): sv for sv in served}
    hours = {key[1]: row for key, row in rows.items() if key[0] == "hour"}
    expected = {hour: hour_figures("LDR", "SITE", served, hour) for hour in hours}
    assert hours == expected
    busy = sum(sv.visit.departure_ms - sv.service_start_ms for sv in served if sv.service_start_ms is not None)
    assert round(sum(row.busy_seconds for row in hours.values()), 3) == round(busy / 1000.0, 3)


def test_a_late_visit_updates_the_next_trucks_queue_and_its_cycle_row():
    operator = LoaderOperator()
    b = visit("B", 200, 150, 450)
    first = _run(operator, [("visit", b), ("cycle", _cycle("B", 200))])
    assert first[("cycle", "B", T0 + 200 * S)].queue_seconds == 0.0
    late = _run(operator, [("visit", b), ("cycle", _cycle("B", 200)), ("visit", visit("A", 100, 90, 300))])
    assert late[("cycle", "B", T0 + 200 * S)].queue_seconds == 100.0
    assert late[("served", "B", T0 + 200 * S)].service_start_ms == T0 + 300 * S


def test_a_visit_older_than_every_one_kept_changes_nothing_and_is_counted():
    operator, stored = LoaderOperator(max_visits=5), Stored()
    for k in range(8):
        stored.step(operator, "visit", visit("A", 3600 + k * 600, 3600 + k * 600, 3600 + k * 600 + 300))
    kept = stored.decoded()
    assert len(kept.visits) == 5 and kept.previous_departure_ms == T0 + (3600 + 2 * 600 + 300) * S
    step = stored.step(operator, "visit", visit("B", 100, 90, 300))
    assert step.output.counts["loaderVisitsTooLate"] == 1 and not step.output.served and not step.parts
    assert stored.decoded().visits == kept.visits


def test_the_next_visit_after_the_ones_let_go_still_knows_when_the_last_one_left():
    operator, stored = LoaderOperator(max_visits=3), Stored()
    for k in range(6):  # one visit an hour
        stored.step(operator, "visit", visit("A", k * 3600, k * 3600, k * 3600 + 600))
    kept = stored.decoded()
    assert len(kept.visits) == 3 and kept.previous_departure_ms == kept.visits[0].departure_ms - HOUR_MS
    assert len(stored.parts) == 3  # the parts of the visits let go are deleted
    step = stored.step(operator, "visit", visit("B", 5 * 3600 + 100, 5 * 3600 + 90, 5 * 3600 + 900))
    assert step.output.served[-1].queue_seconds == 500.0


def test_a_batch_of_history_brings_one_trucks_visits_hours_after_anothers_and_they_still_meet():
    later = [visit("B", k * 1800, k * 1800, k * 1800 + 600) for k in range(1, 48)]  # a day of truck B first
    rows = _run(LoaderOperator(), [("visit", v) for v in later] + [("visit", visit("A", 1700, 1690, 1850))])
    assert rows[("served", "B", T0 + 1800 * S)].queue_seconds == 1850 - 1800  # B waited for A


def test_the_status_shows_who_is_served_who_waits_since_when_and_since_when_the_loader_is_idle():
    operator = LoaderOperator()
    rows = _run(operator, [
        ("presence", LoaderPresence("B", "SITE", "LDR", WAITING, T0 + 200 * S, T0 + 210 * S)),
        ("presence", LoaderPresence("A", "SITE", "LDR", AT_LOADER, T0 + 100 * S, T0 + 220 * S)),
        ("presence", LoaderPresence("C", "SITE", "LDR", AT_LOADER, T0 + 150 * S, T0 + 230 * S)),
    ])  # fmt: skip
    status = rows["status"]
    assert status.in_service_asset == "A" and status.in_service_since_ms == T0 + 100 * S
    assert status.waiting == f"C@{T0 + 150 * S},B@{T0 + 200 * S}" and status.waiting_count == 2
    assert status.oldest_wait_since_ms == T0 + 150 * S and status.idle_since_ms is None
    rows = _run(operator, [
        ("presence", LoaderPresence("A", "SITE", "LDR", AT_LOADER, T0 + 100 * S, T0 + 220 * S)),
        ("presence", LoaderPresence("A", "SITE", "LDR", LEFT, T0 + 100 * S, T0 + 400 * S)),
        ("visit", visit("A", 100, 90, 380)),
    ])  # fmt: skip
    assert rows["status"].in_service_asset is None and rows["status"].idle_since_ms == T0 + 380 * S
    assert rows["status"].event_ms == T0 + 380 * S


def _busy_loader(operator: LoaderOperator, stored: Stored, loads: int = 10) -> None:
    """Visits, cycles and trucks at the loader over a few hours."""
    rng = random.Random(3)
    for k in range(loads):
        t = k * 1200 + rng.randrange(100)
        stored.step(operator, "visit", visit(f"T{k}", t, t - 5, t + 300))
        stored.step(operator, "cycle", _cycle(f"T{k}", t))
        stored.step(operator, "presence", LoaderPresence(f"T{k}", "SITE", "LDR", AT_LOADER, T0 + t * S, T0 + t * S))


def test_state_round_trips_and_each_part_is_encoded_the_same_whatever_wrote_it():
    stored = Stored()
    _busy_loader(LoaderOperator(), stored)
    decoded = stored.decoded()
    assert len(decoded.visits) == 10 and len(decoded.cycles) == 10 and len(stored.parts) == 4
    decoded.dirty = set(decoded.part_keys)  # every part written again from the decoded state
    state, parts = decoded.encode()
    assert parts == stored.parts and state != stored.state  # the state counts its writes
    assert LoaderState.decode(state, parts) == decoded
    with pytest.raises(ValueError):
        LoaderState.decode(b'[99, "x"]', {})


def test_a_version_1_state_holding_everything_is_read_and_its_parts_are_written_at_the_next_step():
    stored = Stored()
    _busy_loader(LoaderOperator(), stored)
    ls = stored.decoded()
    version_1 = orjson.dumps([1, ls.site, [list(v) for v in ls.visits], ls.previous_departure_ms, list(ls.cycles.values()),
                              [[a, w, t] for a, (w, t) in ls.presence.items()], ls.idle_since_ms, ls.event_ms,
                              list(ls.status), ls.horizon_ms])  # fmt: skip
    assert LoaderState.decode(version_1, {}) == ls
    old = Stored()
    old.state = version_1
    step = old.step(LoaderOperator(), "presence", LoaderPresence("X", "SITE", "LDR", WAITING, T0, T0))
    assert set(step.parts) == set(stored.parts) and old.decoded() == LoaderState.decode(
        stored.step(LoaderOperator(), "presence", LoaderPresence("X", "SITE", "LDR", WAITING, T0, T0)).state,
        stored.parts)  # fmt: skip


def test_a_step_writes_the_parts_it_changed_and_reads_none_while_the_operator_holds_the_loader():
    """The point of the parts: a step moves what it changed through Flink, not the loader's history."""
    operator, stored = LoaderOperator(), Stored()
    _busy_loader(operator, stored)

    def unread() -> dict[int, bytes]:
        raise AssertionError("the parts were read although the operator holds the loader")

    assert operator.holds("LDR", stored.state)
    t = 5 * 1200
    step = operator.on_presence("LDR", stored.state, LoaderPresence("X", "SITE", "LDR", WAITING, T0 + t * S,
                                                                    T0 + t * S), unread)  # fmt: skip
    assert step.parts == {}
    step = operator.on_visit("LDR", step.state, visit("X", t, t - 5, t + 300), unread)
    assert list(step.parts) == [(T0 + t * S) // HOUR_MS]
    step = operator.on_cycle("LDR", step.state, _cycle("X", t), unread)
    assert list(step.parts) == [(T0 + t * S) // HOUR_MS]
    assert not LoaderOperator().holds("LDR", step.state) and LoaderOperator().holds("LDR", None)
    with pytest.raises(ValueError):
        LoaderOperator().on_cycle("LDR", step.state, _cycle("Y", t))


@settings(max_examples=200, deadline=None)
@given(reported_visits(), st.integers(2, 30), st.randoms(use_true_random=False))
def test_a_loader_kept_decoded_steps_as_one_decoded_from_its_stored_state_every_time(reports, max_visits, rnd):
    """The operator keeps each loader's last state decoded, with what it derived from it (the order of
    service, the keys of each part): every step's output, state and changed parts equal those of an
    operator that decodes the stored state and parts at every step (a restore, a loader it let go)."""
    arrived, _ = reports
    events = [("visit", v) for v in arrived] + [("cycle", _cycle(v.asset_guid, (v.load_start_ms - T0) // S))
                                                for v in arrived if not v.open]  # fmt: skip
    events += [("presence", LoaderPresence(v.asset_guid, "SITE", "LDR", rnd.choice((AT_LOADER, WAITING, LEFT)),
                                           v.first_stop_ms, v.departure_ms)) for v in arrived[::3]]  # fmt: skip
    rnd.shuffle(events)
    kept = LoaderOperator(max_visits=max_visits)
    kept_stored, fresh_stored = Stored(), Stored()
    for kind, event in events:
        step = kept_stored.step(kept, kind, event)
        fresh = fresh_stored.step(LoaderOperator(max_visits=max_visits), kind, event)
        assert step.output == fresh.output and step.state == fresh.state and step.parts == fresh.parts
    if kept_stored.state is not None:
        decoded = kept_stored.decoded()
        assert len(decoded.visits) <= max(max_visits, sum(v.open for v in decoded.visits))
        assert {p for v in decoded.visits for p in [(v.load_start_ms or 0) // HOUR_MS]} <= set(kept_stored.parts)
