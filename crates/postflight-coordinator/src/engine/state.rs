//! The coordinator's in-memory state and the decisions taken on it: which probe gets which
//! region, when a run is complete, which results make the report. Pure: no I/O, no clock
//! reads, so every rule is unit-tested.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use postflight_plan::model::{Plan, ProbesPerRegion};
use postflight_plan::report::RegionResult;
use postflight_plan::secrets::Secrets;
use tokio::sync::broadcast;

use crate::storage::{AssignmentRecord, AssignmentStatus, RemoteProbe, RunRecord};

/// Messages to one probe's stream.
pub use super::link::ProbeLink;

/// A probe the coordinator knows in this process.
#[derive(Debug)]
pub struct LiveProbe {
    /// Region it executes in.
    pub region: String,
    /// Free labels.
    pub labels: BTreeMap<String, String>,
    /// Probe version.
    pub version: String,
    /// The open stream, if connected.
    pub session: Option<Session>,
    /// Unix milliseconds of its last message.
    pub last_seen_ms: i64,
    /// Whether its name (and region) are bound to its credential: only then may its region
    /// count where a plan names none, when the coordinator binds identities at all.
    pub authenticated: bool,
}

/// One open `Connect` stream.
#[derive(Debug, Clone)]
pub struct Session {
    /// Distinguishes a reconnect from the stream it replaces.
    pub id: u64,
    /// Where to send.
    pub link: ProbeLink,
}

/// An assignment and the results received for it.
#[derive(Debug, Clone)]
pub struct LiveAssignment {
    /// As stored.
    pub record: AssignmentRecord,
    /// Results stored so far: at most one per check.
    pub received: u32,
    /// Per check index, the id (hashed) of the result stored for it. A probe sends one result
    /// per check and assignment, so this is all the memory replay detection needs, and
    /// neither replays nor a chatty probe's surplus grow the store or the coordinator.
    pub stored: Vec<Option<u128>>,
    /// Results dropped because their check already had one.
    pub surplus: u32,
    /// The last stored batch read back for it: a run's owner reads what a relay stored for
    /// an assignment after this position.
    pub seen_seq: i64,
}

/// What a result arriving for an assignment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The check's first result: store it.
    New,
    /// The result stored before, sent again after a reconnect: acknowledge only.
    Replay,
    /// Another result for a check that has one: acknowledge, count and drop.
    Surplus,
}

impl LiveAssignment {
    /// A new assignment without results.
    pub fn new(record: AssignmentRecord) -> Self {
        Self {
            record,
            received: 0,
            stored: Vec::new(),
            surplus: 0,
            seen_seq: 0,
        }
    }

    /// Classifies a result for check `index` with id `id`; a new one is marked stored.
    pub fn arrive(&mut self, index: usize, id: u128) -> Arrival {
        if self.stored.len() <= index {
            self.stored.resize(index + 1, None);
        }
        match self.stored[index] {
            None => {
                self.stored[index] = Some(id);
                Arrival::New
            }
            Some(stored) if stored == id => Arrival::Replay,
            Some(_) => {
                self.surplus = self.surplus.saturating_add(1);
                Arrival::Surplus
            }
        }
    }

    /// Forgets the result of check `index`: it could not be stored, so its replay is taken.
    pub fn forget(&mut self, index: usize) {
        if let Some(slot) = self.stored.get_mut(index) {
            *slot = None;
        }
    }

    /// The probe sent every result it announced.
    pub fn is_done(&self) -> bool {
        self.record.status == AssignmentStatus::Finished
            && self
                .record
                .expected_results
                .is_some_and(|n| i64::from(self.received) >= n)
    }
}

