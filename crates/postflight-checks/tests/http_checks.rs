//! HTTP and latency checks against a real HTTP server on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, get, post};
use postflight_checks::{Executor, RunOptions, run_plan};
use postflight_e2e::{TestServer, closed_port};
use postflight_plan::{CheckOutcome, CheckStatus, Expander, model::Plan, parse_plan};
use serde_json::{Value, json};

async fn chat(Json(body): Json<Value>) -> Json<Value> {
    let message = body["message"].as_str().unwrap_or_default();
    let response = if message.contains("INV-001") {
        "Invoice INV-001: 120.00 EUR, paid on 2026-11-02"
    } else {
        "Hello! I can look up invoices, orders and refunds."
    };
    Json(json!({"response": response, "tools": ["lookup_invoice"], "count": 3}))
}

async fn echo(method: Method, headers: HeaderMap, body: String) -> Json<Value> {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    Json(json!({"method": method.as_str(), "headers": headers, "body": body}))
}

#[derive(Clone, Default)]
struct Counter(Arc<AtomicUsize>);

/// Delays of successive requests: 50, 60, 70, 80, 300 ms, then again.
async fn stepped(State(counter): State<Counter>) -> &'static str {
    let delays = [50, 60, 70, 80, 300];
    let n = counter.0.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(delays[n % delays.len()])).await;
    "ok"
}

