//! The coordinator's end of a probe's stream.
//!
//! Messages to a probe are queued without waiting: the code that sends them (a `SubmitRun`,
//! another probe's results ending a run, a monitor's round) must never stall because one
//! probe stopped reading. A probe whose queue is full is cut off instead: its stream ends
//! (what was queued is dropped; it gets it again as assignments when it reconnects), its
//! reader stops, and its assignments move on after the grace period like any disconnect.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::error::CoordinatorError;

/// What the coordinator tells a probe; `grpc/` turns it into the wire's `CoordinatorMessage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToProbe {
    /// The answer to a hello.
    Welcome {
        /// This coordinator's version.
        coordinator_version: String,
        /// How often the probe must show it is alive.
        heartbeat_interval_ms: u32,
        /// Of the assignments the probe said it holds, those it should abandon.
        drop_assignments: Vec<String>,
    },
    /// Work: a run's plan for the probe's region.
    Assignment {
        /// The assignment.
        assignment_id: String,
        /// Its run.
        run_id: String,
        /// The canonical plan.
        plan_yaml: Arc<str>,
        /// When the run ends, Unix milliseconds.
        deadline_unix_ms: u64,
        /// Send each result's latencies (a baseline is taken or compared with).
        keep_latencies: bool,
    },
    /// Stop working on an assignment.
    Cancel {
        /// The assignment.
        assignment_id: String,
        /// Why.
        reason: String,
    },
    /// Results the coordinator has stored: the probe may forget them.
    Ack {
        /// Their ids.
        result_ids: Vec<String>,
    },
}

impl ToProbe {
    /// About the bytes it takes on the wire (what the queue's byte budget counts).
    fn size(&self) -> usize {
        match self {
            ToProbe::Welcome {
                coordinator_version,
                drop_assignments,
                ..
            } => {
                16 + coordinator_version.len()
                    + drop_assignments.iter().map(|d| d.len() + 2).sum::<usize>()
            }
            ToProbe::Assignment {
                assignment_id,
                run_id,
                plan_yaml,
                ..
            } => 24 + assignment_id.len() + run_id.len() + plan_yaml.len(),
            ToProbe::Cancel {
                assignment_id,
                reason,
            } => 8 + assignment_id.len() + reason.len(),
            ToProbe::Ack { result_ids } => {
                4 + result_ids.iter().map(|r| r.len() + 2).sum::<usize>()
            }
        }
    }
}

/// What goes to a probe: a message, or the error that ends its stream.
pub type Outgoing = Result<ToProbe, CoordinatorError>;

/// How many messages may wait for a probe before it counts as not reading.
pub const QUEUE: usize = 1024;
/// How many bytes may wait for a probe: assignments carry whole plans (up to 4 MiB), so a
/// count alone would let one silent probe hold gigabytes.
pub const QUEUE_BYTES: usize = 64 << 20;

/// A cheap handle to one probe stream.
#[derive(Debug, Clone)]
pub struct ProbeLink {
    tx: mpsc::Sender<Outgoing>,
    cut: Arc<watch::Sender<bool>>,
    closing: Arc<watch::Sender<bool>>,
    queued: Arc<AtomicUsize>,
    budget: usize,
}

fn size(message: &Outgoing) -> usize {
    match message {
        Ok(m) => m.size(),
        Err(error) => error.to_string().len(),
    }
}

