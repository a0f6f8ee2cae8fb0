-- Idle environments sleep: after how long without a request (milliseconds; 0: never; NULL: the
-- tier's default), and whether one sleeps now (its instance stopped until a request or
-- `turnout env wake` wakes it; not the same as stopped by hand).
ALTER TABLE environments ADD COLUMN sleep_after_ms INTEGER
    CHECK (sleep_after_ms IS NULL OR sleep_after_ms >= 0);
ALTER TABLE environments ADD COLUMN sleeping INTEGER NOT NULL DEFAULT 0;
-- An app's own setting for a tier's environments (`turnout app update APP --sleep-after
-- TIER=…`; milliseconds, 0: never), over the built-in default; an environment's own wins.
CREATE TABLE app_tier_sleep (
    app_id         INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    tier           TEXT    NOT NULL,
    sleep_after_ms INTEGER NOT NULL CHECK (sleep_after_ms >= 0),
    PRIMARY KEY (app_id, tier)
);
