//! Network checks on loopback: `tcp` against real sockets, `grpc_health` against a real gRPC
//! health service, `tls` against openssl-made certificates, `dns` against a real dnsmasq.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use postflight_checks::run::Executor;
use postflight_e2e::closed_port;
use postflight_plan::{CheckOutcome, CheckStatus, Expander, parse_plan};

/// Executes a plan of one check, `timeout` and `kind` (the check's kind line) as given.
async fn check(timeout: &str, kind: &str) -> CheckOutcome {
    let env: HashMap<String, String> = HashMap::new();
    let plan = parse_plan(
        &format!("name: t\nchecks:\n  - name: c\n    timeout: {timeout}\n    {kind}\n"),
        "t.yaml",
        Expander::plan(&env),
    )
    .unwrap_or_else(|e| panic!("{}", e.render()));
    Executor::new()
        .unwrap()
        .execute(&plan, &plan.checks[0])
        .await
}

async fn tcp(address: &str) -> CheckOutcome {
    check("2s", &format!("tcp: {{address: \"{address}\"}}")).await
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
    check(
        "3s",
        &format!("grpc_health: {{address: \"{address}\", service: \"{service}\"}}"),
    )
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

/// A TLS server on loopback presenting `issued` (made by the real `openssl`), completing
/// handshakes until the test ends.
async fn tls_server(issued: &postflight_e2e::Issued) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&issued.cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&issued.key).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(stream).await;
            });
        }
    });
    port
}

async fn tls(fields: &str) -> CheckOutcome {
    check("5s", &format!("tls: {{{fields}}}")).await
}

/// `tls` checks against certificates made by openssl: a valid one passes with its days left;
/// one expiring in 3 days fails `min_days_valid: 14`; an expired one, one for another name
/// and one from a CA the check was not given each fail saying so, with the dates.
#[tokio::test]
async fn tls_checks_read_the_chain_the_name_and_the_days_left() {
    use postflight_e2e::{CertUse, TestPki};
    let pki = TestPki::new("tls-check");
    let ca = pki.ca.display().to_string();
    let valid = tls_server(&pki.issue("valid", CertUse::Server, 30)).await;
    let o = tls(&format!("address: \"localhost:{valid}\", ca: \"{ca}\"")).await;
    assert_eq!(o.status, CheckStatus::Pass, "{}", o.message);
    // openssl counts the days from the second it signs, which may be the second the check
    // runs in: a fresh 30-day certificate has 29 or 30 whole days left.
    assert!(
        ["29", "30"].iter().any(|n| o.message.starts_with(&format!(
            "the certificate for localhost is trusted and valid for {n} more days ("
        ))),
        "{}",
        o.message
    );
    assert_eq!(o.samples.len(), 1);
    let by_ip = tls(&format!(
        "address: \"127.0.0.1:{valid}\", ca: \"{ca}\", min_days_valid: 7"
    ))
    .await;
    assert_eq!(by_ip.status, CheckStatus::Pass, "{}", by_ip.message);

    let soon = tls_server(&pki.issue("soon", CertUse::Server, 3)).await;
    let o = tls(&format!(
        "address: \"localhost:{soon}\", ca: \"{ca}\", min_days_valid: 14"
    ))
    .await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert!(
        ["2", "3"].iter().any(|n| o.message.starts_with(&format!(
            "the certificate for localhost expires in {n} days ("
        ))) && o.message.ends_with("), fewer than min_days_valid 14"),
        "{}",
        o.message
    );

    let expired = tls_server(&pki.issue("expired", CertUse::Server, 0)).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let o = tls(&format!("address: \"localhost:{expired}\", ca: \"{ca}\"")).await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert!(
        o.message
            .starts_with("the certificate for localhost expired less than a day ago ("),
        "{}",
        o.message
    );

    let elsewhere = tls_server(&pki.issue("elsewhere", CertUse::OtherServer, 30)).await;
    let o = tls(&format!("address: \"localhost:{elsewhere}\", ca: \"{ca}\"")).await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert!(
        o.message.starts_with(&format!(
            "the certificate of localhost:{elsewhere} is not valid for localhost; the certificate for localhost expires in "
        )),
        "{}",
        o.message
    );
    let o = tls(&format!(
        "address: \"localhost:{elsewhere}\", ca: \"{ca}\", server_name: elsewhere.example"
    ))
    .await;
    assert_eq!(o.status, CheckStatus::Pass, "{}", o.message);

    let o = tls(&format!("address: \"localhost:{valid}\"")).await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert!(
        o.message.starts_with(&format!(
            "the certificate of localhost:{valid} is not signed by a trusted authority (self-signed, or a private CA: give it with `ca`)"
        )),
        "{}",
        o.message
    );

    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = plain.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let o = tls(&format!("address: \"127.0.0.1:{plain_port}\"")).await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert!(
        o.message.starts_with(&format!(
            "the TLS handshake with 127.0.0.1:{plain_port} failed: "
        )),
        "{}",
        o.message
    );
    // A hostile plan's CA "file" is neither read forever nor without bound.
    let o = tls(&format!("address: \"localhost:{valid}\", ca: /dev/zero")).await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert_eq!(
        o.message,
        "cannot read the CA file /dev/zero: not a regular file"
    );
    let o = tls(&format!(
        "address: \"localhost:{valid}\", ca: /nonexistent/ca.pem"
    ))
    .await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert!(
        o.message
            .starts_with("cannot read the CA file /nonexistent/ca.pem"),
        "{}",
        o.message
    );
}

