-- Scheduled re-seeding (`[data] reseed = "CRON"` in turnout.toml): the schedule each
-- environment's live release declared when the scheduler last looked, and the last tick it
-- handled. A schedule seen for the first time (or changed) starts from that moment, so a new
-- schedule never fires for ticks before it was deployed.
CREATE TABLE data_reseeds (
    env_id       INTEGER PRIMARY KEY REFERENCES environments(id) ON DELETE CASCADE,
    cron         TEXT    NOT NULL,
    tz           TEXT    NOT NULL,
    last_tick    INTEGER NOT NULL,
    last_result  TEXT,
    last_job     INTEGER
);
