"""enqueue: ids, payloads, headers, ordering, deferral and dedupe keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest

from pgqueuer.backends.protocol import QueueBackend
from pgqueuer.errors import DuplicateJobError
from pgqueuer.models import EntrypointLimit, Job, NewJob, Outcome
from pgqueuer.types import JobId

WaitUntil = Callable[..., Awaitable[None]]


def new(entrypoint: str = "a", payload: bytes | None = b"{}", **options: Any) -> NewJob:
    return NewJob(entrypoint, payload, **options)


async def claim(backend: QueueBackend, *entrypoints: str, batch: int = 100) -> list[Job]:
    limits = [EntrypointLimit(name) for name in entrypoints or ("a",)]
    return list(await backend.claim(limits, batch, uuid4(), 30.0))


async def total_jobs(backend: QueueBackend) -> int:
    return sum(row.count for row in await backend.queue_size())


async def test_ids_come_back_in_input_order(backend: QueueBackend) -> None:
    ids = await backend.enqueue([new(payload=str(i).encode()) for i in range(5)], "raise")
    assert len(ids) == 5
    assert all(job_id is not None for job_id in ids)
    assert ids == sorted(ids, key=lambda i: i or 0)
    assert len(set(ids)) == 5
    for i, job_id in enumerate(ids):
        assert job_id is not None
        job = await backend.fetch_job(job_id)
        assert job is not None
        assert job.payload == str(i).encode()
        assert job.status == "queued"
        assert (job.attempts, job.lease) == (0, 0)


async def test_empty_batch_returns_nothing(backend: QueueBackend) -> None:
    assert await backend.enqueue([], "raise") == []
    assert await total_jobs(backend) == 0


async def test_payload_bytes_round_trip(backend: QueueBackend) -> None:
    payloads: list[bytes | None] = [b"", b"\x00\xff\x10binary", None, b'{"k": [1, 2]}']
    ids = await backend.enqueue([new(payload=p) for p in payloads], "raise")
    for job_id, payload in zip(ids, payloads, strict=True):
        assert job_id is not None
        job = await backend.fetch_job(job_id)
        assert job is not None and job.payload == payload
    claimed = {job.id: job.payload for job in await claim(backend)}
    assert claimed == dict(zip(ids, payloads, strict=True))


async def test_headers_and_timeout_round_trip(backend: QueueBackend) -> None:
    headers = {"trace": {"id": "abc", "sampled": True}, "n": 1, "tags": ["x", "y"]}
    with_headers, without = await backend.enqueue(
        [new(headers=headers, timeout=2.5), new()], "raise"
    )
    jobs = {job.id: job for job in await claim(backend)}
    assert with_headers is not None and without is not None
    assert jobs[with_headers].headers == headers
    assert jobs[with_headers].timeout == 2.5
    assert jobs[without].headers is None
    assert jobs[without].timeout is None
    assert jobs[with_headers].slot is None


async def test_priority_descending_then_fifo(backend: QueueBackend) -> None:
    priorities = [0, 5, 0, 5, 1, -3, 1]
    ids = await backend.enqueue([new(priority=p) for p in priorities], "raise")
    expected = [i for _, i in sorted(zip(priorities, ids, strict=True), key=lambda t: -t[0])]
    one_by_one = []
    for _ in priorities:
        (job,) = await claim(backend, batch=1)
        one_by_one.append(job.id)
    assert one_by_one == expected


async def test_batch_claim_is_ordered_too(backend: QueueBackend) -> None:
    ids = await backend.enqueue([new(priority=p) for p in (1, 3, 2, 3)], "raise")
    claimed = [job.id for job in await claim(backend)]
    assert claimed == [ids[1], ids[3], ids[2], ids[0]]


async def test_delay_defers_the_job(backend: QueueBackend) -> None:
    (later,) = await backend.enqueue([new(delay=3600)], "raise")
    assert later is not None
    assert await claim(backend) == []
    assert not await backend.has_runnable(["a"])
    job = await backend.fetch_job(later)
    assert job is not None and job.status == "queued"
    assert job.execute_after > await backend.now() + timedelta(seconds=3500)


async def test_run_at_wins_over_delay(backend: QueueBackend) -> None:
    now = await backend.now()
    past, future = await backend.enqueue(
        [
            new(run_at=now - timedelta(seconds=5), delay=3600),
            new(run_at=now + timedelta(hours=1)),
        ],
        "raise",
    )
    assert await backend.has_runnable(["a"])
    assert [job.id for job in await claim(backend)] == [past]
    assert future is not None
    job = await backend.fetch_job(future)
    assert job is not None and job.status == "queued"


async def test_short_delay_becomes_runnable(backend: QueueBackend, wait_until: WaitUntil) -> None:
    (job_id,) = await backend.enqueue([new(delay=0.2)], "raise")
    got: list[JobId] = []

    async def claimed() -> bool:
        got.extend(job.id for job in await claim(backend))
        return bool(got)

    await wait_until(claimed)
    assert got == [job_id]


async def test_has_runnable_looks_at_named_entrypoints(backend: QueueBackend) -> None:
    assert not await backend.has_runnable(["a"])
    await backend.enqueue([new("a")], "raise")
    assert await backend.has_runnable(["a", "b"])
    assert not await backend.has_runnable(["b"])
    assert not await backend.has_runnable([])


async def test_dedupe_raise_names_the_keys_and_inserts_nothing(backend: QueueBackend) -> None:
    (held,) = await backend.enqueue([new(dedupe_key="k")], "raise")
    with pytest.raises(DuplicateJobError) as info:
        await backend.enqueue([new(dedupe_key="x"), new(), new(dedupe_key="k")], "raise")
    assert info.value.dedupe_key == ["k"]
    assert await total_jobs(backend) == 1
    # "x" was not inserted, so its key is still free.
    assert (await backend.enqueue([new(dedupe_key="x")], "raise"))[0] not in (None, held)


async def test_dedupe_raise_within_one_batch(backend: QueueBackend) -> None:
    with pytest.raises(DuplicateJobError) as info:
        await backend.enqueue([new(dedupe_key="k"), new(dedupe_key="k")], "raise")
    assert info.value.dedupe_key == ["k"]
    assert await total_jobs(backend) == 0


async def test_dedupe_skip(backend: QueueBackend) -> None:
    (held,) = await backend.enqueue([new(dedupe_key="k")], "raise")
    ids = await backend.enqueue(
        [new(dedupe_key="k"), new(), new(dedupe_key="m"), new(dedupe_key="m")], "skip"
    )
    assert ids[0] is None
    assert ids[1] is not None and ids[2] is not None
    assert ids[3] is None  # the first occurrence in the batch won
    assert held not in ids
    assert await total_jobs(backend) == 3


async def test_dedupe_update_priority(backend: QueueBackend) -> None:
    (held,) = await backend.enqueue([new(dedupe_key="k", priority=1)], "raise")
    assert held is not None
    assert await backend.enqueue([new(dedupe_key="k", priority=5)], "update_priority") == [held]
    job = await backend.fetch_job(held)
    assert job is not None and job.priority == 5
    # Never lowered: the priority becomes max(old, new).
    assert await backend.enqueue([new(dedupe_key="k", priority=0)], "update_priority") == [held]
    job = await backend.fetch_job(held)
    assert job is not None and job.priority == 5
    assert await total_jobs(backend) == 1


async def test_dedupe_update_priority_within_one_batch(backend: QueueBackend) -> None:
    ids = await backend.enqueue(
        [new(dedupe_key="n", priority=1), new(), new(dedupe_key="n", priority=9)],
        "update_priority",
    )
    assert ids[0] is not None and ids[0] == ids[2]
    assert ids[1] is not None and ids[1] != ids[0]
    job = await backend.fetch_job(ids[0])
    assert job is not None and job.priority == 9
    assert await total_jobs(backend) == 2


async def test_update_priority_reorders_the_queue(backend: QueueBackend) -> None:
    low, high = await backend.enqueue([new(dedupe_key="k"), new(priority=3)], "raise")
    await backend.enqueue([new(dedupe_key="k", priority=7)], "update_priority")
    assert [job.id for job in await claim(backend)] == [low, high]


async def test_dedupe_key_held_while_picked_and_free_once_finished(
    backend: QueueBackend,
) -> None:
    (first,) = await backend.enqueue([new(dedupe_key="k")], "raise")
    (job,) = await claim(backend)
    with pytest.raises(DuplicateJobError):
        await backend.enqueue([new(dedupe_key="k")], "raise")
    assert await backend.finish([Outcome(job.id, job.lease, "successful", "null")]) == {first}
    (second,) = await backend.enqueue([new(dedupe_key="k")], "raise")
    assert second is not None and second != first


async def test_dedupe_key_free_after_cancel(backend: QueueBackend) -> None:
    (first,) = await backend.enqueue([new(dedupe_key="k")], "raise")
    assert first is not None
    assert await backend.cancel([first]) == [first]
    (second,) = await backend.enqueue([new(dedupe_key="k")], "raise")
    assert second is not None and second != first


async def test_next_due_tells_when_queued_jobs_can_run(backend: QueueBackend) -> None:
    empty = await backend.next_due(["a"])
    assert empty.empty and not empty.runnable and empty.next_in is None
    (hour,) = await backend.enqueue([new(delay=3600)], "raise")
    (minute,) = await backend.enqueue([new(delay=60)], "raise")
    await backend.enqueue([new("b", delay=5)], "raise")  # another entrypoint's
    deferred = await backend.next_due(["a"])
    assert not deferred.runnable and not deferred.empty
    assert deferred.next_in is not None and 55 < deferred.next_in <= 60
    (now,) = await backend.enqueue([new()], "raise")
    both = await backend.next_due(["a"])
    assert both.runnable and both.next_in is not None and 55 < both.next_in <= 60
    # A claimed job is no longer queued: only the deferred ones are left.
    assert [job.id for job in await claim(backend)] == [now]
    assert not (await backend.next_due(["a"])).runnable
    # Limited to some ids: theirs only (of these entrypoints).
    assert hour is not None and minute is not None and now is not None
    mine = await backend.next_due(["a"], [hour, now])
    assert not mine.runnable and mine.next_in is not None and 3550 < mine.next_in <= 3600
    assert (await backend.next_due(["a"], [now])).empty
    assert (await backend.next_due(["a"], [])).empty
    assert (await backend.next_due(["b"], [hour])).empty
    assert (await backend.next_due([])).empty
    # Cancelled, it is not queued any more either.
    await backend.cancel([hour, minute])
    assert (await backend.next_due(["a"])).empty


async def test_next_due_sees_a_retry_put_back_with_a_delay(backend: QueueBackend) -> None:
    await backend.enqueue([new()], "raise")
    (job,) = await claim(backend)
    assert (await backend.next_due(["a"])).empty  # picked: not queued
    await backend.finish([Outcome(job.id, job.lease, "queued", retry_delay=30)])
    outlook = await backend.next_due(["a"], [job.id])
    assert not outlook.runnable and outlook.next_in is not None and 25 < outlook.next_in <= 30