/// A real dnsmasq, authoritative for `test.` on a free loopback port, killed when dropped.
struct Dnsmasq {
    port: u16,
    child: std::process::Child,
}

impl Dnsmasq {
    fn start() -> Self {
        let port = postflight_e2e::free_port();
        let child = std::process::Command::new("/usr/sbin/dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--pid-file=",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--local=/test/",
                "--host-record=api.test,203.0.113.7,2001:db8::7",
                "--cname=www.test,api.test",
                "--txt-record=api.test,v=spf1 -all",
            ])
            .arg(format!("--port={port}"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("dnsmasq (Debian package dnsmasq-base; .ci/run installs it)");
        postflight_e2e::wait_until(
            "dnsmasq to listen",
            std::time::Duration::from_secs(10),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        Self { port, child }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn dns(fields: &str) -> CheckOutcome {
    check("3s", &format!("dns: {{{fields}}}")).await
}

/// `dns` checks ask a real dnsmasq for A, AAAA, CNAME and TXT records: expected values pass
/// (addresses compared as addresses), a wrong one fails listing what was answered, an
/// unknown name is NXDOMAIN, and a resolver that does not answer times out.
#[tokio::test]
async fn dns_checks_ask_a_real_server_for_each_record_type() {
    let server = Dnsmasq::start();
    let resolver = format!("127.0.0.1:{}", server.port);
    let cases = [
        (
            "name: api.test, type: A, expect: [203.0.113.7]",
            "api.test A is 203.0.113.7 (asked ",
        ),
        (
            "name: api.test, type: AAAA, expect: [\"2001:0db8::0007\"]",
            "api.test AAAA is 2001:db8::7 (asked ",
        ),
        (
            "name: www.test, type: CNAME, expect: [API.test]",
            "www.test CNAME is api.test. (asked ",
        ),
        (
            "name: api.test, type: TXT, expect: [\"v=spf1 -all\"]",
            "api.test TXT is \"v=spf1 -all\" (asked ",
        ),
        ("name: api.test", "api.test A is 203.0.113.7 (asked "),
    ];
    for (fields, start) in cases {
        let o = dns(&format!("{fields}, resolver: \"{resolver}\"")).await;
        assert_eq!(o.status, CheckStatus::Pass, "{fields}: {}", o.message);
        assert!(o.message.starts_with(start), "{fields}: {}", o.message);
    }
    let o = dns(&format!(
        "name: api.test, expect: [198.51.100.9], resolver: \"{resolver}\""
    ))
    .await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert_eq!(
        o.message,
        format!("api.test A is 203.0.113.7, expected 198.51.100.9 among them (asked {resolver})")
    );
    let o = dns(&format!("name: gone.test, resolver: \"{resolver}\"")).await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert_eq!(
        o.message,
        format!("gone.test does not exist (NXDOMAIN from {resolver})")
    );
    let o = dns(&format!(
        "name: api.test, type: CNAME, resolver: \"{resolver}\""
    ))
    .await;
    assert_eq!(o.status, CheckStatus::Fail, "{}", o.message);
    assert_eq!(
        o.message,
        format!("api.test has no CNAME record (asked {resolver})")
    );

    // A UDP port where nobody answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_address = silent.local_addr().unwrap().to_string();
    let o = dns(&format!("name: api.test, resolver: \"{silent_address}\"")).await;
    assert_eq!(o.status, CheckStatus::Fail);
    assert!(
        o.message.contains("api.test A") && o.message.contains(&silent_address),
        "{}",
        o.message
    );
}
