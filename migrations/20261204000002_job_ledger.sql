-- One job ledger. Until now the `exports` table was both the record of an export (what was
-- asked, its status, its file) and the ledger of the work that builds it (attempts, lease,
-- retry time, queue push), for exports, bundles and imports alike. The work moves to `jobs`, a
-- table that knows no job kind's columns: kind, a typed payload, status, attempts, the lease
-- that fences every write, the project (for the fair claim), the time it is due and a parent
-- (for the parts of one export). The domain record stays in `exports`, one job per export,
-- bundle or import, under the same id (so every existing link, download, idempotency key and
-- dock status keeps working: the rows keep their ids).
--
-- Job states: QUEUED (waiting, due at `due_at`), RUNNING (leased until `lease_expires_at`),
-- SUCCEEDED, FAILED, CANCELLED. The domain status of an export (QUEUED, IN_PROGRESS,
-- COMPLETED, FAILED, CANCELLED, EXPIRED) is changed in the same statement as its job's.

CREATE TABLE jobs (
    id                uuid PRIMARY KEY,
    -- 'export', 'bundle', 'import' (shared/src/jobs.rs: JobKind; checked there, not here, so a
    -- new kind needs no migration)
    kind              text NOT NULL,
    project_id        uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    parent_id         uuid REFERENCES jobs (id) ON DELETE CASCADE,
    payload           jsonb NOT NULL DEFAULT '{}',
    status            text NOT NULL DEFAULT 'QUEUED'
                      CHECK (status IN ('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    attempts          integer NOT NULL DEFAULT 0,
    max_attempts      integer NOT NULL DEFAULT 5,
    lease_token       uuid,
    lease_expires_at  timestamptz,
    worker_id         text,
    due_at            timestamptz,
    enqueued_at       timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Every export, bundle and import of the installation, with its work's state as it stands.
INSERT INTO jobs (id, kind, project_id, payload, status, attempts, max_attempts, lease_token,
                  lease_expires_at, worker_id, due_at, enqueued_at, created_at, updated_at)
SELECT e.id,
       CASE WHEN e.kind = 'import' THEN 'import'
            WHEN e.scope <> 'table' THEN 'bundle' ELSE 'export' END,
       e.project_id, jsonb_build_object('exportId', e.id),
       CASE e.status WHEN 'QUEUED' THEN 'QUEUED' WHEN 'IN_PROGRESS' THEN 'RUNNING'
            WHEN 'COMPLETED' THEN 'SUCCEEDED' WHEN 'EXPIRED' THEN 'SUCCEEDED'
            WHEN 'CANCELLED' THEN 'CANCELLED' ELSE 'FAILED' END,
       e.attempts, e.max_attempts, e.lease_token, e.lease_expires_at, e.worker_id,
       e.next_attempt_at, e.enqueued_at, e.created_at, e.updated_at
FROM exports e;

-- The domain record points to its job (same id) and no longer carries the work's columns.
ALTER TABLE exports ADD CONSTRAINT exports_job FOREIGN KEY (id) REFERENCES jobs (id)
    DEFERRABLE INITIALLY DEFERRED;

-- The claim reads only the ledger: the projects with due work (a loose index scan), each one's
-- oldest due job, the running counts by project.
CREATE INDEX jobs_queued_by_project ON jobs (project_id, created_at) WHERE status = 'QUEUED';
CREATE INDEX jobs_running ON jobs (project_id) WHERE status = 'RUNNING';
-- The reconciler's scans.
CREATE INDEX jobs_active ON jobs (status, lease_expires_at) WHERE status IN ('QUEUED', 'RUNNING');
CREATE INDEX jobs_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL;

-- The claim functions, rewritten on the ledger (same names and the shape this version's
-- workers read; the previous version's workers stop at the first rolling-upgrade step, as the
-- columns they claimed by are gone).
DROP FUNCTION wharf_claim(text, double precision, bigint, uuid);
DROP FUNCTION wharf_claim_next(text, double precision, bigint, uuid);
DROP INDEX exports_queued_by_project;
DROP INDEX exports_active;

ALTER TABLE exports
    DROP COLUMN attempts,
    DROP COLUMN max_attempts,
    DROP COLUMN lease_token,
    DROP COLUMN lease_expires_at,
    DROP COLUMN worker_id,
    DROP COLUMN next_attempt_at,
    DROP COLUMN enqueued_at;
CREATE INDEX exports_queued ON exports (project_id, id) WHERE status = 'QUEUED';

-- Picks the next job fairly (the oldest due job of the project with the fewest running, among
-- projects below `p_cap`), leases it to `p_token`, and marks its export IN_PROGRESS, in one
-- call under the advisory lock that makes claims take turns (so a cap is never overshot).
CREATE FUNCTION wharf_claim_next(
    p_worker text, p_lease_secs double precision, p_cap bigint, p_token uuid
) RETURNS TABLE (job_id uuid, attempt integer)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    picked uuid;
    got integer;
    -- Jobs whose row another transaction holds (a cancel, the reconciler): passed over.
    held uuid[] := '{}';
BEGIN
    PERFORM pg_advisory_xact_lock(7);
    FOR tries IN 1..4 LOOP
        WITH RECURSIVE waiting(p) AS (
            (SELECT q.project_id FROM jobs q WHERE q.status = 'QUEUED'
             ORDER BY q.project_id LIMIT 1)
            UNION ALL
            SELECT (SELECT q.project_id FROM jobs q
                    WHERE q.status = 'QUEUED' AND q.project_id > w.p
                    ORDER BY q.project_id LIMIT 1)
            FROM waiting w WHERE w.p IS NOT NULL
        ), running AS (
            SELECT r.project_id, count(*) AS n FROM jobs r
            WHERE r.status = 'RUNNING' AND r.lease_expires_at > now()
            GROUP BY r.project_id
        )
        SELECT oldest.id INTO picked
        FROM waiting w
        LEFT JOIN running ON running.project_id = w.p
        CROSS JOIN LATERAL (
            SELECT x.id, x.created_at FROM jobs x
            WHERE x.project_id = w.p AND x.status = 'QUEUED'
              AND x.attempts < x.max_attempts
              AND (x.due_at IS NULL OR x.due_at <= now())
              AND x.id <> ALL (held)
            ORDER BY x.created_at LIMIT 1) oldest
        WHERE w.p IS NOT NULL AND coalesce(running.n, 0) < p_cap
        ORDER BY coalesce(running.n, 0), oldest.created_at
        LIMIT 1;
        IF picked IS NULL THEN
            RETURN;
        END IF;
        PERFORM 1 FROM jobs l WHERE l.id = picked AND l.status = 'QUEUED'
            FOR UPDATE SKIP LOCKED;
        IF FOUND THEN
            UPDATE jobs u SET status = 'RUNNING', attempts = u.attempts + 1,
                lease_token = p_token,
                lease_expires_at = now() + make_interval(secs => p_lease_secs),
                worker_id = p_worker, updated_at = now(), due_at = NULL
            WHERE u.id = picked
            RETURNING u.attempts INTO got;
            UPDATE exports e SET status = 'IN_PROGRESS', started_at = coalesce(e.started_at, now()),
                updated_at = now(), rows_written = 0, bytes_written = 0
            WHERE e.id = picked;
            job_id := picked;
            attempt := got;
            RETURN NEXT;
            RETURN;
        END IF;
        held := held || picked;
    END LOOP;
END
$$;

-- The claim and the claimed job's kind, its export record, its lease, and its workflow in one
-- call (the record read by a statement of its own after the claim, so it sees the claim's
-- snapshot). The worker runs the job by its ledger kind.
CREATE FUNCTION wharf_claim(
    p_worker text, p_lease_secs double precision, p_cap bigint, p_token uuid
) RETURNS TABLE (
    job_kind text, attempt integer, max_attempts integer, export exports, dock_status_id uuid,
    job_type text,
    run_executed_at timestamptz, run_row_count bigint, workflow workflows
)
LANGUAGE plpgsql VOLATILE ROWS 1 AS $$
#variable_conflict use_column
DECLARE
    picked uuid;
BEGIN
    SELECT c.job_id INTO picked FROM wharf_claim_next(p_worker, p_lease_secs, p_cap, p_token) c;
    IF picked IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT j.kind, j.attempts, j.max_attempts, e, d.id, d.job_type, r.executed_at, r.row_count, w
    FROM jobs j JOIN exports e ON e.id = j.id JOIN dock_statuses d ON d.export_id = e.id
        LEFT JOIN runs r ON r.id = e.run_id
        LEFT JOIN workflows w ON w.id = e.workflow_id AND w.project_id = e.project_id
    WHERE j.id = picked;
END
$$;
