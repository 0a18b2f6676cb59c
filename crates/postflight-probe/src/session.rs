//! One session with the coordinator: connect (TLS, token), say hello with the assignments
//! still held, then read assignments and cancellations while writing results, heartbeats and
//! what finished; a lost stream ends the session and the probe reconnects with backoff.

use super::*;
use crate::assignments::{forget_expired, start};

pub(crate) enum SessionError {
    /// Credentials or identity refused: retrying soon will not help, but a rotated token
    /// might, so the probe keeps trying at the slowest pace.
    Refused(String),
    /// The connection broke; `welcomed` says whether it had been established.
    Lost { welcomed: bool, reason: String },
}

pub(crate) fn lost(welcomed: bool, reason: impl ToString) -> SessionError {
    SessionError::Lost {
        welcomed,
        reason: reason.to_string(),
    }
}

pub(crate) fn connector(config: &ProbeConfig, url: &str) -> Connector {
    Connector {
        url: url.to_owned(),
        tls: config.tls.clone(),
        token: config.token.clone(),
    }
}

pub(crate) async fn connect_channel(connector: &Connector) -> Result<Channel, SessionError> {
    let endpoint = connector
        .endpoint()
        .map_err(|e| SessionError::Refused(e.to_string()))?
        // A coordinator that is gone without a word (host down, packets dropped) costs a few
        // seconds, not the system's TCP timeout, before the next one is tried; a DNS name
        // with several addresses is tried address after address within it.
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    endpoint.connect().await.map_err(|e| {
        lost(
            false,
            format!(
                "cannot connect to {}: {}",
                connector.url,
                connector.explain(&e)
            ),
        )
    })
}

/// One connection: hello, welcome, then results out and assignments in until it breaks.
pub(crate) async fn session(shared: &Arc<Shared>) -> Result<(), SessionError> {
    let config = &shared.config;
    let connector = connector(config, shared.coordinator());
    let bearer = connector
        .bearer()
        .map_err(|e| SessionError::Refused(e.to_string()))?;
    let channel = connect_channel(&connector).await?;
    let mut client = ProbeServiceClient::new(channel)
        .max_decoding_message_size(16 * 1024 * 1024)
        .max_encoding_message_size(16 * 1024 * 1024);
    let (tx, rx) = mpsc::channel::<v1::ProbeMessage>(64);
    let active: Vec<String> = shared.state().held.keys().cloned().collect();
    let hello = v1::ProbeMessage {
        kind: Some(probe_message::Kind::Hello(v1::Hello {
            name: config.name.clone(),
            region: config.region.clone(),
            labels: config.labels.clone().into_iter().collect(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            active_assignments: active,
        })),
    };
    tx.send(hello).await.map_err(|e| lost(false, e))?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    bearer.apply(&mut request);
    let mut inbound = match client.connect(request).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            return Err(SessionError::Refused(status.message().to_owned()));
        }
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            return Err(SessionError::Refused(status.message().to_owned()));
        }
        Err(status) => {
            return Err(lost(false, connector.explain_status(&status)));
        }
    };
    let welcome = match inbound.message().await {
        Ok(Some(v1::CoordinatorMessage {
            kind: Some(coordinator_message::Kind::Welcome(w)),
        })) => w,
        Ok(other) => return Err(lost(false, format!("expected a welcome, got {other:?}"))),
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            return Err(SessionError::Refused(status.message().to_owned()));
        }
        Err(status) => {
            return Err(lost(false, connector.explain_status(&status)));
        }
    };
    let session_id = {
        let mut state = shared.state();
        state.session += 1;
        for id in &welcome.drop_assignments {
            if let Some(held) = state.held.remove(id)
                && let Some(task) = held.task
            {
                task.abort();
            }
        }
        state.session
    };
    tracing::info!(coordinator = %connector.url, region = %config.region, "connected");
    config.metrics.connections.inc();
    config.metrics.connected.set(1);
    let heartbeat = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(500)));
    let writer = tokio::spawn(write_loop(shared.clone(), tx, session_id, heartbeat));
    let result = loop {
        match inbound.message().await {
            Ok(Some(message)) => on_message(shared, message),
            Ok(None) => break Ok(()),
            Err(status) => {
                break Err(lost(
                    true,
                    format!("{}: {}", status.code(), status.message()),
                ));
            }
        }
    };
    writer.abort();
    config.metrics.connected.set(0);
    result
}

