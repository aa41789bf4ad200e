"""The claimed job is built without Job.__init__ (see backends/sql.py): it must come out
exactly as Job(...) would, with every field set."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from uuid import uuid4

from pgqueuer.backends.sql import claimed_job_from_row
from pgqueuer.models import Job
from pgqueuer.types import JobId


def test_claimed_job_sets_every_field() -> None:
    moment = datetime(2026, 12, 2, 4, 5, 6, tzinfo=UTC)
    worker = uuid4()
    row = {
        "id": 7,
        "priority": 3,
        "created": moment,
        "updated": moment.replace(second=9),
        "execute_after": moment.replace(second=1),
        "entrypoint": "mail",
        "payload": memoryview(b"abc"),
        "attempts": 2,
        "headers": '{"trace": {"id": 1}}',
        "lease": 5,
        "timeout_seconds": 1.5,
    }
    job = claimed_job_from_row(row, worker)
    expected = Job(
        id=JobId(7),
        priority=3,
        created=moment,
        updated=moment.replace(second=9),
        heartbeat=moment.replace(second=9),
        execute_after=moment.replace(second=1),
        status="picked",
        entrypoint="mail",
        payload=b"abc",
        attempts=2,
        queue_manager_id=worker,
        headers={"trace": {"id": 1}},
        lease=5,
        slot=None,
        timeout=1.5,
    )
    # Every slot was written (reading an unset slot raises AttributeError) and equals Job's.
    assert {f.name: getattr(job, f.name) for f in dataclasses.fields(Job)} == dataclasses.asdict(
        expected
    )
    assert job == expected
    assert type(job.payload) is bytes
    row.update(payload=None, headers=None, timeout_seconds=None)
    bare = claimed_job_from_row(row, worker)
    assert (bare.payload, bare.headers, bare.timeout) == (None, None, None)
