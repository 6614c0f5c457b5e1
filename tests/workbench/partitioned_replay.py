"""The replay of a stream that a job at parallelism N parses in N parts (a Kinesis reader's records in its
own subtask, a file's records spread by truck), modelled on what the job's operators do:

* each part is parsed by a parser of its own (its own stream time, watermark hints and late-point holds,
  as its parse subtask computes them);
* every truck has one state, whichever part its points come through: the cycle operator is keyed by
  truck. After a shard split a truck's records can be read by two readers (its parent shard's, then its
  child shard's; the enumerator hands out a child only once its parents were read to their end), so
  its points reach the keyed state through two parse subtasks, in the order they were read;
* timers fire at the keyed operator's event time: the minimum of the watermarks of the parts that are
  sending (held while one of them has no time yet), the largest of all once none is (Flink's watermark
  valve, with the source idleness: a reader with no shard yet, or one that has read everything of an
  unbounded stream, goes idle and stops holding event time back); it never goes back. A part counts as
  sending from its first record on, and, with ``idle_after_last``, up to its last: what a job shows
  once every reader has been idle for the source idleness. Without it (a bounded input, or a job
  drained as soon as it has read everything) the parts hold event time until the end of input;
* every part's loader events go to one loader stage, as the job's operator keyed by loader receives them
  from every subtask."""

from __future__ import annotations

from collections.abc import Sequence

from state_machine.reference import ReferenceData
from state_machine.stream import ParsedPoint, StreamParser
from workbench.replay import BATCH_RECORDS, Replayer, ReplayResult


class _PartsReplayer(Replayer):
    """A Replayer whose records are parsed by one parser per part, with one truck state per truck and
    one timer queue firing at the keyed operator's event time (see the module docstring)."""

    def __init__(self, reference: ReferenceData, parts: int, source: str, speculative: bool,
                 idle_after_last: bool) -> None:  # fmt: skip
        super().__init__(reference, speculative=speculative, source=source)
        self.idle_after_last = idle_after_last
        lag_ms, jump_ms = self.config.max_disorder_ms, self.config.watermark_jump_ms
        self.parsers = [self.parser] + [StreamParser(source, lag_ms, jump_ms) for _ in range(parts - 1)]
        self.batches: list[tuple[dict, int]] = [({}, 0) for _ in range(parts)]  # each part's batch, as its subtask's
        self.part = 0
        self.sending = [False] * parts
        self.watermarks: list[int | None] = [None] * parts  # each part's as of its last batch (what it sent on)
        self.event_time: int | None = None

    def read(self, part: int, raw: str, last_of_part: bool) -> None:
        """One record as the job reads it: by the reader (parse subtask) ``part``, into its batch. A
        truck's points still in another part's batch were read before (its parent shard's reader): that
        batch is applied first."""
        self._switch(part)
        self.sending[part] = True
        self._result.records += 1
        parsed = self.parser.parse(raw)
        if isinstance(parsed, ParsedPoint):
            asset = parsed.point.asset_guid
            for other, (pending, _) in enumerate(self.batches):
                if other != part and asset in pending:
                    self._switch(other)
                    self.flush()
                    self._switch(part)
            self._pending.setdefault(asset, []).append(parsed)
        else:
            self._result.dead_letters.append(parsed)
        self._pending_records += 1
        if self._pending_records >= BATCH_RECORDS:
            self.flush()
        if last_of_part and self.idle_after_last:
            self.flush()
            self.sending[part] = False
            self._advance_event_time()

    def finish(self) -> ReplayResult:
        """End of input: every part's last batch, then every timer with the END_OF_INPUT watermark."""
        self.processed()
        return super().finish()

    def processed(self) -> ReplayResult:
        """Every part's last batch applied, and no end of input (a job that keeps running)."""
        for part in range(len(self.parsers)):
            self._switch(part)
            self.flush()
        return self.result

    def _switch(self, part: int) -> None:
        """Make ``part``'s parser and batch the current ones."""
        if part != self.part:
            self.batches[self.part] = (self._pending, self._pending_records)
            self._pending, self._pending_records = self.batches[part]
            self.parser, self.part = self.parsers[part], part

    def flush(self) -> None:
        """Apply the current part's batch (every truck's points with its part's hints and holds), then fire
        the timers due at the keyed operator's event time."""
        pending, self._pending, self._pending_records = self._pending, {}, 0
        for asset, points in pending.items():
            self._collect(asset, self.operator.on_points(asset, self.states.get(asset), points, self.reference))
        if pending:
            self.watermarks[self.part] = self.parser.watermarks.watermark
            self._advance_event_time()

    def _advance_event_time(self) -> None:
        sending = [wm for wm, on in zip(self.watermarks, self.sending, strict=True) if on]
        if sending:
            event_time = None if None in sending else min(sending)
        else:
            event_time = max((wm for wm in self.watermarks if wm is not None), default=None)
        if event_time is not None and (self.event_time is None or event_time > self.event_time):
            self.event_time = event_time
            self._fire_timers(event_time)


def replay_parts(reads: Sequence[tuple[int, str]], reference: ReferenceData, source: str = "x",
                 speculative: bool = False, idle_after_last: bool = False, end_of_input: bool = True) -> ReplayResult:
    """Everything the job writes when the records ``reads`` (``(part, raw line)`` in the order the job
    reads them; each part's records in its own arrival order) are parsed by a subtask per part (see the
    module docstring). A truck's records may be in more than one part (a shard split while running).
    ``idle_after_last``: each part stops holding event time back after its last record (the readers of
    an unbounded stream gone idle). Without ``end_of_input``: what a job that keeps running shows once it
    has processed every record (every batch applied, the timers due at its event time fired, no end of
    input: points still held for late ones stay held)."""
    parts = 1 + max((part for part, _ in reads), default=0)
    last = {part: n for n, (part, _) in enumerate(reads)}
    replayer = _PartsReplayer(reference, parts, source, speculative, idle_after_last)
    for n, (part, line) in enumerate(reads):
        replayer.read(part, line, last[part] == n)
    return replayer.finish() if end_of_input else replayer.processed()
