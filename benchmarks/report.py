"""Summaries of a run: medians per workload, parameters and library; the ours/anchor ratio;
a readable table; the JSON file; and the plots (matplotlib, from the ``bench`` extra)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.derive import merged_buckets

# Figures shown per workload, with the direction that is better (for the ratio's reading).
FIGURES: dict[str, list[str]] = {
    "enqueue": [
        "jobs_per_s",
        "client_cpu_s_per_10k",
        "backend_cpu_us_per_job",
        "rows_written_per_job",
        "wal_bytes_per_job",
        "xacts_per_job",
    ],
    "drain": [
        "jobs_per_s",
        "client_cpu_s_per_10k",
        "backend_cpu_us_per_job",
        "cluster_cpu_us_per_job",
        "rows_written_per_job",
        "wal_bytes_per_job",
        "xacts_per_job",
        "peak_rss_mb",
    ],
    "latency": ["latency_p50_ms", "latency_p99_ms", "latency_max_ms", "client_cpu_s_per_10k"],
    "sustained": [
        "jobs_per_s",
        "enqueue_jobs_per_s",
        "depth_end",
        "depth_max",
        "client_cpu_s_per_10k",
        "rows_written_per_job",
        "wal_bytes_per_job",
    ],
    "backlog": [
        "jobs_per_s",
        "client_cpu_s_per_10k",
        "backend_cpu_us_per_job",
        "rows_written_per_job",
    ],
    "scaling": ["jobs_per_s", "client_cpu_s_per_10k", "backend_cpu_us_per_job", "peak_rss_mb"],
}


def params_key(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def group(
    records: Iterable[dict[str, Any]],
) -> dict[tuple[str, str], dict[str, list[dict[str, Any]]]]:
    groups: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for record in records:
        key = (record["workload"], params_key(record["params"]))
        groups.setdefault(key, {}).setdefault(record["library"], []).append(record)
    return groups


def median_of(records: Sequence[dict[str, Any]], figure: str) -> float | None:
    values = [r["derived"].get(figure) for r in records]
    known = [float(v) for v in values if v is not None]
    return statistics.median(known) if known else None


def summarise(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (workload, parameters, figure): median, min, max per library, the ratio
    ours/anchor of the medians, and the load averages the runs were taken under."""
    rows: list[dict[str, Any]] = []
    for (workload, key), libs in group(records).items():
        for figure in FIGURES.get(workload, ["jobs_per_s"]):
            row: dict[str, Any] = {"workload": workload, "params": key, "figure": figure}
            for library, recs in libs.items():
                values = [float(v) for r in recs if (v := r["derived"].get(figure)) is not None]
                row[library] = statistics.median(values) if values else None
                row[f"{library}_min"] = min(values) if values else None
                row[f"{library}_max"] = max(values) if values else None
                row[f"{library}_n"] = len(values)
                row[f"{library}_load"] = [r["load_before"][0] for r in recs]
            ours, anchor = row.get("ours"), row.get("anchor")
            row["ratio"] = ours / anchor if ours is not None and anchor else None
            rows.append(row)
    return rows


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        f"{'workload':9} {'params':42} {'figure':24} {'ours':>10} {'anchor':>10} {'ratio':>7}  load"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        loads = sorted({x for lib in ("ours", "anchor") for x in row.get(f"{lib}_load", [])})
        load = f"{loads[0]}-{loads[-1]}" if loads else ""
        lines.append(
            f"{row['workload']:9} {row['params'][:42]:42} {row['figure']:24} "
            f"{fmt(row.get('ours')):>10} {fmt(row.get('anchor')):>10} "
            f"{fmt(row.get('ratio')):>7}  {load}"
        )
    return "\n".join(lines)


def write_json(path: Path, meta: dict[str, Any], records: Sequence[dict[str, Any]]) -> None:
    summary = summarise(records)
    # compact: records carry every latency sample and 0.1 s bucket of every run
    document = {"meta": meta, "summary": summary, "records": records}
    path.write_text(json.dumps(document, separators=(",", ":")) + "\n")


