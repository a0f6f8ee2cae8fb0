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
-- The port on 127.0.0.1 at which an environment reaches a link's counterpart (a listener of the
-- data plane inside the environment's namespace, or on the host's loopback where environments
-- share the host's network, routed as whatever the link resolves to now). One per link and
-- linking environment, kept for their life, so the URL an instance was given stays valid when
-- the counterpart changes; removed with either.
CREATE TABLE link_ports (
    link_id INTEGER NOT NULL REFERENCES links(id) ON DELETE CASCADE,
    env_id  INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    port    INTEGER NOT NULL UNIQUE CHECK (port BETWEEN 1 AND 65535),
    PRIMARY KEY (link_id, env_id)
);