/// The first of every three requests fails with 500: a service that fails 1 in 3 times.
async fn one_in_three(State(counter): State<Counter>) -> StatusCode {
    if counter.0.fetch_add(1, Ordering::SeqCst) % 3 == 0 {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

/// Every second request fails with 500.
async fn flaky(State(counter): State<Counter>) -> StatusCode {
    if counter.0.fetch_add(1, Ordering::SeqCst) % 2 == 1 {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

async fn server() -> TestServer {
    let router = axum::Router::new()
        .route("/api/agent/chat", post(chat))
        .route("/echo", any(echo))
        .route(
            "/status/{code}",
            get(|Path(code): Path<u16>| async move { StatusCode::from_u16(code).unwrap() }),
        )
        .route(
            "/slow/{ms}",
            get(|Path(ms): Path<u64>| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                "finally"
            }),
        )
        .route(
            "/html",
            get(|| async { ([("content-type", "text/html")], "<html>maintenance</html>") }),
        )
        .route(
            "/versioned",
            get(|| async {
                (
                    [("x-version", "2.4.1"), ("content-type", "application/json")],
                    "{}",
                )
                    .into_response()
            }),
        )
        .route("/stepped", get(stepped).with_state(Counter::default()))
        .route("/flaky", get(flaky).with_state(Counter::default()))
        .route(
            "/one-in-three",
            get(one_in_three).with_state(Counter::default()),
        );
    TestServer::start(router).await
}

fn plan(yaml: &str) -> Plan {
    let env: HashMap<String, String> = HashMap::new();
    parse_plan(yaml, "test.yaml", Expander::plan(&env)).unwrap_or_else(|e| panic!("{}", e.render()))
}

/// Runs a plan with a single check and returns its outcome.
async fn outcome(yaml: &str) -> CheckOutcome {
    let plan = plan(yaml);
    let executor = Executor::new().unwrap();
    executor.execute(&plan, &plan.checks[0]).await
}

fn http_plan(base: &str, check: &str) -> String {
    format!("name: t\ntarget: {{base_url: \"{base}\"}}\nchecks:\n  - name: c\n{check}")
}

async fn http_outcome(server: &TestServer, check: &str) -> CheckOutcome {
    outcome(&http_plan(&server.url(""), check)).await
}

#[tokio::test]
async fn the_seed_agent_checks_pass_against_a_healthy_agent() {
    let s = server().await;
    let o = http_outcome(
        &s,
        "    http:\n      method: POST\n      url: /api/agent/chat\n      json: {message: \"Hello, what can you help me with?\"}\n      expect:\n        status: 200\n        json: [{path: $.response, min_length: 11}]\n",
    )
    .await;
    assert_eq!(o.status, CheckStatus::Pass, "{}", o.message);
    assert!(o.message.starts_with("status 200 in "), "{}", o.message);
    assert!(
        o.message.ends_with("all 2 expectations met"),
        "{}",
        o.message
    );
    assert_eq!(o.samples.len(), 1);
    assert!(o.samples[0].ok);
    let o = http_outcome(
        &s,
        "    http:\n      method: POST\n      url: /api/agent/chat\n      json: {message: \"Look up invoice INV-001\"}\n      expect:\n        json: [{path: $.response, contains: INV-001}]\n",
    )
    .await;
    assert_eq!(o.status, CheckStatus::Pass, "{}", o.message);
}

#[tokio::test]
async fn status_expectations() {
    let s = server().await;
    let check =
        |url: &str, expect: &str| format!("    http:\n      url: {url}\n      expect: {expect}\n");
    let o = http_outcome(&s, &check("/status/404", "{}")).await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert_eq!(o.message, "status 404, expected 2xx (body: empty)");
    assert!(
        !o.samples[0].ok,
        "a failed check's request is a failed request"
    );
    let o = http_outcome(&s, &check("/status/404", "{status: [200, 404]}")).await;
    assert_eq!(o.status, CheckStatus::Pass, "{}", o.message);
    let o = http_outcome(&s, &check("/status/201", "{status: 200}")).await;
    assert_eq!(o.message, "status 201, expected 200 (body: empty)");
    let o = http_outcome(&s, &check("/status/204", "{}")).await;
    assert_eq!(o.status, CheckStatus::Pass);
    let o = http_outcome(&s, &check("/status/302", "{}")).await;
    assert_eq!(
        o.status,
        CheckStatus::Fail,
        "redirects are not followed: {}",
        o.message
    );
}

#[tokio::test]
async fn json_expectations() {
    let s = server().await;
    let check = |assertion: &str| {
        format!(
            "    http:\n      method: POST\n      url: /api/agent/chat\n      json: {{message: hi}}\n      expect:\n        json: [{assertion}]\n"
        )
    };
    let cases = [
        ("{path: $.response}", true, ""),
        (
            "{path: $.missing}",
            false,
            "$.missing not found (got: {\"response\":\"Hello! I can look up invoices, orders and refunds.\"",
        ),
        ("{path: $.missing, exists: false}", true, ""),
        ("{path: $.count, equals: 3}", true, ""),
        (
            "{path: $.count, equals: 4}",
            false,
            "$.count is 3, expected 4",
        ),
        ("{path: $.tools, contains: lookup_invoice}", true, ""),
        ("{path: $.response, contains: refund}", true, ""),
        (
            "{path: $.response, contains: INV-001}",
            false,
            "$.response does not contain \"INV-001\" (got: \"Hello! I can look up invoices, orders and refunds.\")",
        ),
        ("{path: $.response, min_length: 11}", true, ""),
        (
            "{path: $.response, max_length: 10}",
            false,
            "$.response has 50 characters, expected at most 10",
        ),
        (
            "{path: \"$.tools[*]\", min_length: 1, max_length: 1}",
            true,
            "",
        ),
    ];
    for (assertion, pass, message_start) in cases {
        let o = http_outcome(&s, &check(assertion)).await;
        assert_eq!(
            o.status == CheckStatus::Pass,
            pass,
            "{assertion}: {}",
            o.message
        );
        assert!(
            o.message.starts_with(message_start),
            "{assertion}: {}",
            o.message
        );
    }
    let o = http_outcome(
        &s,
        "    http:\n      url: /html\n      expect: {json: [{path: $.x}]}\n",
    )
    .await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert!(
        o.message
            .starts_with("expected a JSON body for $.x, got text/html that is not JSON"),
        "{}",
        o.message
    );
}

#[tokio::test]
async fn body_header_and_latency_expectations() {
    let s = server().await;
    let check =
        |url: &str, expect: &str| format!("    http:\n      url: {url}\n      expect: {expect}\n");
    let cases = [
        ("/html", "{body_contains: [maintenance, html]}", true, ""),
        (
            "/html",
            "{body_contains: welcome}",
            false,
            "body does not contain \"welcome\" (got: \"<html>maintenance</html>\")",
        ),
        ("/html", "{body_not_contains: [error]}", true, ""),
        (
            "/html",
            "{body_not_contains: [maintenance]}",
            false,
            "body contains \"maintenance\", expected it not to",
        ),
        ("/html", "{body_regex: \"<html>\\\\w+</html>\"}", true, ""),
        (
            "/html",
            "{body_regex: \"^\\\\{\"}",
            false,
            "body does not match /^\\{/",
        ),
        ("/versioned", "{headers: {X-Version: \"2.\"}}", true, ""),
        (
            "/versioned",
            "{headers: {x-version: \"3.\"}}",
            false,
            "header x-version is \"2.4.1\", expected it to contain \"3.\"",
        ),
        (
            "/versioned",
            "{headers: {x-request-id: \"\"}}",
            false,
            "header x-request-id is missing",
        ),
        ("/slow/0", "{max_latency: 5s}", true, ""),
        ("/slow/150", "{max_latency: 50ms}", false, "took "),
    ];
    for (url, expect, pass, message_start) in cases {
        let o = http_outcome(&s, &check(url, expect)).await;
        assert_eq!(
            o.status == CheckStatus::Pass,
            pass,
            "{url} {expect}: {}",
            o.message
        );
        assert!(
            o.message.starts_with(message_start),
            "{url} {expect}: {}",
            o.message
        );
    }
}

#[tokio::test]
async fn requests_carry_method_headers_and_bodies() {
    let s = server().await;
    let yaml = format!(
        "name: t\ntarget:\n  base_url: \"{}\"\n  headers: {{Authorization: \"Bearer t0k\", X-Env: staging}}\nchecks:\n  - name: json\n    http:\n      method: put\n      url: /echo\n      headers: {{X-Env: prod}}\n      json: {{a: [1, 2]}}\n      expect:\n        json:\n          - {{path: $.method, equals: PUT}}\n          - {{path: \"$.headers['x-env']\", equals: prod}}\n          - {{path: \"$.headers.authorization\", equals: \"Bearer t0k\"}}\n          - {{path: \"$.headers['content-type']\", equals: application/json}}\n          - {{path: $.body, equals: '{{\"a\":[1,2]}}'}}\n  - name: raw\n    http:\n      method: POST\n      url: {}\n      body: plain text\n      expect: {{json: [{{path: $.body, equals: plain text}}]}}\n",
        s.url(""),
        s.url("/echo"),
    );
    let plan = plan(&yaml);
    let executor = Executor::new().unwrap();
    for check in &plan.checks {
        let o = executor.execute(&plan, check).await;
        assert_eq!(o.status, CheckStatus::Pass, "{}: {}", check.name, o.message);
    }
}

#[tokio::test]
async fn a_timeout_fails_the_check_and_says_so() {
    let s = server().await;
    let o = http_outcome(&s, "    timeout: 300ms\n    http: {url: /slow/5000}\n").await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert!(
        o.message
            .starts_with("no complete answer within 300ms from GET http://127.0.0.1:"),
        "{}",
        o.message
    );
    assert!(o.message.ends_with("/slow/5000 (timeout)"), "{}", o.message);
    assert!(
        o.duration < Duration::from_secs(5),
        "the check gave up at its timeout"
    );
}

#[tokio::test]
async fn a_refused_connection_fails_the_check_and_says_so() {
    let port = closed_port();
    let o = outcome(&format!("name: t\nchecks:\n  - name: c\n    http: {{url: \"http://127.0.0.1:{port}/api/agent/chat\"}}\n")).await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert_eq!(
        o.message,
        format!(
            "GET http://127.0.0.1:{port}/api/agent/chat failed: could not connect: connection refused"
        )
    );
    assert!(!o.samples[0].ok);
}

/// A name that does not resolve (`.invalid` never does, RFC 2606) says so, for the direct
/// HTTP/1.1 path of http and latency checks and for reqwest's path (https).
#[tokio::test]
async fn a_host_that_does_not_resolve_fails_the_check_and_says_so() {
    for (kind, url) in [
        ("http", "http://no-such-host.invalid/health"),
        ("http", "https://no-such-host.invalid/health"),
        ("latency", "http://no-such-host.invalid/health"),
    ] {
        let check = if kind == "http" {
            format!("    http: {{url: \"{url}\"}}\n")
        } else {
            format!("    latency: {{request: {{url: \"{url}\"}}, samples: 2, pass_below: 5s}}\n")
        };
        let o = outcome(&format!("name: t\nchecks:\n  - name: c\n{check}")).await;
        assert_eq!(o.status, CheckStatus::Fail, "{kind} {url}: {}", o.message);
        assert!(
            o.message.contains("could not resolve the host ("),
            "{kind} {url}: {}",
            o.message
        );
    }
}

#[tokio::test]
async fn latency_percentile_is_the_nearest_rank_of_known_delays() {
    let s = server().await;
    let o = http_outcome(
        &s,
        "    latency:\n      request: {url: /stepped}\n      samples: 5\n      percentile: 95\n      pass_below: 250ms\n      warn_below: 2s\n",
    )
    .await;
    // Delays 50, 60, 70, 80, 300 ms: the nearest-rank p95 of five samples is the slowest.
    assert_eq!(o.status, CheckStatus::Warn, "{}", o.message);
    assert!(
        o.message.starts_with("p95 3"),
        "p95 is the 300 ms request: {}",
        o.message
    );
    assert!(
        o.message
            .contains("is not below 250ms (but below 2s) over 5 requests (p50 7"),
        "{}",
        o.message
    );
    let mut latencies: Vec<Duration> = o.samples.iter().map(|s| s.latency).collect();
    latencies.sort();
    let expected = [50, 60, 70, 80, 300];
    for (seen, floor) in latencies.iter().zip(expected) {
        assert!(
            *seen >= Duration::from_millis(floor),
            "{seen:?} < {floor} ms"
        );
    }
    // p50 of the same delays passes a 250 ms bound.
    let o = http_outcome(
        &s,
        "    latency:\n      request: {url: /stepped}\n      samples: 5\n      percentile: 50\n      pass_below: 250ms\n",
    )
    .await;
    assert_eq!(o.status, CheckStatus::Pass, "{}", o.message);
}

#[tokio::test]
async fn latency_counts_failed_requests() {
    let s = server().await;
    let o = http_outcome(
        &s,
        "    latency:\n      request: {url: /flaky}\n      samples: 4\n      concurrency: 2\n      pass_below: 5s\n",
    )
    .await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert_eq!(
        o.message,
        "2 of 4 requests failed (50.0%, at most 0.0% allowed); first error: status 500, expected 2xx"
    );
    assert_eq!(o.samples.iter().filter(|s| !s.ok).count(), 2);
    let o = http_outcome(
        &s,
        "    latency:\n      request: {url: /flaky}\n      samples: 4\n      max_error_rate: 0.5\n      pass_below: 5s\n",
    )
    .await;
    assert_eq!(o.status, CheckStatus::Pass, "{}", o.message);
    let o = http_outcome(
        &s,
        "    latency:\n      request: {url: /status/503}\n      samples: 3\n      expect_status: 503\n      pass_below: 5s\n",
    )
    .await;
    assert_eq!(
        o.status,
        CheckStatus::Pass,
        "expect_status accepts 503: {}",
        o.message
    );
}

#[tokio::test]
async fn a_latency_check_stops_at_its_timeout() {
    let s = server().await;
    let o = http_outcome(
        &s,
        "    timeout: 400ms\n    latency:\n      request: {url: /slow/3000}\n      samples: 3\n      concurrency: 3\n      pass_below: 5s\n",
    )
    .await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert!(
        o.message.starts_with("3 of 3 requests failed (100.0%"),
        "{}",
        o.message
    );
    assert!(o.message.contains("(timeout)"), "{}", o.message);
    // Each request had what was left of the 400 ms: the message says so to the millisecond
    // (a readable duration, never a garbled one such as `399ms0.85µs`).
    let within = o
        .message
        .split("no complete answer within ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_default();
    let left = postflight_plan::duration::parse_duration(within)
        .unwrap_or_else(|e| panic!("{within:?} in {}: {e}", o.message));
    assert!(
        left <= std::time::Duration::from_millis(400)
            && left >= std::time::Duration::from_millis(100)
            && left.subsec_nanos().is_multiple_of(1_000_000),
        "{}",
        o.message
    );
    assert_eq!(o.missing, 0, "every request was sent");
}

/// A hung service fails its latency check (the requests it got were never answered), while
/// the requests the check never got to send before its timeout are missing data: neither
/// made nor failed.
#[tokio::test]
async fn requests_never_sent_before_the_timeout_are_missing_not_failed() {
    let s = server().await;
    let o = http_outcome(
        &s,
        "    timeout: 1s\n    latency:\n      request: {url: /slow/300}\n      samples: 10\n      concurrency: 1\n      max_error_rate: 0.5\n      pass_below: 2s\n",
    )
    .await;
    // About three answered (300 ms each), one cut off in flight (failed), six never sent.
    let made = o.samples.len() as u64;
    let failed = o.samples.iter().filter(|s| !s.ok).count();
    assert!(
        (3..=5).contains(&made),
        "{made} requests made: {}",
        o.message
    );
    assert_eq!(made + o.missing, 10);
    assert!(
        failed <= 1,
        "only the request in flight at the deadline fails: {}",
        o.message
    );
    assert_eq!(o.status, CheckStatus::Pass, "{}", o.message);
    assert!(
        o.message.ends_with(&format!(
            "; {} of 10 requests not attempted before the check's timeout of 1s (missing data, not failures)",
            o.missing
        )),
        "{}",
        o.message
    );
}

#[tokio::test]
async fn run_reports_in_plan_order_and_a_deadline_leaves_missing_data() {
    let s = server().await;
    let yaml = http_plan(
        &s.url(""),
        "    http: {url: /slow/300}\n  - name: fast\n    http: {url: /slow/0}\n  - name: stuck\n    http: {url: /slow/10000}\n",
    );
    let plan = plan(&yaml);
    let executor = Executor::new().unwrap();
    let mut completion_order = Vec::new();
    let options = RunOptions {
        deadline: Some(tokio::time::Instant::now() + Duration::from_millis(1500)),
        ..RunOptions::default()
    };
    let outcomes = run_plan(&executor, &plan, options, |i, _| completion_order.push(i)).await;
    assert_eq!(
        completion_order,
        [1, 0],
        "the fast check finished first, the stuck one never"
    );
    assert_eq!(outcomes[0].as_ref().unwrap().status, CheckStatus::Pass);
    assert_eq!(outcomes[1].as_ref().unwrap().status, CheckStatus::Pass);
    assert!(outcomes[2].is_none(), "cut off by the deadline: no outcome");
}

/// Remembers the client port of every request: one port per TCP connection.
#[derive(Clone, Default)]
struct Peers(Arc<std::sync::Mutex<Vec<u16>>>);

impl Peers {
    fn distinct(&self) -> usize {
        let mut ports = self.0.lock().unwrap().clone();
        ports.sort_unstable();
        ports.dedup();
        ports.len()
    }
}

async fn peers_server(peers: Peers) -> TestServer {
    async fn record(
        State(peers): State<Peers>,
        axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    ) -> &'static str {
        peers.0.lock().unwrap().push(peer.port());
        "ok"
    }
    async fn record_and_close(
        state: State<Peers>,
        info: axum::extract::ConnectInfo<std::net::SocketAddr>,
    ) -> impl IntoResponse {
        ([("connection", "close")], record(state, info).await)
    }
    let router = axum::Router::new()
        .route("/peer", get(record))
        .route("/close", get(record_and_close))
        .with_state(peers);
    TestServer::start(router).await
}

#[tokio::test]
async fn latency_samples_reuse_one_connection_per_worker_and_http_checks_never_do() {
    let peers = Peers::default();
    let server = peers_server(peers.clone()).await;
    let o = http_outcome(
        &server,
        "    latency:\n      request: {url: /peer}\n      samples: 30\n      concurrency: 3\n      pass_below: 5s\n",
    )
    .await;
    assert_eq!(o.status, CheckStatus::Pass, "{}", o.message);
    assert_eq!(peers.0.lock().unwrap().len(), 30);
    let connections = peers.distinct();
    assert!(
        (1..=3).contains(&connections),
        "30 samples by 3 workers used {connections} connections"
    );

    let peers = Peers::default();
    let server = peers_server(peers.clone()).await;
    for _ in 0..3 {
        let o = http_outcome(&server, "    http: {url: /peer}\n").await;
        assert_eq!(o.status, CheckStatus::Pass, "{}", o.message);
    }
    assert_eq!(
        peers.distinct(),
        3,
        "each http check opens its own connection"
    );
}

#[tokio::test]
async fn a_server_that_closes_every_connection_still_gives_every_sample() {
    let peers = Peers::default();
    let server = peers_server(peers.clone()).await;
    let o = http_outcome(
        &server,
        "    latency:\n      request: {url: /close}\n      samples: 12\n      concurrency: 2\n      pass_below: 5s\n",
    )
    .await;
    assert_eq!(o.status, CheckStatus::Pass, "{}", o.message);
    assert_eq!(o.samples.iter().filter(|s| s.ok).count(), 12);
    assert_eq!(peers.distinct(), 12, "a closed connection is reopened");
}

#[tokio::test]
async fn a_body_beyond_the_size_limit_is_cut_and_the_check_says_so() {
    let big = "a".repeat(postflight_checks::http::MAX_BODY_BYTES + 1024) + "THE-END";
    let router = axum::Router::new().route("/big", get(move || async move { big }));
    let server = TestServer::start(router).await;
    let o = http_outcome(
        &server,
        "    http:\n      url: /big\n      expect: {body_contains: THE-END}\n",
    )
    .await;
    assert_eq!(o.status, CheckStatus::Fail, "{}", o.message);
    assert!(o.message.contains("was cut"), "{}", o.message);
    let o = http_outcome(
        &server,
        "    http:\n      url: /big\n      expect: {body_contains: aaaa}\n",
    )
    .await;
    assert_eq!(o.status, CheckStatus::Pass, "{}", o.message);
}

/// Against a certificate from an unknown CA, both kinds of HTTP check fail with a sentence an
/// operator acts on; the happy path with the CA trusted is in tests/cli_local.rs (it needs
/// `SSL_CERT_FILE` set for the whole process).
#[tokio::test]
async fn an_untrusted_certificate_fails_http_and_latency_checks_and_says_why() {
    let server = postflight_e2e::TlsTestServer::start(
        axum::Router::new().route("/", get(|| async { "ok" })),
    )
    .await;
    for check in [
        "    http: {url: /}\n",
        "    latency:\n      request: {url: /}\n      samples: 2\n      pass_below: 5s\n",
    ] {
        let o = outcome(&http_plan(&server.url(""), check)).await;
        assert_eq!(o.status, CheckStatus::Fail, "{}", o.message);
        assert!(
            o.message.contains(
                "TLS error: the server's certificate is not signed by a trusted authority"
            ),
            "{check}: {}",
            o.message
        );
    }
}

#[tokio::test]
async fn latency_samples_carry_method_headers_and_body() {
    async fn strict(method: Method, headers: HeaderMap, body: String) -> StatusCode {
        let header = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        };
        let right = method == Method::PUT
            && header("content-type") == "application/json"
            && header("x-tenant") == "acme"
            && header("user-agent").starts_with("postflight/")
            && header("host").starts_with("127.0.0.1:")
            && serde_json::from_str::<Value>(&body).ok() == Some(json!({"id": 7}));
        if right {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        }
    }
    let server = TestServer::start(axum::Router::new().route("/strict", any(strict))).await;
    let o = http_outcome(
        &server,
        "    latency:\n      request: {method: PUT, url: /strict, headers: {X-Tenant: acme}, json: {id: 7}}\n      samples: 4\n      pass_below: 5s\n",
    )
    .await;
    assert_eq!(o.status, CheckStatus::Pass, "{}", o.message);
    let o = http_outcome(
        &server,
        "    latency:\n      request: {method: PUT, url: /strict, json: {id: 8}}\n      samples: 2\n      pass_below: 5s\n",
    )
    .await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert!(
        o.message.contains("status 400, expected 2xx"),
        "{}",
        o.message
    );
}

/// `repeat` against a service that fails 1 in 3 times: `pass_when: all` fails, `majority`
/// passes, and the message gives the pass count.
#[tokio::test]
async fn repeats_of_a_flaky_service_fail_all_and_pass_majority() {
    let server = server().await;
    let all = http_outcome(&server, "    repeat: 3\n    http: {url: /one-in-three}\n").await;
    assert_eq!(all.status, CheckStatus::Fail, "{}", all.message);
    assert!(
        all.message
            .starts_with("passed 2 of 3 runs (pass^3); run 1 of 3: status 500"),
        "{}",
        all.message
    );
    assert_eq!(all.samples.len(), 3);
    let majority = http_outcome(
        &server,
        "    repeat: 3\n    pass_when: majority\n    http: {url: /one-in-three}\n",
    )
    .await;
    assert_eq!(majority.status, CheckStatus::Pass, "{}", majority.message);
    assert!(
        majority
            .message
            .starts_with("passed 2 of 3 runs (pass_when majority: 2 needed)"),
        "{}",
        majority.message
    );
}
