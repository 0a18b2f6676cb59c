//! Rollback actions against real parts: a real HTTP receiver that verifies the webhook's
//! signature, a real shell for commands, and — since no Kubernetes API server can run here —
//! a stand-in API server (axum) that serves API objects recorded from a cluster and records
//! the patch, so the real kube-rs client does real HTTP against it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::get;
use postflight_e2e::TestServer;
use postflight_plan::model::{RollbackAction, Webhook};
use postflight_plan::rollback::RollbackContext;
use postflight_rollback::{execute, webhook};
use ring::hmac;

fn context() -> RollbackContext {
    RollbackContext {
        plan: "agent-backend-migration".into(),
        run_id: "run-42".into(),
        monitor_id: None,
        verdict: "FAIL".into(),
        summary: "FAIL — rollback recommended".into(),
        reasons: vec!["verdict FAIL: tool-calling-works failed in 2 of 3 regions".into()],
        regions: vec!["eu-west".into(), "us-east".into()],
        decided_at: "2026-11-27T12:00:00.000Z".into(),
        executed_by: "test".into(),
    }
}

#[derive(Clone, Default)]
struct Receiver {
    attempts: Arc<Mutex<u32>>,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    /// The delivery id of every attempt.
    deliveries: Arc<Mutex<Vec<String>>>,
    fail_first: u32,
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .filter_map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

/// Checks `X-Postflight-Signature-V2` as a careful receiver would: the HMAC of
/// "timestamp.delivery.body", a timestamp within five minutes, and a delivery id it has not
/// acted on yet. Returns the delivery id.
fn verify_v2(headers: &HeaderMap, body: &[u8], acted: &[String]) -> Result<String, StatusCode> {
    let value = headers
        .get("x-postflight-signature-v2")
        .and_then(|v| v.to_str().ok())
        .ok_or(StatusCode::UNAUTHORIZED)?;
    let field = |name: &str| {
        value
            .split(',')
            .find_map(|kv| kv.strip_prefix(name))
            .map(str::to_owned)
            .ok_or(StatusCode::UNAUTHORIZED)
    };
    let (t, id, v2) = (field("t=")?, field("id=")?, field("v2=")?);
    let mut signed = format!("{t}.{id}.").into_bytes();
    signed.extend_from_slice(body);
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"hook-secret-123");
    hmac::verify(&key, &signed, &unhex(&v2)).map_err(|_| StatusCode::UNAUTHORIZED)?;
    let sent: u64 = t.parse().map_err(|_| StatusCode::UNAUTHORIZED)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now.abs_diff(sent) > 300 {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let header_id = headers
        .get("x-postflight-delivery")
        .and_then(|v| v.to_str().ok());
    if header_id != Some(id.as_str()) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    if acted.contains(&id) {
        return Err(StatusCode::CONFLICT);
    }
    Ok(id)
}

/// A receiver that checks the signature the way a deployment system would.
async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let attempt = {
        let mut a = r.attempts.lock().unwrap();
        *a += 1;
        *a
    };
    let Some(signature) = headers
        .get("x-postflight-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return StatusCode::UNAUTHORIZED;
    };
    let Some(hex) = signature.strip_prefix("sha256=") else {
        return StatusCode::UNAUTHORIZED;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"hook-secret-123");
    if hmac::verify(&key, &body, &unhex(hex)).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    let acted: Vec<String> = {
        let bodies = r.bodies.lock().unwrap();
        bodies
            .iter()
            .filter_map(|b| b["delivery"].as_str().map(str::to_owned))
            .collect()
    };
    let id = match verify_v2(&headers, &body, &acted) {
        Ok(id) => id,
        Err(code) => return code,
    };
    r.deliveries.lock().unwrap().push(id.clone());
    if attempt <= r.fail_first {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let mut decision: serde_json::Value = serde_json::from_slice(&body).unwrap();
    decision["delivery"] = serde_json::Value::String(id);
    r.bodies.lock().unwrap().push(decision);
    StatusCode::OK
}

async fn receiver(fail_first: u32) -> (TestServer, Receiver) {
    let state = Receiver {
        fail_first,
        ..Receiver::default()
    };
    let router = axum::Router::new()
        .route("/hooks/rollback", axum::routing::post(receive))
        .with_state(state.clone());
    (TestServer::start(router).await, state)
}

fn hook(url: String, secret: &str, retries: u32) -> RollbackAction {
    RollbackAction::Webhook(Webhook {
        url,
        secret: Some(secret.into()),
        timeout: Duration::from_secs(5),
        retries,
    })
}

#[tokio::test]
async fn the_webhook_is_signed_and_carries_the_decision() {
    let (server, state) = receiver(0).await;
    let env = std::collections::HashMap::<String, String>::new();
    let done = execute(
        &hook(server.url("/hooks/rollback"), "hook-secret-123", 0),
        &context(),
        &env,
    )
    .await;
    assert!(done.unwrap().ends_with("/hooks/rollback answered 200 OK"));
    let bodies = state.bodies.lock().unwrap();
    assert_eq!(bodies[0]["plan"], "agent-backend-migration");
    assert_eq!(bodies[0]["run_id"], "run-42");
    assert_eq!(bodies[0]["verdict"], "FAIL");
    assert_eq!(
        bodies[0]["reasons"][0],
        "verdict FAIL: tool-calling-works failed in 2 of 3 regions"
    );
    assert_eq!(
        bodies[0]["regions"],
        serde_json::json!(["eu-west", "us-east"])
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_and_not_retried() {
    let (server, state) = receiver(0).await;
    let env = std::collections::HashMap::<String, String>::new();
    let err = execute(
        &hook(server.url("/hooks/rollback"), "not-the-secret", 3),
        &context(),
        &env,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("answered 401 Unauthorized"), "{err}");
    assert!(
        !err.contains("attempts"),
        "a refusal is final, not retried: {err}"
    );
    assert_eq!(*state.attempts.lock().unwrap(), 1, "a 4xx is final");
}

#[tokio::test]
async fn unavailable_receivers_are_retried_a_bounded_number_of_times() {
    let (server, state) = receiver(2).await;
    let env = std::collections::HashMap::<String, String>::new();
    assert!(
        execute(
            &hook(server.url("/hooks/rollback"), "hook-secret-123", 3),
            &context(),
            &env
        )
        .await
        .is_ok()
    );
    assert_eq!(*state.attempts.lock().unwrap(), 3, "two 503s, then success");
    let deliveries = state.deliveries.lock().unwrap().clone();
    assert_eq!(deliveries.len(), 3);
    assert!(
        deliveries.iter().all(|d| d == &deliveries[0]),
        "every retry is the same delivery: {deliveries:?}"
    );
    let (server, state) = receiver(10).await;
    let err = execute(
        &hook(server.url("/hooks/rollback"), "hook-secret-123", 1),
        &context(),
        &env,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.ends_with("(after 2 attempts)"), "{err}");
    assert_eq!(*state.attempts.lock().unwrap(), 2);
    let port = postflight_e2e::closed_port();
    let err = execute(
        &hook(format!("http://127.0.0.1:{port}/x"), "s", 0),
        &context(),
        &env,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("could not connect: connection refused"),
        "{err}"
    );
}

/// A request captured on the way and sent again is refused by a receiver that remembers
/// delivery ids: the second signature covers the id, so it cannot be changed.
#[tokio::test]
async fn a_replayed_delivery_is_refused_by_the_receiver() {
    let (server, state) = receiver(0).await;
    let env = std::collections::HashMap::<String, String>::new();
    let url = server.url("/hooks/rollback");
    execute(&hook(url.clone(), "hook-secret-123", 0), &context(), &env)
        .await
        .unwrap();
    // The replay: the same body, with signatures made for it just now (as an attacker who
    // captured one request can only resend it, this is the strongest replay there is).
    let body = context().payload();
    let id = webhook::delivery_id(&body);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let replay =
        postflight_ops::http_client::client(postflight_ops::http_client::Connections::Fresh)
            .unwrap()
            .post(&url)
            .header(
                webhook::SIGNATURE_HEADER,
                webhook::signature("hook-secret-123", &body),
            )
            .header(webhook::DELIVERY_HEADER, &id)
            .header(
                webhook::SIGNATURE_V2_HEADER,
                webhook::signature_v2("hook-secret-123", now, &id, &body),
            )
            .body(body)
            .send()
            .await
            .unwrap();
    assert_eq!(replay.status().as_u16(), 409);
    assert_eq!(state.bodies.lock().unwrap().len(), 1, "acted once");
}

/// A receiver that answers an error with a huge page: the action reads 4 KiB of it, and the
/// report keeps a short excerpt.
#[tokio::test]
async fn a_huge_error_answer_is_read_with_a_bound() {
    let router = axum::Router::new().route(
        "/hooks/rollback",
        axum::routing::post(|| async { (StatusCode::BAD_REQUEST, "x".repeat(50 << 20)) }),
    );
    let server = TestServer::start(router).await;
    let env = std::collections::HashMap::<String, String>::new();
    let err = execute(
        &hook(server.url("/hooks/rollback"), "hook-secret-123", 0),
        &context(),
        &env,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("answered 400 Bad Request: xxx"),
        "{}",
        &err[..200]
    );
    assert!(err.len() < 500, "{} bytes", err.len());
}

#[test]
fn the_signature_header_format() {
    assert!(webhook::signature("k", b"{}").starts_with("sha256="));
    assert_eq!(webhook::signature("k", b"{}").len(), "sha256=".len() + 64);
}

#[tokio::test]
async fn a_command_gets_the_decision_in_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env.txt");
    let argv = vec![
        "sh".into(),
        "-c".into(),
        format!("env | grep ^POSTFLIGHT_ | sort > {}", out.display()),
    ];
    let env = std::collections::HashMap::<String, String>::new();
    execute(&RollbackAction::Command(argv), &context(), &env)
        .await
        .unwrap();
    let seen = std::fs::read_to_string(&out).unwrap();
    for line in [
        "POSTFLIGHT_PLAN=agent-backend-migration",
        "POSTFLIGHT_RUN_ID=run-42",
        "POSTFLIGHT_VERDICT=FAIL",
        "POSTFLIGHT_REGIONS=eu-west,us-east",
        "POSTFLIGHT_REASONS=verdict FAIL: tool-calling-works failed in 2 of 3 regions",
    ] {
        assert!(
            seen.lines().any(|l| l == line),
            "missing {line} in:\n{seen}"
        );
    }
    let failing = RollbackAction::Command(vec![
        "sh".into(),
        "-c".into(),
        "echo cannot reach the cluster >&2; exit 4".into(),
    ]);
    let err = execute(&failing, &context(), &env)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("exited with 4: cannot reach the cluster"),
        "{err}"
    );
}

#[derive(Clone, Default)]
struct FakeApi {
    patches: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(manifest_dir().join("tests/fixtures/kube").join(name)).unwrap()
}

#[cfg(feature = "kubernetes")]
#[tokio::test]
async fn the_kubernetes_undo_patches_the_previous_template_through_the_api() {
    let api = FakeApi::default();
    let router = axum::Router::new()
        .route(
            "/apis/apps/v1/namespaces/default/deployments/agent-backend",
            get(|| async { ([("content-type", "application/json")], fixture("deployment.json")) }).patch(
                |State(api): State<FakeApi>, headers: HeaderMap, body: axum::body::Bytes| async move {
                    let kind = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    api.patches.lock().unwrap().push((kind, serde_json::from_slice(&body).unwrap()));
                    ([("content-type", "application/json")], fixture("deployment.json"))
                },
            ),
        )
        .route(
            "/apis/apps/v1/namespaces/default/replicasets",
            get(|uri: Uri| async move {
                assert_eq!(uri.query(), Some("&labelSelector=app%3Dagent-backend"));
                ([("content-type", "application/json")], fixture("replicasets.json"))
            }),
        )
        .with_state(api.clone());
    let server = TestServer::start(router).await;
    let config = kube::Config::new(server.url("").parse().unwrap());
    let done = postflight_rollback::kubernetes::undo_with(config, "agent-backend", "default")
        .await
        .unwrap();
    assert_eq!(
        done,
        "deployment default/agent-backend rolled back to revision 2"
    );
    {
        let patches = api.patches.lock().unwrap();
        assert_eq!(patches.len(), 1);
        assert_eq!(patches[0].0, "application/json-patch+json");
        assert_eq!(patches[0].1[0]["path"], "/spec/template");
        assert_eq!(
            patches[0].1[0]["value"]["spec"]["containers"][0]["image"],
            "registry.example.com/agent-backend:1.41.0"
        );
    }
    let config = kube::Config::new(server.url("").parse().unwrap());
    let err = postflight_rollback::kubernetes::undo_with(config, "missing", "default")
        .await
        .unwrap_err();
    assert!(
        err.starts_with("cannot read deployment default/missing:"),
        "{err}"
    );
}

/// This crate's directory, read when the test runs: a test binary built in another clone that
/// shares the target directory carries that clone's compile-time path.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        std::path::PathBuf::from,
    )
}
