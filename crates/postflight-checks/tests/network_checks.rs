//! `tcp` checks against real sockets on loopback.
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
