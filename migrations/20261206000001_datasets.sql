-- Datasets: one export built by many workers as parts (API.md "Large exports").
--
-- The export's own job plans it (counts the selection, cuts it into files by `_id` or by
-- position in the export's order, groups the files into parts), inserts one job of kind 'part'
-- per part under it (`parent_id`), and waits: its job is WAITING, no lease, until the last part
-- to finish takes it again (RUNNING with a lease of its own) to write `manifest.json` and
-- complete the export, fenced like any completion. A finisher that dies leaves a lapsed lease:
-- the reconciler queues the export's job again and whoever claims it writes the manifest.
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('QUEUED', 'RUNNING', 'WAITING', 'SUCCEEDED', 'FAILED', 'CANCELLED'));

-- The files of a dataset, recorded by the part that wrote them, in the same transaction as the
-- part's success (fenced on its lease). `seq` is the manifest's order.
CREATE TABLE export_files (
    export_id   uuid NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
    seq         integer NOT NULL,
    path        text NOT NULL,
    part_id     uuid NOT NULL,
    object_key  text NOT NULL,
    row_count   bigint NOT NULL,
    size_bytes  bigint NOT NULL,
    sha256      text NOT NULL,
    partition   jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (export_id, seq),
    UNIQUE (export_id, path)
);

ALTER TABLE exports
    ADD COLUMN parts_total integer,
    ADD COLUMN parts_completed integer NOT NULL DEFAULT 0,
    -- When the files of a FAILED, CANCELLED or EXPIRED dataset were removed (the janitor's).
    ADD COLUMN files_removed_at timestamptz;

-- A part's attempt writes several objects: uploads are keyed by the job that wrote them (the
-- export's own, or a part's), its attempt and the object.
ALTER TABLE export_uploads ADD COLUMN job_id uuid;
UPDATE export_uploads SET job_id = export_id;
ALTER TABLE export_uploads ALTER COLUMN job_id SET NOT NULL;
ALTER TABLE export_uploads DROP CONSTRAINT export_uploads_pkey;
ALTER TABLE export_uploads ADD PRIMARY KEY (job_id, attempt, object_key);
CREATE INDEX export_uploads_export ON export_uploads (export_id);

-- The datasets whose files the janitor still has to remove.
CREATE INDEX exports_datasets_ended ON exports (id)
    WHERE parts_total IS NOT NULL AND files_removed_at IS NULL
        AND status IN ('FAILED', 'CANCELLED', 'EXPIRED');

-- Reads of runs may go to a streaming replica once it has replayed the run's commit: the
-- primary's WAL position right after the commit that stored the run (NULL: read the primary).
ALTER TABLE runs ADD COLUMN commit_lsn pg_lsn;

-- The claim, as before, and what a part needs: its parent (whose export record it hands out)
-- and its payload (the files it writes).
DROP FUNCTION wharf_claim(text, double precision, bigint, uuid);
CREATE FUNCTION wharf_claim(
    p_worker text, p_lease_secs double precision, p_cap bigint, p_token uuid
) RETURNS TABLE (
    job_kind text, attempt integer, max_attempts integer, export exports, dock_status_id uuid,
    job_type text,
    run_executed_at timestamptz, run_row_count bigint, workflow workflows,
    job_id uuid, job_parent uuid, job_payload jsonb, run_commit_lsn text
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
    SELECT j.kind, j.attempts, j.max_attempts, e, d.id, d.job_type, r.executed_at, r.row_count, w,
           j.id, j.parent_id, j.payload, r.commit_lsn::text
    FROM jobs j JOIN exports e ON e.id = coalesce(j.parent_id, j.id)
        JOIN dock_statuses d ON d.export_id = e.id
        LEFT JOIN runs r ON r.id = e.run_id
        LEFT JOIN workflows w ON w.id = e.workflow_id AND w.project_id = e.project_id
    WHERE j.id = picked;
END
$$;
