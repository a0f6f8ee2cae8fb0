-- Every long operation is a job: persisted, visible with its steps, cancellable.
CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY,
    -- deploy | rollback | restart | start
    kind         TEXT    NOT NULL,
    -- Names, not ids: a job stays readable after its environment is deleted.
    app          TEXT    NOT NULL,
    env          TEXT    NOT NULL,
    actor        TEXT    NOT NULL,
    -- queued | running | succeeded | failed | cancelled | interrupted
    state        TEXT    NOT NULL,
    request      TEXT,
    release_id   INTEGER,
    -- JSON array of the steps as they ended (the event file has every change).
    steps        TEXT    NOT NULL DEFAULT '[]',
    error        TEXT,
    log_tail     TEXT    NOT NULL DEFAULT '[]',
    url          TEXT,
    created_at   INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER
);

CREATE INDEX jobs_by_target ON jobs (app, env, id);
CREATE INDEX jobs_by_state ON jobs (state);

-- The job (a deploy) that created a release.
ALTER TABLE releases ADD COLUMN job_id INTEGER;

-- Stopped on purpose (`turnout env stop`): not started again at the daemon's start-up.
ALTER TABLE environments ADD COLUMN stopped INTEGER NOT NULL DEFAULT 0;
