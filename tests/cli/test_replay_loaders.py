"""`asset-cycle simulate`, `replay --loaders-out/--visits-out` and `score --visits`: the loader figures
as files, from a bundle to a score."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from cli.main import main
from workbench.bundle import LOADER_HOUR_CSV_COLUMNS, read_cycles_csv, read_visits_csv


def test_replay_writes_loader_hours_and_visits_that_score_against_the_truth(tmp_path: Path, capsys) -> None:
    bundle = tmp_path / "site"
    assert main(["simulate", "--scenario", "staging-queue", "--trucks", "8", "--hours", "3", "--seed", "4",
                 "--out", str(bundle)]) == 0  # fmt: skip
    assert (bundle / "truth_visits.csv").is_file()
    out = tmp_path / "out"
    out.mkdir()
    assert main(["replay", str(bundle), "--out", str(out / "cycles.csv"), "--loaders-out", str(out / "loaders.csv"),
                 "--visits-out", str(out / "visits.csv"), "--quiet", "--no-progress"]) == 0  # fmt: skip
    with open(out / "loaders.csv", encoding="utf-8", newline="") as fh:
        hours = list(csv.DictReader(fh))
    assert hours and list(hours[0]) == list(LOADER_HOUR_CSV_COLUMNS)
    visits = read_visits_csv(out / "visits.csv")
    assert sum(int(h["loads"]) for h in hours) == sum(sv.service_start_ms is not None for sv in visits)
    cycles = read_cycles_csv(out / "cycles.csv")
    queued = {(c.asset_guid, c.load_start_ms): c.queue_seconds for c in cycles}
    assert any(q for q in queued.values()) and all(
        queued[(sv.visit.asset_guid, sv.visit.load_start_ms)] == sv.queue_seconds
        for sv in visits if (sv.visit.asset_guid, sv.visit.load_start_ms) in queued)  # fmt: skip
    capsys.readouterr()
    assert main(["score", str(bundle / "truth_cycles.csv"), str(out / "cycles.csv"), "--visits",
                 str(bundle / "truth_visits.csv"), str(out / "visits.csv"), "--json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["visits"]["matched"] >= 0.95 * report["visits"]["truth_count"] > 0
    assert report["visits"]["queue_error"]["median"] <= 10.0


def test_score_with_a_missing_visits_file_is_one_line(tmp_path: Path, capsys) -> None:
    truth = tmp_path / "t.csv"
    truth.write_text("asset_guid,site_guid,cycle_status,load_start_utc\n", encoding="utf-8")
    assert main(["score", str(truth), str(truth), "--visits", str(tmp_path / "none.csv"), str(truth)]) == 2
    assert "none.csv: no such file" in capsys.readouterr().err
