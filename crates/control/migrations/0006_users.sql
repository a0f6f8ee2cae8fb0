-- Each environment runs as its own unprivileged user (when Turnout runs as root): a uid from a
-- range of Turnout's own, recorded here so a restart runs it as the same user and files keep
-- their owner. Environments from before get one each.
ALTER TABLE environments ADD COLUMN uid INTEGER;
UPDATE environments SET uid = 200000 + id;
CREATE UNIQUE INDEX environments_by_uid ON environments (uid);
