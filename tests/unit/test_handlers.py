from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from pgqueuer.core.handlers import HandlerCall, Shape, detect_shape, is_async_callable
from pgqueuer.errors import ConfigurationError, PayloadError
from pgqueuer.models import CancellationScope, Context, Job
from pgqueuer.types import JobId

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def make_job(payload: bytes | None = b'{"k": 1}') -> Job:
    return Job(
        id=JobId(7),
        priority=0,
        created=NOW,
        updated=NOW,
        heartbeat=NOW,
        execute_after=NOW,
        status="picked",
        entrypoint="t",
        payload=payload,
    )


async def seed(job_id: str, payload: dict[str, Any]) -> None: ...
async def legacy(job: Job) -> None: ...
async def legacy_ctx(job: Job, context: Context) -> None: ...
async def untyped(job, ctx): ...  # type: ignore[no-untyped-def]
async def nothing() -> None: ...
def sync_seed(job_id: str, payload: dict[str, Any]) -> None: ...


@pytest.mark.parametrize(
    ("func", "shape"),
    [
        (seed, Shape.ID_PAYLOAD),
        (legacy, Shape.JOB),
        (legacy_ctx, Shape.JOB_CONTEXT),
        (untyped, Shape.JOB_CONTEXT),
        (nothing, Shape.NO_ARGS),
        (sync_seed, Shape.ID_PAYLOAD),
    ],
)
def test_shape_is_read_from_the_signature(func: Any, shape: Shape) -> None:
    assert detect_shape(func) is shape


def test_accepts_context_overrides_and_is_checked() -> None:
    assert detect_shape(seed, accepts_context=True) is Shape.JOB_CONTEXT
    with pytest.raises(ConfigurationError, match="accepts_context"):
        detect_shape(legacy, accepts_context=True)


def test_async_detection() -> None:
    assert is_async_callable(seed)
    assert not is_async_callable(sync_seed)


async def test_seed_handler_gets_id_as_str_and_decoded_payload() -> None:
    seen: list[Any] = []

    async def handler(job_id: str, payload: dict[str, Any]) -> None:
        seen.extend([job_id, payload])

    await HandlerCall(handler)(make_job(), Context(CancellationScope()))
    assert seen == ["7", {"k": 1}]


async def test_seed_handler_rejects_non_json_payload_clearly() -> None:
    with pytest.raises(PayloadError, match="not JSON"):
        await HandlerCall(seed)(make_job(b"\xff\xfe"), Context(CancellationScope()))


async def test_cancellation_scope_absorbs_its_own_cancel() -> None:
    scope = CancellationScope()
    reached_end = False

    async def body() -> str:
        nonlocal reached_end
        with scope:
            scope.cancel()
            await asyncio.sleep(10)
        reached_end = True
        return "after scope"

    assert await asyncio.wait_for(body(), 5) == "after scope"
    assert reached_end and scope.cancel_called
