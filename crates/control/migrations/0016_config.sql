-- Configuration set through Turnout (app, tier, environment levels; plain and sealed secret values) and the snapshots releases ran with.
--
-- A value is set at one level: the app (tier '' and no environment), a tier of the app (tier
-- named, no environment) or one environment (env_id, tier ''). A plain value is text; a
-- secret's value is the vault's sealed bytes (never the text). The old per-environment
-- `secrets` table is sealed into this one and dropped at the daemon's start-up (the vault's
-- key lives in the home, not here, so no migration can do it).
CREATE TABLE config_values (
    id          INTEGER PRIMARY KEY,
    app_id      INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    level       TEXT    NOT NULL CHECK (level IN ('app', 'tier', 'env')),
    tier        TEXT    NOT NULL DEFAULT '',
    env_id      INTEGER REFERENCES environments(id) ON DELETE CASCADE,
    key         TEXT    NOT NULL,
    secret      INTEGER NOT NULL CHECK (secret IN (0, 1)),
    value       BLOB    NOT NULL,
    updated_at  INTEGER NOT NULL,
    updated_by  TEXT    NOT NULL,
    CHECK ((level = 'env') = (env_id IS NOT NULL)),
    CHECK ((level = 'tier') = (tier <> ''))
);
-- NULLs are distinct in a UNIQUE index: the environment is compared as 0 when there is none.
CREATE UNIQUE INDEX config_values_key
    ON config_values (app_id, level, tier, IFNULL(env_id, 0), key);

-- Bumped by every set and unset at any level of the app.
ALTER TABLE apps ADD COLUMN config_version INTEGER NOT NULL DEFAULT 0;

-- What an environment's instance ran with: the values set through Turnout, resolved for it,
-- sealed as a whole. Kept once per distinct content (`digest`, a keyed hash of the plain
-- content) per environment.
CREATE TABLE config_snapshots (
    id          INTEGER PRIMARY KEY,
    env_id      INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    digest      TEXT    NOT NULL,
    content     BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (env_id, digest)
);

-- The snapshot the release last went live with (a restart with changed configuration updates it).
ALTER TABLE releases ADD COLUMN config_snapshot_id INTEGER REFERENCES config_snapshots(id) ON DELETE SET NULL;