/// A run that has not ended.
#[derive(Debug)]
pub struct ActiveRun {
    /// As stored (status and times change).
    pub record: RunRecord,
    /// The validated plan.
    pub plan: Arc<Plan>,
    /// The canonical plan sent to probes.
    pub plan_yaml: Arc<str>,
    /// Masks the plan's secrets in stored messages.
    pub secrets: Secrets,
    /// Unix milliseconds at which the run ends whatever happened.
    pub deadline_unix_ms: i64,
    /// By id.
    pub assignments: BTreeMap<String, LiveAssignment>,
    /// Per check index: per region, the results in arrival order with their assignment.
    pub results: Vec<BTreeMap<String, Vec<(String, RegionResult)>>>,
    /// Results stored for this run.
    pub result_count: u32,
    /// Live events for watchers.
    pub events: broadcast::Sender<super::events::RunEvent>,
    /// Result events so far, replayed to a watcher that joins late.
    pub history: Vec<super::events::RunEvent>,
    /// Who waits for the run's end (a monitor's round).
    pub done: Option<tokio::sync::oneshot::Sender<super::Finished>>,
    /// Cancels the run's owner task once the run ends elsewhere (or at shutdown).
    pub timer: tokio_util::sync::CancellationToken,
    /// Tells the run's owner task that the run may be complete.
    pub wake: Arc<tokio::sync::Notify>,
}

impl ActiveRun {
    /// Probes that rejected this run in `region` (they are not asked again).
    pub fn rejected_in(&self, region: &str) -> BTreeSet<&str> {
        self.assignments
            .values()
            .filter(|a| a.record.region == region && a.record.status == AssignmentStatus::Rejected)
            .map(|a| a.record.probe.as_str())
            .collect()
    }

    fn live_in(&self, region: &str) -> impl Iterator<Item = &LiveAssignment> {
        self.assignments.values().filter(move |a| {
            a.record.region == region
                && matches!(
                    a.record.status,
                    AssignmentStatus::Active | AssignmentStatus::Finished
                )
        })
    }
}

/// An assignment this coordinator relays to one of its probes for a run another
/// coordinator owns: it stores the probe's results and settles the assignment, the owner
/// reads them back.
#[derive(Debug)]
pub struct Relayed {
    /// As stored, with the results received (for replay detection).
    pub assignment: LiveAssignment,
    /// The run's plan, which results are held to.
    pub plan: Arc<Plan>,
    /// Masks the plan's secrets in stored messages.
    pub secrets: Secrets,
}

/// The probes a run may use: those connected to this coordinator, and those connected to
/// other live coordinators on the same database (reached through them).
#[derive(Clone, Copy)]
pub struct Reach<'a> {
    /// Probes this coordinator knows (connected or not).
    pub local: &'a HashMap<String, LiveProbe>,
    /// Probes connected elsewhere, by name.
    pub remote: &'a HashMap<String, RemoteProbe>,
}

impl<'a> Reach<'a> {
    /// Whether `probe` is connected here.
    pub fn is_local(&self, probe: &str) -> bool {
        self.local.get(probe).is_some_and(|p| p.session.is_some())
    }

    /// Whether `probe` is connected here or to another live coordinator.
    pub fn reachable(&self, probe: &str) -> bool {
        self.is_local(probe) || self.remote.contains_key(probe)
    }

    /// The coordinator relaying to `probe`: `None` when it is connected here (or nowhere).
    pub fn relay_of(&self, probe: &str) -> Option<&'a str> {
        if self.is_local(probe) {
            return None;
        }
        self.remote.get(probe).map(|p| p.coordinator.as_str())
    }

    /// Reachable probes of `region`, with whether each is connected here.
    pub fn in_region(&self, region: &'a str) -> impl Iterator<Item = (&'a String, bool)> + 'a {
        let local = self.local;
        let here = local
            .iter()
            .filter(move |(_, p)| p.region == region && p.session.is_some())
            .map(|(name, _)| (name, true));
        let elsewhere = self
            .remote
            .iter()
            .filter(move |(name, p)| {
                p.region == region && local.get(*name).is_none_or(|l| l.session.is_none())
            })
            .map(|(name, _)| (name, false));
        here.chain(elsewhere)
    }
}

