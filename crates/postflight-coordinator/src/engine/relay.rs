//! Work across coordinators sharing one database. Each coordinator announces itself with a
//! lease and records which probes are connected to it; a run's owner sees the probes of the
//! others and may give a region's assignment to one of them, naming its coordinator as the
//! relay. The relay sends the assignment to its probe, stores the probe's results as result
//! batches and settles the assignment (finished, rejected); the owner reads both back every
//! `relay_interval`, so the run completes on its owner whichever coordinator its probes use.
//! A probe that moves to another coordinator (its own died) hands its assignments to that
//! one, which takes over as their relay; replays are recognised by their result ids.
//!
//! Nothing here is consensus: the database's rows and guarded updates decide (the run's
//! owner lease, the assignment's status), and every step is idempotent, so a coordinator
//! that dies mid-step is replaced by the next poll of another.

use std::collections::HashSet;

use super::*;
use crate::engine::ingest::{id_hash, take_stored_batch};

/// An assignment to read back: its id and the last stored batch already read.
type Watermark = (String, i64);

impl<S: Store> Coordinator<S> {
    /// Announces this coordinator at start, after forgetting the probe connections an
    /// earlier life of it left behind (its probes connect again).
    pub(super) async fn announce_self(&self) -> CoordinatorResult<()> {
        let me = &self.inner.config.identity;
        self.inner.store.withdraw_coordinator(me).await?;
        self.inner
            .store
            .announce_coordinator(me, self.lease_ms())
            .await?;
        Ok(())
    }

    /// Every `relay_interval`: learns the probes of other coordinators, relays the work
    /// they gave to this one's probes, and reads back what relays stored for its runs.
    pub(super) fn keep_relaying(&self) {
        let this = self.clone();
        self.spawn_owned(async move {
            let mut every = tokio::time::interval(this.inner.config.relay_interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(e) = this.refresh_remote_probes().await {
                    tracing::warn!(error = %e, "cannot list the probes of other coordinators");
                }
                if let Err(e) = this.serve_relayed().await {
                    tracing::warn!(error = %e, "cannot relay assignments of other coordinators");
                }
                if let Err(e) = this.read_back_relayed().await {
                    tracing::warn!(error = %e, "cannot read back what relays stored");
                }
            }
        });
    }

    /// Replaces the list of probes connected elsewhere; work waiting for a region goes to a
    /// probe that appeared, and work of a probe that vanished moves after the grace period
    /// (as for a probe of this coordinator that disconnected).
    async fn refresh_remote_probes(&self) -> CoordinatorResult<()> {
        let found = self
            .inner
            .store
            .remote_probes(&self.inner.config.identity)
            .await?;
        let found: HashMap<String, RemoteProbe> =
            found.into_iter().map(|p| (p.name.clone(), p)).collect();
        let (appeared, vanished, run_ids) = {
            let mut state = self.state();
            let appeared = found.iter().any(|(name, p)| {
                state
                    .remote
                    .get(name)
                    .is_none_or(|known| known.region != p.region)
            });
            let vanished = state.remote.keys().any(|name| !found.contains_key(name));
            state.remote = found;
            let run_ids: Vec<String> = state.runs.keys().cloned().collect();
            (appeared, vanished, run_ids)
        };
        if appeared {
            for run_id in &run_ids {
                self.dispatch_pending(run_id).await?;
            }
        }
        if vanished {
            let this = self.clone();
            self.spawn_owned(async move {
                tokio::time::sleep(this.inner.config.reassign_after).await;
                this.reassign_orphans().await;
            });
        }
        Ok(())
    }

