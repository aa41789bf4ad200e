WITH c AS (UPDATE pgqueuer j
SET status = 'picked', attempts = j.attempts + 1, lease = j.lease + 1,
    queue_manager_id = '00000000-0000-0000-0000-000000000001'::uuid, heartbeat = now(), started_at = now(), updated = now(),
    lease_expires_at = now() + make_interval(secs => 300::float8)
WHERE j.id IN (
    SELECT q.id FROM pgqueuer q
    WHERE q.entrypoint = 'noop'::text AND q.status = 'queued' AND q.execute_after <= now()
    ORDER BY q.priority DESC, q.id
    LIMIT 100
    FOR UPDATE SKIP LOCKED
)
  AND (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL
RETURNING j.id, j.priority, date_part('epoch', j.created) AS created_epoch,
          date_part('epoch', j.updated) AS updated_epoch,
          NULLIF(j.execute_after, j.created) AS execute_after, j.entrypoint, j.payload,
          j.attempts, j.headers::text AS headers, j.lease, j.timeout_seconds)
SELECT array_agg(id) AS ids, array_agg(lease) AS leases FROM c
\gset
UPDATE pgqueuer j SET status = 'successful', result = NULL, error = NULL, finished_at = now(), crashes = 0, cancel_requested = false, lease_expires_at = NULL, updated = now() FROM unnest(:ids::bigint[], :leases::bigint[]) AS o(id, lease) WHERE j.id = o.id AND j.lease = o.lease AND j.status = 'picked' AND ('00000000-0000-0000-0000-000000000001'::uuid IS NULL OR j.queue_manager_id = '00000000-0000-0000-0000-000000000001'::uuid) RETURNING j.id;
