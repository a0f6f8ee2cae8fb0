-- Apps wired together stage by stage (`turnout link APP OTHER [--as NAME] [--default ENV]`):
-- each environment of the app gets `var` (NAME_URL) naming the environment of `other_id` at its
-- stage. `default_env`: OTHER's environment for those no rule resolves (a name: it may be
-- created later). Both apps' deletions remove the link.
CREATE TABLE links (
    id          INTEGER PRIMARY KEY,
    app_id      INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    other_id    INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    var         TEXT    NOT NULL,
    default_env TEXT,
    created_by  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    CHECK (app_id <> other_id),
    UNIQUE (app_id, var)
);
CREATE INDEX links_by_other ON links (other_id);
-- The port on 127.0.0.1 at which an environment is reached through links (a listener of the
-- data plane inside each linking environment's namespace, or on the host's loopback where
-- environments share the host's network). Kept for the environment's life, so the URL an
-- instance was given stays valid; removed with it.
CREATE TABLE link_ports (
    env_id INTEGER PRIMARY KEY REFERENCES environments(id) ON DELETE CASCADE,
    port   INTEGER NOT NULL UNIQUE CHECK (port BETWEEN 1 AND 65535)
);