def plot(records: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Throughput over time (sustained, with queue depth) and latency distributions."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'); no plots written")
        return []
    written: list[Path] = []
    colours = {"ours": "tab:blue", "anchor": "tab:orange"}

    timed = [r for r in records if r["workload"] in ("sustained", "drain", "scaling")]
    if timed:
        fig, axes = plt.subplots(2, 1, figsize=(9, 7), sharex=False)
        seen: set[str] = set()
        for r in timed:
            if r["workload"] != "sustained" or r["library"] in seen:
                continue
            seen.add(r["library"])
            workers = [c for c in r["clients"] if c["role"] == "work"]
            origin = r["start_at"] or min(w["started"] for w in workers)
            width = workers[0]["bucket_seconds"]
            buckets = merged_buckets(workers, origin)
            # 0.5 s moving sum keeps the line readable
            step = 5
            xs = [i * width for i in range(0, len(buckets), step)]
            ys = [sum(buckets[i : i + step]) / (step * width) for i in range(0, len(buckets), step)]
            axes[0].plot(xs, ys, label=f"{r['library']} jobs/s", color=colours.get(r["library"]))
            depth = r.get("depth", [])
            if depth:
                axes[1].plot(
                    [t - origin for t, _ in depth],
                    [n for _, n in depth],
                    label=f"{r['library']} queued",
                    color=colours.get(r["library"]),
                )
        axes[0].set_title("sustained: producer and worker together (first repeat)")
        axes[0].set_ylabel("jobs started per second")
        axes[0].set_xlabel("seconds since start")
        axes[0].legend()
        axes[1].set_ylabel("queued jobs")
        axes[1].set_xlabel("seconds since start")
        axes[1].legend()
        fig.tight_layout()
        path = out_dir / "throughput.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    lat = [r for r in records if r["workload"] == "latency"]
    if lat:
        rates = sorted({r["params"]["rate"] for r in lat})
        fig, axes = plt.subplots(1, len(rates), figsize=(4 * len(rates), 4), squeeze=False)
        for ax, rate in zip(axes[0], rates, strict=True):
            for library in ("ours", "anchor"):
                values = sorted(
                    ms
                    for r in lat
                    if r["params"]["rate"] == rate and r["library"] == library
                    for c in r["clients"]
                    for ms in c.get("latencies_ms", [])
                )
                if not values:
                    continue
                ys = [(i + 1) / len(values) for i in range(len(values))]
                ax.plot(values, ys, label=library, color=colours.get(library))
            ax.set_xscale("log")
            ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500) if t <= ax.get_xlim()[1]]
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            for level in (0.5, 0.99):
                ax.axhline(level, color="grey", linewidth=0.6, linestyle=":")
            ax.set_title(f"enqueue-to-start, {rate:g} jobs/s")
            ax.set_xlabel("ms (log)")
            ax.set_ylabel("fraction of jobs")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.tight_layout()
        path = out_dir / "latency.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as Markdown: median (min-max) per library, ratio, load averages."""
    lines = [
        "| workload | parameters | figure | ours | 1.6.0 | ours/1.6.0 | load (1 min) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        loads = sorted({x for lib in ("ours", "anchor") for x in row.get(f"{lib}_load", [])})
        load = f"{loads[0]} to {loads[-1]}" if loads else ""
        lines.append(
            f"| {row['workload']} | {row['params']} | {row['figure']} | {_cell(row, 'ours')} | "
            f"{_cell(row, 'anchor')} | {fmt(row.get('ratio'))} | {load} |"
        )
    return "\n".join(lines)


def _cell(row: dict[str, Any], lib: str) -> str:
    median = row.get(lib)
    if median is None:
        return "-"
    lo, hi = row.get(f"{lib}_min"), row.get(f"{lib}_max")
    spread = f" ({fmt(lo)} to {fmt(hi)})" if row.get(f"{lib}_n", 0) > 1 else ""
    return fmt(median) + spread


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.report RUN.json``: the run's summary as Markdown."""
    import sys

    paths = list(argv if argv is not None else sys.argv[1:])
    for path in paths:
        data = json.loads(Path(path).read_text())
        print(markdown_table(data["summary"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
