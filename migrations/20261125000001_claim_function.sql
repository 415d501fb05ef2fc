-- The fair claim (repo::exports::claim_next) as one server-side call: the advisory lock that
-- makes claims take turns is then held for the statements' execution and the commit only, not
-- across the client's round trips. Each statement of a VOLATILE function takes a fresh
-- snapshot, so the pick (after the lock) sees every earlier claim's commit: per-project counts
-- are exact and a project's cap is never overshot.
CREATE FUNCTION wharf_claim_next(
    p_worker text, p_lease_secs double precision, p_cap bigint, p_token uuid
) RETURNS TABLE (export_id uuid, attempt integer)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    picked uuid;
BEGIN
    PERFORM pg_advisory_xact_lock(7);
    WITH running AS (
        SELECT r.project_id, count(*) AS n FROM exports r
        WHERE r.status = 'IN_PROGRESS' AND r.lease_expires_at > now()
        GROUP BY r.project_id)
    SELECT e.id INTO picked
    FROM exports e LEFT JOIN running ON running.project_id = e.project_id
    WHERE e.status = 'QUEUED' AND e.attempts < e.max_attempts
      AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= now())
      AND coalesce(running.n, 0) < p_cap
    ORDER BY coalesce(running.n, 0), e.created_at
    LIMIT 1 FOR UPDATE OF e SKIP LOCKED;
    IF picked IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE exports u SET status = 'IN_PROGRESS', attempts = u.attempts + 1, lease_token = p_token,
        lease_expires_at = now() + make_interval(secs => p_lease_secs), worker_id = p_worker,
        started_at = coalesce(u.started_at, now()), updated_at = now(),
        rows_written = 0, bytes_written = 0, next_attempt_at = NULL
    WHERE u.id = picked
    RETURNING u.id, u.attempts;
END
$$;
