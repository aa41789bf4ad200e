"""Jobs from the rows of a claim: the decoding on the worker's hot path.

A claim of a full batch is answered by rows that the worker turns into :class:`Job` objects
only after it has sent its next claim (:class:`ClaimedJobs` decodes on first use), so the
decoding overlaps with the server's work on that claim instead of delaying it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import overload
from uuid import UUID

from pgqueuer.backends.connector import Row
from pgqueuer.models import Job

# The claimed job is built on the hot path, once per job. A frozen dataclass's __init__
# stores each field through object.__setattr__ (about 3 µs for Job's 15); the values of a
# claimed row need no checks, so they go straight into the slots with the slots' own
# setters (about 1 µs). Every field must be set here: test_claimed_job_sets_every_field.
_JOB_SLOT = {name: getattr(Job, name).__set__ for name in Job.__slots__}
_set_id, _set_priority, _set_created = _JOB_SLOT["id"], _JOB_SLOT["priority"], _JOB_SLOT["created"]
_set_updated, _set_heartbeat = _JOB_SLOT["updated"], _JOB_SLOT["heartbeat"]
_set_execute_after, _set_status = _JOB_SLOT["execute_after"], _JOB_SLOT["status"]
_set_entrypoint, _set_payload = _JOB_SLOT["entrypoint"], _JOB_SLOT["payload"]
_set_attempts, _set_queue_manager_id = _JOB_SLOT["attempts"], _JOB_SLOT["queue_manager_id"]
_set_headers, _set_lease = _JOB_SLOT["headers"], _JOB_SLOT["lease"]
_set_slot, _set_timeout = _JOB_SLOT["slot"], _JOB_SLOT["timeout"]
_new_object = object.__new__


def claimed_job_from_row(
    row: Row, worker_id: UUID, times: Callable[[float], datetime] | None = None
) -> Job:
    """A job from the lean claim's row, which leaves out what the claim itself set and
    sends its times as epoch seconds (``times`` turns them into datetimes; one
    :class:`_EpochTimes` per batch shares the conversions)."""
    at = times or _EpochTimes()
    headers = row["headers"]
    payload = row["payload"]
    created = at(row["created_epoch"])
    updated = at(row["updated_epoch"])
    execute_after = row["execute_after"]
    job: Job = _new_object(Job)
    _set_id(job, row["id"])
    _set_priority(job, row["priority"])
    _set_created(job, created)
    _set_updated(job, updated)
    _set_heartbeat(job, updated)
    _set_execute_after(job, created if execute_after is None else execute_after)
    _set_status(job, "picked")
    _set_entrypoint(job, row["entrypoint"])
    _set_payload(job, payload if payload is None or type(payload) is bytes else bytes(payload))
    # The claim has just counted this run; a Job's attempts are the runs before it (1.x's
    # number, see models.prior_runs).
    _set_attempts(job, row["attempts"] - 1)
    _set_queue_manager_id(job, worker_id)
    _set_headers(job, json.loads(headers) if headers is not None else None)
    _set_lease(job, row["lease"])
    _set_slot(job, None)
    _set_timeout(job, row["timeout_seconds"])
    return job


class _EpochTimes:
    """Epoch seconds to aware UTC datetimes, remembering the last two values: a claimed
    batch's rows share their claim's now() and mostly their enqueue's, so a batch of 100
    makes a handful of datetimes instead of 200."""

    __slots__ = ("_moment", "_other_moment", "_other_seconds", "_seconds")

    def __init__(self) -> None:
        self._seconds = self._other_seconds = float("nan")
        self._moment = self._other_moment = _EPOCH

    def __call__(self, seconds: float) -> datetime:
        if seconds == self._seconds:
            return self._moment
        if seconds == self._other_seconds:
            return self._other_moment
        moment = _from_epoch(seconds, UTC)
        self._other_seconds, self._other_moment = self._seconds, self._moment
        self._seconds, self._moment = seconds, moment
        return moment


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_from_epoch = datetime.fromtimestamp


def claim_order(job: Job) -> tuple[int, int]:
    return (-job.priority, job.id)


class ClaimedJobs(Sequence[Job]):
    """The jobs of one claim, in claim order (priority descending, then id), decoded from
    the claim's rows the first time they are looked at.

    Its length is known without decoding: the worker counts a full batch, sends the next
    claim, and only then reads the jobs (about 1.5 µs each), while that claim is on the
    server. Compares equal to a list of the same jobs.
    """

    __slots__ = ("_count", "_jobs", "_rows", "_worker_id")

    def __init__(self, rows: Sequence[Row], worker_id: UUID) -> None:
        self._rows: Sequence[Row] | None = rows
        self._worker_id = worker_id
        self._count = len(rows)
        self._jobs: list[Job] | None = None

    def _decoded(self) -> list[Job]:
        jobs = self._jobs
        if jobs is None:
            rows = self._rows or ()
            times = _EpochTimes()
            jobs = [claimed_job_from_row(row, self._worker_id, times) for row in rows]
            if len(jobs) > 1:
                jobs.sort(key=claim_order)
            self._jobs, self._rows = jobs, None  # the rows are not needed again
        return jobs

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Job: ...
    @overload
    def __getitem__(self, index: slice) -> list[Job]: ...
    def __getitem__(self, index: int | slice) -> Job | list[Job]:
        return self._decoded()[index]

    def __iter__(self) -> Iterator[Job]:
        return iter(self._decoded())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ClaimedJobs):
            return self._decoded() == other._decoded()
        if isinstance(other, list):
            return self._decoded() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to a list, so unhashable like one

    def __repr__(self) -> str:
        return f"ClaimedJobs({self._decoded()!r})"
