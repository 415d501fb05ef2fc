-- An attempt writes one object; the write is recorded before it starts, keyed by the attempt.
-- `write_token` names the partial state the store announced (an S3 multipart upload id, a
-- temporary file of the directory store), NULL when the store left none; the janitor abandons
-- it and deletes the object of any attempt that ended without completing.
DELETE FROM export_uploads a USING export_uploads b
    WHERE a.export_id = b.export_id AND a.attempt = b.attempt AND a.ctid < b.ctid;
ALTER TABLE export_uploads DROP CONSTRAINT export_uploads_pkey;
ALTER TABLE export_uploads RENAME COLUMN upload_id TO write_token;
ALTER TABLE export_uploads ALTER COLUMN write_token DROP NOT NULL;
UPDATE export_uploads SET write_token = NULL WHERE write_token LIKE 'put:%';
ALTER TABLE export_uploads ADD PRIMARY KEY (export_id, attempt);