impl ProbeLink {
    /// A link and the receiving end of its queue.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<Outgoing>) {
        Self::bounded(capacity, QUEUE_BYTES)
    }

    /// [`ProbeLink::channel`] with a byte budget of its own.
    pub fn bounded(capacity: usize, budget: usize) -> (Self, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(capacity);
        let (cut, _) = watch::channel(false);
        let (closing, _) = watch::channel(false);
        (
            Self {
                tx,
                cut: Arc::new(cut),
                closing: Arc::new(closing),
                queued: Arc::new(AtomicUsize::new(0)),
                budget,
            },
            rx,
        )
    }

    /// The stream to answer `Connect` with: the queue, ending as soon as the link is cut.
    pub fn outbound(
        &self,
        rx: mpsc::Receiver<Outgoing>,
    ) -> impl Stream<Item = Outgoing> + Send + 'static {
        let cut = self.cut_off();
        let queued = self.queued.clone();
        ReceiverStream::new(rx)
            .map(move |message| {
                queued.fetch_sub(size(&message), Ordering::Relaxed);
                message
            })
            .take_until(Box::pin(cut))
    }

    /// Queues `message`; false when it was not queued. A full queue (in messages or bytes)
    /// cuts the link.
    pub fn send(&self, message: Outgoing) -> bool {
        let bytes = size(&message);
        if self.queued.load(Ordering::Relaxed) + bytes > self.budget {
            self.cut();
            return false;
        }
        self.queued.fetch_add(bytes, Ordering::Relaxed);
        match self.tx.try_send(message) {
            Ok(()) => true,
            Err(e) => {
                self.queued.fetch_sub(bytes, Ordering::Relaxed);
                if matches!(e, mpsc::error::TrySendError::Full(_)) {
                    self.cut();
                }
                false
            }
        }
    }

    /// Ends the stream at once, dropping what is queued.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Asks the stream's reader to stop taking messages (the coordinator is stopping): what
    /// it is processing completes, what is queued (acknowledgements) is still delivered, and
    /// the stream ends once the reader and the session let go of the link.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Completes once [`ProbeLink::close`] was called.
    pub fn closing(&self) -> impl Future<Output = ()> + Send + 'static {
        until_set(self.closing.subscribe())
    }

    /// Whether the stream is gone: cut, or its receiver dropped (the connection closed).
    pub fn is_closed(&self) -> bool {
        *self.cut.borrow() || self.tx.is_closed()
    }

    /// Completes once the link is cut; never if every handle is dropped uncut (then the
    /// queue ends by itself, after delivering what it holds).
    pub fn cut_off(&self) -> impl Future<Output = ()> + Send + 'static {
        until_set(self.cut.subscribe())
    }
}

/// Completes when the flag is set; a flag whose sender is gone was never set and never will
/// be.
async fn until_set(mut flag: watch::Receiver<bool>) {
    if flag.wait_for(|set| *set).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack() -> Outgoing {
        Ok(ToProbe::Ack {
            result_ids: Vec::new(),
        })
    }

    #[tokio::test]
    async fn a_full_queue_cuts_the_link_without_waiting() {
        let (link, rx) = ProbeLink::channel(2);
        let mut out = Box::pin(link.outbound(rx));
        assert!(link.send(ack()) && link.send(ack()));
        assert!(!link.is_closed());
        // The probe reads nothing: the third message does not wait, it cuts.
        assert!(!link.send(ack()));
        assert!(link.is_closed());
        tokio::time::timeout(std::time::Duration::from_secs(1), link.cut_off())
            .await
            .unwrap();
        // The stream ends at once, queued messages dropped.
        assert!(out.next().await.is_none());
    }

    #[tokio::test]
    async fn the_byte_budget_cuts_a_link_before_the_count_does() {
        let big = || {
            Ok(ToProbe::Assignment {
                assignment_id: String::new(),
                run_id: String::new(),
                plan_yaml: "x".repeat(1000).into(),
                deadline_unix_ms: 0,
                keep_latencies: false,
            })
        };
        let (link, rx) = ProbeLink::bounded(100, 2500);
        let mut out = Box::pin(link.outbound(rx));
        assert!(link.send(big()) && link.send(big()));
        // Reading frees budget.
        assert!(out.next().await.is_some());
        assert!(link.send(big()));
        assert!(!link.send(big()));
        assert!(link.is_closed());
    }

    /// The last word to a probe (the status that ends its stream) is delivered when every
    /// handle is dropped right after it.
    #[tokio::test]
    async fn what_is_queued_is_delivered_when_the_handles_go() {
        let (link, rx) = ProbeLink::channel(4);
        let out = link.outbound(rx);
        assert!(link.send(ack()));
        assert!(link.send(Err(CoordinatorError::invalid("kind", "bad"))));
        drop(link);
        let delivered: Vec<Outgoing> = out.collect().await;
        assert_eq!(delivered.len(), 2);
        assert!(delivered[1].is_err());
    }

    #[tokio::test]
    async fn a_dropped_receiver_closes_the_link() {
        let (link, rx) = ProbeLink::channel(2);
        drop(rx);
        assert!(link.is_closed());
        assert!(!link.send(ack()));
    }
}
