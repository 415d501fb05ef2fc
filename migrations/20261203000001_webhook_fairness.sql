-- Fair webhook delivery (issue 21): one delivery in flight per endpoint, across every worker
-- (`busy_until`, a lease the claim takes and the outcome clears), and an endpoint that keeps
-- failing is backed off as a whole (`failures` in a row, `paused_until`), so a dead receiver
-- costs one attempt per backoff, not one per queued event.
ALTER TABLE webhooks
    ADD COLUMN busy_until timestamptz,
    ADD COLUMN failures integer NOT NULL DEFAULT 0,
    ADD COLUMN paused_until timestamptz;

-- The claim finds an endpoint's oldest due delivery by this.
CREATE INDEX webhook_deliveries_due_by_hook ON webhook_deliveries (webhook_id, next_attempt_at)
    WHERE state = 'PENDING';