/// Sends unsent results in batches, unconfirmed finishes, and heartbeats.
pub(crate) async fn write_loop(
    shared: Arc<Shared>,
    tx: mpsc::Sender<v1::ProbeMessage>,
    session: u64,
    heartbeat: Duration,
) {
    let mut beat = tokio::time::interval(heartbeat);
    beat.tick().await;
    loop {
        let messages = {
            let mut state = shared.state();
            let mut messages = Vec::new();
            for batch in state.outbox.take_unsent(session, 256) {
                messages.push(v1::ProbeMessage {
                    kind: Some(probe_message::Kind::Results(v1::ResultBatch {
                        results: batch,
                    })),
                });
            }
            for (id, held) in state.held.iter_mut() {
                if held.sent_in == session {
                    continue;
                }
                let kind = if let Some(reason) = &held.rejected {
                    probe_message::Kind::Rejected(v1::AssignmentRejected {
                        assignment_id: id.clone(),
                        run_id: held.run_id.clone(),
                        reason: postflight_proto::cut_to_bytes(reason, MAX_CHECK_MESSAGE_BYTES)
                            .to_owned(),
                    })
                } else if let Some(results) = held.finished {
                    probe_message::Kind::Finished(v1::AssignmentFinished {
                        assignment_id: id.clone(),
                        run_id: held.run_id.clone(),
                        results,
                    })
                } else {
                    continue;
                };
                held.sent_in = session;
                messages.push(v1::ProbeMessage { kind: Some(kind) });
            }
            messages
        };
        for message in messages {
            if tx.send(message).await.is_err() {
                return;
            }
        }
        if shared.stopping() && shared.state().delivered(session) {
            // Ending the request stream tells the coordinator this probe is done; it closes
            // its side once it has processed everything before.
            tracing::info!("every result delivered; closing the stream");
            return;
        }
        tokio::select! {
            () = shared.wake.notified() => {
                // Let results completing together leave in one batch.
                tokio::time::sleep(shared.config.flush_interval).await;
            }
            _ = beat.tick() => {
                // Assignments past their deadline are over on the coordinator's side too:
                // forgotten as the session goes on, not only at a reconnect, so that a
                // long-lived probe does not keep every assignment it ever ran.
                forget_expired(&shared);
                let buffered = shared.state().outbox.len() as u32;
                let message = v1::ProbeMessage {
                    kind: Some(probe_message::Kind::Heartbeat(v1::Heartbeat {
                        sent_at_unix_ms: postflight_ops::host::now_ms() as u64,
                        buffered_results: buffered,
                    })),
                };
                if tx.send(message).await.is_err() {
                    return;
                }
            }
        }
    }
}

pub(crate) fn on_message(shared: &Arc<Shared>, message: v1::CoordinatorMessage) {
    match message.kind {
        Some(coordinator_message::Kind::Assignment(assignment)) => start(shared, assignment),
        Some(coordinator_message::Kind::Cancel(cancel)) => {
            if let Some(held) = shared.state().held.remove(&cancel.assignment_id) {
                tracing::info!(assignment = %cancel.assignment_id, reason = %cancel.reason, "assignment cancelled");
                if let Some(task) = held.task {
                    task.abort();
                }
            }
        }
        Some(coordinator_message::Kind::Ack(ack)) => {
            let buffered = {
                let mut state = shared.state();
                state.outbox.acknowledge(&ack.result_ids);
                state.outbox.len()
            };
            let metrics = &shared.config.metrics;
            metrics.acknowledged.inc_by(ack.result_ids.len() as u64);
            metrics.buffered.set(buffered as i64);
            if buffered == 0 && shared.stopping() {
                shared.wake.notify_one();
            }
        }
        Some(coordinator_message::Kind::Welcome(_)) | None => {}
    }
}
