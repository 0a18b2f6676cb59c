//! TLS for the gRPC connections between CLI, probes and coordinator (rustls, ring provider
//! only): the coordinator's certificate, client certificates for mutual TLS, and TLS failures
//! explained in words an operator acts on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::OpsError;

/// The coordinator's TLS settings: `--tls-cert`, `--tls-key` and, for mutual TLS,
/// `--tls-client-ca`.
#[derive(Debug, Clone, Default)]
pub struct ServerTls {
    /// Certificate chain (PEM), leaf first.
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of the leaf certificate.
    pub key: Option<PathBuf>,
    /// CA (PEM) whose certificates clients must present; none means no client certificates.
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    /// The tonic configuration, or `None` for plain text. Every file is read and checked here,
    /// at start-up, so a wrong path or a key that does not belong to the certificate stops the
    /// coordinator with a message instead of failing each connection later.
    pub fn config(&self) -> Result<Option<ServerTlsConfig>, OpsError> {
        let (cert, key) = match (&self.cert, &self.key) {
            (None, None) if self.client_ca.is_some() => {
                return Err(OpsError::Usage(
                    "--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)"
                        .to_owned(),
                ));
            }
            (None, None) => return Ok(None),
            (Some(_), None) => {
                return Err(OpsError::Usage("--tls-cert needs --tls-key".to_owned()));
            }
            (None, Some(_)) => {
                return Err(OpsError::Usage("--tls-key needs --tls-cert".to_owned()));
            }
            (Some(cert), Some(key)) => (cert, key),
        };
        let (cert_pem, chain) = certificates(cert, "--tls-cert")?;
        let (key_pem, private) = private_key(key, "--tls-key")?;
        // Build a rustls configuration once only to learn whether the key fits the certificate.
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| OpsError::Usage(format!("TLS setup: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| OpsError::Content {
                flag: "--tls-key",
                path: key.display().to_string(),
                problem: format!("does not fit the certificate in {}: {e}", cert.display()),
            })?;
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem));
        if let Some(ca) = &self.client_ca {
            let (ca_pem, _) = certificates(ca, "--tls-client-ca")?;
            config = config.client_ca_root(Certificate::from_pem(ca_pem));
        }
        Ok(Some(config))
    }
}

/// A client's TLS settings (probe and CLI): `--tls-ca` to trust a private CA, and
/// `--tls-cert`/`--tls-key` to present a client certificate to a coordinator that requires one.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// CA (PEM) that signed the coordinator's certificate; none means the system's roots.
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// Client private key (PEM).
    pub key: Option<PathBuf>,
}

impl ClientTls {
    /// The tonic configuration for connecting to `url`: TLS exactly when the URL is `https://`.
    /// TLS options with an `http://` URL are an error rather than silently ignored, since the
    /// operator clearly meant to encrypt.
    pub fn config(&self, url: &str) -> Result<Option<ClientTlsConfig>, OpsError> {
        let https = url.starts_with("https://");
        let given = [
            ("--tls-ca", &self.ca),
            ("--tls-cert", &self.cert),
            ("--tls-key", &self.key),
        ];
        if !https {
            return match given.iter().find(|(_, v)| v.is_some()) {
                Some((flag, _)) => Err(OpsError::Usage(format!(
                    "{flag} is set but the coordinator URL {url} is not https://; use https:// to connect with TLS"
                ))),
                None => Ok(None),
            };
        }
        let mut config = ClientTlsConfig::new();
        match &self.ca {
            Some(ca) => {
                let (pem, _) = certificates(ca, "--tls-ca")?;
                config = config.ca_certificate(Certificate::from_pem(pem));
            }
            None => config = config.with_native_roots(),
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let (cert_pem, _) = certificates(cert, "--tls-cert")?;
                let (key_pem, _) = private_key(key, "--tls-key")?;
                config = config.identity(Identity::from_pem(cert_pem, key_pem));
            }
            (Some(_), None) => {
                return Err(OpsError::Usage("--tls-cert needs --tls-key".to_owned()));
            }
            (None, Some(_)) => {
                return Err(OpsError::Usage("--tls-key needs --tls-cert".to_owned()));
            }
            (None, None) => {}
        }
        Ok(Some(config))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path, flag: &'static str) -> Result<Vec<u8>, OpsError> {
    std::fs::read(path).map_err(|source| OpsError::Read {
        flag,
        path: path.display().to_string(),
        source,
    })
}

/// The file's bytes and the certificates in it (at least one).
fn certificates(
    path: &Path,
    flag: &'static str,
) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), OpsError> {
    let pem = read(path, flag)?;
    let bad = |problem: String| OpsError::Content {
        flag,
        path: path.display().to_string(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    Ok((pem, certs))
}

/// The file's bytes and the private key in it.
fn private_key(
    path: &Path,
    flag: &'static str,
) -> Result<(Vec<u8>, PrivateKeyDer<'static>), OpsError> {
    let pem = read(path, flag)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| OpsError::Content {
        flag,
        path: path.display().to_string(),
        problem: format!("holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
    })?;
    Ok((pem, key))
}

/// A TLS failure (the innermost error text of a connection attempt) in words an operator acts
/// on, or `None` when it is not a TLS failure. `peer` names the other side ("the server", "the
/// coordinator").
pub fn explain(root: &str, peer: &str) -> Option<String> {
    // rustls names problems in two styles across versions: `UnknownIssuer` and
    // "certificate expired: verification time …"; both are matched, case-insensitively.
    let text = root.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
    let why = if has(&["invalid peer certificate"]) {
        if has(&[
            "unknownissuer",
            "unknown issuer",
            "caused as end entity",
            "causedasendentity",
        ]) {
            format!(
                "{peer}'s certificate is not signed by a trusted authority (self-signed, or a private CA this side was not given?)"
            )
        } else if has(&["expired"]) {
            format!("{peer}'s certificate has expired")
        } else if has(&["notvalidyet", "not valid yet", "not valid before"]) {
            format!("{peer}'s certificate is not valid yet")
        } else if has(&["notvalidforname", "not valid for name"]) {
            format!("{peer}'s certificate is not valid for this host name")
        } else if has(&["revoked"]) {
            format!("{peer}'s certificate was revoked")
        } else {
            format!("{peer}'s certificate was rejected")
        }
    } else if has(&["corrupt message", "invalidcontenttype"]) {
        format!("{peer} did not answer with TLS (a plain-text port behind an https:// URL?)")
    } else if has(&["certificaterequired"]) {
        format!(
            "{peer} requires a client certificate (mutual TLS): give one with --tls-cert and --tls-key"
        )
    } else if has(&["alert"]) && has(&["unknownca", "badcertificate", "decrypterror"]) {
        format!("{peer} refused this side's client certificate (not signed by the CA it trusts?)")
    } else if has(&["handshake"]) && has(&["alert"]) {
        format!("{peer} refused the TLS handshake")
    } else {
        return None;
    };
    Some(format!("TLS error: {why} ({root})"))
}

#[cfg(test)]
mod tests;
