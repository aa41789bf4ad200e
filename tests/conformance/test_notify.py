"""listen/notify: wake-ups after enqueue, cancel notices, and closing a subscription."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pgqueuer.backends.protocol import CANCEL_NOTICE, WAKE_PREFIX, QueueBackend, parse_due
from pgqueuer.models import NewJob

WaitUntil = Callable[..., Awaitable[None]]


async def received(
    wait_until: WaitUntil, inbox: list[str], payload: str, timeout: float = 5.0
) -> None:
    async def arrived() -> bool:
        return payload in inbox

    await wait_until(arrived, timeout, what=f"{payload!r} received")


async def test_notify_round_trip(backend: QueueBackend, wait_until: WaitUntil) -> None:
    inbox: list[str] = []
    subscription = await backend.listen(inbox.append)
    try:
        await backend.notify("hello")
        await received(wait_until, inbox, "hello")
    finally:
        await subscription.close()


async def test_enqueue_wakes_each_entrypoint_once(
    backend: QueueBackend, wait_until: WaitUntil
) -> None:
    inbox: list[str] = []
    subscription = await backend.listen(inbox.append)
    try:
        await backend.enqueue([NewJob("a", None), NewJob("b", None), NewJob("a", None)], "raise")
        await received(wait_until, inbox, WAKE_PREFIX + "a")
        await received(wait_until, inbox, WAKE_PREFIX + "b")
        # A marker sent afterwards arrives after anything the enqueue sent.
        await backend.notify("marker")
        await received(wait_until, inbox, "marker")
        assert inbox.count(WAKE_PREFIX + "a") == 1
        assert inbox.count(WAKE_PREFIX + "b") == 1
    finally:
        await subscription.close()


async def test_one_job_wakes_its_entrypoint(backend: QueueBackend, wait_until: WaitUntil) -> None:
    inbox: list[str] = []
    subscription = await backend.listen(inbox.append)
    try:
        await backend.enqueue([NewJob("solo", b"x")], "raise")
        await received(wait_until, inbox, WAKE_PREFIX + "solo")
    finally:
        await subscription.close()


async def test_deferred_jobs_send_no_wake_up(backend: QueueBackend, wait_until: WaitUntil) -> None:
    inbox: list[str] = []
    subscription = await backend.listen(inbox.append)
    try:
        await backend.enqueue([NewJob("later", None, delay=3600)], "raise")
        await backend.enqueue([NewJob("now", None)], "raise")
        await received(wait_until, inbox, WAKE_PREFIX + "now")
        assert WAKE_PREFIX + "later" not in inbox
    finally:
        await subscription.close()


async def test_deferred_jobs_send_when_they_are_due(
    backend: QueueBackend, wait_until: WaitUntil
) -> None:
    inbox: list[str] = []
    subscription = await backend.listen(inbox.append)
    try:
        await backend.enqueue(
            [
                NewJob("later", None, delay=60),
                NewJob("later", None, delay=30),
                NewJob("other", None, delay=90),
                NewJob("now", None),
            ],
            "raise",
        )
        await backend.notify("marker")
        await received(wait_until, inbox, "marker")
        due = sorted(d for payload in inbox if (d := parse_due(payload)) is not None)
        # One per entrypoint with deferred jobs, naming its earliest; none for "now".
        assert [name for name, _ in due] == ["later", "other"]
        assert 29 < due[0][1] <= 30 and 89 < due[1][1] <= 90
        assert WAKE_PREFIX + "now" in inbox
    finally:
        await subscription.close()


async def test_cancel_sends_the_cancel_notice(backend: QueueBackend, wait_until: WaitUntil) -> None:
    (job_id,) = await backend.enqueue([NewJob("a", None)], "raise")
    assert job_id is not None
    inbox: list[str] = []
    subscription = await backend.listen(inbox.append)
    try:
        await backend.cancel([job_id])
        await received(wait_until, inbox, CANCEL_NOTICE)
    finally:
        await subscription.close()


async def test_closed_subscription_stops_receiving(
    backend: QueueBackend, wait_until: WaitUntil
) -> None:
    closed_inbox: list[str] = []
    open_inbox: list[str] = []
    closed = await backend.listen(closed_inbox.append)
    still_open = await backend.listen(open_inbox.append)
    try:
        await backend.notify("before")
        await received(wait_until, closed_inbox, "before")
        await received(wait_until, open_inbox, "before")
        await closed.close()
        await backend.notify("after")
        await received(wait_until, open_inbox, "after")
        # Both inboxes saw the same order; the open one has "after", the closed one never will.
        await backend.notify("marker")
        await received(wait_until, open_inbox, "marker")
        assert closed_inbox == ["before"]
    finally:
        await still_open.close()
