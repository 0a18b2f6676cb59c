//! The HTTP client postflight sends with outside checks' own connection handling: webhooks
//! of rollback actions and notifications, and checks that need TLS or a proxy. One place
//! decides its user agent, redirects, timeouts and the single rustls crypto provider (ring),
//! and how its errors read.

use std::sync::Once;
use std::time::Duration;

/// The User-Agent of every check, so servers can tell validation traffic from users.
pub const USER_AGENT: &str = concat!("postflight/", env!("CARGO_PKG_VERSION"));

/// rustls needs one process-wide crypto provider; postflight uses ring everywhere.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only when another provider is already installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Which connection behaviour a client has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connections {
    /// A new connection per request: what a validation check measures (DNS, TCP, TLS included).
    Fresh,
    /// Keep-alive: latency samples measure the service, not the handshake.
    Reused,
}

/// Why a request got no answer. The message is the sentence a check or the audit log shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The host name did not resolve.
    #[error("could not resolve the host ({0})")]
    Resolve(String),
    /// No connection (refused, unreachable, no answer within the connect timeout).
    #[error("could not connect: {0}")]
    Connect(String),
    /// The TLS handshake failed; the sentence says why in the operator's terms.
    #[error("{0}")]
    Tls(String),
    /// The request's time limit passed.
    #[error("timed out")]
    TimedOut,
    /// The connection closed or failed while the answer was read.
    #[error("the answer broke off: {0}")]
    BrokeOff(String),
    /// A redirect could not be handled.
    #[error("redirect error: {0}")]
    Redirect(String),
    /// Anything else, as the lowest cause says it.
    #[error("{0}")]
    Other(String),
}

/// Builds an HTTP client. Redirects are not followed: a check judges the answer the
/// URL gives, and a surprise redirect after a migration is worth seeing.
pub fn client(connections: Connections) -> Result<reqwest::Client, String> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .dns_resolver(std::sync::Arc::new(crate::dns::SystemResolver));
    if connections == Connections::Fresh {
        builder = builder.pool_max_idle_per_host(0);
    }
    builder
        .build()
        .map_err(|e| format!("cannot create the HTTP client: {}", describe(&e)))
}

/// What went wrong with a request, at the lowest level that says something ("connection
/// refused", "certificate expired"), without repeating the URL.
pub fn describe(error: &reqwest::Error) -> RequestError {
    let root = root_cause(error);
    if let Some(tls) = crate::tls::explain(&root, "the server") {
        return RequestError::Tls(tls);
    }
    if error.is_timeout() {
        RequestError::TimedOut
    } else if crate::dns::is_resolve_error(error) {
        RequestError::Resolve(root)
    } else if error.is_connect() {
        RequestError::Connect(root)
    } else if error.is_body() || error.is_decode() {
        RequestError::BrokeOff(root)
    } else if error.is_redirect() {
        RequestError::Redirect(root)
    } else {
        RequestError::Other(root)
    }
}

/// The lowest error in `error`'s chain that says something, in lower case and without OS error
/// numbers: what an operator reads ("connection refused", "invalid peer certificate: Expired").
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut causes: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !causes.iter().any(|c| c.contains(&text)) {
            causes.push(text);
        }
        source = cause.source();
    }
    let root = causes.pop().unwrap_or_default();
    let root = match root.find(" (os error ") {
        Some(at) if root.ends_with(')') => root[..at].to_owned(),
        _ => root,
    };
    lower_first(&root)
}

/// `Connection refused` → `connection refused`, leaving the rest (names, codes) as it is.
fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_first_keeps_the_rest() {
        assert_eq!(lower_first("Connection refused"), "connection refused");
    }

    #[test]
    fn the_root_cause_drops_os_error_numbers() {
        let io = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        assert_eq!(root_cause(&io), "connection refused");
    }
}
