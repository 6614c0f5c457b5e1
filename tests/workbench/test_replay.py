"""The replay with and without live (speculative) rows: a bounded input's final rows do not depend on it.

The job computes the live view only for unbounded inputs (job.pipeline.assemble); this is what makes
that safe for a history replay: every closed cycle, final in-progress row, status row, dead letter
and alert is the same.
"""

from __future__ import annotations

import pytest

from workbench.replay import replay
from workbench.simulator import SCENARIO_FAMILIES, scenario_spec, simulate


@pytest.mark.parametrize("name", list(SCENARIO_FAMILIES))
def test_live_rows_do_not_change_what_a_bounded_replay_ends_with(name: str):
    sim = simulate(scenario_spec(name, trucks=6, hours=3.0, seed=5).degraded())
    lines = [line for _, line in sim.deliveries]

    def run(speculative: bool):
        return replay((("file:x", line) for line in lines), sim.reference, speculative=speculative)

    live, committed = run(True), run(False)
    assert live.sorted_closed() == committed.sorted_closed()
    assert len(live.closed) > 0
    assert live.in_progress and live.in_progress == committed.in_progress
    assert live.statuses == committed.statuses
    assert live.dead_letters == committed.dead_letters
    assert live.alerts == committed.alerts
    assert (live.applied_points, live.duplicates, live.reordered, live.non_truck) == (
        committed.applied_points, committed.duplicates, committed.reordered, committed.non_truck)
