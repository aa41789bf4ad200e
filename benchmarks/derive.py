"""Figures per job from one record: throughput, CPU, rows, WAL, transactions, latency."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

# Sustained runs report the rate between these offsets from the start (warm-up and stop
# excluded), in seconds; the end offset is counted back from the run's duration.
STEADY_FROM = 2.0
STEADY_UNTIL_END = 1.0


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(len(sorted_values) * fraction))
    return float(sorted_values[index])


def _sum_or_none(values: Sequence[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return float(sum(v for v in values if v is not None))


def merged_buckets(workers: Sequence[dict[str, Any]], origin: float) -> list[int]:
    """Jobs per bucket across worker processes, on one clock starting at ``origin``."""
    merged: list[int] = []
    for worker in workers:
        width = worker["bucket_seconds"]
        offset = round((worker["started"] - origin) / width)
        for i, count in enumerate(worker["buckets"]):
            slot = i + offset
            while len(merged) <= slot:
                merged.append(0)
            merged[slot] += count
    return merged


def derive(record: dict[str, Any]) -> dict[str, Any]:
    clients: list[dict[str, Any]] = record["clients"]
    workers = [c for c in clients if c["role"] == "work"]
    producers = [c for c in clients if c["role"] in ("enqueue", "produce")]
    measured = workers or producers
    jobs = sum(int(c["jobs"]) for c in measured)
    out: dict[str, Any] = {"jobs": jobs}
    if jobs == 0:
        out["jobs_per_s"] = 0.0
        return out

    workload = record["workload"]
    if workload == "sustained" and workers:
        origin = record["start_at"] or min(w["started"] for w in workers)
        width = workers[0]["bucket_seconds"]
        buckets = merged_buckets(workers, origin)
        seconds = record["params"]["seconds"]
        lo, hi = int(STEADY_FROM / width), int((seconds - STEADY_UNTIL_END) / width)
        window = buckets[lo:hi]
        out["jobs_per_s"] = sum(window) / (len(window) * width) if window else 0.0
        out["enqueued"] = sum(int(p["jobs"]) for p in producers)
        out["enqueue_jobs_per_s"] = sum(float(p["jobs_per_s"]) for p in producers)
        depth = [n for _, n in record.get("depth", [])]
        out["depth_end"] = depth[-1] if depth else None
        out["depth_max"] = max(depth) if depth else None
    elif len(measured) > 1 or record.get("start_at"):
        start = record.get("start_at") or min(c["started"] for c in measured)
        end = max(float(c.get("last_job") or c["started"] + c["seconds"]) for c in measured)
        out["jobs_per_s"] = jobs / (end - start) if end > start else 0.0
    else:
        out["jobs_per_s"] = float(measured[0]["jobs_per_s"])

    client_cpu = sum(float(c["client_cpu_s"]) for c in measured)
    out["client_cpu_s"] = client_cpu
    out["client_cpu_s_per_10k"] = client_cpu / jobs * 10_000
    out["client_cpu_us_per_job"] = client_cpu / jobs * 1e6
    system = _sum_or_none([c.get("client_system_s") for c in measured])
    out["client_system_share"] = system / client_cpu if system is not None and client_cpu else None
    backend = _sum_or_none([c.get("backend_cpu_s") for c in clients])
    out["backend_cpu_us_per_job"] = backend / jobs * 1e6 if backend is not None else None
    cluster = record.get("cluster_cpu_s")
    out["cluster_cpu_us_per_job"] = cluster / jobs * 1e6 if cluster is not None else None
    out["peak_rss_mb"] = max(float(c["peak_rss_kb"]) for c in measured) / 1024

    db: dict[str, float] = record["db"]
    out["rows_written_per_job"] = db["rows_written"] / jobs
    out["inserts_per_job"] = db["tup_ins"] / jobs
    out["updates_per_job"] = db["tup_upd"] / jobs
    out["deletes_per_job"] = db["tup_del"] / jobs
    out["hot_update_share"] = db["tup_hot"] / db["tup_upd"] if db["tup_upd"] else None
    out["wal_bytes_per_job"] = db["wal_lsn_bytes"] / jobs
    out["wal_fpi_per_job"] = db["wal_fpi"] / jobs
    out["xacts_per_job"] = db["xacts"] / jobs

    latencies = sorted(ms for w in workers for ms in w.get("latencies_ms", []))
    if latencies:
        out["latency_p50_ms"] = statistics.median(latencies)
        out["latency_p99_ms"] = percentile(latencies, 0.99)
        out["latency_max_ms"] = latencies[-1]
        out["latency_n"] = len(latencies)
    return out
