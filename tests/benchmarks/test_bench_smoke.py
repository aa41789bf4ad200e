"""The benchmark tool runs end to end on a few hundred jobs (our library only: building the
pgqueuer 1.6.0 environment is the guard's and the full benchmark's business, not the tests')."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.derive import merged_buckets, percentile

ROOT = Path(__file__).resolve().parents[2]


def test_buckets_of_processes_started_apart_land_on_one_clock() -> None:
    a = {"bucket_seconds": 0.1, "started": 100.0, "buckets": [1, 2]}
    b = {"bucket_seconds": 0.1, "started": 100.2, "buckets": [5]}
    assert merged_buckets([a, b], origin=100.0) == [1, 2, 5]
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.99) == 4.0


@pytest.mark.timeout(300)
def test_tool_measures_enqueue_and_drain(pg_dsn: str, tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "benchmarks", "enqueue", "drain", "--libs", "ours",
        "--repeats", "1", "--enqueue-batches", "100", "--enqueue-jobs", "300",
        "--drain-batches", "10", "--drain-jobs", "300", "--dsn", pg_dsn,
        "--out", str(tmp_path), "--name", "smoke",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((tmp_path / "smoke.json").read_text())
    by_workload = {r["workload"]: r["derived"] for r in data["records"]}
    assert by_workload["enqueue"]["jobs"] == 300
    # every enqueued job is at least one inserted row, counted from the run's own database
    assert by_workload["enqueue"]["inserts_per_job"] >= 1.0
    assert by_workload["drain"]["jobs"] == 300
    assert by_workload["drain"]["jobs_per_s"] > 0
    assert by_workload["drain"]["rows_written_per_job"] > 0
    assert "jobs_per_s" in done.stdout  # the readable table was printed
