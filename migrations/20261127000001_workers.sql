-- Live workers, for operators (GET /ops): each worker process upserts its row every few
-- seconds and deletes it when it stops; one not seen for 30 s is not live.
CREATE TABLE workers (
    id           text PRIMARY KEY,
    host         text NOT NULL,
    concurrency  integer NOT NULL,
    running      integer NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now()
);
-- Recent failures and exports per minute (GET /ops).
CREATE INDEX exports_finished ON exports (completed_at) WHERE completed_at IS NOT NULL;
