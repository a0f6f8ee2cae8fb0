-- Users, tokens, roles, policies, approvals, protected internal URLs, and the audit log.
CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

-- Only a hash of each token is kept; the token itself is shown once, when it is created.
CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    hash        TEXT    NOT NULL UNIQUE,
    -- The first characters of the token, so a user can tell their tokens apart.
    prefix      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);

-- A role on one app, or on every app (app_id NULL: the owner the first `serve` creates).
CREATE TABLE grants (
    id       INTEGER PRIMARY KEY,
    user_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    app_id   INTEGER REFERENCES apps(id) ON DELETE CASCADE,
    role     TEXT    NOT NULL,
    UNIQUE (user_id, app_id)
);

-- An app's changes to the default matrix: the role `action` needs on `tier`.
CREATE TABLE policies (
    app_id  INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    action  TEXT    NOT NULL,
    tier    TEXT    NOT NULL,
    role    TEXT    NOT NULL,
    PRIMARY KEY (app_id, action, tier)
);

-- Which actions on which tier of an app need a second owner's approval, and for how long a
-- request waits.
CREATE TABLE approval_rules (
    app_id      INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    tier        TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    expires_s   INTEGER NOT NULL,
    PRIMARY KEY (app_id, tier, action)
);

CREATE TABLE approvals (
    id            INTEGER PRIMARY KEY,
    app_id        INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    action        TEXT    NOT NULL,
    -- What to run once approved (JSON), and a line saying it for people.
    request       TEXT    NOT NULL,
    summary       TEXT    NOT NULL,
    requested_by  TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    -- pending | approved | rejected | expired
    status        TEXT    NOT NULL,
    decided_by    TEXT,
    decided_at    INTEGER,
    result        TEXT
);

-- Internal URLs that need a login: a whole app (tier NULL) or one tier of it.
CREATE TABLE protections (
    app_id  INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    tier    TEXT    NOT NULL DEFAULT '*',
    PRIMARY KEY (app_id, tier)
);

-- Append-only and tamper-evident: each entry carries the hash of the one before it.
CREATE TABLE audit (
    id         INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    actor      TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    app        TEXT,
    env        TEXT,
    domain     TEXT,
    from_value TEXT,
    to_value   TEXT,
    result     TEXT    NOT NULL,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL
);
CREATE INDEX audit_by_app ON audit (app, id);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
