"""pgq backlog, queue-size, dashboard and listen against a real database."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any

Pgq = Callable[..., Any]


def fill(db: Pgq) -> None:
    for args in (["a"], ["a", "--priority", "2"], ["a", "--priority", "2"], ["b"]):
        assert db("queue", *args).code == 0
    assert db("queue", "c", "--delay", "600").code == 0


def test_backlog(db: Pgq) -> None:
    assert db("backlog").out == "no queued jobs\n"
    fill(db)
    table = db("backlog")
    assert table.code == 0
    lines = table.out.splitlines()
    assert lines[0].split() == ["ENTRYPOINT", "QUEUED", "RUNNABLE", "OLDEST", "RUNNABLE"]
    assert [line.split()[:3] for line in lines[2:]] == [
        ["a", "3", "3"],
        ["b", "1", "1"],
        ["c", "1", "0"],
    ]
    assert lines[4].split()[3] == "-"  # nothing runnable, so no age
    entries = json.loads(db("backlog", "--json").out)
    assert [(e["entrypoint"], e["queued"], e["runnable"]) for e in entries] == [
        ("a", 3, 3),
        ("b", 1, 1),
        ("c", 1, 0),
    ]
    assert entries[0]["oldest_age_seconds"] >= 0


def test_queue_size_and_alias(db: Pgq) -> None:
    assert db("queue-size").out == "no queued or running jobs\n"
    fill(db)
    result = db("queue-size")
    assert result.code == 0
    rows = [line.split() for line in result.out.splitlines()[2:]]
    assert rows == [
        ["a", "2", "queued", "2"],
        ["a", "0", "queued", "1"],
        ["b", "0", "queued", "1"],
        ["c", "0", "queued", "1"],
    ]
    assert db("size").out == result.out
    stats = json.loads(db("size", "--json").out)
    assert {"count": 2, "entrypoint": "a", "priority": 2, "status": "queued"} in stats


def test_dashboard_once(db: Pgq) -> None:
    fill(db)
    first = int(db("queue", "d").out)
    assert db("cancel", str(first)).code == 0  # a finished job for the statistics
    result = db("dashboard", "-n", "5")
    assert result.code == 0, result.err
    out = result.out
    assert out.startswith("pgqueuer dashboard: postgresql://")
    assert "(refresh once)" in out
    assert "Jobs in the queue" in out
    assert "Finished jobs per second (latest 5 rows)" in out
    statistics = out.split("Finished jobs per second")[1].splitlines()
    assert statistics[1].split() == ["SECOND", "ENTRYPOINT", "PRIORITY", "STATUS", "COUNT"]
    assert statistics[3].split()[1:] == ["d", "0", "canceled", "1"]


def test_horizon(db: Pgq, database_url: str) -> None:
    none = "oldest snapshot: none held (vacuum can remove every dead row)\n"
    assert db("horizon").out == none
    assert json.loads(db("horizon", "--json").out) is None
    import psycopg

    with psycopg.connect(database_url, application_name="report") as holder:
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM pgqueuer")
        text = db("horizon").out
        assert text.startswith(f"oldest snapshot: session pid {holder.info.backend_pid} ")
        assert "('report'), idle in transaction (open " in text
        found = json.loads(db("horizon", "--json").out)
        assert (found["holder"], found["pid"]) == ("session", holder.info.backend_pid)
        assert "oldest snapshot: session pid" in db("dashboard").out
        holder.rollback()
    assert db("horizon").out == none


def test_dashboard_refreshes_until_interrupted(
    database_url: str, spawn: Callable[..., Any], wait_until: Callable[..., None]
) -> None:
    child = spawn(["--pg-dsn", database_url, "dashboard", "-i", "0.2"])
    wait_until(
        lambda: sum("Jobs in the queue" in line for line in child.out) >= 2, "two dashboard frames"
    )
    child.process.send_signal(signal.SIGINT)
    assert child.wait() == 0
    assert not any("Traceback" in line for line in child.err)


def test_listen_prints_notifications(
    db: Pgq, database_url: str, spawn: Callable[..., Any], wait_until: Callable[..., None]
) -> None:
    child = spawn(["--pg-dsn", database_url, "listen"])
    wait_until(lambda: child.saw("listening on channel ch_pgqueuer"), "the listener")
    assert db("queue", "hello").code == 0
    wait_until(lambda: child.saw("w:hello", "out"), "the notification")
    child.process.send_signal(signal.SIGINT)
    assert child.wait() == 0
    line = next(line for line in child.out if "w:hello" in line)
    stamp, payload, *meaning = line.split()
    assert stamp[:2] == "20" and "T" in stamp  # ISO 8601
    assert payload == "w:hello"
    assert " ".join(meaning) == "(work available for 'hello')"


def test_listen_count_and_channel(
    database_url: str,
    spawn: Callable[..., Any],
    wait_until: Callable[..., None],
    sql: Callable[..., Any],
) -> None:
    child = spawn(["--pg-dsn", database_url, "listen", "--channel", "my_channel", "-c", "2"])
    wait_until(lambda: child.saw("listening on channel my_channel"), "the listener")
    sql("SELECT pg_notify('my_channel', 'first')")
    sql("SELECT pg_notify('my_channel', 'second')")
    assert child.wait() == 0  # exits by itself after two notifications
    assert [line.split()[1] for line in child.out] == ["first", "second"]


def test_listen_prefix_channel(
    pgq: Pgq,
    empty_database_url: str,
    spawn: Callable[..., Any],
    wait_until: Callable[..., None],
) -> None:
    assert pgq("--pg-dsn", empty_database_url, "--prefix", "app_", "install").code == 0
    child = spawn(["--pg-dsn", empty_database_url, "--prefix", "app_", "listen", "-c", "1"])
    wait_until(lambda: child.saw("listening on channel app_ch_pgqueuer"), "the listener")
    assert pgq("--pg-dsn", empty_database_url, "--prefix", "app_", "queue", "x").code == 0
    assert child.wait() == 0
    assert "w:x" in child.out[0]


def test_bad_channel_name(db: Pgq) -> None:
    result = db("listen", "--channel", "Not-Valid")
    assert result.code == 1
    assert result.err_lines[0].startswith("pgq: error: channel name")


def crashed_worker(db: Pgq, sql: Callable[..., Any], silent_for: str) -> tuple[int, str]:
    """A job left picked by a worker that stopped heartbeating ``silent_for`` ago."""
    job_id = int(db("queue", "report").out)
    worker = "8a3c1f0e-0000-4000-8000-000000000001"
    sql(
        "UPDATE pgqueuer SET status = 'picked', queue_manager_id = $1::uuid, attempts = 1, "
        "heartbeat = now() - $2::text::interval WHERE id = $3",
        worker,
        silent_for,
        job_id,
    )
    return job_id, worker


def test_stale(db: Pgq, sql: Callable[..., Any]) -> None:
    assert db("stale").out == "no running job has gone 300s without a heartbeat\n"
    job_id, worker = crashed_worker(db, sql, "10 minutes")
    result = db("stale")
    assert result.code == 0
    header, _, row = result.out.splitlines()
    assert header.split() == ["ID", "ENTRYPOINT", "WORKER", "LAST", "HEARTBEAT", "SILENT", "FOR"]
    assert row.split()[:3] == [str(job_id), "report", worker]
    assert row.split()[-1].startswith("10m")
    assert db("stale", "-t", "3600").out.startswith("no running job has gone 3600s")
    (entry,) = json.loads(db("stale", "--json").out)
    assert entry["id"] == job_id and entry["queue_manager_id"] == worker
    assert 590 < entry["seconds_since_heartbeat"] < 3600


def test_workers(db: Pgq, sql: Callable[..., Any]) -> None:
    assert db("workers").out == "no worker is running a job\n"
    _, worker = crashed_worker(db, sql, "1 second")
    crashed_worker(db, sql, "2 seconds")
    result = db("workers")
    assert result.code == 0
    header, _, row = result.out.splitlines()
    assert header.split()[:2] == ["WORKER", "RUNNING"]
    assert row.split()[:2] == [worker, "2"] and row.split()[-1] == "report"
    (entry,) = json.loads(db("workers", "--json").out)
    assert entry["queue_manager_id"] == worker and entry["active_jobs"] == 2
    assert entry["entrypoints"] == ["report"]
    assert entry["oldest_heartbeat"] < entry["newest_heartbeat"]
