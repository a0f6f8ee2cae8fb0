-- An app's declared pipeline (`turnout pipeline set`): its stages and allowed promotions, as the
-- JSON of `turnout_model::PipelineSpec`. No row: promotions follow the tier rule.
CREATE TABLE pipelines (
    app_id      INTEGER PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE,
    spec        TEXT    NOT NULL,
    updated_by  TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Scheduled cuts: promote from_env to to_env at every tick of `cron` in time zone `tz`, as the
-- user who made the schedule (with the rights they hold when it runs). `last_tick` is the last
-- tick handled (Unix seconds; the creation time at first): after downtime, every tick missed
-- since then is handled by one run.
CREATE TABLE pipeline_schedules (
    id           INTEGER PRIMARY KEY,
    app_id       INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    from_env     TEXT    NOT NULL,
    to_env       TEXT    NOT NULL,
    cron         TEXT    NOT NULL,
    tz           TEXT    NOT NULL,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_by   TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_tick    INTEGER NOT NULL,
    last_result  TEXT,
    last_job_id  INTEGER,
    -- The approval request the last cut waits for, when it was parked.
    last_approval_id  INTEGER
);
CREATE INDEX pipeline_schedules_by_app ON pipeline_schedules (app_id);
