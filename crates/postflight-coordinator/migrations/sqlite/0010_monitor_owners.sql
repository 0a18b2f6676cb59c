-- A running monitor has one owner, like a run (0009): the coordinator that runs its rounds,
-- holding a lease it renews; another coordinator resumes the monitor only once the lease has
-- expired. Monitors from before this migration have no owner.
ALTER TABLE monitors ADD COLUMN owner TEXT;
ALTER TABLE monitors ADD COLUMN lease_until_ms BIGINT;
