"""Regression guard for CI: our drain throughput as a ratio against pgqueuer 1.6.0.

    python -m benchmarks.guard [--dsn DSN | --private] [--jobs 5000] [--repeats 3] [--record]

It drains the same pre-filled queue (no-op handler, batch 10, one worker, the 1.x client)
with our library and with a fresh run of the anchor, pgqueuer 1.6.0 from PyPI in a cached
virtual environment, alternating which goes first, on the same server and machine. The
figure is the ratio of the medians, ours / anchor, so a slower or busier machine moves both
sides alike. It fails when that ratio falls below ``--fraction`` (default one half) of the
ratio recorded in ``guard_baseline.json``.

Exit codes
  0  ratio at or above the threshold
  1  regression: ratio below ``fraction x recorded ratio``
  2  could not measure (server unreachable, anchor not installable, a client failed)
``--record`` writes the measured ratio as the new baseline (and exits 0 if it measured).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.workloads import Runner, Settings

BASELINE = Path(__file__).resolve().parent / "guard_baseline.json"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PASS, REGRESSION, NOT_MEASURED = 0, 1, 2


async def measure(dsn: str, jobs: int, batch: int, repeats: int) -> dict[str, Any]:
    runner = Runner(Settings(dsn=dsn, repeats=repeats))
    await runner.prepare()
    await runner.drain([batch], jobs)
    rates: dict[str, list[float]] = {"ours": [], "anchor": []}
    for record in runner.records:
        rates[record["library"]].append(float(record["derived"]["jobs_per_s"]))
    ours, anchor = statistics.median(rates["ours"]), statistics.median(rates["anchor"])
    return {
        "ours_jobs_per_s": rates["ours"],
        "anchor_jobs_per_s": rates["anchor"],
        "ratio": ours / anchor,
        "load": [r["load_before"][0] for r in runner.records],
    }


def main(argv: list[str] | None = None) -> int:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.guard",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dsn", default=os.environ.get("PGDSN", DEFAULT_DSN))
    p.add_argument("--private", action="store_true", help="use a private cluster instead")
    p.add_argument("--jobs", type=int, default=5_000)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--fraction", type=float, default=0.5)
    p.add_argument("--baseline", type=Path, default=BASELINE)
    p.add_argument("--record", action="store_true", help="store the measured ratio")
    args = p.parse_args(argv)

    started = time.monotonic()
    try:
        if args.private:
            from benchmarks.private_pg import private_cluster

            with private_cluster() as dsn:
                measured = asyncio.run(measure(dsn, args.jobs, args.batch, args.repeats))
        else:
            measured = asyncio.run(measure(args.dsn, args.jobs, args.batch, args.repeats))
    except Exception as exc:  # any failure to measure is reported as such, not as a pass
        print(f"guard: could not measure: {type(exc).__name__}: {exc}", file=sys.stderr)
        return NOT_MEASURED
    ratio = measured["ratio"]
    print(
        f"guard: drain batch {args.batch}, {args.jobs} jobs, {args.repeats} repeats: "
        f"ours {statistics.median(measured['ours_jobs_per_s']):.0f} jobs/s, "
        f"anchor {statistics.median(measured['anchor_jobs_per_s']):.0f} jobs/s, "
        f"ratio {ratio:.2f} (load {measured['load']}, {time.monotonic() - started:.0f} s)"
    )
    if args.record:
        args.baseline.write_text(
            json.dumps(
                {
                    "ratio": round(ratio, 3),
                    "batch": args.batch,
                    "jobs": args.jobs,
                    "recorded": time.strftime("%Y-%m-%d"),
                    "measured": measured,
                },
                indent=1,
            )
            + "\n"
        )
        print(f"guard: recorded ratio {ratio:.2f} in {args.baseline}")
        return PASS
    try:
        recorded = float(json.loads(args.baseline.read_text())["ratio"])
    except (OSError, ValueError, KeyError) as exc:
        print(f"guard: no usable baseline in {args.baseline}: {exc}", file=sys.stderr)
        return NOT_MEASURED
    threshold = args.fraction * recorded
    if ratio < threshold:
        print(
            f"guard: REGRESSION: ratio {ratio:.2f} is below {args.fraction:g} x recorded "
            f"{recorded:.2f} = {threshold:.2f}"
        )
        return REGRESSION
    print(f"guard: ok: ratio {ratio:.2f} >= {threshold:.2f} ({args.fraction:g} x {recorded:.2f})")
    return PASS


if __name__ == "__main__":
    sys.exit(main())
