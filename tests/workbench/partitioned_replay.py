"""The replay of a stream that a job at parallelism N parses in N parts (a Kinesis reader's records in its
own subtask, a file's records spread by truck): each part through its own parser and truck operator
(its own stream watermark, as its parse subtask has), and every part's loader events through one loader
stage, as the job's operator keyed by loader receives them from every subtask."""

from __future__ import annotations

from collections.abc import Sequence

from state_machine.reference import ReferenceData
from workbench.replay import Replayer, ReplayResult


def replay_parts(parts: Sequence[Sequence[str]], reference: ReferenceData, source: str = "x",
                 speculative: bool = False) -> ReplayResult:
    """Everything the job writes when each of ``parts`` (raw lines, in arrival order; each truck in one
    part) is parsed by a subtask of its own. The loader stage's rows are a function of the set of
    visits it receives (state_machine.loader), so the parts are fed one after the other."""
    replayers = [Replayer(reference, speculative=speculative) for _ in parts]
    first = replayers[0]
    for other in replayers[1:]:  # one loader stage and one result for all parts
        other.loaders, other.loader_states = first.loaders, first.loader_states
        other._closed_at, other._result = first._closed_at, first._result
    for replayer, lines in zip(replayers, parts, strict=True):
        for line in lines:
            replayer.feed(source, line)
    for replayer in replayers:
        replayer.finish()
    return first.result
