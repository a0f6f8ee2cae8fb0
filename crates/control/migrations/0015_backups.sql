-- Backups (`turnout backup …`): the catalog of every environment's snapshots. The snapshot's
-- content (chunks and manifest) lives in the app's backup repository under
-- `<home>/backups/<app>/`, named by `repo_name`; this table is what the API lists and what the
-- retention algorithm reads.
CREATE TABLE backups (
    -- never reused (a repository name `b<ID>` names one snapshot for good, even after its
    -- row went with its environment)
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    env_id        INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    -- sqlite | postgres
    engine        TEXT    NOT NULL,
    -- the data generation it was taken of
    generation    INTEGER NOT NULL,
    -- the manifest's name in the repository (unique per app)
    repo_name     TEXT    NOT NULL,
    -- scheduled | manual | pre-migrate | reset
    kind          TEXT    NOT NULL,
    label         TEXT,
    pinned        INTEGER NOT NULL DEFAULT 0,
    -- writing | ready | failed
    state         TEXT    NOT NULL,
    -- when its content was read (the point it restores to), unix seconds
    taken_at      INTEGER NOT NULL,
    completed_at  INTEGER,
    -- the release live when it was taken (code to restore with it)
    release_id    INTEGER,
    commit_sha    TEXT,
    logical_bytes INTEGER NOT NULL DEFAULT 0,
    stored_bytes  INTEGER NOT NULL DEFAULT 0,
    -- PostgreSQL: the cluster spec it was taken of (JSON; roles and passwords of the source,
    -- needed to make a restored copy safe) and its WAL stream in the repository
    cluster       TEXT,
    wal_stream    TEXT,
    -- PostgreSQL: the first WAL segment of the stream its restore needs (what WAL pruning
    -- keeps from, for the oldest kept base backup)
    wal_start     TEXT,
    -- the latest verification: when, and its result (NULL = passed)
    verifying     INTEGER NOT NULL DEFAULT 0,
    verified_at   INTEGER,
    verify_error  TEXT,
    job_id        INTEGER,
    created_by    TEXT    NOT NULL
);
CREATE INDEX backups_env ON backups (env_id, taken_at);

-- `turnout backup policy APP/ENV`: a schedule set through the CLI, which wins over
-- turnout.toml's `[backup]` and the tier's default. `schedule` is a JSON array of periods in
-- seconds (empty: no scheduled backups).
CREATE TABLE backup_policies (
    env_id      INTEGER PRIMARY KEY REFERENCES environments(id) ON DELETE CASCADE,
    schedule    TEXT    NOT NULL,
    set_by      TEXT    NOT NULL,
    set_at      INTEGER NOT NULL
);

-- `turnout drill`: each recovery drill's result, kept and shown in `backup list`.
CREATE TABLE drills (
    id           INTEGER PRIMARY KEY,
    env_id       INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    job_id       INTEGER,
    target_at    INTEGER NOT NULL,
    backup_id    INTEGER,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    -- running | passed | failed
    state        TEXT    NOT NULL,
    rto_ms       INTEGER,
    rpo_secs     INTEGER,
    error        TEXT
);
CREATE INDEX drills_env ON drills (env_id, started_at);

-- `turnout data reset APP/production-copy`: the pinned snapshot the last reset left, which
-- `turnout data undo` restores, with the release the reset ran.
CREATE TABLE data_resets (
    env_id      INTEGER PRIMARY KEY REFERENCES environments(id) ON DELETE CASCADE,
    backup_id   INTEGER NOT NULL REFERENCES backups(id) ON DELETE CASCADE,
    release_id  INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    target_at   INTEGER NOT NULL
);
