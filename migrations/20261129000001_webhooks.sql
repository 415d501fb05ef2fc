-- Webhooks (API.md, "Webhooks"): a project's endpoints, and one delivery row per event and
-- endpoint. The deliveries of an event are written by the trigger that reports the state change,
-- in its transaction (an outbox): at least once, whatever happens to the process afterwards.
CREATE TABLE webhooks (
    id          uuid PRIMARY KEY,
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    url         text NOT NULL,
    events      text[] NOT NULL,
    -- HMAC key of the signatures; shown once, at creation
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE INDEX webhooks_project ON webhooks (project_id) WHERE deleted_at IS NULL;

CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY,
    -- the event's id: the same for every endpoint and every attempt (receivers dedupe by it)
    event_id         uuid NOT NULL,
    webhook_id       uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    project_id       uuid NOT NULL,
    event_type       text NOT NULL,
    job_id           uuid NOT NULL,
    state            text NOT NULL DEFAULT 'PENDING' CHECK (state IN ('PENDING', 'DELIVERED', 'DEAD')),
    attempts         integer NOT NULL DEFAULT 0,
    last_status      integer,
    last_error       text,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'PENDING';
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (webhook_id, created_at DESC);

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
        INSERT INTO webhook_deliveries (id, event_id, webhook_id, project_id, event_type, job_id)
        SELECT gen_random_uuid(), evid, w.id, NEW.project_id, ev, NEW.id
        FROM webhooks w
        WHERE w.project_id = NEW.project_id AND w.deleted_at IS NULL AND ev = ANY (w.events);
        IF FOUND THEN
            PERFORM pg_notify('wharf_webhooks', '');
        END IF;
    END IF;
    RETURN NULL;
END $$;
