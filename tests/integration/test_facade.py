"""The seed API end to end, on the in-memory backend and on PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pgqueuer import ConfigurationError, PgQueuer, UnknownTaskError
from pgqueuer.models import Job


async def test_result_is_stored_and_readable(pg: PgQueuer) -> None:
    async def add(job_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {"sum": payload["a"] + payload["b"], "job": job_id}

    pg.worker.register_task(add)
    job_id = await pg.enqueue("add", {"a": 2, "b": 3})
    await pg.run(once=True, timeout=10)
    result = await pg.fetch_job_result(job_id)
    assert result is not None
    assert result.status == "completed"
    assert result.result == {"sum": 5, "job": str(job_id)}
    assert result.attempts == 1
    assert result.error_message is None
    assert result.started_at is not None and result.finished_at is not None
    assert result.started_at <= result.finished_at
    # The string form of the id is accepted too.
    again = await pg.fetch_job_result(str(job_id))
    assert again is not None and again.id == job_id


async def test_job_id_follows_the_handler_annotation(pg: PgQueuer) -> None:
    seen: list[object] = []

    async def as_int(job_id: int, payload: dict[str, Any]) -> None:
        seen.append(job_id)

    pg.worker.register_task(as_int)
    job_id = await pg.enqueue("as_int", {})
    await pg.run(once=True, timeout=10)
    assert seen == [job_id]
    assert isinstance(seen[0], int)


async def test_failure_records_error_and_traceback(pg: PgQueuer) -> None:
    async def explode(job_id: str, payload: dict[str, Any]) -> None:
        raise ValueError(f"bad input {payload['x']}")

    pg.worker.register_task(explode)
    job_id = await pg.enqueue("explode", {"x": 7})
    await pg.run(once=True, timeout=10)
    result = await pg.fetch_job_result(job_id)
    assert result is not None
    assert result.status == "failed"
    assert result.error_message == "bad input 7"
    assert result.error_type == "ValueError"
    assert result.traceback is not None and "raise ValueError" in result.traceback
    assert result.result is None


async def test_sync_handler_runs_in_a_thread(pg: PgQueuer) -> None:
    threads: list[str] = []

    def blocking(job_id: str, payload: dict[str, Any]) -> str:
        threads.append(threading.current_thread().name)
        return str(payload["word"]).upper()

    pg.worker.register_task(blocking)
    job_id = await pg.enqueue("blocking", {"word": "sync"})
    await pg.run(once=True, timeout=10)
    result = await pg.fetch_job_result(job_id)
    assert result is not None and result.status == "completed" and result.result == "SYNC"
    assert threads and threads[0] != threading.main_thread().name


async def test_explicit_name_and_decorator_forms(pg: PgQueuer) -> None:
    @pg.worker.register_task(name="renamed")
    async def original(job_id: str, payload: dict[str, Any]) -> int:
        return 1

    @pg.entrypoint("legacy")
    async def legacy(job: Job) -> int:
        return len(job.payload or b"")

    first = await pg.enqueue("renamed", {})
    second = await pg.enqueue("legacy", b"four")
    await pg.run(once=True, timeout=10)
    r1, r2 = await pg.fetch_job_result(first), await pg.fetch_job_result(second)
    assert r1 is not None and r1.result == 1
    assert r2 is not None and r2.result == 4
    with pytest.raises(RuntimeError, match="already registered"):
        pg.worker.register_task(original, name="renamed")


async def test_unknown_task_is_a_key_error_and_writes_nothing(pg: PgQueuer) -> None:
    async def known(job_id: str, payload: dict[str, Any]) -> None:
        return None

    pg.worker.register_task(known)
    with pytest.raises(KeyError) as caught:
        await pg.enqueue("my_unknown_task", {"a": 1})
    assert isinstance(caught.value, UnknownTaskError)
    assert "my_unknown_task" in str(caught.value)
    assert await pg.backend.queue_size() == []
    # Explicit opt-out: enqueue for a worker that lives elsewhere.
    job_id = await pg.enqueue("my_unknown_task", {"a": 1}, validate_task=False)
    assert (await pg.backend.job_statuses([job_id])) == [(job_id, "queued")]


async def test_pure_producer_may_enqueue_any_name(pg: PgQueuer) -> None:
    job_id = await pg.enqueue("handled_elsewhere", {"n": 1})
    result = await pg.fetch_job_result(job_id)
    assert result is not None and result.status == "queued"
    with pytest.raises(UnknownTaskError):
        await pg.enqueue("handled_elsewhere", {"n": 1}, validate_task=True)


class NotJson:
    pass


@pytest.mark.parametrize(
    ("payload", "type_name"),
    [({"obj": NotJson()}, "NotJson"), ({"tags": {1, 2}}, "set"), ({"x": float("nan")}, "float")],
)
async def test_non_json_payload_is_a_type_error_naming_the_type(
    pg: PgQueuer, payload: dict[str, Any], type_name: str
) -> None:
    with pytest.raises(TypeError, match=f"Object of type {type_name} is not JSON serializable"):
        await pg.enqueue("anything", payload)
    assert await pg.backend.queue_size() == []


async def test_priority_and_fifo_order(pg: PgQueuer) -> None:
    order: list[str] = []

    async def record(job_id: str, payload: dict[str, Any]) -> None:
        order.append(payload["name"])

    pg.worker.register_task(record)
    for name, priority in [("low1", 0), ("high", 5), ("low2", 0), ("mid", 2)]:
        await pg.enqueue("record", {"name": name}, priority=priority)
    await pg.run(once=True, timeout=10, batch_size=1, max_concurrent_tasks=1)
    assert order == ["high", "mid", "low1", "low2"]


async def test_deferred_jobs_wait_and_once_returns(pg: PgQueuer) -> None:
    ran: list[str] = []

    async def later(job_id: str, payload: dict[str, Any]) -> None:
        ran.append(payload["when"])

    pg.worker.register_task(later)
    future = await pg.enqueue("later", {"when": "delay"}, delay=timedelta(hours=1))
    at = await pg.enqueue(
        "later", {"when": "run_at"}, run_at=datetime.now(UTC) + timedelta(hours=1)
    )
    past = await pg.enqueue(
        "later", {"when": "past"}, run_at=datetime.now(UTC) - timedelta(seconds=5)
    )
    await pg.run(once=True, timeout=10)
    assert ran == ["past"]
    statuses = dict(await pg.backend.job_statuses([future, at, past]))
    assert statuses == {future: "queued", at: "queued", past: "successful"}


async def test_short_delay_runs_when_due(pg: PgQueuer) -> None:
    async def soon(job_id: str, payload: dict[str, Any]) -> str:
        return "done"

    pg.worker.register_task(soon)
    job_id = await pg.enqueue("soon", {}, delay=0.3)
    await pg.run(once=True, timeout=5)
    first = await pg.fetch_job_result(job_id)
    assert first is not None and first.status == "queued"
    runner = asyncio.create_task(pg.run(timeout=20, poll_interval=0.05))
    final = await pg.wait_for_job(job_id, timeout=10)
    pg.shutdown.set()
    await runner
    assert final.status == "completed"
    assert final.started_at is not None and final.started_at >= final.execute_after


async def test_timeout_bounds_a_continuous_run_and_releases_jobs(pg: PgQueuer) -> None:
    started = asyncio.Event()

    async def slow(job_id: str, payload: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(60)

    pg.worker.register_task(slow)
    job_id = await pg.enqueue("slow", {})
    loop = asyncio.get_running_loop()
    begin = loop.time()
    await pg.run(timeout=1.0)
    assert loop.time() - begin < 10
    assert started.is_set()
    result = await pg.fetch_job_result(job_id)
    assert result is not None and result.status == "queued"  # released, not lost


async def test_bad_inputs_raise_before_writing(pg: PgQueuer) -> None:
    with pytest.raises(ConfigurationError):
        await pg.enqueue("t", {}, delay=-1)
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        await pg.enqueue("t", {}, run_at=datetime(2030, 1, 1))
    with pytest.raises(ConfigurationError):
        await pg.enqueue("t", {}, priority=2**40)
    with pytest.raises(ConfigurationError):
        await pg.enqueue("", {})
    assert await pg.backend.queue_size() == []


async def test_returned_value_that_is_not_json_fails_the_job(pg: PgQueuer) -> None:
    async def odd(job_id: str, payload: dict[str, Any]) -> object:
        return NotJson()

    pg.worker.register_task(odd)
    job_id = await pg.enqueue("odd", {})
    await pg.run(once=True, timeout=10)
    result = await pg.fetch_job_result(job_id)
    assert result is not None and result.status == "failed"
    assert result.error_type == "PayloadError"
    assert "NotJson" in (result.error_message or "")


async def test_wait_for_job(pg: PgQueuer) -> None:
    async def quick(job_id: str, payload: dict[str, Any]) -> int:
        return 42

    pg.worker.register_task(quick)
    job_id = await pg.enqueue("quick", {})
    with pytest.raises(TimeoutError, match="still queued"):
        await pg.wait_for_job(job_id, timeout=0.1)
    runner = asyncio.create_task(pg.run(timeout=10))
    result = await pg.wait_for_job(job_id, timeout=10)
    pg.shutdown.set()
    await runner
    assert result.result == 42


async def test_fetch_unknown_job_returns_none(pg: PgQueuer) -> None:
    assert await pg.fetch_job_result(987654321) is None
    with pytest.raises(ConfigurationError):
        await pg.fetch_job_result("not-a-number")


def _until_cancelled() -> tuple[
    Callable[[str, dict[str, Any]], Awaitable[None]], asyncio.Event, asyncio.Event
]:
    """A task named "slow" that runs until it is cancelled, and events set when it started
    and when it was stopped."""
    started, stopped = asyncio.Event(), asyncio.Event()

    async def slow(job_id: str, payload: dict[str, Any]) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopped.set()
            raise

    return slow, started, stopped


async def test_cancelling_run_stops_its_handlers_and_records_what_finished(pg: PgQueuer) -> None:
    """``run()`` cancelled from outside (``task.cancel()``, a timeout around it) ends without
    leaving work behind: a handler still running is stopped before ``run()`` returns and its
    job goes back to the queue, and the jobs that finished stay finished."""
    quick_done = 0
    slow, slow_started, slow_stopped = _until_cancelled()

    async def quick(job_id: str, payload: dict[str, Any]) -> None:
        nonlocal quick_done
        quick_done += 1

    pg.worker.register_task(quick)
    pg.worker.register_task(slow)
    quick_ids = [await pg.enqueue("quick", {}) for _ in range(5)]
    slow_id = await pg.enqueue("slow", {})
    runner = asyncio.create_task(pg.run())
    async with asyncio.timeout(10):
        await slow_started.wait()
        while quick_done < 5:
            await asyncio.sleep(0.01)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert slow_stopped.is_set()  # not left running unsupervised
    slow_result = await pg.fetch_job_result(slow_id)
    assert slow_result is not None and slow_result.status == "queued"  # released
    for job_id in quick_ids:
        result = await pg.fetch_job_result(job_id)
        assert result is not None and result.status == "completed"


async def test_a_second_cancel_still_stops_the_handlers(pg: PgQueuer) -> None:
    """A cancellation that cuts the stop short (an enclosing timeout or task group cancels
    again) still stops the running handler before ``run()`` ends."""
    slow, started, stopped = _until_cancelled()
    pg.worker.register_task(slow)
    await pg.enqueue("slow", {})
    runner = asyncio.create_task(pg.run())
    async with asyncio.timeout(10):
        await started.wait()
    runner.cancel()
    await asyncio.sleep(0)  # run() is stopping now
    runner.cancel()  # and is cancelled again
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert stopped.is_set()
