"""A truck's hourly figures (UTC hours), from its committed points in event-time order: working and
idle time, loaded and empty distance, cycles closed.

The time between two consecutive points counts as the first point's work state (IDLING: idle, else
working), split at hour boundaries; a pair longer than max_gap_s is not counted (nothing is known of
it). Distance counts where the cycle engine counts it (state_machine.cycle: loaded from the departure
of a load to the dump, empty from the departure of a dump to the next load). A cycle counts in the hour
its end (the next load start) falls in.

The state is a short list: the accumulating hour and the one before it (a cycle's end is back-dated
to the load start that closed it, which can lie in the previous hour), each
``[hour_start_ms, working_ms, idle_ms, loaded_dm, empty_dm, cycles, emitted_at_ms]``.
"""

from __future__ import annotations

from state_machine.model import IDLING, CycleRecord, TruckHour

HOUR_MS = 3_600_000
LIVE_EVERY_MS = 300_000
"""A live input reports the accumulating hour every this much event time (a bounded one only when the
hour is over)."""


def _row(asset: str, site: str, h: list[int]) -> TruckHour:
    return TruckHour(asset, site, h[0], h[1] / 1000.0, h[2] / 1000.0, h[3] / 10.0, h[4] / 10.0, h[5])


def _hour(hours: list[list[int]], start: int, rows: list[list[int]]) -> list[int]:
    """The entry of the hour beginning at ``start``, opening it after the kept ones (and reporting the
    one it closes)."""
    if hours and hours[-1][0] == start:
        return hours[-1]
    if len(hours) > 1 and hours[-2][0] == start:
        return hours[-2]
    if hours and start < hours[0][0]:
        return hours[0]  # older than every kept hour (a cycle end back-dated that far): the oldest kept
    entry = [start, 0, 0, 0, 0, 0, -1]
    if hours:
        rows.append(hours[-1])  # the accumulating hour is over
    hours.append(entry)
    del hours[:-2]
    return entry


def account(hours: list[list[int]], prev_ts: int | None, prev_ws: int, dt_loaded_m: float, dt_empty_m: float,
            ts: int, closed: list[CycleRecord], max_gap_ms: int, asset: str, site: str, live: bool,
            out: list[TruckHour]) -> None:
    """Add one committed point at ``ts`` (the pair from ``prev_ts``, work state ``prev_ws`` at its start,
    and the loaded/empty distance the engine counted for it) and the cycles it closed; finished hours,
    revised ones and (``live``) the accumulating one now and then go to ``out``."""
    rows: list[list[int]] = []
    if prev_ts is not None and ts - prev_ts <= max_gap_ms:
        slot = 2 if prev_ws == IDLING else 1
        t = prev_ts
        while t < ts:
            start = t - t % HOUR_MS
            end = min(ts, start + HOUR_MS)
            _hour(hours, start, rows)[slot] += end - t
            t = end
    entry = _hour(hours, ts - ts % HOUR_MS, rows)
    entry[3] += round(dt_loaded_m * 10)
    entry[4] += round(dt_empty_m * 10)
    for rec in closed:
        end = rec.cycle_end_ms
        if end is not None and rec.load_start_ms is not None:
            target = _hour(hours, end - end % HOUR_MS, rows)
            target[5] += 1
            if target is not entry or entry[6] == ts:
                # a back-dated end in the hour before, or a cycle closed at a point whose hour was already
                # reported (the idle timeout closes it at the truck's last point): report it again
                rows.append(target)
    if live and ts - entry[6] >= LIVE_EVERY_MS:
        rows.append(entry)
    for h in rows:
        h[6] = ts
        out.append(_row(asset, site, h))


def unreported_until(hours: list[list[int]], last_ts: int | None) -> int | None:
    """The end of the accumulating hour when it changed since it was last reported (its points up to
    ``last_ts``, the truck's last committed point), else None."""
    if hours and last_ts is not None and hours[-1][6] != last_ts:
        return hours[-1][0] + HOUR_MS
    return None


def report(hours: list[list[int]], last_ts: int | None, asset: str, site: str, out: list[TruckHour]) -> None:
    """Report the accumulating hour as it stands (the end of a bounded input, or the stream's time
    passed it while the truck was quiet: the hour is over), up to the truck's last point ``last_ts``."""
    if hours:
        out.append(_row(asset, site, hours[-1]))
        hours[-1][6] = -1 if last_ts is None else last_ts
