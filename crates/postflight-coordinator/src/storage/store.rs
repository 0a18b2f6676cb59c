//! The [`Store`] trait the engine persists through, and [`AnyStore`]: the engine chosen by
//! the database URL at start-up.

use std::future::Future;

use postflight_plan::rollback::ActionOutcome;

use super::records::*;
use super::{ClaimOutcome, PostgresStore, RollbackClaim, SqliteStore, StoreError, StoreResult};

/// What the coordinator persists. Every method is one short transaction.
pub trait Store: Send + Sync + 'static {
    /// Creates or updates a probe.
    fn upsert_probe(&self, probe: &ProbeRecord) -> impl Future<Output = StoreResult<()>> + Send;
    /// [`Store::upsert_probe`] for a probe that just connected to `coordinator`, recorded in
    /// the same statement (one write per connecting probe, not two).
    fn probe_arrived(
        &self,
        probe: &ProbeRecord,
        coordinator: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Up to `limit` probes by name, after the name `after` (`""` for the first page).
    fn list_probes(
        &self,
        after: &str,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<ProbeRecord>>> + Send;
    /// Forgets probes last seen before `seen_before_ms`, and beyond the `keep` most recently
    /// seen; returns how many were forgotten.
    fn forget_probes(
        &self,
        seen_before_ms: i64,
        keep: u32,
    ) -> impl Future<Output = StoreResult<u64>> + Send;
    /// Stores a new run.
    fn insert_run(&self, run: &RunRecord) -> impl Future<Output = StoreResult<()>> + Send;
    /// Replaces a run's mutable fields (status, times, verdict, report, rollback), if the
    /// record's `owner` still owns the run (or either has none); `false` when another
    /// coordinator adopted it meanwhile and nothing was written.
    fn update_run(&self, run: &RunRecord) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Makes `owner` the owner of an unfinished run for `lease_ms` (on the database's clock),
    /// if it has no owner, is `owner`'s already, or its owner's lease expired. `true` when
    /// the claim holds: the caller drives the run from now on.
    fn claim_run(
        &self,
        run_id: &str,
        owner: &str,
        lease_ms: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// [`Store::claim_run`] for a running monitor.
    fn claim_monitor(
        &self,
        monitor_id: &str,
        owner: &str,
        lease_ms: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Extends the lease of every running monitor `owner` owns; returns their ids.
    fn renew_monitor_leases(
        &self,
        owner: &str,
        lease_ms: i64,
    ) -> impl Future<Output = StoreResult<Vec<String>>> + Send;
    /// Extends the lease of every unfinished run `owner` owns; returns their ids (a run
    /// in memory that is not among them was adopted by another coordinator).
    fn renew_run_leases(
        &self,
        owner: &str,
        lease_ms: i64,
    ) -> impl Future<Output = StoreResult<Vec<String>>> + Send;
    /// Unfinished runs and running monitors nobody holds (no owner, or the owner's lease
    /// expired on the database's clock): what a coordinator's scan may adopt, without reading
    /// everyone else's.
    fn adoptable(&self) -> impl Future<Output = StoreResult<Adoptable>> + Send;
    /// Ends `owner`'s lease on a run it cannot drive (a failed resume or end), so that the
    /// next scan, here or elsewhere, adopts it again.
    fn release_run(
        &self,
        run_id: &str,
        owner: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// One run.
    fn get_run(&self, run_id: &str) -> impl Future<Output = StoreResult<Option<RunRecord>>> + Send;
    /// Most recent first, optionally of one plan.
    fn list_runs(
        &self,
        limit: u32,
        plan: Option<&str>,
    ) -> impl Future<Output = StoreResult<Vec<RunRecord>>> + Send;
    /// Runs that have not ended (to resume after a restart).
    fn unfinished_runs(&self) -> impl Future<Output = StoreResult<Vec<RunRecord>>> + Send;
    /// Stores a new assignment.
    fn insert_assignment(
        &self,
        assignment: &AssignmentRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Stores new assignments in one transaction (a round of a monitor over 1,000 probes
    /// dispatches 1,000 at once).
    fn insert_assignments(
        &self,
        assignments: &[AssignmentRecord],
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Updates an assignment's status, expected result count and detail.
    fn update_assignment(
        &self,
        assignment: &AssignmentRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// A run's assignments, oldest first.
    fn assignments(
        &self,
        run_id: &str,
    ) -> impl Future<Output = StoreResult<Vec<AssignmentRecord>>> + Send;
    /// Stores result batches in one transaction (one multi-row insert).
    fn insert_batches(
        &self,
        batches: &[BatchRecord],
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Says that coordinator `identity` is alive for `lease_ms` (on the database's clock):
    /// owners of runs relay work through it to its probes while it is.
    fn announce_coordinator(
        &self,
        identity: &str,
        lease_ms: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Records that probe `name` is connected to `coordinator` (`None`: to none), when it is
    /// connected to `only_if` (any `None`: whatever it was connected to).
    fn connect_probe(
        &self,
        name: &str,
        coordinator: Option<&str>,
        only_if: Option<&str>,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Forgets every probe connection of `coordinator` and its announcement (it starts or
    /// stops): owners stop relaying through it.
    fn withdraw_coordinator(&self, identity: &str) -> impl Future<Output = StoreResult<()>> + Send;
    /// Probes connected to other coordinators than `identity` whose lease holds.
    fn remote_probes(
        &self,
        identity: &str,
    ) -> impl Future<Output = StoreResult<Vec<RemoteProbe>>> + Send;
    /// Assignments `identity` relays that are active or finished, of runs not ended.
    fn relayed_by(
        &self,
        identity: &str,
    ) -> impl Future<Output = StoreResult<Vec<AssignmentRecord>>> + Send;
    /// Active assignments of runs `identity` does not own whose probe is connected to
    /// `identity` but that another coordinator relays (or their owner serves): the probe moved
    /// here, or the assignment was given to the coordinator it left.
    fn strays_for(
        &self,
        identity: &str,
    ) -> impl Future<Output = StoreResult<Vec<AssignmentRecord>>> + Send;
    /// Makes `relay` the relay of an active assignment of `probe` (the probe connected to it
    /// holding the assignment); the assignment, or `None` when it is not active or is another
    /// probe's.
    fn take_relay(
        &self,
        assignment_id: &str,
        probe: &str,
        relay: Option<&str>,
    ) -> impl Future<Output = StoreResult<Option<AssignmentRecord>>> + Send;
    /// A relay's update of an assignment's status, expected result count and detail, taken
    /// only while the assignment is active (the owner may have ended it meanwhile).
    fn settle_relayed(
        &self,
        assignment: &AssignmentRecord,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// An assignment's result batches stored after position `after_seq`, in order.
    fn batches_after(
        &self,
        run_id: &str,
        assignment_id: &str,
        after_seq: i64,
    ) -> impl Future<Output = StoreResult<Vec<BatchRecord>>> + Send;
    /// A run's result batches in arrival order.
    fn batches(&self, run_id: &str) -> impl Future<Output = StoreResult<Vec<BatchRecord>>> + Send;
    /// How many results a run has stored.
    fn count_results(&self, run_id: &str) -> impl Future<Output = StoreResult<i64>> + Send;
    /// Claims a rollback: exactly one caller gets `Claimed` per subject, and none while the
    /// plan's last rollback is younger than `cooldown_ms`, however many coordinators ask at once.
    fn claim_rollback(
        &self,
        claim: &RollbackClaim,
        cooldown_ms: i64,
    ) -> impl Future<Output = StoreResult<ClaimOutcome>> + Send;
    /// Records how a claimed rollback went.
    fn finish_rollback(
        &self,
        subject: &str,
        outcome: ActionOutcome,
        error: Option<&str>,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Claims without an outcome, oldest first, taken by `executed_by` (after a restart: what
    /// was running when this coordinator stopped) or before `stale_before_ms` by anyone (older
    /// than any action may run: their executor stopped).
    fn pending_rollbacks(
        &self,
        executed_by: &str,
        stale_before_ms: i64,
    ) -> impl Future<Output = StoreResult<Vec<RollbackClaim>>> + Send;
    /// Withdraws a claim that has no outcome: its action never started (the decision was
    /// never stored), so the run or monitor may decide again.
    fn release_rollback(&self, subject: &str) -> impl Future<Output = StoreResult<()>> + Send;
    /// Stores a new monitor.
    fn insert_monitor(
        &self,
        monitor: &MonitorRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Replaces a monitor's mutable fields (status, end, rounds, rollback, detail).
    fn update_monitor(
        &self,
        monitor: &MonitorRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// One monitor.
    fn get_monitor(
        &self,
        monitor_id: &str,
    ) -> impl Future<Output = StoreResult<Option<MonitorRecord>>> + Send;
    /// Most recent first.
    fn list_monitors(
        &self,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<MonitorRecord>>> + Send;
    /// Monitors still running (to resume after a restart).
    fn running_monitors(&self) -> impl Future<Output = StoreResult<Vec<MonitorRecord>>> + Send;
    /// Stores a round (once: a second coordinator's copy of the same round is skipped).
    fn insert_round(&self, round: &RoundRecord) -> impl Future<Output = StoreResult<()>> + Send;
    /// A monitor's rounds that ended after `since_ms`, oldest first.
    fn rounds_since(
        &self,
        monitor_id: &str,
        since_ms: i64,
    ) -> impl Future<Output = StoreResult<Vec<RoundRecord>>> + Send;
    /// A monitor's last `limit` rounds, newest first.
    fn last_rounds(
        &self,
        monitor_id: &str,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<RoundRecord>>> + Send;
    /// A plan's runs for one migration, newest first (at most 1,000): what the stage gate
    /// reads.
    fn migration_runs(
        &self,
        plan: &str,
        migration: &str,
    ) -> impl Future<Output = StoreResult<Vec<RunRecord>>> + Send;
    /// Stores a feedback report.
    fn insert_feedback(
        &self,
        feedback: &FeedbackRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Up to `limit` feedback reports, newest first, optionally about one migration.
    fn list_feedback(
        &self,
        migration: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<FeedbackRecord>>> + Send;
    /// How many reports of `kind` about `migration` arrived after `since_ms`.
    fn count_feedback(
        &self,
        migration: &str,
        kind: &str,
        since_ms: i64,
    ) -> impl Future<Output = StoreResult<u64>> + Send;
    /// Stores a baseline.
    fn insert_baseline(
        &self,
        baseline: &BaselineRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// One baseline.
    fn get_baseline(
        &self,
        baseline_id: &str,
    ) -> impl Future<Output = StoreResult<Option<BaselineRecord>>> + Send;
    /// Up to `limit` baselines, newest first, optionally of one plan.
    fn list_baselines(
        &self,
        plan: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<BaselineRecord>>> + Send;
}

/// Either engine, chosen by URL at start-up.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// `sqlite://FILE`.
    Sqlite(SqliteStore),
    /// `postgres://…`.
    Postgres(PostgresStore),
}

impl AnyStore {
    /// Opens (and migrates) the database named by `url`.
    pub async fn open(url: &str) -> StoreResult<Self> {
        if url.starts_with("sqlite:") {
            Ok(AnyStore::Sqlite(SqliteStore::open(url).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(AnyStore::Postgres(PostgresStore::open(url).await?))
        } else {
            Err(StoreError::UnsupportedUrl(
                postflight_plan::secrets::redact_url(url),
            ))
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($store) => $call.await,
            AnyStore::Postgres($store) => $call.await,
        }
    };
}

impl Store for AnyStore {
    async fn upsert_probe(&self, probe: &ProbeRecord) -> StoreResult<()> {
        dispatch!(self, s => s.upsert_probe(probe))
    }
    async fn probe_arrived(&self, probe: &ProbeRecord, coordinator: &str) -> StoreResult<()> {
        dispatch!(self, s => s.probe_arrived(probe, coordinator))
    }
    async fn list_probes(&self, after: &str, limit: u32) -> StoreResult<Vec<ProbeRecord>> {
        dispatch!(self, s => s.list_probes(after, limit))
    }
    async fn forget_probes(&self, seen_before_ms: i64, keep: u32) -> StoreResult<u64> {
        dispatch!(self, s => s.forget_probes(seen_before_ms, keep))
    }
    async fn insert_run(&self, run: &RunRecord) -> StoreResult<()> {
        dispatch!(self, s => s.insert_run(run))
    }
    async fn update_run(&self, run: &RunRecord) -> StoreResult<bool> {
        dispatch!(self, s => s.update_run(run))
    }
    async fn claim_run(&self, run_id: &str, owner: &str, lease_ms: i64) -> StoreResult<bool> {
        dispatch!(self, s => s.claim_run(run_id, owner, lease_ms))
    }
    async fn renew_run_leases(&self, owner: &str, lease_ms: i64) -> StoreResult<Vec<String>> {
        dispatch!(self, s => s.renew_run_leases(owner, lease_ms))
    }
    async fn adoptable(&self) -> StoreResult<Adoptable> {
        dispatch!(self, s => s.adoptable())
    }
    async fn release_run(&self, run_id: &str, owner: &str) -> StoreResult<()> {
        dispatch!(self, s => s.release_run(run_id, owner))
    }
    async fn claim_monitor(
        &self,
        monitor_id: &str,
        owner: &str,
        lease_ms: i64,
    ) -> StoreResult<bool> {
        dispatch!(self, s => s.claim_monitor(monitor_id, owner, lease_ms))
    }
    async fn renew_monitor_leases(&self, owner: &str, lease_ms: i64) -> StoreResult<Vec<String>> {
        dispatch!(self, s => s.renew_monitor_leases(owner, lease_ms))
    }
    async fn get_run(&self, run_id: &str) -> StoreResult<Option<RunRecord>> {
        dispatch!(self, s => s.get_run(run_id))
    }
    async fn list_runs(&self, limit: u32, plan: Option<&str>) -> StoreResult<Vec<RunRecord>> {
        dispatch!(self, s => s.list_runs(limit, plan))
    }
    async fn unfinished_runs(&self) -> StoreResult<Vec<RunRecord>> {
        dispatch!(self, s => s.unfinished_runs())
    }
    async fn insert_assignment(&self, assignment: &AssignmentRecord) -> StoreResult<()> {
        dispatch!(self, s => s.insert_assignment(assignment))
    }
    async fn insert_assignments(&self, assignments: &[AssignmentRecord]) -> StoreResult<()> {
        dispatch!(self, s => s.insert_assignments(assignments))
    }
    async fn update_assignment(&self, assignment: &AssignmentRecord) -> StoreResult<()> {
        dispatch!(self, s => s.update_assignment(assignment))
    }
    async fn assignments(&self, run_id: &str) -> StoreResult<Vec<AssignmentRecord>> {
        dispatch!(self, s => s.assignments(run_id))
    }
    async fn insert_batches(&self, batches: &[BatchRecord]) -> StoreResult<()> {
        dispatch!(self, s => s.insert_batches(batches))
    }
    async fn announce_coordinator(&self, identity: &str, lease_ms: i64) -> StoreResult<()> {
        dispatch!(self, s => s.announce_coordinator(identity, lease_ms))
    }
    async fn connect_probe(
        &self,
        name: &str,
        coordinator: Option<&str>,
        only_if: Option<&str>,
    ) -> StoreResult<()> {
        dispatch!(self, s => s.connect_probe(name, coordinator, only_if))
    }
    async fn withdraw_coordinator(&self, identity: &str) -> StoreResult<()> {
        dispatch!(self, s => s.withdraw_coordinator(identity))
    }
    async fn remote_probes(&self, identity: &str) -> StoreResult<Vec<RemoteProbe>> {
        dispatch!(self, s => s.remote_probes(identity))
    }
    async fn relayed_by(&self, identity: &str) -> StoreResult<Vec<AssignmentRecord>> {
        dispatch!(self, s => s.relayed_by(identity))
    }
    async fn strays_for(&self, identity: &str) -> StoreResult<Vec<AssignmentRecord>> {
        dispatch!(self, s => s.strays_for(identity))
    }
    async fn take_relay(
        &self,
        assignment_id: &str,
        probe: &str,
        relay: Option<&str>,
    ) -> StoreResult<Option<AssignmentRecord>> {
        dispatch!(self, s => s.take_relay(assignment_id, probe, relay))
    }
    async fn settle_relayed(&self, assignment: &AssignmentRecord) -> StoreResult<bool> {
        dispatch!(self, s => s.settle_relayed(assignment))
    }
    async fn batches_after(
        &self,
        run_id: &str,
        assignment_id: &str,
        after_seq: i64,
    ) -> StoreResult<Vec<BatchRecord>> {
        dispatch!(self, s => s.batches_after(run_id, assignment_id, after_seq))
    }
    async fn batches(&self, run_id: &str) -> StoreResult<Vec<BatchRecord>> {
        dispatch!(self, s => s.batches(run_id))
    }
    async fn count_results(&self, run_id: &str) -> StoreResult<i64> {
        dispatch!(self, s => s.count_results(run_id))
    }
    async fn claim_rollback(
        &self,
        claim: &RollbackClaim,
        cooldown_ms: i64,
    ) -> StoreResult<ClaimOutcome> {
        dispatch!(self, s => s.claim_rollback(claim, cooldown_ms))
    }
    async fn finish_rollback(
        &self,
        subject: &str,
        outcome: ActionOutcome,
        error: Option<&str>,
    ) -> StoreResult<()> {
        dispatch!(self, s => s.finish_rollback(subject, outcome, error))
    }
    async fn pending_rollbacks(
        &self,
        executed_by: &str,
        stale_before_ms: i64,
    ) -> StoreResult<Vec<RollbackClaim>> {
        dispatch!(self, s => s.pending_rollbacks(executed_by, stale_before_ms))
    }
    async fn release_rollback(&self, subject: &str) -> StoreResult<()> {
        dispatch!(self, s => s.release_rollback(subject))
    }
    async fn insert_monitor(&self, monitor: &MonitorRecord) -> StoreResult<()> {
        dispatch!(self, s => s.insert_monitor(monitor))
    }
    async fn update_monitor(&self, monitor: &MonitorRecord) -> StoreResult<()> {
        dispatch!(self, s => s.update_monitor(monitor))
    }
    async fn get_monitor(&self, monitor_id: &str) -> StoreResult<Option<MonitorRecord>> {
        dispatch!(self, s => s.get_monitor(monitor_id))
    }
    async fn list_monitors(&self, limit: u32) -> StoreResult<Vec<MonitorRecord>> {
        dispatch!(self, s => s.list_monitors(limit))
    }
    async fn running_monitors(&self) -> StoreResult<Vec<MonitorRecord>> {
        dispatch!(self, s => s.running_monitors())
    }
    async fn insert_round(&self, round: &RoundRecord) -> StoreResult<()> {
        dispatch!(self, s => s.insert_round(round))
    }
    async fn rounds_since(&self, monitor_id: &str, since_ms: i64) -> StoreResult<Vec<RoundRecord>> {
        dispatch!(self, s => s.rounds_since(monitor_id, since_ms))
    }
    async fn last_rounds(&self, monitor_id: &str, limit: u32) -> StoreResult<Vec<RoundRecord>> {
        dispatch!(self, s => s.last_rounds(monitor_id, limit))
    }
    async fn migration_runs(&self, plan: &str, migration: &str) -> StoreResult<Vec<RunRecord>> {
        dispatch!(self, s => s.migration_runs(plan, migration))
    }
    async fn insert_feedback(&self, feedback: &FeedbackRecord) -> StoreResult<()> {
        dispatch!(self, s => s.insert_feedback(feedback))
    }
    async fn list_feedback(
        &self,
        migration: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<FeedbackRecord>> {
        dispatch!(self, s => s.list_feedback(migration, limit))
    }
    async fn count_feedback(&self, migration: &str, kind: &str, since_ms: i64) -> StoreResult<u64> {
        dispatch!(self, s => s.count_feedback(migration, kind, since_ms))
    }
    async fn insert_baseline(&self, baseline: &BaselineRecord) -> StoreResult<()> {
        dispatch!(self, s => s.insert_baseline(baseline))
    }
    async fn get_baseline(&self, baseline_id: &str) -> StoreResult<Option<BaselineRecord>> {
        dispatch!(self, s => s.get_baseline(baseline_id))
    }
    async fn list_baselines(
        &self,
        plan: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<BaselineRecord>> {
        dispatch!(self, s => s.list_baselines(plan, limit))
    }
}
