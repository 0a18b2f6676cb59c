-- Coordinators sharing this database announce themselves with a lease, and each probe row
-- names the coordinator it is connected to: a run's owner gives a region's work to a probe
-- connected to another live coordinator, which relays the assignment to its probe and
-- stores the probe's results for the owner to read.
CREATE TABLE coordinators (
    identity TEXT PRIMARY KEY,
    lease_until_ms BIGINT NOT NULL
);
ALTER TABLE probes ADD COLUMN coordinator TEXT;
-- The coordinator relaying an assignment to its probe; NULL while the run's owner serves
-- the probe itself.
ALTER TABLE assignments ADD COLUMN relay TEXT;
CREATE INDEX assignments_relay_idx ON assignments (relay) WHERE relay IS NOT NULL;
-- Active assignments by probe: a coordinator looks for those of its probes relayed elsewhere.
CREATE INDEX assignments_active_probe_idx ON assignments (probe) WHERE status = 'active';
