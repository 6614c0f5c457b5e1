"""Fault injection for the reliability tests: make the cycle operator or the sink path throw at chosen
record counts (handed to job.pipeline.build_pipeline as ``operator_factory`` / ``sink_path``).

It exists so that the reliability tests can prove that a job failure followed by a Flink restart
(restore from the last checkpoint) leaves the tables exactly as a failure-free run would.

Switch (read by tests.job.reliability_support.run_job when it builds the pipeline, then shipped to
the operators inside the pickled functions)::

    ASSET_CYCLE_FAULTS="cycle:1500,4000;sink:2500"
    ASSET_CYCLE_FAULTS_DIR=/tmp/some-dir      # optional; a fresh temporary directory otherwise
    ASSET_CYCLE_FAULTS_CHECKPOINTS=/tmp/cp    # optional: the job's checkpoint directory

* ``cycle:N,...``: the engine's ``on_point`` raises InjectedFault on its N-th call (counted per
  operator instance since ``open``, i.e. per attempt);
* ``sink:M,...``: a pass-through map in front of the sinks raises on its M-th record.

Each fault fires **once**: operator state is reset by the restart, so a marker file per fault in
the marker directory remembers which faults already fired (the restarted attempt counts from 0
again and passes the points that already fired).

With a checkpoint directory, a fault waits (the records go on) until a checkpoint newer than the
one its attempt started from has completed, so every restart restores from a checkpoint, never
from scratch; each attempt notes the newest completed checkpoint at its start (``attempts()``).
While a fault waits, each record at its point is held back ``ARMED_PAUSE_S`` (wall time): the
checkpoint then completes before the input runs out however fast the machine reads it.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyflink.datastream import MapFunction

log = logging.getLogger(__name__)

FAULTS_ENV = "ASSET_CYCLE_FAULTS"
FAULTS_DIR_ENV = "ASSET_CYCLE_FAULTS_DIR"
FAULTS_CHECKPOINTS_ENV = "ASSET_CYCLE_FAULTS_CHECKPOINTS"
CHECKPOINT_SETTLE_S = 0.2
"""A checkpoint counts once its metadata is this old (written, and registered as completed by now)."""
ARMED_PAUSE_S = 0.0005
"""How long each record is held back at a fault's point while the fault waits for a checkpoint."""
POINTS = ("cycle", "sink")
_PART = re.compile(r"^\s*(?P<point>[a-z]+)\s*:\s*(?P<counts>\d+(?:\s*,\s*\d+)*)\s*$")


class FaultSpecError(ValueError):
    """ASSET_CYCLE_FAULTS is malformed."""


class InjectedFault(RuntimeError):
    """A deliberately injected failure (test-only)."""


