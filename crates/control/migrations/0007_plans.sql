-- The environment's own resource plan, set through the CLI or the API (`env update`); NULL: not
-- set, so the app file's plan for its tier or environment applies, else no limit.
ALTER TABLE environments ADD COLUMN plan_memory INTEGER;
ALTER TABLE environments ADD COLUMN plan_cpu REAL;
ALTER TABLE environments ADD COLUMN plan_pids INTEGER;