/// Probes that should get a new assignment of `run` now: per required region, one reachable
/// probe (connected here before relayed ones, then the least busy, then by name) when the
/// region has no live assignment, or with `probes_per_region: all` every reachable probe of
/// the region that has none. Probes that rejected the run are skipped.
pub fn probes_to_assign(
    run: &ActiveRun,
    reach: Reach<'_>,
    busy: &HashMap<String, usize>,
) -> Vec<(String, String)> {
    let mut picks = Vec::new();
    for region in &run.record.regions {
        let rejected = run.rejected_in(region);
        let mut candidates: Vec<(&String, bool)> = reach
            .in_region(region)
            .filter(|(name, _)| !rejected.contains(name.as_str()))
            .collect();
        candidates.sort_by_key(|(name, local)| {
            (
                !*local,
                busy.get(*name).copied().unwrap_or(0),
                (*name).clone(),
            )
        });
        match run.plan.policy.probes_per_region {
            ProbesPerRegion::One => {
                if run.live_in(region).next().is_none()
                    && let Some((name, _)) = candidates.first()
                {
                    picks.push((region.clone(), (*name).clone()));
                }
            }
            ProbesPerRegion::All => {
                let assigned: BTreeSet<&str> = run
                    .live_in(region)
                    .map(|a| a.record.probe.as_str())
                    .collect();
                for (name, _) in candidates {
                    if !assigned.contains(name.as_str()) {
                        picks.push((region.clone(), name.clone()));
                    }
                }
            }
        }
    }
    picks
}

/// Whether every required region is settled: it delivered all its results, or every probe
/// that could serve it refused and no other is reachable. A region with no probe at all is
/// not settled: one may still connect before the deadline.
pub fn is_complete(run: &ActiveRun, reach: Reach<'_>) -> bool {
    run.record.regions.iter().all(|region| {
        let live: Vec<&LiveAssignment> = run.live_in(region).collect();
        if !live.is_empty() {
            return match run.plan.policy.probes_per_region {
                ProbesPerRegion::One => live.iter().any(|a| a.is_done()),
                ProbesPerRegion::All => live.iter().all(|a| a.is_done()),
            };
        }
        let rejected = run.rejected_in(region);
        let eligible = reach
            .in_region(region)
            .any(|(name, _)| !rejected.contains(name.as_str()));
        !rejected.is_empty() && !eligible
    })
}

/// The report's input: per check, one result per region. With one probe per region the
/// first result of a live assignment counts (results of abandoned assignments only when no
/// live one delivered); with `all`, every live probe's result, combined. Takes the results
/// out of the run (which has ended): a large run's results are moved, not copied.
pub fn take_region_results(run: &mut ActiveRun) -> Vec<BTreeMap<String, RegionResult>> {
    let live: BTreeSet<&str> = run
        .assignments
        .iter()
        .filter(|(_, a)| {
            matches!(
                a.record.status,
                AssignmentStatus::Active | AssignmentStatus::Finished
            )
        })
        .map(|(id, _)| id.as_str())
        .collect();
    let per_region = run.plan.policy.probes_per_region;
    std::mem::take(&mut run.results)
        .into_iter()
        .map(|regions| {
            regions
                .into_iter()
                .filter_map(|(region, results)| {
                    let mut first = None;
                    let mut current = Vec::new();
                    for (assignment, result) in results {
                        if live.contains(assignment.as_str()) {
                            current.push(result);
                            if per_region == ProbesPerRegion::One {
                                break;
                            }
                        } else if first.is_none() {
                            first = Some(result);
                        }
                    }
                    let chosen = match current.len() {
                        0 => first,
                        1 => current.pop(),
                        _ => RegionResult::combine(&current),
                    };
                    chosen.map(|r| (region, r))
                })
                .collect()
        })
        .collect()
}

/// Required regions whose every probe refused the run and that produced nothing, with the
/// first refusal's reason: the report shows it in place of a bare "no result".
pub fn unreported_regions(run: &ActiveRun) -> BTreeMap<String, String> {
    let mut why = BTreeMap::new();
    for a in run.assignments.values() {
        if a.record.status == AssignmentStatus::Rejected
            && run.record.regions.contains(&a.record.region)
            && let Some(detail) = &a.record.detail
        {
            why.entry(a.record.region.clone()).or_insert_with(|| {
                format!("probe {} cannot run the plan: {detail}", a.record.probe)
            });
        }
    }
    why.retain(|region, _| {
        !run.assignments.values().any(|a| {
            &a.record.region == region
                && matches!(
                    a.record.status,
                    AssignmentStatus::Active | AssignmentStatus::Finished
                )
        })
    });
    why
}

#[cfg(test)]
mod tests;
