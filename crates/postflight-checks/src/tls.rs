//! `tls` checks: the server's certificate chain is trusted, valid for the name, and far
//! enough from expiry.
//!
//! The handshake runs with a verifier that records the real verifier's verdict and the chain
//! the server sent, and lets the handshake finish either way: an expired or untrusted
//! certificate is then reported with its dates ("expired 3 days ago"), not only as a
//! handshake error. Nothing is sent over the connection; it is closed right after.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postflight_ops::dns::lookup;
use postflight_ops::http_client::{install_crypto_provider, root_cause};
use postflight_plan::duration::{PlanDuration, human_duration};
use postflight_plan::model::TlsCheck;
use postflight_plan::{CheckOutcome, CheckStatus, Sample};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;

const SECONDS_PER_DAY: i64 = 86_400;

/// What the handshake showed: the verifier's verdict and the certificates sent.
#[derive(Debug)]
struct Seen {
    verdict: Result<(), rustls::Error>,
    chain: Vec<CertificateDer<'static>>,
}

/// Wraps the real verifier: records its verdict and the chain, and accepts, so that the
/// dates of a rejected certificate can still be read.
#[derive(Debug)]
struct Recorder {
    inner: Arc<dyn ServerCertVerifier>,
    seen: Mutex<Option<Seen>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map(|_| ());
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(Seen { verdict, chain });
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The most a CA file may hold: a bundle of every public root is about 250 KiB.
const MAX_CA_FILE_BYTES: u64 = 1 << 20;

/// A plan's CA file, read off the async threads: a regular file of at most
/// [`MAX_CA_FILE_BYTES`], so a plan naming `/dev/zero` or a FIFO cannot exhaust or stall the
/// probe.
pub async fn read_ca_file(path: &str) -> Result<Vec<u8>, String> {
    let owned = path.to_owned();
    let read = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let file = std::fs::File::open(&owned).map_err(|e| e.to_string())?;
        let meta = file.metadata().map_err(|e| e.to_string())?;
        if !meta.is_file() {
            return Err("not a regular file".to_owned());
        }
        let mut bytes = Vec::new();
        file.take(MAX_CA_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        if bytes.len() as u64 > MAX_CA_FILE_BYTES {
            return Err(format!("larger than {MAX_CA_FILE_BYTES} bytes"));
        }
        Ok(bytes)
    });
    match read.await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(reason)) => Err(format!("cannot read the CA file {path}: {reason}")),
        Err(e) => Err(format!("cannot read the CA file {path}: {e}")),
    }
}

/// The verifier the check trusts: the plan's CA file, or the system's trust store.
async fn verifier(ca: Option<&str>) -> Result<Arc<dyn ServerCertVerifier>, String> {
    install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    match ca {
        None => rustls_platform_verifier::Verifier::new(provider)
            .map(|v| Arc::new(v) as Arc<dyn ServerCertVerifier>)
            .map_err(|e| format!("cannot load the system's trusted certificates: {e}")),
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let pem = read_ca_file(path).await?;
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_slice_iter(&pem);
            for cert in certs {
                let cert = cert.map_err(|e| format!("the CA file {path} is not PEM: {e}"))?;
                roots.add(cert).map_err(|e| {
                    format!("the CA file {path} holds an unusable certificate: {e}")
                })?;
            }
            if roots.is_empty() {
                return Err(format!("the CA file {path} holds no certificate"));
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map(|v| v as Arc<dyn ServerCertVerifier>)
                .map_err(|e| format!("cannot use the CA file {path}: {e}"))
        }
    }
}

