"""All SQL statements pgqueuer runs against its tables, rendered once per set of names.

Parameters are always bound (``$1``-style, which asyncpg and psycopg's raw cursor both
accept). Arrays carry batches, so one round trip serves many jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final, LiteralString

from pgqueuer.config import DatabaseNames
from pgqueuer.sql.render import render

# Columns a worker needs to run a job (models.Job), in one place for every statement.
JOB_COLUMNS: Final = """
    j.id, j.priority, j.created, j.updated, j.heartbeat, j.execute_after, j.status,
    j.entrypoint, j.payload, j.attempts, j.queue_manager_id, j.headers::text AS headers,
    j.lease, j.timeout_seconds
"""

RESULT_COLUMNS: Final = """
    j.id, j.entrypoint, j.status, j.result::text AS result, j.error::text AS error,
    j.attempts, j.priority, j.created, j.updated, j.execute_after, j.started_at, j.finished_at
"""

# ---- schema -------------------------------------------------------------------------------

MIGRATION_LOCK: Final = "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))"

CREATE_SCHEMA: Final = "CREATE SCHEMA IF NOT EXISTS {schema}"

TABLE_EXISTS: Final = "SELECT to_regclass($1::text) IS NOT NULL AS present"

CREATE_MIGRATIONS_TABLE: Final = """
CREATE TABLE IF NOT EXISTS {migrations} (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

APPLIED_VERSIONS: Final = "SELECT version FROM {migrations} ORDER BY version"

# The start-up check of every worker and scheduler: $1 is the array of our tables. Reading
# the migrations table fails (42P01) when it does not exist; MISSING_TABLES then says which
# tables are there, a second round trip only on that path.
_MISSING_OF_ARRAY: Final = """ARRAY(
    SELECT t.name FROM unnest($1::text[]) WITH ORDINALITY AS t (name, n)
    WHERE to_regclass(t.name) IS NULL ORDER BY t.n
)"""
SCHEMA_STATE: Final = (
    "SELECT (SELECT max(version) FROM {migrations}) AS version, "
    + _MISSING_OF_ARRAY
    + " AS missing"
)
MISSING_TABLES: Final = "SELECT " + _MISSING_OF_ARRAY + " AS missing"

RECORD_MIGRATION: Final = "INSERT INTO {migrations} (version, name) VALUES ($1, $2)"

# Catalog probes (pgqueuer 1.x ``has_table`` and friends). Names travel as bound text; a
# NULL schema means the current schema.
SCHEMA_EXISTS: Final = (
    "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1::text) AS present"
)

HAS_COLUMN: Final = """
SELECT EXISTS (
    SELECT 1 FROM pg_attribute
    WHERE attrelid = to_regclass($1::text) AND attname = $2::text
      AND attnum > 0 AND NOT attisdropped
) AS present
"""

HAS_INDEX: Final = """
SELECT EXISTS (
    SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE i.indrelid = to_regclass($1::text) AND c.relname = $2::text
) AS present
"""

HAS_FUNCTION: Final = """
SELECT EXISTS (
    SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE p.proname = $1::text AND n.nspname = COALESCE($2::text, current_schema())
) AS present
"""

HAS_TRIGGER: Final = """
SELECT EXISTS (
    SELECT 1 FROM pg_trigger t
    JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE t.tgname = $1::text AND NOT t.tgisinternal
      AND n.nspname = COALESCE($2::text, current_schema())
) AS present
"""

HAS_ENUM_LABEL: Final = """
SELECT EXISTS (
    SELECT 1 FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid
    WHERE e.enumlabel = $1::text AND t.typname = $2::text
) AS present
"""

# ---- SQL scripts (``pgq sql``, ``Queries.plan_upgrade``) -----------------------------------
# Printed for people and other tools to run, so values cannot be bound: the only values
# substituted are a migration's number and its file name, both validated by
# ``pgqueuer.sql.script`` before they are inserted.

SCRIPT_MIGRATION_LOCK: Final = "SELECT pg_advisory_xact_lock(hashtextextended('{migrations}', 0))"

SCRIPT_RECORD_MIGRATION: Final = (
    "INSERT INTO {migrations} (version, name) VALUES (:version, ':name') "
    "ON CONFLICT (version) DO NOTHING"
)

# One migration that runs only when it is not recorded yet (``pgq sql upgrade``).
SCRIPT_GUARDED_MIGRATION: Final = """DO $pgq_guard$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM {migrations} WHERE version = :version) THEN
        EXECUTE $pgq_migration$
:body
$pgq_migration$;
        INSERT INTO {migrations} (version, name) VALUES (:version, ':name');
    END IF;
END
$pgq_guard$"""

DROP_ALL: Final = """
DROP TABLE IF EXISTS {ticks};
DROP TABLE IF EXISTS {schedules};
DROP TABLE IF EXISTS {jobs};
DROP TABLE IF EXISTS {migrations};
"""

# ---- producers ----------------------------------------------------------------------------

# Ids are drawn in input order first, so jobs of one batch keep their order (FIFO) and the
# caller gets ids back by position even when some rows are skipped by a dedupe conflict.
_ENQUEUE_HEAD: Final = """
WITH input AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('{jobs}', 'id')) AS id, t.*
    FROM (
        SELECT * FROM unnest(
            $1::text[], $2::bytea[], $3::integer[], $4::float8[], $5::timestamptz[],
            $6::text[], $7::text[], $8::float8[]
        ) WITH ORDINALITY AS u(entrypoint, payload, priority, delay, run_at, dedupe_key,
                               headers, timeout_seconds, ord)
        ORDER BY ord
    ) t
),
inserted AS (
    INSERT INTO {jobs} AS j (id, entrypoint, payload, priority, execute_after, dedupe_key,
                             headers, timeout_seconds)
    SELECT id, entrypoint, payload, priority,
           COALESCE(run_at, now() + make_interval(secs => delay)),
           dedupe_key, headers::jsonb, timeout_seconds
    FROM input
    ORDER BY ord
"""

# Deferred jobs notify too ('d:<seconds>:<entrypoint>', the seconds until the entrypoint's
# earliest new job is due, counted from now()): an idle worker then wakes when it is due
# instead of at its next poll. Only this statement takes a delay or a run_at.
_ENQUEUE_TAIL: Final = """
    RETURNING j.id, j.entrypoint, j.execute_after, j.dedupe_key
),
woken AS (
    SELECT count(pg_notify($9::text, 'w:' || e.entrypoint)) AS n
    FROM (SELECT DISTINCT entrypoint FROM inserted WHERE execute_after <= now()) e
),
due AS (
    SELECT count(pg_notify(
               $9::text, 'd:' || date_part('epoch', d.first - now())::text || ':' || d.entrypoint
           )) AS n
    FROM (SELECT entrypoint, min(execute_after) AS first FROM inserted
          WHERE execute_after > now() GROUP BY entrypoint) d
)
SELECT i.id, i.dedupe_key, (SELECT n FROM woken) AS woken, (SELECT n FROM due) AS due
FROM inserted i
"""

_DEDUPE_TARGET: Final = (
    "ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'picked')"
)

ENQUEUE: Final = _ENQUEUE_HEAD + _ENQUEUE_TAIL
ENQUEUE_SKIP: Final = _ENQUEUE_HEAD + _DEDUPE_TARGET + " DO NOTHING" + _ENQUEUE_TAIL
ENQUEUE_UPDATE_PRIORITY: Final = (
    _ENQUEUE_HEAD
    + _DEDUPE_TARGET
    + " DO UPDATE SET priority = GREATEST(j.priority, EXCLUDED.priority), updated = now()"
    + _ENQUEUE_TAIL
)

# The common batch: jobs that carry nothing but an entrypoint, a payload and a priority (no
# dedupe key, delay, run_at, headers or timeout). Every other column takes its default, so
# three arrays are bound instead of eight, and nothing can conflict. The identity default is
# drawn in scan order, so ascending ids are input order: one array back, not a row per job.
# $5 holds the batch's distinct entrypoints: one wake-up each, sent at commit.
ENQUEUE_PLAIN: Final = """
WITH inserted AS (
    INSERT INTO {jobs} (entrypoint, payload, priority)
    SELECT * FROM unnest($1::text[], $2::bytea[], $3::integer[])
    RETURNING id
)
SELECT array_agg(id ORDER BY id) AS ids,
       (SELECT count(pg_notify($4::text, 'w:' || e)) FROM unnest($5::text[]) AS e) AS woken
FROM inserted
"""

# A plain batch for one entrypoint at one priority (the usual producer batch): those two
# are bound once, so only the payloads travel as an array (the driver inspects every array
# element it encodes; this is a third of that work).
ENQUEUE_UNIFORM: Final = """
WITH inserted AS (
    INSERT INTO {jobs} (entrypoint, payload, priority)
    SELECT $1::text, p, $3::integer FROM unnest($2::bytea[]) AS p
    RETURNING id
)
SELECT array_agg(id ORDER BY id) AS ids,
       (SELECT count(pg_notify($4::text, 'w:' || $1::text))) AS woken
FROM inserted
"""

# One plain job (a producer's single enqueue, the latency path): scalars, no arrays.
ENQUEUE_ONE: Final = """
WITH inserted AS (
    INSERT INTO {jobs} (entrypoint, payload, priority)
    VALUES ($1::text, $2::bytea, $3::integer)
    RETURNING id
)
SELECT id, (SELECT count(pg_notify($4::text, 'w:' || $1::text))) AS woken FROM inserted
"""

HELD_DEDUPE_KEYS: Final = """
SELECT dedupe_key FROM {jobs}
WHERE dedupe_key = ANY($1::text[]) AND status IN ('queued', 'picked')
"""

NOTIFY: Final = "SELECT pg_notify($1::text, $2::text)"

# ---- workers ------------------------------------------------------------------------------

# Every claim updates the rows it locked by their physical address (ctid): the update then
# fetches each one directly (a TID scan) instead of looking every id up again in the primary
# key, which took about a tenth of a claim's server time. A locked version is the one the
# update changes: nobody else can update it meanwhile. (If a queued row was updated after
# the statement's snapshot, the lock lands on the newer version, which the update does not
# see: that job is not claimed this time and stays queued.)
#
# _TID_ONLY keeps the TID scan on a small table too. The planner weighs it as ten random
# page reads (it cannot know the array's length) against one pass over the table, and on a
# table it believes small (a fresh queue: under ~1,200 rows) it picked the pass; a join by
# id picked a hash join over a pass at batch 100 on tables of a few thousand rows. A cached
# generic plan then kept reading every row on each claim as the table grew, until the next
# ANALYZE. The second arm of _TID_ONLY is never evaluated (a lease is never negative, and OR
# stops at its first true arm), but the planner charges it to every row a plan reads: 1,000
# comparisons per row for a pass over the table, against ~10 fetched rows for the TID scan.
# (``<``, not ``=``: an ``=`` against a constant array is hashed and costed as one lookup.)
# It costs nothing at run time: pgbench, our cycle, 4 runs each.
_TID_ONLY: Final = """
  AND (j.lease >= 0 OR j.lease < ANY(array_fill(-1::bigint, ARRAY[1000])))"""

# Per entrypoint, walk the queued index in priority order and lock what is free (SKIP LOCKED),
# never more than the entrypoint's remaining capacity; then keep the best `batch` overall.
# Capacity counts picked rows; for limited entrypoints the caller holds an advisory lock per
# entrypoint for the transaction, so two claims cannot both see the same free capacity.
CLAIM: Final = (
    """
WITH wanted AS (
    SELECT e.entrypoint,
           CASE WHEN e.lim > 0
                THEN GREATEST(0, LEAST($2::integer, e.lim - (
                    SELECT count(*) FROM {jobs} p
                    WHERE p.entrypoint = e.entrypoint AND p.status = 'picked')))
                ELSE $2::integer END AS room
    FROM unnest($1::text[], $5::integer[]) AS e(entrypoint, lim)
),
candidates AS (
    SELECT c.tid
    FROM wanted w
    CROSS JOIN LATERAL (
        SELECT q.ctid AS tid, q.id, q.priority FROM {jobs} q
        WHERE q.entrypoint = w.entrypoint AND q.status = 'queued' AND q.execute_after <= now()
        ORDER BY q.priority DESC, q.id
        LIMIT w.room
        FOR UPDATE SKIP LOCKED
    ) c
    ORDER BY c.priority DESC, c.id
    LIMIT $2::integer
)
UPDATE {jobs} j
SET status = 'picked', attempts = j.attempts + 1, lease = j.lease + 1,
    queue_manager_id = $3::uuid, heartbeat = now(), started_at = now(), updated = now(),
    lease_expires_at = now() + make_interval(secs => $4::float8)
WHERE j.ctid = ANY(ARRAY(SELECT c.tid FROM candidates c))"""
    + _TID_ONLY
    + """
RETURNING """
    + JOB_COLUMNS
)

# The common claim: no entrypoint asked for has a concurrency limit, so there is no capacity
# to count, and a plain "lock the best n queued rows, then update them" does. The LIMIT is a
# literal (``:limit``, an int the backend formats in; one statement per batch size) so that
# the cached generic plan is the ordered walk of the queued index that a custom plan picks:
# with a bound LIMIT the generic plan is ~6x slower, so PostgreSQL re-planned every call.
# Only columns a Job needs and the caller does not already know come back: the status is
# 'picked', queue_manager_id is the caller's, heartbeat equals updated.
# ``:ep``, ``:worker`` and ``:lease`` stand for parameter numbers (see the variants below).
_CLAIM_SET: Final = """
UPDATE {jobs} j
SET status = 'picked', attempts = j.attempts + 1, lease = j.lease + 1,
    queue_manager_id = :worker::uuid, heartbeat = now(), started_at = now(), updated = now(),
    lease_expires_at = now() + make_interval(secs => :lease::float8)
"""

# The times come back as epoch seconds (float8): the driver decodes a float several times
# faster than a timestamptz, and the worker turns the batch's few distinct values into
# datetimes once (a batch shares its claim's now() and, mostly, its enqueue's). A float8
# holds a past or present time to well under a microsecond, so they convert back exactly;
# execute_after is sent only when it differs from created (a delayed job), as a timestamp.
_CLAIM_RETURNING: Final = """
RETURNING j.id, j.priority, date_part('epoch', j.created) AS created_epoch,
          date_part('epoch', j.updated) AS updated_epoch,
          NULLIF(j.execute_after, j.created) AS execute_after, j.entrypoint, j.payload,
          j.attempts, j.headers::text AS headers, j.lease, j.timeout_seconds
"""

# One entrypoint: the queued index gives the rows in order, the LIMIT stops the walk.
_CLAIM_ONE: Final = (
    _CLAIM_SET
    + """WHERE j.ctid = ANY(ARRAY(
    SELECT q.ctid FROM {jobs} q
    WHERE q.entrypoint = :ep::text AND q.status = 'queued' AND q.execute_after <= now()
    ORDER BY q.priority DESC, q.id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
))"""
    + _TID_ONLY
    + _CLAIM_RETURNING
)

# Several entrypoints: walk the index once per entrypoint (an ``= ANY`` scan would have to
# sort every queued row of them), then keep the best n overall.
_CLAIM_MANY: Final = (
    _CLAIM_SET
    + """WHERE j.ctid = ANY(ARRAY(
    SELECT c.tid FROM unnest(:ep::text[]) AS e(entrypoint)
    CROSS JOIN LATERAL (
        SELECT q.ctid AS tid, q.id, q.priority FROM {jobs} q
        WHERE q.entrypoint = e.entrypoint AND q.status = 'queued' AND q.execute_after <= now()
        ORDER BY q.priority DESC, q.id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ) c
    ORDER BY c.priority DESC, c.id
    LIMIT :limit
))"""
    + _TID_ONLY
    + _CLAIM_RETURNING
)

# A claim on its own commits asynchronously: it does not wait for its WAL to reach disk.
# Losing it in a server crash only puts the jobs back in the queue (no data is lost, the
# jobs run again: at-least-once), and the worker can never write for them under that claim:
# outcomes and heartbeats are fenced by the claiming worker's id as well as the lease, so a
# re-claim after recovery that hands out the same lease number to another worker shuts the
# first one out. This takes one WAL flush off the path from enqueue to handler start. An
# InitPlan runs once per statement, before the first row, whatever the plan; set_config with
# is_local = true lasts to the end of this statement's own (implicit) transaction. Claims
# that carry outcomes, limited claims and everything else commit synchronously.
_ASYNC_COMMIT: Final = """
  AND (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL
RETURNING"""


def _numbered(claim: str, first: int) -> str:
    """``claim`` with its parameters (entrypoint, worker, lease) numbered from ``$first``."""
    return (
        claim.replace(":ep", f"${first}")
        .replace(":worker", f"${first + 1}")
        .replace(":lease", f"${first + 2}")
    )


def _claim_alone(claim: str) -> str:
    return _numbered(claim.replace("\nRETURNING", _ASYNC_COMMIT, 1), 1)


CLAIM_ONE: Final = _claim_alone(_CLAIM_ONE)
CLAIM_MANY: Final = _claim_alone(_CLAIM_MANY)

HAS_RUNNABLE: Final = """
SELECT EXISTS (
    SELECT 1 FROM unnest($1::text[]) AS e(entrypoint)
    CROSS JOIN LATERAL (
        SELECT 1 FROM {jobs} q
        WHERE q.entrypoint = e.entrypoint AND q.status = 'queued' AND q.execute_after <= now()
        LIMIT 1
    ) x
) AS present
"""

# When queued jobs can run (DueOutlook): one is due now, and the seconds until the earliest
# one that is not. There is no index on execute_after (it would cost every enqueue and claim
# a write), so this reads queued rows of the entrypoints through the queued index: it is
# asked by idle workers (a drain deciding whether to stop, a worker re-reading when to wake
# next), never by a claim. It reads at most DUE_SCAN_LIMIT rows, so that a queue holding a
# million deferred jobs costs each question ~1 ms, not ~1 s: past that many, a due job may be
# missed here and is then found by the next poll's claim (the answer is a hint for waking,
# never for claiming), and "nothing queued" is still exact.
DUE_SCAN_LIMIT: Final = 1000
_NEXT_DUE_HEAD: Final = """
SELECT coalesce(bool_or(q.execute_after <= now()), false) AS runnable,
       date_part('epoch', min(q.execute_after) FILTER (WHERE q.execute_after > now()) - now())
           AS next_in
FROM (
    SELECT q.execute_after FROM {jobs} q
    WHERE q.entrypoint = ANY($1::text[]) AND q.status = 'queued'"""
_NEXT_DUE_TAIL: Final = f"""
    LIMIT {DUE_SCAN_LIMIT}
) q
"""

NEXT_DUE: Final = _NEXT_DUE_HEAD + _NEXT_DUE_TAIL
# The same for some jobs only (a run(once=True) waiting for the retries it wrote): ids as
# text, as for outcomes (see _IDS_1).
NEXT_DUE_OF_JOBS: Final = (
    _NEXT_DUE_HEAD
    + "\n      AND q.id = ANY(string_to_array($2::text, ',')::bigint[])"
    + _NEXT_DUE_TAIL
)

CLAIM_LOCK: Final = """
SELECT pg_advisory_xact_lock(hashtextextended($1::text || ':' || e, 0))
FROM unnest($2::text[]) AS e ORDER BY e
"""

# Outcomes and heartbeats bind their job ids and leases as comma-separated text ('17,18,25';
# ``id_list`` in backends/sql.py builds it), not as bigint[]: asyncpg has no built-in codec
# for bigint[] and looks the type up in the catalog on each new connection's first use of it
# (8.8 ms measured, against 0.5 ms for the first text statement; a 20,000-job drain takes
# 0.4 s). With 200 ids a round trip takes no longer than with the array (198 against 219 µs,
# medians of 300). The ids an outcome statement rejects come back as text the same way.
_IDS_1: Final = "string_to_array($1::text, ',')::bigint[]"
_IDS_LEASES: Final = _IDS_1 + ",\n            string_to_array($2::text, ',')::bigint[]"

# Outcomes and heartbeats name the worker that claimed the job (``:fence``; NULL skips the
# check, for callers that are not a worker) on top of the lease: see ``_ASYNC_COMMIT``.
_WORKER_FENCE: Final = "\n  AND (:fence::uuid IS NULL OR j.queue_manager_id = :fence::uuid)"

# One statement settles a whole batch of runs. Only rows still picked under the same lease
# change: a worker whose job was rescued and re-claimed elsewhere writes nothing.
_FINISH_UPDATE: Final = (
    """
UPDATE {jobs} j
SET status = o.status,
    result = CASE WHEN o.status = 'successful' THEN o.result::jsonb ELSE NULL END,
    error = CASE WHEN o.status = 'successful' THEN NULL ELSE COALESCE(o.error::jsonb, j.error) END,
    execute_after = CASE WHEN o.status = 'queued'
                         THEN now() + make_interval(secs => o.delay) ELSE j.execute_after END,
    finished_at = CASE WHEN o.status = 'queued' THEN NULL ELSE now() END,
    attempts = CASE WHEN o.count_attempt THEN j.attempts ELSE GREATEST(j.attempts - 1, 0) END,
    queue_manager_id = CASE WHEN o.status = 'queued' THEN NULL ELSE j.queue_manager_id END,
    crashes = 0, cancel_requested = false, lease_expires_at = NULL, updated = now()
FROM unnest("""
    + _IDS_LEASES
    + """,
            $3::text[], $4::text[], $5::text[], $6::float8[],
            $7::boolean[]) AS o(id, lease, status, result, error, delay, count_attempt)
WHERE j.id = o.id AND j.lease = o.lease AND j.status = 'picked'"""
    + _WORKER_FENCE
    + """
RETURNING j.id
"""
)

FINISH: Final = _FINISH_UPDATE.replace(":fence", "$8")

# FINISH for outcomes sent before without an answer (a timeout, a lost connection, a
# cancelled statement): that statement may have recorded them, so a job found already ended
# in the outcome's status, under its lease and claimed by this worker ($8, required here),
# counts as accepted too. Nothing else writes that state: a rescue or a re-claim moves the
# lease on, and another worker's outcome never matches our worker id. A requeue (status
# 'queued') clears the worker, so it cannot be recognised and is left out. The rows are
# read FOR SHARE: if that earlier statement is still committing, this waits for it and
# reads the row as it left it (READ COMMITTED re-reads a locked row that changed). Rows the
# UPDATE changes in this statement are skipped by the locking read (changed by this very
# command), so a row counts once.
FINISH_RESENT: Final = (
    "WITH finished AS ("
    + FINISH
    + """),
recorded AS (
    SELECT j.id, j.status, o.status AS wanted
    FROM {jobs} j
    JOIN unnest("""
    + _IDS_LEASES
    + """,
            $3::text[]) AS o(id, lease, status) ON j.id = o.id
    WHERE j.lease = o.lease AND j.queue_manager_id = $8::uuid AND o.status <> 'queued'
    FOR SHARE OF j
)
SELECT id FROM finished
UNION ALL
SELECT id FROM recorded WHERE status = wanted
"""
)

# Settling a batch in which every handler returned None (the common outcome): ids and
# leases only, the same fencing as FINISH, and the same end state as FINISH writes for a
# successful run whose result is SQL NULL.
_FINISH_SUCCESS_UPDATE: Final = (
    """
UPDATE {jobs} j
SET status = 'successful', result = NULL, error = NULL, finished_at = now(), crashes = 0,
    cancel_requested = false, lease_expires_at = NULL, updated = now()
FROM unnest("""
    + _IDS_LEASES
    + """) AS o(id, lease)
WHERE j.id = o.id AND j.lease = o.lease AND j.status = 'picked'"""
    + _WORKER_FENCE
    + """
RETURNING j.id
"""
)

FINISH_SUCCESS: Final = _FINISH_SUCCESS_UPDATE.replace(":fence", "$3")

# The outcomes of the last batch and the claim of the next one in one statement: one round
# trip and one commit instead of two. Both run on the same snapshot, so the claim cannot see
# what the outcomes change; they touch different rows (picked ones, queued ones). The
# outcome ids that did not match (usually none) come back in ``rejected`` on every row; the
# LEFT JOIN yields one row with a NULL id when nothing was claimed.
_CLAIM_AFTER: Final = (
    """
SELECT r.rejected, c.* FROM (
    SELECT array_to_string(
        array_agg(o.id) FILTER (WHERE o.id NOT IN (SELECT id FROM finished)), ','
    ) AS rejected
    FROM unnest("""
    + _IDS_1
    + """) AS o(id)
) r LEFT JOIN claimed c ON true
"""
)

_AFTER_SUCCESS: Final = "WITH finished AS (" + _FINISH_SUCCESS_UPDATE + "), claimed AS ("
_AFTER_ANY: Final = "WITH finished AS (" + _FINISH_UPDATE + "), claimed AS ("


def _then_claim(finished: str, claim: str, first: int) -> str:
    """``finished`` (a WITH head) followed by ``claim`` whose parameters start at ``$first``."""
    # The outcomes are fenced by the claiming worker, the same id the claim writes.
    return (
        finished.replace(":fence", f"${first + 1}") + _numbered(claim, first) + ")" + _CLAIM_AFTER
    )


# The success statement binds 2 arrays, the general one 7: the claim's parameters follow.
FINISH_SUCCESS_CLAIM_ONE: Final = _then_claim(_AFTER_SUCCESS, _CLAIM_ONE, 3)
FINISH_SUCCESS_CLAIM_MANY: Final = _then_claim(_AFTER_SUCCESS, _CLAIM_MANY, 3)
FINISH_CLAIM_ONE: Final = _then_claim(_AFTER_ANY, _CLAIM_ONE, 8)
FINISH_CLAIM_MANY: Final = _then_claim(_AFTER_ANY, _CLAIM_MANY, 8)

HEARTBEAT: Final = (
    """
UPDATE {jobs} j
SET heartbeat = now(), lease_expires_at = now() + make_interval(secs => $3::float8)
FROM unnest("""
    + _IDS_LEASES
    + """) AS l(id, lease)
WHERE j.id = l.id AND j.lease = l.lease AND j.status = 'picked'"""
    + _WORKER_FENCE.replace(":fence", "$4")
    + """
RETURNING j.id, j.cancel_requested
"""
)

# A picked job whose lease expired lost its worker. It goes back to the queue with a new
# lease (fencing the lost worker out), unless it was asked to cancel, or it has now taken
# down `$1` workers in a row: then it ends, so one poison job cannot crash the whole fleet.
# Requeued jobs wake the workers of their entrypoint at once ($2 is the channel), so an
# orphan restarts within one rescue interval of its lease expiring, not a poll later.
RESCUE_EXPIRED: Final = """
WITH expired AS (
    SELECT id FROM {jobs}
    WHERE status = 'picked' AND lease_expires_at < now()
    ORDER BY id
    LIMIT 1000
    FOR UPDATE SKIP LOCKED
),
rescued AS (
    UPDATE {jobs} j
    SET crashes = j.crashes + 1, lease = j.lease + 1,
        status = CASE WHEN j.cancel_requested THEN 'canceled'
                      WHEN j.crashes + 1 >= $1::integer THEN 'exception'
                      ELSE 'queued' END,
        error = CASE WHEN NOT j.cancel_requested AND j.crashes + 1 >= $1::integer
                     THEN jsonb_build_object(
                         'type', 'WorkerCrashed',
                         'message', format('worker crashed %s times', j.crashes + 1),
                         'traceback', '')
                     ELSE j.error END,
        finished_at = CASE WHEN j.cancel_requested OR j.crashes + 1 >= $1::integer
                           THEN now() ELSE NULL END,
        queue_manager_id = NULL, lease_expires_at = NULL, cancel_requested = false,
        updated = now()
    FROM expired e
    WHERE j.id = e.id
    RETURNING j.id, j.status, j.entrypoint
),
woken AS (
    SELECT count(pg_notify($2::text, 'w:' || r.entrypoint)) AS n
    FROM (SELECT DISTINCT entrypoint FROM rescued WHERE status = 'queued') r
)
SELECT r.id, r.status, (SELECT n FROM woken) AS woken FROM rescued r
"""

# At the end of a worker's run: jobs still picked under its id ($1) that it is not running
# and holds no outcome for (the ids in $2, comma-separated text as in _IDS_1) were claimed
# but never started: the claim's answer was lost, or its statement was cancelled after the
# server had applied it. They go back to the queue at once, as the claim found them, instead
# of waiting for their lease to expire: the attempt is given back (no handler ran) and crashes
# are left alone. The lease is not bumped (nobody can write under it: every write needs
# status 'picked', and the next claim moves it on). A job asked to cancel meanwhile ends
# canceled, as rescue would end it. Requeued jobs wake their workers ($3 is the channel).
RELEASE_UNSTARTED: Final = """
WITH released AS (
    UPDATE {jobs} j
    SET status = CASE WHEN j.cancel_requested THEN 'canceled' ELSE 'queued' END,
        attempts = GREATEST(j.attempts - 1, 0),
        finished_at = CASE WHEN j.cancel_requested THEN now() ELSE NULL END,
        queue_manager_id = NULL, lease_expires_at = NULL, cancel_requested = false,
        updated = now()
    WHERE j.status = 'picked' AND j.queue_manager_id = $1::uuid
      AND j.id <> ALL(string_to_array($2::text, ',')::bigint[])
    RETURNING j.id, j.status, j.entrypoint
),
woken AS (
    SELECT count(pg_notify($3::text, 'w:' || r.entrypoint)) AS n
    FROM (SELECT DISTINCT entrypoint FROM released WHERE status = 'queued') r
)
SELECT r.id, r.status, (SELECT n FROM woken) AS woken FROM released r
"""

# ---- readers and administration -----------------------------------------------------------

FETCH_RESULT: Final = "SELECT " + RESULT_COLUMNS + " FROM {jobs} j WHERE j.id = $1::bigint"

FETCH_JOB: Final = "SELECT " + JOB_COLUMNS + " FROM {jobs} j WHERE j.id = $1::bigint"

JOB_STATUSES: Final = "SELECT id, status FROM {jobs} WHERE id = ANY($1::bigint[])"

CANCEL_QUEUED: Final = """
UPDATE {jobs} SET status = 'canceled', finished_at = now(), updated = now()
WHERE id = ANY($1::bigint[]) AND status = 'queued'
RETURNING id
"""

CANCEL_PICKED: Final = """
UPDATE {jobs} SET cancel_requested = true, updated = now()
WHERE id = ANY($1::bigint[]) AND status = 'picked'
RETURNING id
"""

QUEUE_SIZE: Final = """
SELECT count(*) AS count, entrypoint, priority, status FROM {jobs}
WHERE status IN ('queued', 'picked')
GROUP BY entrypoint, priority, status
ORDER BY entrypoint, priority DESC, status
"""

BACKLOG: Final = """
SELECT entrypoint,
       count(*) AS queued,
       count(*) FILTER (WHERE execute_after <= now()) AS runnable,
       EXTRACT(EPOCH FROM now() - min(execute_after) FILTER (WHERE execute_after <= now()))
           ::float8 AS oldest_age_seconds
FROM {jobs} WHERE status = 'queued'
GROUP BY entrypoint ORDER BY entrypoint
"""

# Cleared jobs end as 'deleted' (the 1.x vocabulary) and stay readable until retention.
ACTIVE_WORKERS: Final = """
SELECT queue_manager_id, count(*) AS active_jobs, min(heartbeat) AS oldest_heartbeat,
       max(heartbeat) AS newest_heartbeat,
       array_agg(DISTINCT entrypoint ORDER BY entrypoint) AS entrypoints
FROM {jobs} WHERE status = 'picked' AND queue_manager_id IS NOT NULL
GROUP BY queue_manager_id ORDER BY min(heartbeat), queue_manager_id
"""

STALE_JOBS: Final = """
SELECT id, priority, queue_manager_id, created, updated, heartbeat, execute_after, status,
       entrypoint, EXTRACT(EPOCH FROM now() - heartbeat)::float8 AS seconds_since_heartbeat
FROM {jobs}
WHERE status = 'picked' AND heartbeat < now() - make_interval(secs => $1::float8)
ORDER BY heartbeat, id
LIMIT $2::integer
"""

CLEAR_QUEUE: Final = """
UPDATE {jobs} SET status = 'deleted', finished_at = now(), updated = now()
WHERE status = 'queued' AND ($1::text[] IS NULL OR entrypoint = ANY($1::text[]))
RETURNING id
"""

_LIST_FAILED_HEAD: Final = (
    """
SELECT """
    + JOB_COLUMNS
    + """ FROM {jobs} j
WHERE j.status = ANY($2::text[]) AND j.finished_at IS NOT NULL
"""
)

LIST_FAILED: Final = (
    _LIST_FAILED_HEAD + "ORDER BY j.finished_at DESC, j.id DESC\nLIMIT $1::integer\n"
)
LIST_FAILED_OLDEST: Final = _LIST_FAILED_HEAD + "ORDER BY j.finished_at, j.id\nLIMIT $1::integer\n"

REQUEUE: Final = """
WITH moved AS (
    UPDATE {jobs}
    SET status = 'queued', attempts = 0, crashes = 0, execute_after = now(), finished_at = NULL,
        queue_manager_id = NULL, updated = now()
    WHERE id = ANY($1::bigint[]) AND status IN ('failed', 'exception')
    RETURNING id, entrypoint
),
woken AS (
    SELECT count(pg_notify($2::text, 'w:' || e.entrypoint)) AS n
    FROM (SELECT DISTINCT entrypoint FROM moved) e
)
SELECT m.id, (SELECT n FROM woken) AS woken FROM moved m
"""

# Retention: finished jobs older than $1 seconds, oldest first, at most $2 per statement
# (callers loop), skipping rows another pruner holds, so each statement is short.
PRUNE: Final = """
WITH doomed AS (
    SELECT id FROM {jobs}
    WHERE finished_at IS NOT NULL AND finished_at < now() - make_interval(secs => $1::float8)
    ORDER BY finished_at
    LIMIT $2::integer
    FOR UPDATE SKIP LOCKED
),
deleted AS (
    DELETE FROM {jobs} j USING doomed d WHERE j.id = d.id RETURNING j.id
)
SELECT count(*)::integer AS deleted FROM deleted
"""

LOG_STATISTICS: Final = """
SELECT count(*) AS count, date_trunc('second', finished_at) AS created, entrypoint, priority,
       status
FROM {jobs}
WHERE finished_at IS NOT NULL
  AND ($2::float8 IS NULL OR finished_at >= now() - make_interval(secs => $2::float8))
GROUP BY date_trunc('second', finished_at), entrypoint, priority, status
ORDER BY created DESC, entrypoint, priority DESC, status
LIMIT $1::integer
"""

NOW: Final = "SELECT now() AS now"

# Who a connection acts as: a worker's second connection (backends/second_connection.py)
# must name the same role and resolve unqualified table names the same way as the first.
SESSION_IDENTITY: Final = """
SELECT current_user::text AS role, current_setting('search_path') AS search_path,
       current_setting('application_name') AS application_name
"""

# The second connection takes over the caller's search_path (set on their session, so not
# in the connection parameters) and a recognisable application_name, for the session.
ADOPT_SESSION: Final = """
SELECT set_config('search_path', $1::text, false) AS search_path,
       set_config('application_name', $2::text, false) AS application_name
"""

# ---- schedules ----------------------------------------------------------------------------

SCHEDULE_COLUMNS: Final = """
    s.id, s.name, s.entrypoint, s.expression, s.timezone, s.missed, s.max_catch_up,
    s.grace_seconds, s.paused, s.next_run, s.last_run, s.last_job_id, s.seen_at, s.created,
    s.updated
"""

# Registration keeps the stored next fire time unless the expression or time zone changed:
# then the old definition is replaced and never fires again.
UPSERT_SCHEDULES: Final = """
INSERT INTO {schedules} AS s (name, entrypoint, expression, timezone, missed, max_catch_up,
                              grace_seconds, next_run)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::integer[], $7::float8[], $8::timestamptz[])
ON CONFLICT (name) DO UPDATE SET
    next_run = CASE WHEN s.expression <> EXCLUDED.expression OR s.timezone <> EXCLUDED.timezone
                    THEN EXCLUDED.next_run ELSE s.next_run END,
    updated = CASE WHEN s.expression <> EXCLUDED.expression OR s.timezone <> EXCLUDED.timezone
                   THEN now() ELSE s.updated END,
    entrypoint = EXCLUDED.entrypoint, expression = EXCLUDED.expression,
    timezone = EXCLUDED.timezone, missed = EXCLUDED.missed,
    max_catch_up = EXCLUDED.max_catch_up, grace_seconds = EXCLUDED.grace_seconds,
    seen_at = now()
"""

DUE_SCHEDULES: Final = (
    """
SELECT """
    + SCHEDULE_COLUMNS
    + """, now() AS now
FROM {schedules} s
WHERE s.name = ANY($1::text[]) AND NOT s.paused AND s.next_run <= now()
ORDER BY s.next_run
FOR UPDATE SKIP LOCKED
"""
)

INSERT_TICKS: Final = """
INSERT INTO {ticks} (schedule_id, fire_at)
SELECT $1::bigint, unnest($2::timestamptz[])
ON CONFLICT (schedule_id, fire_at) DO NOTHING
RETURNING fire_at
"""

LINK_TICKS: Final = """
UPDATE {ticks} t SET job_id = x.job_id
FROM unnest($2::timestamptz[], $3::bigint[]) AS x(fire_at, job_id)
WHERE t.schedule_id = $1::bigint AND t.fire_at = x.fire_at
"""

ADVANCE_SCHEDULE: Final = """
UPDATE {schedules}
SET next_run = $2::timestamptz, last_run = COALESCE($3::timestamptz, last_run),
    last_job_id = COALESCE($4::bigint, last_job_id), updated = now()
WHERE id = $1::bigint
"""

NEXT_SCHEDULE_RUN: Final = """
SELECT min(next_run) AS next_run, now() AS now FROM {schedules}
WHERE name = ANY($1::text[]) AND NOT paused
"""

LIST_SCHEDULES: Final = (
    """
SELECT """
    + SCHEDULE_COLUMNS
    + """, j.status AS last_status
FROM {schedules} s LEFT JOIN {jobs} j ON j.id = s.last_job_id
ORDER BY s.name
"""
)

SCHEDULE_BY_NAME: Final = (
    """
SELECT """
    + SCHEDULE_COLUMNS
    + """, now() AS now FROM {schedules} s WHERE s.name = $1::text
FOR UPDATE
"""
)

# Returns whether each schedule was paused before, so that only a real resume moves next_run.
SET_SCHEDULES_PAUSED: Final = """
UPDATE {schedules} s SET paused = $2::boolean, updated = now()
FROM (SELECT id, paused FROM {schedules} WHERE name = ANY($1::text[]) FOR UPDATE) AS before
WHERE s.id = before.id
RETURNING s.name, before.paused AS was_paused
"""

# Resuming a paused schedule starts from now: the ticks it slept through are not missed work.
RESUME_NEXT_RUN: Final = """
UPDATE {schedules} SET next_run = x.next_run
FROM unnest($1::text[], $2::timestamptz[]) AS x(name, next_run)
WHERE {schedules}.name = x.name
"""

DELETE_SCHEDULES: Final = "DELETE FROM {schedules} WHERE name = ANY($1::text[]) RETURNING name"

# clean_old: the schedules stored under one 1.x entrypoint that this process no longer has.
DELETE_OTHER_SCHEDULES: Final = """
DELETE FROM {schedules}
WHERE entrypoint = $1::text AND name <> ALL($2::text[])
RETURNING name
"""

TOUCH_SCHEDULES: Final = "UPDATE {schedules} SET seen_at = now() WHERE name = ANY($1::text[])"

# Per schedule, through the (schedule_id, fire_at) primary key: no scan of other rows.
PRUNE_TICKS: Final = """
WITH gone AS (
    DELETE FROM {ticks}
    WHERE schedule_id IN (SELECT id FROM {schedules} WHERE name = ANY($1::text[]))
      AND fire_at < now() - make_interval(secs => $2::float8)
    RETURNING 1
)
SELECT count(*) AS count FROM gone
"""


# ---- database health (R25) ---------------------------------------------------------------
# The oldest xmin horizon that holds back vacuum in this database: snapshots of sessions
# (autovacuum's own are ignored by other vacuums, and our own statement is left out),
# prepared transactions and replication slots. Since PostgreSQL 14 only sessions of the
# same database (and walsenders, which have none) hold a table's horizon. backend_xmin is
# visible for every session; xact_start only for our own role's or with pg_read_all_stats.
OLDEST_XMIN: Final = """
WITH holders AS (
    SELECT 'session'::text AS holder, a.pid, a.application_name AS name, a.state,
           a.backend_xmin AS xmin,
           EXTRACT(EPOCH FROM clock_timestamp() - a.xact_start)::float8 AS seconds
    FROM pg_stat_activity a
    WHERE a.backend_xmin IS NOT NULL AND a.pid <> pg_backend_pid()
      AND a.backend_type IS DISTINCT FROM 'autovacuum worker'
      AND (a.datname = current_database() OR a.datname IS NULL)
    UNION ALL
    SELECT 'prepared', NULL, p.gid, NULL, p.transaction,
           EXTRACT(EPOCH FROM clock_timestamp() - p.prepared)::float8
    FROM pg_prepared_xacts p
    WHERE p.database = current_database()
    UNION ALL
    SELECT 'replication slot', NULL, s.slot_name::text, NULL, s.xmin, NULL
    FROM pg_replication_slots s
    WHERE s.xmin IS NOT NULL AND (s.database IS NULL OR s.database = current_database())
)
SELECT holder, pid, name, state, xmin::text AS xmin, age(xmin) AS xid_age, seconds
FROM holders
ORDER BY age(xmin) DESC, seconds DESC NULLS LAST
LIMIT 1
"""


@dataclass(frozen=True, slots=True)
class Statements:
    """Every statement above, rendered for one set of object names."""

    create_schema: str
    table_exists: str
    schema_exists: str
    has_column: str
    has_index: str
    has_function: str
    has_trigger: str
    has_enum_label: str
    script_migration_lock: str
    script_record_migration: str
    script_guarded_migration: str
    create_migrations_table: str
    applied_versions: str
    schema_state: str
    missing_tables: str
    record_migration: str
    migration_lock: str
    drop_all: str
    enqueue: str
    enqueue_skip: str
    enqueue_update_priority: str
    enqueue_plain: str
    enqueue_uniform: str
    enqueue_one: str
    held_dedupe_keys: str
    notify: str
    claim: str
    claim_lock: str
    has_runnable: str
    next_due: str
    next_due_of_jobs: str
    finish: str
    finish_resent: str
    heartbeat: str
    claim_one: str
    claim_many: str
    finish_success: str
    finish_success_claim_one: str
    finish_success_claim_many: str
    finish_claim_one: str
    finish_claim_many: str
    rescue_expired: str
    release_unstarted: str
    fetch_result: str
    fetch_job: str
    job_statuses: str
    cancel_queued: str
    cancel_picked: str
    queue_size: str
    backlog: str
    active_workers: str
    stale_jobs: str
    clear_queue: str
    list_failed: str
    list_failed_oldest: str
    requeue: str
    prune: str
    log_statistics: str
    now: str
    oldest_xmin: str
    upsert_schedules: str
    due_schedules: str
    insert_ticks: str
    link_ticks: str
    advance_schedule: str
    next_schedule_run: str
    list_schedules: str
    schedule_by_name: str
    set_schedules_paused: str
    resume_next_run: str
    delete_schedules: str
    delete_other_schedules: str
    touch_schedules: str
    prune_ticks: str


_TEMPLATES: Final[dict[str, LiteralString]] = {
    "create_schema": CREATE_SCHEMA,
    "table_exists": TABLE_EXISTS,
    "schema_exists": SCHEMA_EXISTS,
    "has_column": HAS_COLUMN,
    "has_index": HAS_INDEX,
    "has_function": HAS_FUNCTION,
    "has_trigger": HAS_TRIGGER,
    "has_enum_label": HAS_ENUM_LABEL,
    "script_migration_lock": SCRIPT_MIGRATION_LOCK,
    "script_record_migration": SCRIPT_RECORD_MIGRATION,
    "script_guarded_migration": SCRIPT_GUARDED_MIGRATION,
    "create_migrations_table": CREATE_MIGRATIONS_TABLE,
    "applied_versions": APPLIED_VERSIONS,
    "schema_state": SCHEMA_STATE,
    "missing_tables": MISSING_TABLES,
    "record_migration": RECORD_MIGRATION,
    "migration_lock": MIGRATION_LOCK,
    "drop_all": DROP_ALL,
    "enqueue": ENQUEUE,
    "enqueue_skip": ENQUEUE_SKIP,
    "enqueue_update_priority": ENQUEUE_UPDATE_PRIORITY,
    "enqueue_plain": ENQUEUE_PLAIN,
    "enqueue_uniform": ENQUEUE_UNIFORM,
    "enqueue_one": ENQUEUE_ONE,
    "held_dedupe_keys": HELD_DEDUPE_KEYS,
    "notify": NOTIFY,
    "claim": CLAIM,
    "claim_lock": CLAIM_LOCK,
    "has_runnable": HAS_RUNNABLE,
    "next_due": NEXT_DUE,
    "next_due_of_jobs": NEXT_DUE_OF_JOBS,
    "finish": FINISH,
    "finish_resent": FINISH_RESENT,
    "heartbeat": HEARTBEAT,
    "claim_one": CLAIM_ONE,
    "claim_many": CLAIM_MANY,
    "finish_success": FINISH_SUCCESS,
    "finish_success_claim_one": FINISH_SUCCESS_CLAIM_ONE,
    "finish_success_claim_many": FINISH_SUCCESS_CLAIM_MANY,
    "finish_claim_one": FINISH_CLAIM_ONE,
    "finish_claim_many": FINISH_CLAIM_MANY,
    "rescue_expired": RESCUE_EXPIRED,
    "release_unstarted": RELEASE_UNSTARTED,
    "fetch_result": FETCH_RESULT,
    "fetch_job": FETCH_JOB,
    "job_statuses": JOB_STATUSES,
    "cancel_queued": CANCEL_QUEUED,
    "cancel_picked": CANCEL_PICKED,
    "queue_size": QUEUE_SIZE,
    "backlog": BACKLOG,
    "active_workers": ACTIVE_WORKERS,
    "stale_jobs": STALE_JOBS,
    "clear_queue": CLEAR_QUEUE,
    "list_failed": LIST_FAILED,
    "list_failed_oldest": LIST_FAILED_OLDEST,
    "requeue": REQUEUE,
    "prune": PRUNE,
    "log_statistics": LOG_STATISTICS,
    "now": NOW,
    "oldest_xmin": OLDEST_XMIN,
    "upsert_schedules": UPSERT_SCHEDULES,
    "due_schedules": DUE_SCHEDULES,
    "insert_ticks": INSERT_TICKS,
    "link_ticks": LINK_TICKS,
    "advance_schedule": ADVANCE_SCHEDULE,
    "next_schedule_run": NEXT_SCHEDULE_RUN,
    "list_schedules": LIST_SCHEDULES,
    "schedule_by_name": SCHEDULE_BY_NAME,
    "set_schedules_paused": SET_SCHEDULES_PAUSED,
    "resume_next_run": RESUME_NEXT_RUN,
    "delete_schedules": DELETE_SCHEDULES,
    "delete_other_schedules": DELETE_OTHER_SCHEDULES,
    "touch_schedules": TOUCH_SCHEDULES,
    "prune_ticks": PRUNE_TICKS,
}


def build_statements(names: DatabaseNames) -> Statements:
    """Render every statement for ``names``. The schema token is only valid with a schema."""
    rendered = {}
    for field in fields(Statements):
        template = _TEMPLATES[field.name]
        if field.name == "create_schema":
            rendered[field.name] = template.replace("{schema}", names.schema or "public")
        else:
            rendered[field.name] = render(template, names)
    return Statements(**rendered)
