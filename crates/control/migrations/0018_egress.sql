-- Each tier's outbound policy and the log of outbound requests.
-- An app's policy for a tier's environments (`turnout egress policy APP --tier T …`), over the
-- built-in default (production: allow; the others: deny, nothing listed). `hosts`: the
-- allow-list, one host pattern a line, as `turnout_model::HostPattern` shows them.
CREATE TABLE egress_policies (
    app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    tier   TEXT    NOT NULL,
    mode   TEXT    NOT NULL CHECK (mode IN ('allow', 'deny', 'record')),
    hosts  TEXT    NOT NULL DEFAULT '',
    set_by TEXT    NOT NULL,
    set_at INTEGER NOT NULL,
    PRIMARY KEY (app_id, tier)
);
-- What each environment called through the egress proxy (the newest 10,000 per environment
-- are kept). `path` never holds the query string. `at_ms`: unix milliseconds.
CREATE TABLE egress_log (
    id          INTEGER PRIMARY KEY,
    env_id      INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    at_ms       INTEGER NOT NULL,
    method      TEXT    NOT NULL,
    host        TEXT    NOT NULL,
    port        INTEGER NOT NULL,
    path        TEXT    NOT NULL,
    decision    TEXT    NOT NULL CHECK (decision IN ('allowed', 'denied', 'would-deny')),
    status      INTEGER NOT NULL,
    bytes_up    INTEGER NOT NULL,
    bytes_down  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    error       TEXT
);
CREATE INDEX egress_log_env ON egress_log (env_id, id);
