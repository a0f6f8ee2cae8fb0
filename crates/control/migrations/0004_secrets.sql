-- Per-environment secrets, given to the app's instances as environment variables.
CREATE TABLE secrets (
    env_id      INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    key         TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL,
    updated_by  TEXT    NOT NULL,
    PRIMARY KEY (env_id, key)
);