    /// Sends this coordinator's probes the assignments other coordinators gave them, cancels
    /// those the owner ended, and serves as its own those of runs it adopted since.
    async fn serve_relayed(&self) -> CoordinatorResult<()> {
        let me = &self.inner.config.identity;
        let rows = self.inner.store.relayed_by(me).await?;
        let listed: HashSet<&str> = rows.iter().map(|r| r.assignment_id.as_str()).collect();
        let (ended, fresh, owned) = {
            let mut guard = self.state();
            let state = &mut *guard;
            let ended_ids: Vec<String> = state
                .relayed
                .keys()
                .filter(|id| !listed.contains(id.as_str()))
                .cloned()
                .collect();
            let mut ended = Vec::new();
            for id in ended_ids {
                if let Some(r) = state.relayed.remove(&id)
                    && r.assignment.record.status == AssignmentStatus::Active
                {
                    ended.push(r.assignment.record);
                }
            }
            let mut owned = Vec::new();
            for row in &rows {
                if let Some(a) = state
                    .runs
                    .get_mut(&row.run_id)
                    .and_then(|run| run.assignments.get_mut(&row.assignment_id))
                {
                    state.relayed.remove(&row.assignment_id);
                    a.record.relay = None;
                    owned.push(row.clone());
                }
            }
            let reach = Self::reach(state);
            let fresh: Vec<AssignmentRecord> = rows
                .iter()
                .filter(|r| {
                    r.status == AssignmentStatus::Active
                        && !state.relayed.contains_key(&r.assignment_id)
                        && !state.runs.contains_key(&r.run_id)
                        && reach.is_local(&r.probe)
                })
                .cloned()
                .collect();
            (ended, fresh, owned)
        };
        for record in ended {
            if let Some(link) = self.probe_link(&record.probe) {
                link.send(Ok(ToProbe::Cancel {
                    assignment_id: record.assignment_id.clone(),
                    reason: "the run ended or moved to another probe".to_owned(),
                }));
            }
        }
        for row in owned {
            // This coordinator adopted the run since: it serves the probe itself.
            self.inner
                .store
                .take_relay(&row.assignment_id, &row.probe, None)
                .await?;
        }
        for record in fresh {
            self.start_relay(record, true).await?;
        }
        // Work for probes connected here that another coordinator was to relay (the probe
        // moved here, perhaps before that one delivered it): taken over and sent; a probe
        // ignores an assignment it holds already.
        for stray in self.inner.store.strays_for(me).await? {
            let skip = {
                let state = self.state();
                state.runs.contains_key(&stray.run_id)
                    || state.relayed.contains_key(&stray.assignment_id)
                    || !Self::reach(&state).is_local(&stray.probe)
            };
            if skip {
                continue;
            }
            if let Some(record) = self
                .inner
                .store
                .take_relay(&stray.assignment_id, &stray.probe, Some(me))
                .await?
            {
                tracing::info!(probe = %record.probe, assignment = %record.assignment_id, was = stray.relay.as_deref().unwrap_or("its owner"), "an assignment for a probe connected here was to be relayed elsewhere: relaying it");
                self.start_relay(record, true).await?;
            }
        }
        Ok(())
    }