@dataclass(frozen=True)
class FaultPlan:
    """Which record counts fail at which point; ``marker_dir`` remembers the faults that fired."""

    counts: tuple[tuple[str, tuple[int, ...]], ...]
    marker_dir: str
    checkpoint_dir: str = ""  # faults wait for a checkpoint completed in their attempt (see module docstring)

    @classmethod
    def parse(cls, spec: str, marker_dir: str, checkpoint_dir: str = "") -> FaultPlan:
        """``"cycle:1500,4000;sink:2500"`` -> FaultPlan (FaultSpecError when malformed)."""
        out: dict[str, set[int]] = {}
        for part in filter(None, (p.strip() for p in spec.split(";"))):
            m = _PART.match(part)
            if not m or m["point"] not in POINTS:
                raise FaultSpecError(f"{FAULTS_ENV}: bad part {part!r} (expected e.g. 'cycle:1500,4000;sink:2500', "
                                     f"points {POINTS})")  # fmt: skip
            counts = {int(c) for c in m["counts"].split(",")}
            if 0 in counts:
                raise FaultSpecError(f"{FAULTS_ENV}: counts start at 1, got 0 in {part!r}")
            out.setdefault(m["point"], set()).update(counts)
        return cls(tuple(sorted((k, tuple(sorted(v))) for k, v in out.items())), marker_dir, checkpoint_dir)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FaultPlan | None:
        """The plan from ASSET_CYCLE_FAULTS(_DIR); None when the switch is off (the default)."""
        env = os.environ if environ is None else environ
        spec = (env.get(FAULTS_ENV) or "").strip()
        if not spec:
            return None
        marker_dir = env.get(FAULTS_DIR_ENV) or tempfile.mkdtemp(prefix="asset-cycle-faults-")
        Path(marker_dir).mkdir(parents=True, exist_ok=True)
        plan = cls.parse(spec, marker_dir, env.get(FAULTS_CHECKPOINTS_ENV) or "")
        log.warning("TEST-ONLY fault injection is ON: %s (markers in %s)", spec, marker_dir)
        return plan

    def at(self, point: str) -> frozenset[int]:
        """The record counts that fail at ``point``."""
        return frozenset(dict(self.counts).get(point, ()))

    def fired(self) -> list[str]:
        """Faults that fired so far (``point-count`` names)."""
        return sorted(p.name for p in Path(self.marker_dir).glob("*-*"))

    def note_attempt(self) -> int:
        """Remember one more opening of the faulty cycle operator (one per job attempt at parallelism
        1) with the newest checkpoint completed by then, which Flink restores the attempt from; returns
        that checkpoint's id (0: none)."""
        attempts = Path(self.marker_dir) / "attempts"
        attempts.mkdir(exist_ok=True)
        checkpoint = self.latest_checkpoint()
        (attempts / f"{len(list(attempts.iterdir())):04d}-{checkpoint}").touch()
        return checkpoint

    def attempts(self) -> list[int]:
        """Per opening of the faulty cycle operator so far, in order: the newest completed checkpoint
        at that time (0: none, a start from scratch)."""
        return [int(p.name.split("-")[1]) for p in sorted((Path(self.marker_dir) / "attempts").glob("*-*"))]

    def latest_checkpoint(self) -> int:
        """The id of the newest settled checkpoint in ``checkpoint_dir`` (0: none, or no directory)."""
        if not self.checkpoint_dir:
            return 0
        settled = time.time() - CHECKPOINT_SETTLE_S
        ids = [int(m.parent.name[len("chk-"):]) for m in Path(self.checkpoint_dir).glob("*/chk-*/_metadata")
               if _mtime(m) <= settled]  # fmt: skip
        return max(ids, default=0)

    def claim(self, point: str, count: int) -> bool:
        """True exactly once per (point, count): creates its marker file atomically."""
        try:
            fd = os.open(Path(self.marker_dir) / f"{point}-{count}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.close(fd)
        return True


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # a superseded checkpoint was just deleted
        return float("inf")


class _Trigger:
    """Counts calls at one point and raises InjectedFault at the planned counts (once each), with a
    checkpoint directory only once a checkpoint newer than ``started_from`` has completed."""

    def __init__(self, plan: FaultPlan, point: str, started_from: int = 0) -> None:
        self.plan = plan
        self.point = point
        self.pending = sorted(plan.at(point))
        self.started_from = started_from
        self.count = 0
        self.next_look = 0.0

    def tick(self) -> None:
        self.count += 1
        if not self.pending or self.count < self.pending[0]:
            return
        if not self._checkpointed():
            time.sleep(ARMED_PAUSE_S)  # hold the input back until a checkpoint has completed
            return
        due = self.pending.pop(0)
        if self.plan.claim(self.point, due):
            log.warning("injecting a %s fault at record %d (test-only)", self.point, self.count)
            raise InjectedFault(f"injected {self.point} fault at record {self.count} (test-only)")

    def _checkpointed(self) -> bool:
        if not self.plan.checkpoint_dir:
            return True
        now = time.monotonic()
        if now < self.next_look:
            return False
        self.next_look = now + 0.05
        return self.plan.latest_checkpoint() > self.started_from


class FaultyEngine:
    """Wraps a cycle engine: ``on_point`` raises at the planned call counts; all else delegated."""

    def __init__(self, engine: Any, plan: FaultPlan, started_from: int = 0) -> None:
        self._engine = engine
        self._trigger = _Trigger(plan, "cycle", started_from)

    def on_point(self, *args: Any, **kwargs: Any) -> Any:
        self._trigger.tick()
        return self._engine.on_point(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


@dataclass(frozen=True)
class FaultyOperatorFactory:
    """Picklable operator factory: the job's operator with its engine wrapped in a FaultyEngine."""

    plan: FaultPlan

    def __call__(self, config: Any, source: str, **options: Any) -> Any:
        from udfs.cycle_function import default_operator

        started_from = self.plan.note_attempt()
        operator = default_operator(config, source, **options)
        operator.engine = FaultyEngine(operator.engine, self.plan, started_from)
        return operator


class FaultySinkMap(MapFunction):
    """Pass-through map in front of the sinks; raises at the planned record counts."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan

    def open(self, runtime_context) -> None:
        self._trigger = _Trigger(self.plan, "sink", self.plan.latest_checkpoint())

    def map(self, value):
        self._trigger.tick()
        return value


def pipeline_hooks(plan: FaultPlan | None) -> dict[str, Any]:
    """build_pipeline keyword arguments that inject the plan's faults (none without a plan)."""
    hooks: dict[str, Any] = {}
    if plan is not None and plan.at("cycle"):
        hooks["operator_factory"] = FaultyOperatorFactory(plan)
    if plan is not None and plan.at("sink"):
        from udfs.rows import ENVELOPE_TYPE

        hooks["sink_path"] = lambda stream: stream.map(FaultySinkMap(plan), output_type=ENVELOPE_TYPE).name(
            "fault-injection").uid("fault-injection")
    return hooks
