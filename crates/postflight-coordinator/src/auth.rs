//! Bearer tokens: probes present the probe token on `ProbeService.Connect`, operators the
//! operator token on every `ValidationService` call. Health and reflection stay open, so
//! load balancers and grpcurl's `list` work without credentials.

use postflight_ops::secret::Secret;
use tonic::metadata::MetadataMap;

use crate::error::CoordinatorError;

/// Who a token is for; decides what a refusal tells the caller to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// `postflight-probe`.
    Probe,
    /// The CLI, grpcurl, scripts.
    Operator,
}

/// Accepts the call when no token is configured or when `authorization: Bearer T` carries it.
/// The refusal never echoes what was presented.
pub fn authenticate(
    expected: Option<&Secret>,
    metadata: &MetadataMap,
    audience: Audience,
) -> Result<(), CoordinatorError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let header = metadata
        .get("authorization")
        .map(|v| v.to_str().unwrap_or_default());
    let presented = header
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if expected.matches(presented.as_bytes()) {
        return Ok(());
    }
    let message = match (audience, header.is_none()) {
        (Audience::Probe, true) => {
            "this coordinator requires a probe token: start the probe with --token, --token-file or POSTFLIGHT_TOKEN"
        }
        (Audience::Probe, false) => "wrong probe token",
        (Audience::Operator, true) => {
            "this coordinator requires an operator token: pass --token, --token-file or POSTFLIGHT_TOKEN (grpcurl: -H 'authorization: Bearer TOKEN')"
        }
        (Audience::Operator, false) => "wrong operator token",
    };
    Err(CoordinatorError::Unauthenticated(message.to_owned()))
}

/// The interceptor in front of `ValidationService`.
#[derive(Debug, Clone)]
pub struct OperatorAuth(pub Option<Secret>);

impl tonic::service::Interceptor for OperatorAuth {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        authenticate(self.0.as_ref(), request.metadata(), Audience::Operator)?;
        Ok(request)
    }
}

/// Why the coordinator must not listen where it was told to, or `None`. Reaching an
/// unauthenticated coordinator means submitting plans (and with them rollback actions) and
/// posing as probes: beyond loopback that takes credentials for both audiences (mutual TLS
/// covers both), or the operator's explicit `--insecure`. The HTTP status page shows runs and
/// their messages; beyond loopback it takes the operator token.
pub fn exposure_refusal(
    grpc: std::net::SocketAddr,
    http: Option<std::net::SocketAddr>,
    probes_authenticated: bool,
    operators_authenticated: bool,
    operator_token: bool,
    insecure: bool,
) -> Option<String> {
    if insecure {
        return None;
    }
    let authenticated = probes_authenticated && operators_authenticated;
    if !(grpc.ip().is_loopback() || authenticated) {
        let missing = match (probes_authenticated, operators_authenticated) {
            (false, false) => "probes and operators",
            (false, true) => "probes",
            _ => "operators",
        };
        return Some(format!(
            "refusing to listen on {grpc} without authenticating {missing}: anyone who can reach \
             it could submit plans and pose as probes. Set --probe-token and --operator-token \
             (or --tls-client-ca for mutual TLS), listen on 127.0.0.1, or pass --insecure"
        ));
    }
    if let Some(http) = http
        && !http.ip().is_loopback()
        && !operator_token
    {
        return Some(format!(
            "refusing to serve the status page on {http} without --operator-token: it shows \
             every run. Set --operator-token, listen on 127.0.0.1, or pass --insecure"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(header: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(h) = header {
            m.insert("authorization", h.parse().unwrap());
        }
        m
    }

    #[test]
    fn no_token_configured_lets_everyone_in() {
        assert!(authenticate(None, &with(None), Audience::Operator).is_ok());
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let secret = Secret::new("t0ken");
        let ok = authenticate(Some(&secret), &with(Some("Bearer t0ken")), Audience::Probe);
        assert!(ok.is_ok());
        for bad in [Some("Bearer t0ke"), Some("t0ken"), Some("Bearer T0KEN")] {
            let e = authenticate(Some(&secret), &with(bad), Audience::Operator).unwrap_err();
            assert_eq!(e.to_string(), "wrong operator token", "{bad:?}");
            assert!(!e.to_string().contains("t0ken"));
        }
        let e = authenticate(Some(&secret), &with(None), Audience::Probe).unwrap_err();
        assert!(e.to_string().contains("requires a probe token"), "{e}");
        let status = tonic::Status::from(
            authenticate(Some(&secret), &with(None), Audience::Operator).unwrap_err(),
        );
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(!status.message().contains("t0ken"));
    }

    #[test]
    fn exposure_beyond_loopback_takes_credentials_or_insecure() {
        let local: std::net::SocketAddr = "127.0.0.1:7700".parse().unwrap();
        let any: std::net::SocketAddr = "0.0.0.0:7700".parse().unwrap();
        let web: std::net::SocketAddr = "0.0.0.0:7701".parse().unwrap();
        assert_eq!(
            exposure_refusal(local, None, false, false, false, false),
            None
        );
        let refused = exposure_refusal(any, None, false, false, false, false).unwrap();
        assert!(
            refused.contains("0.0.0.0:7700 without authenticating probes and operators"),
            "{refused}"
        );
        let refused = exposure_refusal(any, None, true, false, false, false).unwrap();
        assert!(refused.contains("authenticating operators"), "{refused}");
        let refused = exposure_refusal(any, None, false, true, true, false).unwrap();
        assert!(refused.contains("authenticating probes"), "{refused}");
        assert_eq!(exposure_refusal(any, None, true, true, true, false), None);
        assert_eq!(exposure_refusal(any, None, false, false, false, true), None);
        let refused = exposure_refusal(local, Some(web), true, true, false, false).unwrap();
        assert!(refused.contains("status page on 0.0.0.0:7701"), "{refused}");
        assert_eq!(
            exposure_refusal(any, Some(web), true, true, true, false),
            None
        );
        let ipv6: std::net::SocketAddr = "[::1]:7700".parse().unwrap();
        assert_eq!(
            exposure_refusal(ipv6, None, false, false, false, false),
            None
        );
    }
}
