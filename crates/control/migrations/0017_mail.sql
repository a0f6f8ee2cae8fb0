-- Mail caught from environments below production, and each tier's relay opt-in.

-- Every message the catcher accepted, as the app sent it. Bounded per environment (the newest
-- kept within a count and a byte budget; see `store::mail::trim`).
CREATE TABLE mail (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    env_id       INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    -- unix seconds
    received_at  INTEGER NOT NULL,
    -- the SMTP envelope (MAIL FROM, every RCPT TO as a JSON array)
    mail_from    TEXT    NOT NULL,
    recipients   TEXT    NOT NULL,
    -- the Subject header, decoded ('' when none)
    subject      TEXT    NOT NULL,
    size         INTEGER NOT NULL,
    raw          BLOB    NOT NULL,
    -- what the relay did with it, JSON (`turnout_model::RelayOutcome`): off, pending,
    -- skipped, relayed or failed
    relay        TEXT    NOT NULL
);
-- With the size, so the trim after each insert walks this index alone, never the messages.
CREATE INDEX mail_env ON mail(env_id, id, size);

-- A tier's opt-in to pass mail on to a real server, only for the allow-listed domains.
-- No row: nothing is relayed (the default for every tier). Production never has one.
CREATE TABLE mail_relays (
    app_id     INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    tier       TEXT    NOT NULL,
    -- the relay's URL sealed by the vault under the name `mail-relay/<app_id>/<tier>`
    url        BLOB    NOT NULL,
    -- the URL with its password removed, for display
    url_shown  TEXT    NOT NULL,
    -- JSON array of lower-case domain names
    domains    TEXT    NOT NULL,
    set_by     TEXT    NOT NULL,
    set_at     INTEGER NOT NULL,
    PRIMARY KEY (app_id, tier)
);
