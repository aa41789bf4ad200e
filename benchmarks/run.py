"""``python -m benchmarks WORKLOAD... [options]``: measure our library against pgqueuer 1.6.0.

Workloads: enqueue, drain, latency, sustained, backlog, scaling, ceiling (pgbench with the
minimal queue SQL), or ``all``. Every run writes ``<out>/<name>.json`` (the raw records and a
summary), prints a table with medians and the ours/anchor ratio, and with ``--plot`` draws
``throughput.png`` and ``latency.png``. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as a script (python benchmarks/run.py): make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import report
from benchmarks.envs import LIBRARIES, library_version
from benchmarks.workloads import Runner, Settings

WORKLOADS = ("enqueue", "drain", "latency", "sustained", "backlog", "scaling", "ceiling")
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def ints(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x]


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("workloads", nargs="+", choices=[*WORKLOADS, "all"])
    p.add_argument(
        "--dsn",
        default=os.environ.get("PGDSN", DEFAULT_DSN),
        help="server-level DSN; benchmark databases are created beside it",
    )
    p.add_argument("--libs", default="ours,anchor", help="ours, anchor or both (default)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--driver",
        choices=["conn", "pool"],
        default="conn",
        help="1.x driver: AsyncpgDriver(connection) or AsyncpgPoolDriver(pool)",
    )
    p.add_argument("--pool-size", type=int, default=4)
    p.add_argument(
        "--pg-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="server setting for the clients' connections (what-if runs), repeatable",
    )
    p.add_argument("--out", default="benchmarks/results", help="directory for JSON and PNG")
    p.add_argument("--name", default="", help="file name stem (default: a timestamp)")
    p.add_argument("--plot", action="store_true", help="write throughput.png and latency.png")
    p.add_argument(
        "--private",
        action="store_true",
        help="run on a private cluster of the machine's PostgreSQL binaries (exact WAL)",
    )
    g = p.add_argument_group("workload sizes")
    g.add_argument("--enqueue-batches", type=ints, default=[1, 100, 10_000])
    g.add_argument(
        "--enqueue-jobs",
        type=ints,
        default=[3_000, 50_000, 200_000],
        help="jobs per enqueue run, one per batch size",
    )
    g.add_argument("--drain-batches", type=ints, default=[10, 100])
    g.add_argument("--drain-jobs", type=int, default=20_000)
    g.add_argument("--rates", type=floats, default=[100.0, 200.0, 1000.0])
    g.add_argument("--latency-seconds", type=float, default=5.0)
    g.add_argument("--sustained-seconds", type=float, default=15.0)
    g.add_argument("--sustained-rate", type=float, default=0.0, help="0: producer unpaced")
    g.add_argument("--sustained-produce-batch", type=int, default=10)
    g.add_argument("--sustained-workers", type=int, default=1)
    g.add_argument("--backlog-sizes", type=ints, default=[10_000, 1_000_000])
    g.add_argument("--backlog-window", type=int, default=10_000)
    g.add_argument("--processes", type=ints, default=[1, 2, 4])
    g.add_argument("--scaling-jobs", type=int, default=40_000)
    g.add_argument(
        "--batch",
        type=int,
        default=10,
        help="worker batch size for latency, sustained, backlog, scaling",
    )
    g.add_argument("--ceiling-seconds", type=float, default=5.0)
    g.add_argument(
        "--interleave-ceiling",
        action="store_true",
        help="after each drain/enqueue repeat, run the matching pgbench ceiling (same load)",
    )
    return p


async def measure(args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    libraries = [x for x in args.libs.split(",") if x]
    unknown = [x for x in libraries if x not in LIBRARIES]
    if unknown:
        raise SystemExit(f"unknown --libs {unknown}; expected some of {LIBRARIES}")
    selected = list(WORKLOADS) if "all" in args.workloads else list(dict.fromkeys(args.workloads))
    if len(args.enqueue_jobs) != len(args.enqueue_batches):
        raise SystemExit("--enqueue-jobs needs one count per --enqueue-batches entry")
    settings = Settings(
        dsn=args.dsn,
        libraries=libraries,
        repeats=args.repeats,
        driver=args.driver,
        pool_size=args.pool_size,
        interleave_ceiling=args.interleave_ceiling,
        server_settings=dict(item.split("=", 1) for item in args.pg_setting),
        ceiling_seconds=args.ceiling_seconds,
    )
    runner = Runner(settings)
    await runner.prepare()
    meta: dict[str, Any] = {
        "machine": machine(),
        "server": runner.server,
        "libraries": {lib: library_version(runner.pythons[lib]) for lib in libraries},
        "argv": sys.argv[1:],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    ceiling: list[dict[str, Any]] = []
    for workload in selected:
        print(f"== {workload}", flush=True)
        if workload == "enqueue":
            await runner.enqueue(
                args.enqueue_batches,
                dict(zip(args.enqueue_batches, args.enqueue_jobs, strict=True)),
            )
        elif workload == "drain":
            await runner.drain(args.drain_batches, args.drain_jobs)
        elif workload == "latency":
            await runner.latency(args.rates, args.latency_seconds, args.batch)
        elif workload == "sustained":
            await runner.sustained(
                args.sustained_seconds,
                args.sustained_produce_batch,
                args.batch,
                args.sustained_rate,
                args.sustained_workers,
            )
        elif workload == "backlog":
            await runner.backlog(args.backlog_sizes, args.backlog_window, args.batch)
        elif workload == "scaling":
            await runner.scaling(args.processes, args.scaling_jobs, args.batch)
        elif workload == "ceiling":
            from benchmarks.ceiling import run_ceiling

            ceiling = await run_ceiling(args.dsn, seconds=args.ceiling_seconds)
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    meta["ceiling"] = runner.ceiling + ceiling
    return meta, runner.records


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.private:
        from benchmarks.private_pg import private_cluster

        with private_cluster() as dsn:
            args.dsn = dsn
            meta, records = asyncio.run(measure(args))
        meta["server"]["private_cluster"] = "yes"
    else:
        meta, records = asyncio.run(measure(args))
    ceiling = meta["ceiling"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or time.strftime("run-%Y%m%d-%H%M%S")
    path = out / f"{name}.json"
    report.write_json(path, meta, records)
    rows = report.summarise(records)
    if rows:
        print(report.table(rows))
    if ceiling:
        from benchmarks.ceiling import ceiling_table

        print(ceiling_table(ceiling))
    if rows:
        from benchmarks.targets import check, markdown

        print(markdown(check(rows, ceiling)))
    print(f"wrote {path}")
    if args.plot:
        for written in report.plot(records, out):
            print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
