-- Each environment's data service (`turnout data …`): its engine, the generation serving now
-- (every seed, clone or sync writes generation N+1 beside N, then swaps), the PostgreSQL
-- cluster of that generation (the JSON of `turnout_data::postgres::ClusterSpec`, passwords
-- included: the store is the daemon's alone), and where the data came from.
CREATE TABLE env_data (
    env_id       INTEGER PRIMARY KEY REFERENCES environments(id) ON DELETE CASCADE,
    engine       TEXT    NOT NULL,
    generation   INTEGER NOT NULL CHECK (generation >= 1),
    cluster      TEXT,
    -- empty | seed | clone | sync
    origin_kind  TEXT    NOT NULL,
    -- APP/ENV copied from (clone, sync)
    origin_from  TEXT,
    origin_at    INTEGER NOT NULL,
    origin_job   INTEGER
);

-- The key of an app's masking pseudonyms (64 hex digits), made on first use.
CREATE TABLE app_mask_keys (
    app_id  INTEGER PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE,
    key     TEXT    NOT NULL
);

-- `turnout data attach ENV --to OTHER`: ENV's processes get VAR, a URL of OTHER's database
-- whose credentials (a role of its own on PostgreSQL) allow `mode` only.
CREATE TABLE data_attachments (
    env_id      INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    to_env_id   INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    mode        TEXT    NOT NULL,
    var         TEXT    NOT NULL,
    role        TEXT    NOT NULL,
    password    TEXT    NOT NULL,
    created_by  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (env_id, to_env_id),
    UNIQUE (env_id, var)
);
CREATE INDEX data_attachments_to ON data_attachments (to_env_id);
