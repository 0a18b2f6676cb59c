//! `tcp` checks against real sockets, and `grpc_health` checks against a real gRPC health
//! service, on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use postflight_checks::run::Executor;
use postflight_e2e::closed_port;
use postflight_plan::{CheckOutcome, CheckStatus, Expander, parse_plan};

async fn tcp(address: &str) -> CheckOutcome {
    let env: HashMap<String, String> = HashMap::new();
    let plan = parse_plan(
        &format!("name: t\nchecks:\n  - name: port\n    timeout: 2s\n    tcp: {{address: \"{address}\"}}\n"),
        "t.yaml",
        Expander::plan(&env),
    )
    .unwrap();
    Executor::new()
        .unwrap()
        .execute(&plan, &plan.checks[0])
        .await
}

#[tokio::test]
async fn an_open_port_passes_and_a_closed_one_fails_with_the_reason() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let open = tcp(&address).await;
    assert_eq!(open.status, CheckStatus::Pass, "{}", open.message);
    assert!(
        open.message
            .starts_with(&format!("{address} accepted a connection in ")),
        "{}",
        open.message
    );
    assert_eq!(open.samples.len(), 1);
    let port = closed_port();
    let closed = tcp(&format!("127.0.0.1:{port}")).await;
    assert_eq!(closed.status, CheckStatus::Fail);
    assert_eq!(
        closed.message,
        format!("could not connect to 127.0.0.1:{port}: connection refused")
    );
    let unknown = tcp("no-such-host.invalid:5432").await;
    assert_eq!(unknown.status, CheckStatus::Fail);
    assert!(
        unknown
            .message
            .starts_with("could not resolve no-such-host.invalid ("),
        "{}",
        unknown.message
    );
}

/// A real gRPC server on loopback with the standard health service.
async fn health_server() -> String {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("checkout", tonic_health::ServingStatus::NotServing)
        .await;
    reporter
        .set_service_status("orders", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        // The reporter must outlive the server: it owns the statuses.
        let _reporter = reporter;
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    address
}

async fn grpc(address: &str, service: &str) -> CheckOutcome {
    let env: HashMap<String, String> = HashMap::new();
    let plan = parse_plan(
        &format!(
            "name: t\nchecks:\n  - name: grpc\n    timeout: 3s\n    grpc_health: {{address: \"{address}\", service: \"{service}\"}}\n"
        ),
        "t.yaml",
        Expander::plan(&env),
    )
    .unwrap();
    Executor::new()
        .unwrap()
        .execute(&plan, &plan.checks[0])
        .await
}

#[tokio::test]
async fn grpc_health_passes_serving_services_only_and_says_why() {
    let address = health_server().await;
    let server = grpc(&address, "").await;
    assert_eq!(server.status, CheckStatus::Pass, "{}", server.message);
    assert!(
        server
            .message
            .starts_with(&format!("the gRPC server at {address} is SERVING")),
        "{}",
        server.message
    );
    assert_eq!(grpc(&address, "orders").await.status, CheckStatus::Pass);
    let down = grpc(&address, "checkout").await;
    assert_eq!(down.status, CheckStatus::Fail);
    assert_eq!(
        down.message,
        format!("service checkout at {address} is NOT_SERVING, expected SERVING")
    );
    let unknown = grpc(&address, "billing").await;
    assert_eq!(unknown.status, CheckStatus::Fail);
    assert_eq!(
        unknown.message,
        format!("service billing at {address} is unknown to its health service")
    );
    let port = closed_port();
    let closed = grpc(&format!("127.0.0.1:{port}"), "").await;
    assert_eq!(closed.status, CheckStatus::Fail);
    assert!(
        closed
            .message
            .starts_with(&format!("could not connect to 127.0.0.1:{port}: ")),
        "{}",
        closed.message
    );
}
