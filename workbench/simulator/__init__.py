"""Deterministic haul-fleet simulator: site layouts, truck motion, telemetry, degradations, ground truth.

Everything is a pure function of a :class:`SimulationSpec` (seed included): no global random, no clock.

Model
-----
Each site has a hub (road junction) at its centre and "clusters" spread around it: pit clusters of up
to six loaders and dump clusters of up to six dump polygons, each cluster fanned out around its own
junction. Roads are polylines with small bends: hub -> cluster junction -> loader approach point /
dump entry point. Motion is computed exactly (piecewise-constant speed along polylines, slower near
stops) and telemetry pings sample it; ground truth comes from the exact motion, never from pings.

A truck cycle: arrive at the loader approach point -> (stand at the queue spot while the loader is
busy) -> spot at the loading spot -> load 60-240 s -> loaded haul to its dump -> drive into the dump
polygon to a dump spot, tip 25-90 s -> empty haul back to (maybe another) loader. Loaders serve one
truck at a time, first come first served.

Truth definitions (per truck, closed cycles only):
  load_start = the instant the truck comes to rest within 50 m of its loader (the queue spot if that
  is inside the radius, otherwise the loading spot); load_end = departure from the loading spot;
  dump_start/dump_end = rest/departure at the dump spot; cycle_end = next load_start.
  OUTLIER: a standstill during travel > 600 s (TRAVEL_IDLE), load > 1200 s (LOAD_AREA_IDLE) or dump
  > 1200 s (DUMP_AREA_IDLE); the chronologically first violation is reported. INVALID (NO_DUMP): the
  truck tipped on the road outside any dump region. A cycle is in the truth when its closing
  load_start is <= the end of the run; a truck whose closing load_start falls in the last 240 s keeps
  reporting until 240 s after it so that the closing load is observable.

Delivery: every ping gets a delivery time (event time + degradations); the output is sorted by
delivery time (ties in generation order), which is the telemetry.jsonl line order.

Modules: ``spec`` (options and scenario families), ``geometry`` (site layouts), ``motion`` (legs),
``fleet`` (trucks and the other processes, ground truth), ``telemetry`` (pings, degradations, the
event loop); this package's ``__init__`` is the public API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from state_machine.model import CycleRecord, ServedVisit
from state_machine.reference import ReferenceData
from workbench.bundle import TRUTH_VISITS_FILE, write_bundle, write_cycles_csv, write_visits_csv
from workbench.simulator.spec import (
    DEFAULT_START_MS,
    DEGRADED_PRESET,
    SCENARIO_FAMILIES,
    SimulationSpec,
    scenario_spec,
)
from workbench.simulator.telemetry import AssetTuple, Runner

__all__ = [
    "DEFAULT_START_MS", "DEGRADED_PRESET", "SCENARIO_FAMILIES", "AssetTuple", "Simulation", "SimulationSpec",
    "WriteStats", "build_layout", "iter_deliveries", "scenario_spec", "simulate", "write_simulation",
]  # fmt: skip


@dataclass
class Simulation:
    """A finished simulation held in memory (small runs, tests)."""

    spec: SimulationSpec
    reference: ReferenceData
    assets: list[AssetTuple]
    truth: list[CycleRecord]
    deliveries: list[tuple[int, str]]
    visits: list[ServedVisit] = field(default_factory=list)
    """The ground truth of every load visit (service started within the run), by loader and service start."""

    @property
    def telemetry_lines(self) -> list[str]:
        """The telemetry.jsonl lines in delivery order."""
        return [line for _, line in self.deliveries]


def _sort_truth(truth: list[CycleRecord]) -> list[CycleRecord]:
    return sorted(truth, key=lambda r: (r.site_guid, r.asset_guid, r.load_start_ms or 0))


def _sort_visits(visits: list[ServedVisit]) -> list[ServedVisit]:
    return sorted(visits, key=lambda v: (v.visit.site_guid, v.visit.loader_guid, v.service_start_ms))


def build_layout(spec: SimulationSpec) -> tuple[ReferenceData, list[AssetTuple]]:
    """Reference data and assets of the spec's sites (no motion simulated)."""
    runner = Runner(spec, None)
    return runner.reference, runner.assets


def simulate(spec: SimulationSpec) -> Simulation:
    """Run a finite simulation fully in memory."""
    if spec.hours is None:
        raise ValueError("simulate() needs a finite spec.hours; use iter_deliveries() for a stream")
    truth: list[CycleRecord] = []
    visits: list[ServedVisit] = []
    runner = Runner(spec, truth.append, visits.append)
    deliveries = list(runner.run())
    return Simulation(spec, runner.reference, runner.assets, _sort_truth(truth), deliveries, _sort_visits(visits))


def iter_deliveries(spec: SimulationSpec,
                    truth: Callable[[CycleRecord], None] | None = None) -> Iterator[tuple[int, str]]:
    """Lazily yield (delivery_ms, json_line) in delivery order; unbounded when spec.hours is None.

    Memory stays bounded (about one cycle of pings per truck). ``truth`` receives each closed
    ground-truth cycle as soon as it is known (in simulation order, not sorted).
    """
    return Runner(spec, truth).run()


@dataclass
class WriteStats:
    """What write_simulation produced."""

    lines: int
    truth_cycles: int


def write_simulation(spec: SimulationSpec, out_dir: str | Path,
                     progress: Callable[[int], None] | None = None) -> WriteStats:
    """Simulate and stream a bundle to out_dir (telemetry.jsonl, regions, assets, truth_cycles.csv,
    truth_visits.csv).

    ``progress`` is called now and then with the latest delivery time in ms.
    """
    if spec.hours is None:
        raise ValueError("write_simulation() needs a finite spec.hours")
    truth: list[CycleRecord] = []
    visits: list[ServedVisit] = []
    runner = Runner(spec, truth.append, visits.append)
    count = 0

    def lines() -> Iterator[str]:
        nonlocal count
        for d, line in runner.run():
            count += 1
            if progress is not None and not count & 0x3FFF:
                progress(d)
            yield line

    out = Path(out_dir)
    write_bundle(out, lines(), runner.reference, runner.assets, truth=None)
    truth = _sort_truth(truth)
    write_cycles_csv(out / "truth_cycles.csv", truth)
    write_visits_csv(out / TRUTH_VISITS_FILE, _sort_visits(visits))
    return WriteStats(count, len(truth))
