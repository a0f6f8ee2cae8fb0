-- What deploys an environment by itself: nothing (manual), a push to its branch, or a green CI
-- build of its branch (the exact commit that went green).
ALTER TABLE environments ADD COLUMN deploy_on TEXT NOT NULL DEFAULT 'manual'
    CHECK (deploy_on IN ('manual', 'push', 'ci'));
