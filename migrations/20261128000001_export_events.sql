-- Long polls (GET /v1/exports/{id}?wait=N) hear of an export reaching a final status through
-- one LISTEN per API process: every path that finishes an export (completion, failure, cancel,
-- the reconciler, retention) changes `status`, so one trigger covers them all, and the
-- notification is delivered when the change commits.
CREATE FUNCTION wharf_export_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('wharf_export_done', NEW.id::text);
    RETURN NULL;
END $$;

CREATE TRIGGER exports_finished AFTER UPDATE OF status ON exports
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('COMPLETED', 'FAILED', 'CANCELLED', 'EXPIRED'))
    EXECUTE FUNCTION wharf_export_finished();
