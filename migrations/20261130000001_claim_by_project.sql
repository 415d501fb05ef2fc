-- The fair claim without reading the whole queue. The first version sorted every QUEUED export
-- (joined to the running counts) on each claim, under the advisory lock that makes claims take
-- turns: 3 ms a claim with 600 queued, so claims of every worker together stopped at ~300/s
-- (measured with log_min_duration_statement; wharf-pickup drained 600 exports at 145-180/s
-- with 1 or 2 workers alike). The same choice is now made from the projects that have queued
-- work: a loose index scan lists them (one probe each), each one's oldest due export is one
-- probe of (project_id, created_at), and the pick is the oldest among the projects with the
-- fewest running, below the cap — as before. Its cost grows with the number of projects
-- waiting, not with the number of exports waiting.
DROP INDEX exports_queued_by_project;
CREATE INDEX exports_queued_by_project ON exports (project_id, created_at) WHERE status = 'QUEUED';

CREATE OR REPLACE FUNCTION wharf_claim_next(
    p_worker text, p_lease_secs double precision, p_cap bigint, p_token uuid
) RETURNS TABLE (export_id uuid, attempt integer)
-- Kept under its name and shape for workers of the previous version during a rolling upgrade;
-- this version's workers call wharf_claim (below).
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    picked uuid;
    -- Exports whose row another transaction holds (a cancel, the reconciler): passed over.
    held uuid[] := '{}';
BEGIN
    PERFORM pg_advisory_xact_lock(7);
    FOR tries IN 1..4 LOOP
        WITH RECURSIVE waiting(p) AS (
            (SELECT q.project_id FROM exports q WHERE q.status = 'QUEUED'
             ORDER BY q.project_id LIMIT 1)
            UNION ALL
            SELECT (SELECT q.project_id FROM exports q
                    WHERE q.status = 'QUEUED' AND q.project_id > w.p
                    ORDER BY q.project_id LIMIT 1)
            FROM waiting w WHERE w.p IS NOT NULL
        ), running AS (
            SELECT r.project_id, count(*) AS n FROM exports r
            WHERE r.status = 'IN_PROGRESS' AND r.lease_expires_at > now()
            GROUP BY r.project_id
        )
        SELECT oldest.id INTO picked
        FROM waiting w
        LEFT JOIN running ON running.project_id = w.p
        CROSS JOIN LATERAL (
            SELECT x.id, x.created_at FROM exports x
            WHERE x.project_id = w.p AND x.status = 'QUEUED'
              AND x.attempts < x.max_attempts
              AND (x.next_attempt_at IS NULL OR x.next_attempt_at <= now())
              AND x.id <> ALL (held)
            ORDER BY x.created_at LIMIT 1) oldest
        WHERE w.p IS NOT NULL AND coalesce(running.n, 0) < p_cap
        ORDER BY coalesce(running.n, 0), oldest.created_at
        LIMIT 1;
        IF picked IS NULL THEN
            RETURN;
        END IF;
        PERFORM 1 FROM exports l WHERE l.id = picked AND l.status = 'QUEUED'
            FOR UPDATE SKIP LOCKED;
        IF FOUND THEN
            RETURN QUERY
            UPDATE exports u SET status = 'IN_PROGRESS', attempts = u.attempts + 1,
                lease_token = p_token,
                lease_expires_at = now() + make_interval(secs => p_lease_secs),
                worker_id = p_worker, started_at = coalesce(u.started_at, now()),
                updated_at = now(), rows_written = 0, bytes_written = 0, next_attempt_at = NULL
            WHERE u.id = picked
            RETURNING u.id, u.attempts;
            RETURN;
        END IF;
        held := held || picked;
    END LOOP;
END
$$;

-- The claim and the claimed export's record in one call (a worker's round trip saved on every
-- export). The record is read by a statement of its own inside the function, after the claim:
-- a query joining the record to the claim from outside would read it with the snapshot its
-- statement began with, taken before the claim waited for the lock, and miss an export created
-- meanwhile — claimed, but never run (its lease would lapse first). `export` and `workflow` are
-- the tables' own row types, so the record follows the tables' columns; `workflow` is NULL for a
-- project's bundle, an import, or a workflow deleted since the export was asked for.
CREATE FUNCTION wharf_claim(
    p_worker text, p_lease_secs double precision, p_cap bigint, p_token uuid
) RETURNS TABLE (
    attempt integer, export exports, dock_status_id uuid, job_type text,
    run_executed_at timestamptz, run_row_count bigint, workflow workflows
)
LANGUAGE plpgsql VOLATILE ROWS 1 AS $$
#variable_conflict use_column
DECLARE
    picked uuid;
BEGIN
    SELECT c.export_id INTO picked FROM wharf_claim_next(p_worker, p_lease_secs, p_cap, p_token) c;
    IF picked IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT e.attempts, e, d.id, d.job_type, r.executed_at, r.row_count, w
    FROM exports e JOIN dock_statuses d ON d.export_id = e.id LEFT JOIN runs r ON r.id = e.run_id
        LEFT JOIN workflows w ON w.id = e.workflow_id AND w.project_id = e.project_id
    WHERE e.id = picked;
END
$$;
