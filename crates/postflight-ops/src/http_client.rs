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

/// Builds an HTTP client. Redirects are not followed: a check judges the answer the
/// URL gives, and a surprise redirect after a migration is worth seeing.
pub fn client(connections: Connections) -> Result<reqwest::Client, String> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10));
    if connections == Connections::Fresh {
        builder = builder.pool_max_idle_per_host(0);
    }
    builder
        .build()
        .map_err(|e| format!("cannot create the HTTP client: {}", describe(&e)))
}

/// A reqwest error as a sentence: what went wrong at the lowest level that says something
/// ("connection refused", "certificate expired"), without repeating the URL.
pub fn describe(error: &reqwest::Error) -> String {
    let root = root_cause(error);
    if let Some(tls) = crate::tls::explain(&root, "the server") {
        return tls;
    }
    if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        if root.contains("dns error") || root.contains("failed to lookup") {
            format!("could not resolve the host ({root})")
        } else {
            format!("could not connect: {root}")
        }
    } else if error.is_body() || error.is_decode() {
        format!("the answer broke off: {root}")
    } else if error.is_redirect() {
        format!("redirect error: {root}")
    } else {
        root
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
