"""The checkpoints local runs keep on disk (``.checkpoints/<schema>``), for ``asset-cycle run --resume``.

Flink writes ``<checkpoint dir>/<job id>/chk-<n>/_metadata`` and retains the latest checkpoint when a
job is cancelled, fails or is killed; a run that ends normally (or stops with a savepoint) leaves none.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from cli.local_services import state_dir

RETAINED_CHECKPOINT_RUNS = 3
"""Checkpoint directories of this many earlier runs (per schema) are kept for --resume."""


def default_checkpoint_dir(schema: str) -> Path:
    """Where a local run into ``schema`` keeps its checkpoints (``.checkpoints/<schema>``)."""
    return state_dir("checkpoints") / schema


def _completed_checkpoints(root: Path) -> list[Path]:
    """``<root>/<job id>/chk-<n>`` directories holding a completed checkpoint, oldest first."""
    found = [meta.parent for meta in root.glob("*/chk-*/_metadata") if meta.is_file()]
    return sorted(found, key=lambda p: p.joinpath("_metadata").stat().st_mtime)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest completed checkpoint retained under a checkpoint directory, or None."""
    found = _completed_checkpoints(Path(root))
    return found[-1] if found else None


def prune_checkpoints(root: Path, keep_runs: int = RETAINED_CHECKPOINT_RUNS) -> None:
    """Remove the checkpoint directories of all but the newest ``keep_runs`` earlier runs, and those of
    runs that left no completed checkpoint and are older than a day (a run that ended normally)."""
    runs = list(dict.fromkeys(chk.parent for chk in reversed(_completed_checkpoints(root))))
    for old in runs[keep_runs:]:
        shutil.rmtree(old, ignore_errors=True)
    day_ago = time.time() - 86_400
    for job_dir in root.glob("*"):
        if job_dir.is_dir() and job_dir not in runs and job_dir.stat().st_mtime < day_ago:
            shutil.rmtree(job_dir, ignore_errors=True)
