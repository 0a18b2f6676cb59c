//! Probes: their sessions (connect, disconnect, reconnect with the assignments they kept),
//! liveness, and the probe list with its bounds.

use super::*;

/// Probes kept in the probe list at most; the least recently seen go first. Probe names
/// change with every rollout of a sidecar (`$(POD_NAME)`), so the list must not grow forever.
pub const MAX_KNOWN_PROBES: u32 = 10_000;

/// Probes per `ListProbes` page at most.
pub const MAX_PROBES_PAGE: u32 = 1_000;

impl Default for Config {
    fn default() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            default_timeout: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(5),
            reassign_after: Duration::from_secs(5),
            identity: "postflight-coordinator".to_owned(),
            allow_command_actions: false,
            authenticated_regions_only: false,
            forget_probes_after: Duration::from_secs(7 * 24 * 3600),
            run_lease: Duration::from_secs(10),
            relay_interval: Duration::from_millis(250),
        }
    }
}

/// A probe's introduction on a new stream (`grpc/` converts the wire's `Hello`, checked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeHello {
    /// Unique name.
    pub name: String,
    /// Region it executes in.
    pub region: String,
    /// Free labels.
    pub labels: BTreeMap<String, String>,
    /// Probe version.
    pub version: String,
    /// Assignments it is still executing (after a reconnect).
    pub active_assignments: Vec<String>,
}

impl<S: Store> Coordinator<S> {
    pub(super) fn probe_link(&self, probe: &str) -> Option<ProbeLink> {
        self.state()
            .probes
            .get(probe)
            .and_then(|p| p.session.as_ref())
            .map(|s| s.link.clone())
    }

