-- Domains and the history of their bindings (what rollback walks back through).
CREATE TABLE domains (
    id                   INTEGER PRIMARY KEY,
    name                 TEXT    NOT NULL UNIQUE,
    -- No cascade: an environment that serves a domain cannot be deleted until the domain moves.
    env_id               INTEGER NOT NULL REFERENCES environments(id),
    -- NULL when the domain is not in maintenance.
    maintenance_message  TEXT,
    created_at           INTEGER NOT NULL
);

CREATE TABLE domain_history (
    id         INTEGER PRIMARY KEY,
    domain_id  INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    -- add | switch | rollback | maintenance-on | maintenance-off
    action     TEXT    NOT NULL,
    -- Environment names, kept as text so the history outlives the environments.
    from_env   TEXT,
    to_env     TEXT,
    actor      TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    -- An add or switch that a rollback has undone; rollback walks the ones still 0.
    undone     INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX domain_history_by_domain ON domain_history (domain_id, id);
