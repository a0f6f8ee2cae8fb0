-- Push-to-deploy: whether the first push of a branch no environment follows creates a test
-- environment for it (off unless the app asks), and which environments were made that way (only
-- those are deleted when their branch is deleted by a push).
ALTER TABLE apps ADD COLUMN branch_envs INTEGER NOT NULL DEFAULT 0 CHECK (branch_envs IN (0, 1));
ALTER TABLE environments ADD COLUMN made_for_branch INTEGER NOT NULL DEFAULT 0
    CHECK (made_for_branch IN (0, 1));
