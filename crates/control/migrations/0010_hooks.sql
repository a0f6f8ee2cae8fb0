-- GitHub and GitLab webhooks: one secret per app and provider, and the deliveries already
-- accepted (so a replay changes nothing).
CREATE TABLE hooks (
    app_id      INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    provider    TEXT    NOT NULL CHECK (provider IN ('github', 'gitlab')),
    -- Exactly one of: the secret itself, or the daemon's environment variable holding it.
    secret      TEXT,
    secret_env  TEXT,
    -- The hook deploys as this user (who set the secret), with the user's current roles.
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (app_id, provider),
    CHECK ((secret IS NULL) <> (secret_env IS NULL))
);

-- Accepted deliveries, by the provider's delivery id and by the hash of the signed body (a
-- replayed body under a new, unsigned delivery id is refused too). Pruned by age.
CREATE TABLE hook_deliveries (
    app_id       INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    provider     TEXT    NOT NULL,
    delivery     TEXT    NOT NULL,
    body_hash    TEXT    NOT NULL,
    received_at  INTEGER NOT NULL,
    PRIMARY KEY (app_id, provider, delivery)
);
CREATE UNIQUE INDEX hook_deliveries_body ON hook_deliveries (app_id, provider, body_hash);
CREATE INDEX hook_deliveries_age ON hook_deliveries (received_at);
