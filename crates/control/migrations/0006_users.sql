-- Each environment runs as its own unprivileged user (when Turnout runs as root): a uid from a
-- block of Turnout's own, recorded here so a restart runs it as the same user and files keep
-- their owner. The block (1,000 uids) is drawn at random once per home, so two homes on one
-- machine do not hand out the same uids. Environments from before get one each.
CREATE TABLE uid_block (base INTEGER NOT NULL);
INSERT INTO uid_block (base) VALUES (200000 + (abs(random()) % 100000) * 1000);
ALTER TABLE environments ADD COLUMN uid INTEGER;
UPDATE environments SET uid = (SELECT base FROM uid_block)
    + (SELECT COUNT(*) FROM environments e2 WHERE e2.id < environments.id);
CREATE UNIQUE INDEX environments_by_uid ON environments (uid);
