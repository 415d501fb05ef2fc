-- Webhook deliveries on the job ledger. Each delivery (one event to one endpoint) is a job of
-- kind 'webhook' under the delivery's id: its attempts, lease, due time and state live in
-- `jobs`, with the same claim lease, fenced outcome and lapsed-lease reconciler as every other
-- kind. `webhook_deliveries` keeps the domain record: which event went to which endpoint, what
-- the receiver last answered, when it was delivered, and the state the API shows (PENDING,
-- DELIVERED, DEAD).
--
-- Webhook jobs are claimed by endpoint (one in flight per endpoint, paused endpoints passed
-- over: `repo::webhooks::claim_due`), not by the export claim, and are never pushed to the
-- queue: the export claim, its indexes and the reconciler's re-push pass leave kind 'webhook'
-- out.

INSERT INTO jobs (id, kind, project_id, payload, status, attempts, max_attempts, due_at,
                  created_at, updated_at)
SELECT d.id, 'webhook', d.project_id, jsonb_build_object('deliveryId', d.id),
       CASE d.state WHEN 'DELIVERED' THEN 'SUCCEEDED' WHEN 'DEAD' THEN 'FAILED' ELSE 'QUEUED' END,
       d.attempts, 1000, d.next_attempt_at, d.created_at, coalesce(d.delivered_at, d.created_at)
FROM webhook_deliveries d
WHERE EXISTS (SELECT 1 FROM projects p WHERE p.id = d.project_id);
DELETE FROM webhook_deliveries d WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = d.id);

ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_job FOREIGN KEY (id)
    REFERENCES jobs (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED;
DROP INDEX webhook_deliveries_due;
DROP INDEX webhook_deliveries_due_by_hook;
ALTER TABLE webhook_deliveries DROP COLUMN attempts, DROP COLUMN next_attempt_at;
-- The claim finds an endpoint's pending deliveries by this, and their due time in `jobs`.
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook_id) WHERE state = 'PENDING';
CREATE INDEX jobs_webhooks_due ON jobs (due_at) WHERE kind = 'webhook' AND status = 'QUEUED';

-- The export claim's indexes, without webhook jobs (a dead receiver's backlog must cost the
-- export claim nothing).
DROP INDEX jobs_queued_by_project;
DROP INDEX jobs_running;
CREATE INDEX jobs_queued_by_project ON jobs (project_id, created_at)
    WHERE status = 'QUEUED' AND kind <> 'webhook';
CREATE INDEX jobs_running ON jobs (project_id) WHERE status = 'RUNNING' AND kind <> 'webhook';

-- The outbox: the deliveries of an event are written, job first, in the transaction of the
-- state change that is the event.
CREATE OR REPLACE FUNCTION wharf_export_finished() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ev text;
    evid uuid := gen_random_uuid();
BEGIN
    PERFORM pg_notify('wharf_export_done', NEW.id::text);
    ev := CASE
        WHEN NEW.kind = 'import' AND NEW.status = 'COMPLETED' THEN 'import.completed'
        WHEN NEW.kind = 'import' AND NEW.status = 'FAILED' THEN 'import.failed'
        WHEN NEW.kind = 'export' AND NEW.status = 'COMPLETED' THEN 'export.completed'
        WHEN NEW.kind = 'export' AND NEW.status = 'FAILED' THEN 'export.failed'
        WHEN NEW.kind = 'export' AND NEW.status = 'EXPIRED' THEN 'export.expired'
    END;
    IF ev IS NOT NULL THEN
        WITH hooks AS (
            SELECT gen_random_uuid() AS id, w.id AS webhook_id FROM webhooks w
            WHERE w.project_id = NEW.project_id AND w.deleted_at IS NULL AND ev = ANY (w.events)
        ), job AS (
            INSERT INTO jobs (id, kind, project_id, payload, max_attempts, due_at)
            SELECT h.id, 'webhook', NEW.project_id, jsonb_build_object('deliveryId', h.id),
                   1000, now()
            FROM hooks h RETURNING id
        )
        INSERT INTO webhook_deliveries (id, event_id, webhook_id, project_id, event_type, job_id)
        SELECT h.id, evid, h.webhook_id, NEW.project_id, ev, NEW.id
        FROM hooks h WHERE h.id IN (SELECT id FROM job);
        IF FOUND THEN
            PERFORM pg_notify('wharf_webhooks', '');
        END IF;
    END IF;
    RETURN NULL;
END $$;

-- The export claim, as before, over every kind but 'webhook'.
CREATE OR REPLACE FUNCTION wharf_claim_next(
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
            (SELECT q.project_id FROM jobs q WHERE q.status = 'QUEUED' AND q.kind <> 'webhook'
             ORDER BY q.project_id LIMIT 1)
            UNION ALL
            SELECT (SELECT q.project_id FROM jobs q
                    WHERE q.status = 'QUEUED' AND q.kind <> 'webhook' AND q.project_id > w.p
                    ORDER BY q.project_id LIMIT 1)
            FROM waiting w WHERE w.p IS NOT NULL
        ), running AS (
            SELECT r.project_id, count(*) AS n FROM jobs r
            WHERE r.status = 'RUNNING' AND r.kind <> 'webhook' AND r.lease_expires_at > now()
            GROUP BY r.project_id
        )
        SELECT oldest.id INTO picked
        FROM waiting w
        LEFT JOIN running ON running.project_id = w.p
        CROSS JOIN LATERAL (
            SELECT x.id, x.created_at FROM jobs x
            WHERE x.project_id = w.p AND x.status = 'QUEUED' AND x.kind <> 'webhook'
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