/// Connects, shakes hands and records what the server presented.
async fn handshake(check: &TlsCheck, name: &str) -> Result<Seen, String> {
    let recorder = Arc::new(Recorder {
        inner: verifier(check.ca.as_deref()).await?,
        seen: Mutex::new(None),
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot configure TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|_| format!("`{name}` is not a host name or IP address"))?;
    let addresses = lookup(&check.host, check.port)
        .await
        .map_err(|e| format!("could not resolve {} ({})", check.host, e.reason))?;
    let tcp = TcpStream::connect(addresses.as_slice())
        .await
        .map_err(|e| format!("could not connect to {}: {}", check.address, root_cause(&e)))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let shaken = connector.connect(server_name, tcp).await;
    let seen = recorder.seen.lock().ok().and_then(|mut s| s.take());
    match (shaken, seen) {
        (_, Some(seen)) => Ok(seen),
        (Err(e), None) => Err(format!(
            "the TLS handshake with {} failed: {}",
            check.address,
            root_cause(&e)
        )),
        (Ok(_), None) => Err(format!("{} sent no certificate", check.address)),
    }
}

/// Runs a `tls` check within `timeout`; the handshake time is its one sample.
pub async fn run(check: &TlsCheck, timeout: Duration) -> CheckOutcome {
    let started = Instant::now();
    let name = check
        .server_name
        .clone()
        .unwrap_or_else(|| check.host.clone());
    let result = tokio::time::timeout(timeout, handshake(check, &name)).await;
    let elapsed = started.elapsed();
    let (status, message) = match result {
        Err(_) => (
            CheckStatus::Fail,
            format!(
                "no TLS handshake with {} within {} (timeout)",
                check.address,
                PlanDuration(timeout)
            ),
        ),
        Ok(Err(message)) => (CheckStatus::Fail, message),
        Ok(Ok(seen)) => judge(check, &name, &seen, now_unix(), elapsed),
    };
    CheckOutcome {
        samples: vec![Sample {
            latency: elapsed,
            ok: status == CheckStatus::Pass,
        }],
        status,
        message,
        missing: 0,
        duration: elapsed,
        answer_shape: None,
        tally: None,
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The validity of one certificate.
#[derive(Debug, Clone, PartialEq)]
struct Validity {
    subject: String,
    not_after: i64,
}

fn validity(der: &CertificateDer<'_>) -> Option<Validity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(Validity {
        subject: cert.subject().to_string(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// `2026-12-06` for a Unix time.
fn date(unix: i64) -> String {
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let days = unix.div_euclid(SECONDS_PER_DAY);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}")
}

/// Whole days from `now` to `until` (negative once past).
fn days_between(now: i64, until: i64) -> i64 {
    (until - now).div_euclid(SECONDS_PER_DAY)
}

fn days(n: i64) -> String {
    if n == 1 {
        "1 day".to_owned()
    } else {
        format!("{n} days")
    }
}

/// The verdict on what the handshake showed, at Unix time `now`.
fn judge(
    check: &TlsCheck,
    name: &str,
    seen: &Seen,
    now: i64,
    elapsed: Duration,
) -> (CheckStatus, String) {
    let parsed: Vec<Validity> = seen.chain.iter().filter_map(validity).collect();
    // The chain is as strong as its first certificate to expire.
    let Some(first_to_expire) = parsed.iter().min_by_key(|v| v.not_after) else {
        return (
            CheckStatus::Fail,
            format!("{} sent a certificate that cannot be read", check.address),
        );
    };
    let left = days_between(now, first_to_expire.not_after);
    let which = if parsed.first() == Some(first_to_expire) {
        "the certificate".to_owned()
    } else {
        format!("the intermediate certificate {}", first_to_expire.subject)
    };
    let expiry = if first_to_expire.not_after <= now {
        let ago = match days_between(first_to_expire.not_after, now) {
            0 => "less than a day".to_owned(),
            n => days(n),
        };
        format!(
            "{which} for {name} expired {ago} ago ({})",
            date(first_to_expire.not_after)
        )
    } else {
        format!(
            "{which} for {name} expires in {} ({})",
            days(left),
            date(first_to_expire.not_after)
        )
    };
    if let Err(error) = &seen.verdict {
        let why = match error {
            rustls::Error::InvalidCertificate(CertificateError::Expired)
            | rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
                return (CheckStatus::Fail, expiry);
            }
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => format!(
                "the certificate of {} is not valid for {name}",
                check.address
            ),
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
                "the certificate of {} is not signed by a trusted authority (self-signed, or a private CA: give it with `ca`)",
                check.address
            ),
            other => format!("the certificate of {} was rejected: {other}", check.address),
        };
        return (CheckStatus::Fail, format!("{why}; {expiry}"));
    }
    if left < i64::from(check.min_days_valid) {
        return (
            CheckStatus::Fail,
            format!(
                "{expiry}, fewer than min_days_valid {}",
                check.min_days_valid
            ),
        );
    }
    (
        CheckStatus::Pass,
        format!(
            "{which} for {name} is trusted and valid for {left} more {} ({}); handshake in {}",
            if left == 1 { "day" } else { "days" },
            date(first_to_expire.not_after),
            human_duration(elapsed)
        ),
    )
}

#[cfg(test)]
mod tests;