    /// Registers a probe's stream, welcomes it and hands it the work waiting for its region;
    /// returns the session id that identifies this stream. `authenticated` says whether its
    /// name and region are bound to its credential. A second live stream for a name is
    /// refused: two probes sharing a name would take each other's work.
    pub async fn probe_connected(
        &self,
        hello: &ProbeHello,
        authenticated: bool,
        link: ProbeLink,
    ) -> CoordinatorResult<u64> {
        let now = now_ms();
        if authenticated {
            self.inner.metrics.name_regions([hello.region.as_str()]);
        }
        self.inner
            .metrics
            .probe_connections
            .get_or_create(&RegionLabels {
                region: self.inner.metrics.region(&hello.region),
            })
            .inc();
        if self
            .inner
            .stopping
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(CoordinatorError::Unavailable(
                "the coordinator is stopping; reconnect shortly".to_owned(),
            ));
        }
        let (session, relays, lost, run_ids) = {
            let mut guard = self.state();
            let state = &mut *guard;
            if let Some(live) = state
                .probes
                .get(&hello.name)
                .and_then(|p| p.session.as_ref())
                .filter(|s| !s.link.is_closed())
            {
                return Err(CoordinatorError::AlreadyExists(format!(
                    "probe {} is already connected (session {}): give every probe its own \
                     --name; a probe that lost its connection is let back in once the old \
                     stream is gone",
                    hello.name, live.id
                )));
            }
            state.next_session += 1;
            let session = state.next_session;
            if state.probes.len() >= MAX_KNOWN_PROBES as usize
                && !state.probes.contains_key(&hello.name)
            {
                forget_least_recent(&mut state.probes);
            }
            state.probes.insert(
                hello.name.clone(),
                LiveProbe {
                    region: hello.region.clone(),
                    labels: hello.labels.clone(),
                    version: hello.version.clone(),
                    session: Some(Session {
                        id: session,
                        link: link.clone(),
                    }),
                    last_seen_ms: now,
                    authenticated,
                },
            );
            // What the probe still runs and we still want: kept. What it runs that we do
            // not want any more: dropped. What we think it runs but it lost: moved.
            let mut keep = std::collections::HashSet::new();
            let mut lost = Vec::new();
            // Own assignments a relay served until now: read back before the probe replays.
            let mut reclaimed: Vec<(String, String, i64)> = Vec::new();
            for (run_id, run) in state.runs.iter_mut() {
                for a in run.assignments.values_mut() {
                    if a.record.probe != hello.name || a.record.status != AssignmentStatus::Active {
                        continue;
                    }
                    if hello.active_assignments.contains(&a.record.assignment_id) {
                        // It continues where it was cut off, replaying what was not acked.
                        keep.insert(a.record.assignment_id.clone());
                        if a.record.relay.take().is_some() {
                            reclaimed.push((
                                run_id.clone(),
                                a.record.assignment_id.clone(),
                                a.seen_seq,
                            ));
                        }
                    } else {
                        a.record.status = AssignmentStatus::Abandoned;
                        a.record.detail =
                            Some(format!("probe {} restarted without it", hello.name));
                        lost.push(a.record.clone());
                    }
                }
            }
            // Relayed here before (a reconnect to this coordinator).
            let mut lost_relayed = Vec::new();
            for (id, r) in state.relayed.iter_mut() {
                let a = &mut r.assignment.record;
                if a.probe != hello.name || a.status != AssignmentStatus::Active {
                    continue;
                }
                if hello.active_assignments.contains(id) {
                    keep.insert(id.clone());
                } else {
                    a.status = AssignmentStatus::Abandoned;
                    a.detail = Some(format!("probe {} restarted without it", hello.name));
                    lost_relayed.push(a.clone());
                }
            }
            let unknown: Vec<String> = hello
                .active_assignments
                .iter()
                .filter(|id| !keep.contains(*id))
                .cloned()
                .collect();
            let run_ids: Vec<String> = state.runs.keys().cloned().collect();
            // The welcome goes first, before the lock is released: from then on any task may
            // send this probe work, and a probe takes nothing before its welcome. What it
            // holds and should drop is cancelled once known (below).
            link.send(Ok(ToProbe::Welcome {
                coordinator_version: self.inner.config.version.clone(),
                heartbeat_interval_ms: self.inner.config.heartbeat_interval.as_millis() as u32,
                drop_assignments: Vec::new(),
            }));
            (session, (unknown, reclaimed, lost_relayed), lost, run_ids)
        };
        let (unknown, reclaimed, lost_relayed) = relays;
        // Registered: from here on a failure unregisters it, so that no session that
        // looks connected is left without a stream.
        let welcomed = async {
            let record = ProbeRecord {
                name: hello.name.clone(),
                region: hello.region.clone(),
                labels: hello.labels.clone(),
                version: hello.version.clone(),
                last_seen_ms: now,
            };
            self.inner
                .store
                .probe_arrived(&record, &self.inner.config.identity)
                .await?;
            for record in &lost {
                self.inner.store.update_assignment(record).await?;
            }
            self.relays_lost(lost_relayed).await?;
            for (run_id, id, seen) in reclaimed {
                self.inner.store.take_relay(&id, &hello.name, None).await?;
                self.read_back_run(&run_id, &[(id, seen)]).await?;
            }
            // What it brings of other coordinators' runs is relayed from here on.
            for assignment_id in self.take_over_relays(&hello.name, unknown).await? {
                link.send(Ok(ToProbe::Cancel {
                    assignment_id,
                    reason: "no coordinator wants it any more".to_owned(),
                }));
            }
            tracing::info!(probe = %hello.name, region = %hello.region, session, "probe connected");
            // Work may be waiting for this region.
            for run_id in run_ids {
                self.dispatch_pending(&run_id).await?;
            }
            Ok::<(), CoordinatorError>(())
        };
        if let Err(e) = welcomed.await {
            link.cut();
            self.probe_disconnected(&hello.name, session).await;
            return Err(e);
        }
        Ok(session)
    }

    /// A probe's stream ended; its assignments move after the grace period unless it is back.
    pub async fn probe_disconnected(&self, name: &str, session: u64) {
        let now = now_ms();
        let still_current = {
            let mut state = self.state();
            match state.probes.get_mut(name) {
                Some(p) if p.session.as_ref().is_some_and(|s| s.id == session) => {
                    p.session = None;
                    p.last_seen_ms = now;
                    Some(ProbeRecord {
                        name: name.to_owned(),
                        region: p.region.clone(),
                        labels: p.labels.clone(),
                        version: p.version.clone(),
                        last_seen_ms: now,
                    })
                }
                _ => None,
            }
        };
        let Some(record) = still_current else { return };
        tracing::warn!(probe = name, session, "probe disconnected");
        if let Err(e) = self
            .inner
            .store
            .connect_probe(name, None, Some(&self.inner.config.identity))
            .await
        {
            tracing::error!(error = %e, "cannot record that a probe disconnected");
        }
        if let Err(e) = self.inner.store.upsert_probe(&record).await {
            tracing::error!(error = %e, "cannot record a probe's last sighting");
        }
        let this = self.clone();
        self.spawn_owned(async move {
            tokio::time::sleep(this.inner.config.reassign_after).await;
            this.reassign_orphans().await;
        });
    }

    /// A probe spoke (any message): it is alive.
    pub fn probe_seen(&self, name: &str) {
        if let Some(p) = self.state().probes.get_mut(name) {
            p.last_seen_ms = now_ms();
        }
    }

    /// A page of probes by name with their live connection state, after the name `after`;
    /// also the name to continue after when more follow.
    pub async fn list_probes(
        &self,
        after: &str,
        limit: u32,
    ) -> CoordinatorResult<(Vec<(ProbeRecord, bool)>, Option<String>)> {
        let limit = limit.clamp(1, MAX_PROBES_PAGE);
        // One more than asked tells whether another page follows.
        let mut stored = self.inner.store.list_probes(after, limit + 1).await?;
        let next = if stored.len() > limit as usize {
            stored.truncate(limit as usize);
            stored.last().map(|p| p.name.clone())
        } else {
            None
        };
        let state = self.state();
        let page = stored
            .into_iter()
            .map(|mut record| {
                // Connected to another coordinator on the same database counts too: the
                // probe serves runs submitted here (through that coordinator).
                let elsewhere = state.remote.contains_key(&record.name);
                match state.probes.get(&record.name) {
                    Some(live) => {
                        record.last_seen_ms = record.last_seen_ms.max(live.last_seen_ms);
                        (record, live.session.is_some() || elsewhere)
                    }
                    None => (record, elsewhere),
                }
            })
            .collect();
        Ok((page, next))
    }

    /// Forgets probes not seen for `forget_probes_after`, and the least recently seen beyond
    /// [`MAX_KNOWN_PROBES`]. Connected probes are recorded as seen now first, so none of them
    /// is forgotten.
    pub(super) async fn forget_old_probes(&self) {
        let now = now_ms();
        let live: Vec<ProbeRecord> = self
            .state()
            .probes
            .iter()
            .filter(|(_, p)| p.session.is_some())
            .map(|(name, p)| ProbeRecord {
                name: name.clone(),
                region: p.region.clone(),
                labels: p.labels.clone(),
                version: p.version.clone(),
                last_seen_ms: now,
            })
            .collect();
        for record in &live {
            if let Err(e) = self.inner.store.upsert_probe(record).await {
                tracing::error!(error = %e, "cannot record a probe's last sighting");
                return;
            }
        }
        let horizon =
            i64::try_from(self.inner.config.forget_probes_after.as_millis()).unwrap_or(i64::MAX);
        match self
            .inner
            .store
            .forget_probes(now.saturating_sub(horizon), MAX_KNOWN_PROBES)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(forgotten = n, "forgot probes that no longer connect"),
            Err(e) => tracing::error!(error = %e, "cannot forget old probes"),
        }
        // Disconnected probes forgotten in storage are forgotten in memory too.
        let mut state = self.state();
        let cutoff = now.saturating_sub(horizon);
        state
            .probes
            .retain(|_, p| p.session.is_some() || p.last_seen_ms >= cutoff);
    }

    /// Forgets old probes every hour.
    pub(super) fn watch_probe_list(&self) {
        let this = self.clone();
        self.spawn_owned(async move {
            let mut every = tokio::time::interval(Duration::from_secs(3600));
            every.tick().await;
            loop {
                every.tick().await;
                this.forget_old_probes().await;
            }
        });
    }
}

/// Forgets the disconnected probe seen least recently (from memory; storage follows on the
/// next [`Coordinator::forget_old_probes`]), so that probes connecting under ever new names
/// cannot grow the coordinator without bound.
pub(super) fn forget_least_recent(probes: &mut HashMap<String, LiveProbe>) {
    let oldest = probes
        .iter()
        .filter(|(_, p)| p.session.is_none())
        .min_by_key(|(_, p)| p.last_seen_ms)
        .map(|(name, _)| name.clone());
    if let Some(name) = oldest {
        probes.remove(&name);
    }
}
