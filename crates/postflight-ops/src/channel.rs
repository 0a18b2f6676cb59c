//! The client side of a gRPC connection to the coordinator, shared by probe and CLI: the URL's
//! scheme decides TLS, the token rides in `authorization`, and a failure to connect is told in
//! words (TLS problems, plain text against a TLS port) instead of tonic's "transport error".

use std::time::Duration;

use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Endpoint;

use crate::OpsError;
use crate::secret::Secret;
use crate::tls::{self, ClientTls};

/// Where the coordinator is and how to present ourselves to it.
#[derive(Debug, Clone, Default)]
pub struct Connector {
    /// `http://host:port` or `https://host:port` (a bare `host:port` means `http://`).
    pub url: String,
    /// TLS files; used when the URL is `https://`.
    pub tls: ClientTls,
    /// Sent as `authorization: Bearer …` on every call.
    pub token: Option<Secret>,
}

impl Connector {
    /// The URL with its scheme.
    pub fn uri(&self) -> String {
        if self.url.contains("://") {
            self.url.clone()
        } else {
            format!("http://{}", self.url)
        }
    }

    /// A tonic endpoint with TLS set up as the URL and files say; not yet connected.
    pub fn endpoint(&self) -> Result<Endpoint, OpsError> {
        let uri = self.uri();
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| OpsError::Usage(format!("invalid coordinator URL {}: {e}", self.url)))?
            .connect_timeout(Duration::from_secs(5));
        if let Some(config) = self.tls.config(&uri)? {
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| OpsError::Usage(format!("TLS setup for {uri}: {}", chain(&e))))?;
        }
        Ok(endpoint)
    }

    /// The interceptor that adds the token to every call; fails at start-up, not per call,
    /// when the token cannot be a header value.
    pub fn bearer(&self) -> Result<Bearer, OpsError> {
        match &self.token {
            None => Ok(Bearer(None)),
            Some(token) => format!("Bearer {}", token.expose())
                .parse::<AsciiMetadataValue>()
                .map(|v| Bearer(Some(v)))
                .map_err(|_| {
                    OpsError::Usage(
                        "the token contains characters not allowed in a header".to_owned(),
                    )
                }),
        }
    }

    /// Why connecting failed, in words: TLS problems explained, plain text sent to a TLS port
    /// recognised, the innermost cause otherwise.
    pub fn explain(&self, error: &(dyn std::error::Error + 'static)) -> String {
        self.explain_text(&chain(error), &innermost(error))
    }

    /// A failed call's status in words: the transport failure behind it (a refused client
    /// certificate shows up with the first call, not at connect time), else code and message.
    pub fn explain_status(&self, status: &tonic::Status) -> String {
        let transport = is_transport_failure(status);
        if std::error::Error::source(status).is_some() {
            self.explain(status)
        } else if transport {
            self.explain_text(status.message(), status.message())
        } else {
            format!("{}: {}", status.code(), status.message())
        }
    }

    fn explain_text(&self, text: &str, innermost: &str) -> String {
        if let Some(why) = tls::explain(innermost, "the coordinator") {
            return why;
        }
        let lower = text.to_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
        let closed = [
            "broken pipe",
            "connection reset",
            "connection closed",
            "unexpected eof",
            "unexpected end of file",
            "operation was canceled",
        ];
        if self.uri().starts_with("https://") {
            if has(&closed) {
                // With TLS 1.3 the server checks the client's certificate after the client
                // considers the handshake done: its refusal shows up as a closed connection.
                let likely = if self.tls.cert.is_none() {
                    "it probably requires a client certificate (mutual TLS): give --tls-cert and --tls-key"
                } else {
                    "it probably refused this side's client certificate (not signed by the CA it trusts with --tls-client-ca?)"
                };
                return format!(
                    "the coordinator closed the connection after the TLS handshake; {likely} ({innermost})"
                );
            }
        } else if has(&closed)
            || has(&["frame with invalid size", "invalid frame", "protocol error"])
        {
            return format!(
                "{innermost} (does the coordinator serve TLS on this port? then use an https:// URL)"
            );
        }
        innermost.replace(" (os error 111)", "").to_lowercase()
    }
}

/// Whether a call failed in the connection rather than in the coordinator's logic: the
/// status wraps a transport error, or carries one of the codes tonic gives broken connections
/// (an HTTP/2 protocol error is what plain text sent to a TLS port looks like).
pub fn is_transport_failure(status: &tonic::Status) -> bool {
    use tonic::Code;
    std::error::Error::source(status).is_some()
        || matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        )
        || (status.code() == Code::Internal && status.message().contains("h2 protocol error"))
}

/// Adds `authorization: Bearer …` to each request (nothing without a token).
#[derive(Debug, Clone)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl Bearer {
    /// Adds the header to one request (for streams built by hand).
    pub fn apply<T>(&self, request: &mut tonic::Request<T>) {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        self.apply(&mut request);
        Ok(request)
    }
}

/// An error with its causes, which tonic hides behind "transport error".
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut last = error;
    while let Some(cause) = last.source() {
        last = cause;
    }
    last.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_addresses_mean_plain_http() {
        let c = Connector {
            url: "coordinator:7700".into(),
            ..Connector::default()
        };
        assert_eq!(c.uri(), "http://coordinator:7700");
        assert!(c.endpoint().is_ok());
    }

    #[test]
    fn bad_urls_and_tokens_are_refused_up_front() {
        let c = Connector {
            url: "http://bad host:1".into(),
            ..Connector::default()
        };
        let e = c.endpoint().unwrap_err().to_string();
        assert!(
            e.starts_with("invalid coordinator URL http://bad host:1"),
            "{e}"
        );
        let c = Connector {
            url: "http://c:1".into(),
            token: Some(Secret::new("line\nbreak")),
            ..Connector::default()
        };
        assert_eq!(
            c.bearer().unwrap_err().to_string(),
            "the token contains characters not allowed in a header"
        );
    }

    #[test]
    fn the_token_goes_into_every_request() {
        let c = Connector {
            url: "http://c:1".into(),
            token: Some(Secret::new("tok")),
            ..Connector::default()
        };
        let mut request = tonic::Request::new(());
        c.bearer().unwrap().apply(&mut request);
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer tok"
        );
    }
}
