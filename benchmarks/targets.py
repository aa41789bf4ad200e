"""The performance targets of issue P5, checked against one run's summary and ceiling.

Each target is a ratio measured within the run (ours against the anchor, or ours against the
pgbench ceiling taken in the same run), so machine load moves both sides of it alike.
``python -m benchmarks.targets results/RUN.json [more.json ...]`` prints them as a Markdown
table; later files fill in what earlier ones lack (for instance the cost figures of a
private-cluster run).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    goal: str
    met: bool | None
    detail: str


def _find(
    summary: Sequence[dict[str, Any]], workload: str, figure: str, **params: Any
) -> dict[str, Any] | None:
    for row in summary:
        if row["workload"] != workload or row["figure"] != figure:
            continue
        fields = dict(part.split("=", 1) for part in row["params"].split(" ") if "=" in part)
        if all(fields.get(k) == str(v) for k, v in params.items()):
            return row
    return None


def _ceiling(ceiling: Sequence[dict[str, Any]], op: str, batch: int) -> dict[int, float]:
    """Median jobs/s per client count for one op and batch (valid runs only)."""
    runs: dict[int, list[float]] = {}
    for r in ceiling:
        if r["op"] == op and r["batch"] == batch and r["valid"] and r["jobs_per_s"]:
            runs.setdefault(int(r["clients"]), []).append(float(r["jobs_per_s"]))
    return {clients: statistics.median(values) for clients, values in runs.items()}


def _clients(n: int) -> str:
    return f"{n} client" if n == 1 else f"{n} clients"


def _pair(row: dict[str, Any] | None, spec: str, unit: str) -> str:
    ours = (row or {}).get("ours")
    anchor = (row or {}).get("anchor")

    def show(value: float | None) -> str:
        return "-" if value is None else format(value, spec) + unit

    return f"ours {show(ours)}, 1.6.0 {show(anchor)}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def check(summary: Sequence[dict[str, Any]], ceiling: Sequence[dict[str, Any]]) -> list[Check]:
    out: list[Check] = []

    def add(name: str, value: float | None, goal: str, ok: bool | None, detail: str) -> None:
        out.append(Check(name, value, goal, ok, detail))

    for batch in (10, 100):
        row = _find(summary, "drain", "jobs_per_s", batch=batch)
        ours = row.get("ours") if row else None
        ratio = row.get("ratio") if row else None
        add(
            f"drain batch {batch}: ours / 1.6.0",
            ratio,
            ">= 3",
            None if ratio is None else ratio >= 3,
            _pair(row, ",.0f", " jobs/s"),
        )
        cycle = _ceiling(ceiling, "cycle", batch)
        for clients, limit in sorted(cycle.items()):
            share = _ratio(ours, limit)
            add(
                f"drain batch {batch}: ours / pgbench cycle ({_clients(clients)})",
                share,
                ">= 0.6",
                None if share is None else share >= 0.6,
                f"ceiling {limit:,.0f} jobs/s",
            )

    row = _find(summary, "enqueue", "jobs_per_s", batch=100)
    ratio = row.get("ratio") if row else None
    add(
        "enqueue batch 100: ours / 1.6.0",
        ratio,
        ">= 2",
        None if ratio is None else ratio >= 2,
        _pair(row, ",.0f", " jobs/s"),
    )
    row = _find(summary, "enqueue", "jobs_per_s", batch=10000)
    ours = row.get("ours") if row else None
    for clients, limit in sorted(_ceiling(ceiling, "enqueue", 10_000).items()):
        share = _ratio(ours, limit)
        add(
            f"enqueue batch 10,000: ours / pgbench enqueue ({_clients(clients)})",
            share,
            ">= 0.5",
            None if share is None else share >= 0.5,
            f"ours {ours or 0:,.0f} jobs/s, ceiling {limit:,.0f}",
        )

    for rate in (100.0, 200.0, 1000.0):
        row = _find(summary, "latency", "latency_p50_ms", rate=rate)
        ratio = row.get("ratio") if row else None
        add(
            f"latency p50 at {rate:g}/s: ours / 1.6.0",
            ratio,
            "<= 0.5",
            None if ratio is None else ratio <= 0.5,
            _pair(row, ".2f", " ms"),
        )
    row = _find(summary, "latency", "latency_p99_ms", rate=200.0)
    p99 = row.get("ours") if row else None
    add(
        "latency p99 at 200/s (ours)",
        p99,
        "< 10 ms",
        None if p99 is None else p99 < 10,
        _pair(row, ".2f", " ms"),
    )

    small = [r for r in summary if r["workload"] == "backlog" and r["figure"] == "jobs_per_s"]
    if len(small) >= 2:
        by_size = sorted(small, key=lambda r: int(r["params"].split("queued=")[1].split(" ")[0]))
        low, high = by_size[0].get("ours"), by_size[-1].get("ours")
        share = _ratio(high, low)
        add(
            f"backlog: ours at {by_size[-1]['params'].split(' ')[0]} / at "
            f"{by_size[0]['params'].split(' ')[0]}",
            share,
            ">= 0.9",
            None if share is None else share >= 0.9,
            f"{high or 0:,.0f} vs {low or 0:,.0f} jobs/s; 1.6.0: "
            f"{_ratio(by_size[-1].get('anchor'), by_size[0].get('anchor')) or 0:.2f}",
        )

    for batch in (10, 100):
        # (figure, goal as text, the largest ratio ours/1.6.0 that meets it, inclusive?)
        for figure, goal, limit, inclusive in (
            ("client_cpu_s_per_10k", "<= 0.5", 0.5, True),
            ("rows_written_per_job", "< 1", 1.0, False),
            ("wal_bytes_per_job", "< 1", 1.0, False),
        ):
            row = _find(summary, "drain", figure, batch=batch)
            ratio = row.get("ratio") if row else None
            add(
                f"drain batch {batch} {figure}: ours / 1.6.0",
                ratio,
                goal,
                None if ratio is None else (ratio <= limit if inclusive else ratio < limit),
                _pair(row, ".3g", ""),
            )
    # A job's whole life: enqueued in a batch of 100, then drained at batch 10.
    for figure in ("rows_written_per_job", "wal_bytes_per_job"):
        enq = _find(summary, "enqueue", figure, batch=100)
        drn = _find(summary, "drain", figure, batch=10)
        sums = {
            lib: (enq or {}).get(lib, 0.0) + (drn or {}).get(lib, 0.0)
            if enq and drn and enq.get(lib) is not None and drn.get(lib) is not None
            else None
            for lib in ("ours", "anchor")
        }
        ratio = _ratio(sums["ours"], sums["anchor"])
        add(
            f"enqueue (batch 100) + drain (batch 10) {figure}: ours / 1.6.0",
            ratio,
            "< 1",
            None if ratio is None else ratio < 1,
            _pair(sums, ".3g", ""),
        )
    return out


def markdown(checks: Sequence[Check]) -> str:
    lines = ["| target | measured | goal | met | figures |", "|---|---|---|---|---|"]
    for c in checks:
        value = "-" if c.value is None else f"{c.value:.2f}"
        met = "-" if c.met is None else ("yes" if c.met else "**no**")
        lines.append(f"| {c.name} | {value} | {c.goal} | {met} | {c.detail} |")
    return "\n".join(lines)


def load(paths: Sequence[Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Summary rows and ceiling results of several runs; the first run that has a row wins."""
    summary: list[dict[str, Any]] = []
    ceiling: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for path in paths:
        data = json.loads(path.read_text())
        for row in data["summary"]:
            key = (row["workload"], row["params"], row["figure"])
            if key not in seen:
                seen.add(key)
                summary.append(row)
        if not ceiling:
            ceiling = list(data["meta"].get("ceiling") or [])
    return summary, ceiling


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    if not paths:
        print("usage: python -m benchmarks.targets RUN.json [MORE.json ...]", file=sys.stderr)
        return 2
    summary, ceiling = load(paths)
    print(markdown(check(summary, ceiling)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