    /// Becomes the relay of `record` (already named as such in the database): loads its run's
    /// plan and what was stored for it before (replays of it are then recognised), and sends
    /// it to the probe when `send` (a probe that reconnects with it runs it already).
    async fn start_relay(&self, record: AssignmentRecord, send: bool) -> CoordinatorResult<()> {
        let store = &self.inner.store;
        let Some(run) = store.get_run(&record.run_id).await? else {
            return Ok(());
        };
        let opened = self
            .inner
            .sealer
            .unseal(&run.plan_sealed)
            .map_err(|e| format!("the relaying coordinator cannot read the plan: {e}"))
            .and_then(|bytes| {
                let yaml = String::from_utf8_lossy(&bytes).into_owned();
                let no_vars: HashMap<String, String> = HashMap::new();
                parse_plan(&yaml, &run.origin, Expander::plan(&no_vars))
                    .map(|plan| (plan, yaml))
                    .map_err(|e| format!("the stored plan no longer parses: {e}"))
            });
        let (plan, plan_yaml) = match opened {
            Ok(opened) => opened,
            Err(reason) => {
                // Most likely a coordinator with another data key: the owner tries elsewhere.
                tracing::error!(run_id = %run.run_id, assignment = %record.assignment_id, "{reason}");
                let mut refused = record;
                refused.status = AssignmentStatus::Rejected;
                refused.detail = Some(reason);
                store.settle_relayed(&refused).await?;
                return Ok(());
            }
        };
        let mut assignment = LiveAssignment::new(record.clone());
        for batch in store
            .batches_after(&record.run_id, &record.assignment_id, 0)
            .await?
        {
            let Ok(results) =
                crate::storage::results::decode(&batch.data, &batch.run_id, &batch.assignment_id)
            else {
                continue;
            };
            for taken in results.into_iter().flatten() {
                if assignment.arrive(taken.check_index as usize, id_hash(&taken.result_id))
                    == Arrival::New
                {
                    assignment.received += 1;
                }
            }
        }
        let message = ToProbe::Assignment {
            assignment_id: record.assignment_id.clone(),
            run_id: record.run_id.clone(),
            plan_yaml: plan_yaml.into(),
            deadline_unix_ms: run.created_ms.saturating_add(run.timeout_ms).max(0) as u64,
            keep_latencies: run.take_baseline || run.against.is_some(),
        };
        let link = {
            let mut state = self.state();
            if state.relayed.contains_key(&record.assignment_id)
                || state.runs.contains_key(&record.run_id)
            {
                return Ok(());
            }
            state.relayed.insert(
                record.assignment_id.clone(),
                Relayed {
                    assignment,
                    secrets: Secrets::of_plan(&plan),
                    plan: Arc::new(plan),
                },
            );
            drop(state);
            self.probe_link(&record.probe)
        };
        tracing::info!(run_id = %record.run_id, assignment = %record.assignment_id, probe = %record.probe, owner = run.owner.as_deref().unwrap_or("?"), "relaying an assignment of another coordinator's run");
        if send && let Some(link) = link {
            link.send(Ok(message));
        }
        Ok(())
    }

    /// A probe that connects holding assignments this coordinator does not know (its own
    /// coordinator died or it moved): each still active one is taken over as a relay; the
    /// ids of the rest, which the probe should drop.
    pub(super) async fn take_over_relays(
        &self,
        probe: &str,
        ids: Vec<String>,
    ) -> CoordinatorResult<Vec<String>> {
        let mut drop = Vec::new();
        for id in ids {
            let taken = self
                .inner
                .store
                .take_relay(&id, probe, Some(&self.inner.config.identity))
                .await?;
            match taken {
                Some(record) => {
                    tracing::info!(probe, assignment = %id, run_id = %record.run_id, "a probe brought an assignment of another coordinator's run: relaying it");
                    self.start_relay(record, false).await?;
                }
                None => drop.push(id),
            }
        }
        Ok(drop)
    }

    /// The owner's side: what relays stored and settled for this coordinator's runs.
    async fn read_back_relayed(&self) -> CoordinatorResult<()> {
        let wanted: Vec<(String, Vec<Watermark>)> = {
            let state = self.state();
            let reach = Self::reach(&state);
            state
                .runs
                .iter()
                .filter_map(|(run_id, run)| {
                    let list: Vec<Watermark> = run
                        .assignments
                        .values()
                        .filter(|a| {
                            matches!(
                                a.record.status,
                                AssignmentStatus::Active | AssignmentStatus::Finished
                            ) && !a.is_done()
                                && !reach.is_local(&a.record.probe)
                        })
                        .map(|a| (a.record.assignment_id.clone(), a.seen_seq))
                        .collect();
                    (!list.is_empty()).then(|| (run_id.clone(), list))
                })
                .collect()
        };
        for (run_id, list) in wanted {
            self.read_back_run(&run_id, &list).await?;
        }
        Ok(())
    }

