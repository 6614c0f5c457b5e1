"""Flink-side probes for the benchmarks (imported by the job's Python workers, so kept importable).

``ArrivalLoggingPuller``: the simulator source of ``asset-cycle run`` paced at a fixed rate, that
also appends ``asset_guid,event_ms,arrival_wall_s`` of every emitted line to a CSV file (the wall
clock at which the line entered the job), for latency percentiles.
"""

from __future__ import annotations

import time
from typing import Any

from job.sources import SimulatorPuller
from state_machine.telemetry import Invalid, parse_record


class ArrivalLoggingPuller(SimulatorPuller):
    """SimulatorPuller (as fast as allowed, ``per_tick`` lines per tick) that logs arrival times."""

    def __init__(self, spec: Any, per_tick: int, log_path: str) -> None:
        super().__init__(spec, speed=None, max_per_tick=per_tick)
        self.log_path = log_path

    def open(self, runtime_context) -> None:
        super().open(runtime_context)
        self._log = open(self.log_path, "a", buffering=1 << 16)  # noqa: SIM115 - closed in close()

    def flat_map(self, value):
        rows = []
        for record in super().flat_map(value):  # Row(position, line)
            now = time.time()
            parsed = parse_record(record[1])
            if not isinstance(parsed, Invalid):
                rows.append(f"{parsed.asset_guid},{parsed.ts_ms},{now:.6f}\n")
            yield record
        if rows:
            self._log.write("".join(rows))
            self._log.flush()

    def close(self) -> None:
        self._log.close()

