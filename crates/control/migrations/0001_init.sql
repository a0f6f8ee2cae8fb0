-- Apps, their environments and the releases deployed into them.
CREATE TABLE apps (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    repo        TEXT    NOT NULL,
    token_env   TEXT,
    created_at  INTEGER NOT NULL
);

CREATE TABLE environments (
    id                  INTEGER PRIMARY KEY,
    app_id              INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    name                TEXT    NOT NULL,
    branch              TEXT    NOT NULL,
    tier                TEXT    NOT NULL,
    -- The release that serves the environment; NULL until the first successful deploy.
    current_release_id  INTEGER REFERENCES releases(id) ON DELETE SET NULL,
    created_at          INTEGER NOT NULL,
    UNIQUE (app_id, name)
);

CREATE TABLE releases (
    id            INTEGER PRIMARY KEY,
    env_id        INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    commit_sha    TEXT    NOT NULL,
    git_ref       TEXT    NOT NULL,
    dir           TEXT    NOT NULL,
    -- The resolved turnout.toml (JSON), so a restart runs exactly what was deployed.
    config        TEXT    NOT NULL,
    -- building | live | failed | superseded
    status        TEXT    NOT NULL,
    reused_build  INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    created_at    INTEGER NOT NULL,
    finished_at   INTEGER
);

CREATE INDEX releases_by_env ON releases (env_id, id);