    /// Reads back the assignments `list` of `run_id`: their status, then the batches stored
    /// after the last one read (a relay stores a probe's results before it records that the
    /// probe finished, so a finished status read first means its batches are all there).
    pub(super) async fn read_back_run(
        &self,
        run_id: &str,
        list: &[Watermark],
    ) -> CoordinatorResult<()> {
        let store = &self.inner.store;
        let rows = store.assignments(run_id).await?;
        let mut batches = Vec::new();
        for (id, seen) in list {
            batches.extend(store.batches_after(run_id, id, *seen).await?);
        }
        let moved = {
            let mut state = self.state();
            let Some(run) = state.runs.get_mut(run_id) else {
                return Ok(());
            };
            let mut moved = false;
            for row in rows {
                if !list.iter().any(|(id, _)| *id == row.assignment_id) {
                    continue;
                }
                let Some(a) = run.assignments.get_mut(&row.assignment_id) else {
                    continue;
                };
                a.record.relay = row.relay.clone();
                if a.record.status != AssignmentStatus::Active
                    || row.status == AssignmentStatus::Active
                {
                    continue;
                }
                a.record.status = row.status;
                a.record.expected_results = row.expected_results;
                a.record.detail = row.detail.clone();
                if row.status == AssignmentStatus::Finished {
                    continue;
                }
                // Rejected or lost by the probe: the region needs another one.
                moved = true;
                let detail = row.detail.as_deref().unwrap_or("no reason given");
                let _ = run.events.send(RunEvent::status(
                    run_id,
                    run.record.status,
                    format!(
                        "probe {} ({}) cannot run the plan: {detail}",
                        row.probe, row.region
                    ),
                ));
            }
            for batch in &batches {
                for event in take_stored_batch(run, batch) {
                    let _ = run.events.send(event);
                }
            }
            moved
        };
        if moved {
            self.dispatch_pending(run_id).await?;
        }
        self.complete_if_done(run_id);
        Ok(())
    }

    /// A relayed assignment's probe finished: recorded for the owner.
    pub(super) async fn relayed_finished(
        &self,
        probe: &str,
        msg: &AssignmentFinished,
    ) -> CoordinatorResult<()> {
        let record = self
            .state()
            .relayed
            .get_mut(&msg.assignment_id)
            .filter(|r| {
                let a = &r.assignment.record;
                a.run_id == msg.run_id && a.probe == probe && a.status == AssignmentStatus::Active
            })
            .map(|r| {
                r.assignment.record.status = AssignmentStatus::Finished;
                r.assignment.record.expected_results = Some(i64::from(msg.results));
                r.assignment.record.clone()
            });
        if let Some(record) = record {
            self.inner.store.settle_relayed(&record).await?;
        }
        Ok(())
    }

    /// A relayed assignment's probe cannot run it: recorded (masked) for the owner, which
    /// tries another probe of the region.
    pub(super) async fn relayed_rejected(
        &self,
        probe: &str,
        msg: &AssignmentRejected,
    ) -> CoordinatorResult<()> {
        let record = {
            let mut state = self.state();
            let Some(r) = state.relayed.get_mut(&msg.assignment_id).filter(|r| {
                r.assignment.record.run_id == msg.run_id && r.assignment.record.probe == probe
            }) else {
                return Ok(());
            };
            let reason = r.secrets.scrub(&msg.reason);
            r.assignment.record.status = AssignmentStatus::Rejected;
            r.assignment.record.detail = Some(reason);
            r.assignment.record.clone()
        };
        tracing::warn!(run_id = %msg.run_id, probe, reason = record.detail.as_deref().unwrap_or_default(), "relayed assignment rejected");
        self.inner.store.settle_relayed(&record).await?;
        Ok(())
    }

    /// A probe reconnected here without assignments this coordinator relayed to it: they are
    /// lost, and their owners move them.
    pub(super) async fn relays_lost(&self, lost: Vec<AssignmentRecord>) -> CoordinatorResult<()> {
        for record in lost {
            self.inner.store.settle_relayed(&record).await?;
        }
        Ok(())
    }
}
