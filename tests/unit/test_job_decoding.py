"""The claimed job is built without Job.__init__ (see backends/claimed.py): it must come out
exactly as Job(...) would, with every field set."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from pgqueuer.backends.claimed import ClaimedJobs, _EpochTimes, claimed_job_from_row
from pgqueuer.backends.sql import job_from_row
from pgqueuer.models import Job, prior_runs
from pgqueuer.types import JobId


def test_claimed_job_sets_every_field() -> None:
    moment = datetime(2026, 12, 2, 4, 5, 6, tzinfo=UTC)
    worker = uuid4()
    row = {
        "id": 7,
        "priority": 3,
        "created_epoch": moment.timestamp(),
        "updated_epoch": moment.replace(second=9).timestamp(),
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
        attempts=1,  # the stored count includes this run; 1.x's number is the runs before it
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
    row.update(payload=None, headers=None, timeout_seconds=None, execute_after=None)
    bare = claimed_job_from_row(row, worker)
    assert (bare.payload, bare.headers, bare.timeout) == (None, None, None)
    # No execute_after sent: the job became runnable when it was created.
    assert bare.execute_after == moment


def test_claimed_and_fetched_jobs_report_the_same_attempts() -> None:
    # The lean claim and the full-row decoder (claims of limited entrypoints, fetch_job)
    # must agree: a picked row's Job shows the runs before this one.
    moment = datetime(2026, 12, 2, 4, 5, 6, tzinfo=UTC)
    worker = uuid4()
    for stored in (1, 2, 3):
        lean = claimed_job_from_row(_row(9, 0, moment) | {"attempts": stored}, worker)
        full = job_from_row(
            {
                "id": 9,
                "priority": 0,
                "created": moment,
                "updated": moment,
                "heartbeat": moment,
                "execute_after": moment,
                "status": "picked",
                "entrypoint": "mail",
                "payload": None,
                "attempts": stored,
                "queue_manager_id": worker,
                "headers": None,
                "lease": 1,
                "timeout_seconds": None,
            }
        )
        assert lean == full and lean.attempts == stored - 1


@pytest.mark.parametrize(
    ("status", "stored", "queue_manager_id", "expected"),
    [
        ("queued", 0, None, 0),  # never ran
        ("queued", 2, None, 2),  # retried twice: its next run sees 2, as in 1.x
        ("picked", 1, "w", 0),  # the first run
        ("picked", 3, "w", 2),  # the second retry
        ("successful", 1, "w", 0),
        ("exception", 3, None, 2),  # failed for good on its third run (or by crashes)
        ("failed", 4, "w", 3),  # held after three retries (1.x's list_failed_jobs: 3)
        ("canceled", 2, "w", 1),  # stopped while running: its worker recorded it
        ("canceled", 0, None, 0),  # cancelled before it ran
        ("canceled", 1, None, 1),  # cancelled while it waited for its first retry
        ("deleted", 1, None, 1),  # cleared while it waited for its first retry
    ],
)
def test_prior_runs(status: str, stored: int, queue_manager_id: str | None, expected: int) -> None:
    assert prior_runs(status, stored, queue_manager_id) == expected


def test_epoch_seconds_convert_back_to_the_microsecond() -> None:
    # A float8 epoch holds a present-day time to about 0.2 µs: the conversion must land on
    # the stored microsecond for every value, including ones near a rounding boundary.
    times = _EpochTimes()
    base = datetime(2026, 12, 2, 13, 0, 0, tzinfo=UTC)
    for micro in (0, 1, 499_999, 500_000, 999_999, 123_457):
        for days in (0, 1, 4_000):
            moment = base.replace(microsecond=micro) + timedelta(days=days)
            assert times(moment.timestamp()) == moment
    # Repeated values come back as the same object (a batch shares its times).
    assert times(base.timestamp()) is times(base.timestamp())
    assert times(datetime(1960, 5, 6, 7, 8, 9, 10, tzinfo=UTC).timestamp()) == datetime(
        1960, 5, 6, 7, 8, 9, 10, tzinfo=UTC
    )


def _row(job_id: int, priority: int, moment: datetime) -> dict[str, object]:
    return {
        "id": job_id,
        "priority": priority,
        "created_epoch": moment.timestamp(),
        "updated_epoch": moment.timestamp(),
        "execute_after": None,
        "entrypoint": "mail",
        "payload": None,
        "attempts": 1,
        "headers": None,
        "lease": 1,
        "timeout_seconds": None,
    }


def test_claimed_jobs_are_counted_before_they_are_decoded() -> None:
    class Unreadable(dict[str, object]):
        def __getitem__(self, key: str) -> object:
            raise LookupError(key)

    # The worker counts a full batch and sends its next claim before it reads the jobs:
    # the count must not need the rows decoded.
    claimed = ClaimedJobs([Unreadable(), Unreadable()], uuid4())
    assert len(claimed) == 2 and bool(claimed)
    with pytest.raises(LookupError):
        list(claimed)


def test_claimed_jobs_come_in_claim_order_and_equal_a_list() -> None:
    moment = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    worker = uuid4()
    rows = [_row(5, 0, moment), _row(9, 3, moment), _row(2, 0, moment)]
    claimed = ClaimedJobs(rows, worker)
    expected = sorted(
        (claimed_job_from_row(row, worker) for row in rows), key=lambda j: (-j.priority, j.id)
    )
    assert [job.id for job in claimed] == [9, 2, 5]
    assert claimed == expected and claimed == ClaimedJobs(rows, worker)
    assert claimed != expected[:2] and claimed != tuple(expected)
    assert claimed[0] == expected[0] and claimed[1:] == expected[1:]
    assert len(claimed) == 3 and repr(claimed) == f"ClaimedJobs({expected!r})"
