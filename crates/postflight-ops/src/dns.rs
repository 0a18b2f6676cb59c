//! Name resolution for outgoing connections, with its own error type: a check says "could not
//! resolve the host" because resolution failed, not because some error's text mentions it.

use std::net::SocketAddr;

/// A host name that resolved to no address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ResolveError {
    /// The name asked for.
    pub host: String,
    /// The resolver's reason, in lower case ("failed to lookup address information: …").
    pub reason: String,
}

/// The addresses of `host` (the system resolver, as every other program on the machine uses),
/// each with `port`. An IP literal is returned as it is.
pub async fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
    let failed = |reason: String| ResolveError {
        host: host.to_owned(),
        reason,
    };
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| failed(crate::http_client::root_cause(&e)))?
        .collect();
    if found.is_empty() {
        return Err(failed(format!("{host} has no address")));
    }
    Ok(found)
}

/// [`lookup`] as reqwest's resolver, so that its connection errors carry a [`ResolveError`]
/// when the name was the problem.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl reqwest::dns::Resolve for SystemResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = lookup(&host, 0).await?;
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// Whether `error` or one of its causes is a [`ResolveError`]. An `io::Error` that wraps one
/// is looked into too (its `source()` skips what it wraps).
pub fn is_resolve_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<ResolveError>() {
            return true;
        }
        let wrapped = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<ResolveError>());
        if wrapped {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_that_do_not_exist_fail_with_the_name() {
        // `.invalid` never resolves (RFC 2606).
        let err = lookup("no-such-host.invalid", 80).await.unwrap_err();
        assert_eq!(err.host, "no-such-host.invalid");
        assert!(!err.reason.is_empty());
        let literal = lookup("127.0.0.1", 8080).await.unwrap();
        assert_eq!(literal, vec![SocketAddr::from(([127, 0, 0, 1], 8080))]);
    }

    #[test]
    fn a_resolve_error_is_found_among_the_causes() {
        let inner = ResolveError {
            host: "x.invalid".into(),
            reason: "not found".into(),
        };
        let wrapped = std::io::Error::other(inner);
        assert!(is_resolve_error(&wrapped));
        assert!(!is_resolve_error(&std::io::Error::other(
            "failed to lookup"
        )));
    }
}
