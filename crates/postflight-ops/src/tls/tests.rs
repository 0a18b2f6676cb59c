use super::*;

fn files(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[test]
fn server_flags_come_in_pairs() {
    let p = |s: &str| Some(PathBuf::from(s));
    let none = ServerTls::default();
    assert!(none.config().unwrap().is_none());
    let only_cert = ServerTls {
        cert: p("c.pem"),
        ..ServerTls::default()
    };
    assert_eq!(
        only_cert.config().unwrap_err().to_string(),
        "--tls-cert needs --tls-key"
    );
    let only_ca = ServerTls {
        client_ca: p("ca.pem"),
        ..ServerTls::default()
    };
    assert_eq!(
        only_ca.config().unwrap_err().to_string(),
        "--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)"
    );
}

#[test]
fn unreadable_and_non_pem_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let junk = files(dir.path(), "junk.pem", "hello\n");
    let missing = dir.path().join("missing.pem");
    let tls = ServerTls {
        cert: Some(missing.clone()),
        key: Some(junk.clone()),
        client_ca: None,
    };
    let e = tls.config().unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "--tls-cert {}: cannot read the file",
            missing.display()
        )),
        "{e}"
    );
    let tls = ServerTls {
        cert: Some(junk.clone()),
        key: Some(junk.clone()),
        client_ca: None,
    };
    assert_eq!(
        tls.config().unwrap_err().to_string(),
        format!(
            "--tls-cert {}: holds no certificate (expected -----BEGIN CERTIFICATE-----)",
            junk.display()
        )
    );
    let client = ClientTls {
        ca: Some(junk.clone()),
        ..ClientTls::default()
    };
    let e = client.config("https://c:7700").unwrap_err().to_string();
    assert!(e.starts_with(&format!(
        "--tls-ca {}: holds no certificate",
        junk.display()
    )));
}

#[test]
fn client_tls_follows_the_url_scheme() {
    let plain = ClientTls::default();
    assert!(plain.config("http://c:7700").unwrap().is_none());
    assert!(plain.config("https://c:7700").unwrap().is_some());
    let with_ca = ClientTls {
        ca: Some(PathBuf::from("/nonexistent/ca.pem")),
        ..ClientTls::default()
    };
    assert_eq!(
        with_ca.config("http://c:7700").unwrap_err().to_string(),
        "--tls-ca is set but the coordinator URL http://c:7700 is not https://; use https:// to connect with TLS"
    );
    let half = ClientTls {
        key: Some(PathBuf::from("k.pem")),
        ..ClientTls::default()
    };
    assert_eq!(
        half.config("https://c:7700").unwrap_err().to_string(),
        "--tls-key needs --tls-cert"
    );
}

#[test]
fn tls_errors_in_words() {
    let server = "the server";
    assert_eq!(
        explain("invalid peer certificate: UnknownIssuer", server).unwrap(),
        "TLS error: the server's certificate is not signed by a trusted authority (self-signed, or a private CA this side was not given?) (invalid peer certificate: UnknownIssuer)"
    );
    let has = |root: &str, words: &str| {
        let text = explain(root, "the coordinator").unwrap();
        assert!(text.contains(words), "{text}");
    };
    has("invalid peer certificate: Expired", "has expired");
    has(
        "invalid peer certificate: NotValidForName",
        "not valid for this host name",
    );
    has(
        "received corrupt message of type InvalidContentType",
        "did not answer with TLS",
    );
    has(
        "received fatal alert: CertificateRequired",
        "requires a client certificate",
    );
    has(
        "received fatal alert: UnknownCA",
        "refused this side's client certificate",
    );
    assert!(explain("connection refused", server).is_none());
}
