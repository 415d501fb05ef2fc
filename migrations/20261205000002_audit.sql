-- The audit log (API.md, "Audit"): who did what, per project, newest first. Written by the API
-- off the request's path (a bounded buffer flushed in batches, and on a clean stop), read by
-- admins, removed after WHARF_AUDIT_TTL by the workers' janitor.
CREATE TABLE audit_events (
    -- UUIDv7: time-ordered, so it is also the page cursor
    id          uuid PRIMARY KEY,
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL,
    -- export.created, export.cancelled, export.downloaded, import.created, key.created,
    -- key.revoked, webhook.created, webhook.deleted (repo::audit::TYPES)
    type        text NOT NULL,
    -- the key's prefix (wk_…), "signed link", or "admin token"
    actor       text NOT NULL,
    export_id   uuid,
    -- downloads: stream, redirect (302 to the store), signed link
    route       text,
    bytes       bigint,
    range       text,
    client      text,
    -- what else the event names (a key's or webhook's id)
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_by_project ON audit_events (project_id, id DESC);
CREATE INDEX audit_events_by_time ON audit_events (at);
