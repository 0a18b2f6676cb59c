-- Each unfinished run has one owner, the coordinator that drives it, holding a lease it
-- renews: another coordinator on the same database adopts the run only once the lease has
-- expired (its owner died). Runs from before this migration have no owner: the first
-- coordinator to start adopts them, as before.
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN lease_until_ms BIGINT;
