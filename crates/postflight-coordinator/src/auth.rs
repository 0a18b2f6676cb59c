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
    let header = authorization(metadata);
    let presented = header.and_then(bearer).unwrap_or_default();
    if expected.matches(presented.as_bytes()) {
        return Ok(());
    }
    Err(refusal(audience, header.is_some()))
}

/// The `authorization` header, if any (an unreadable one counts as present and empty).
fn authorization(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get("authorization")
        .map(|v| v.to_str().unwrap_or_default())
}

/// The token of an `Authorization: Bearer TOKEN` value.
fn bearer(header: &str) -> Option<&str> {
    header.strip_prefix("Bearer ").map(str::trim)
}

/// Why a call without the right token is refused, never echoing what was presented.
fn refusal(audience: Audience, presented: bool) -> CoordinatorError {
    let message = match (audience, !presented) {
        (Audience::Probe, true) => {
            "this coordinator requires a probe token: start the probe with --token, --token-file or POSTFLIGHT_TOKEN"
        }
        (Audience::Probe, false) => "wrong probe token",
        (Audience::Operator, true) => {
            "this coordinator requires an operator token: pass --token, --token-file or POSTFLIGHT_TOKEN (grpcurl: -H 'authorization: Bearer TOKEN')"
        }
        (Audience::Operator, false) => "wrong operator token",
    };
    CoordinatorError::Unauthenticated(message.to_owned())
}

/// What a probe proved about itself when it connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeCredential {
    /// No probe authentication, or the shared probe token: it may take any name and region.
    Unbound,
    /// A per-probe token: this name in this region, nothing else.
    Token {
        /// The only name the token allows.
        name: String,
        /// The only region the token allows.
        region: String,
    },
}

/// Per-probe tokens (`--probe-tokens FILE`): one probe per line, `TOKEN NAME REGION`, `#`
/// comments. A token proves a name and a region, which a shared token cannot.
#[derive(Debug, Default)]
pub struct ProbeTokens(Vec<(Secret, String, String)>);

impl ProbeTokens {
    /// Reads the file's text; errors name the line.
    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        let mut entries: Vec<(Secret, String, String)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [token, name, region] = fields[..] else {
                return Err(format!(
                    "{origin}:{}: expected `TOKEN NAME REGION`, found {} fields",
                    i + 1,
                    fields.len()
                ));
            };
            if token.len() < 16 {
                return Err(format!(
                    "{origin}:{}: the token of {name} is shorter than 16 characters",
                    i + 1
                ));
            }
            if entries.iter().any(|(_, n, _)| n == name) {
                return Err(format!("{origin}:{}: probe {name} appears twice", i + 1));
            }
            if entries.iter().any(|(t, _, _)| t.matches(token.as_bytes())) {
                return Err(format!(
                    "{origin}:{}: the token of {name} is already another probe's",
                    i + 1
                ));
            }
            entries.push((Secret::new(token), name.to_owned(), region.to_owned()));
        }
        Ok(Self(entries))
    }

    /// Whether the file had any probe.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The name and region `presented` belongs to. Every entry is compared (in constant
    /// time), so the answer's timing does not tell which one matched.
    fn lookup(&self, presented: &str) -> Option<(&str, &str)> {
        let mut found = None;
        for (token, name, region) in &self.0 {
            if token.matches(presented.as_bytes()) {
                found = Some((name.as_str(), region.as_str()));
            }
        }
        found
    }
}

/// How probes authenticate: a shared token, per-probe tokens, both, or neither.
#[derive(Debug, Default)]
pub struct ProbeAuth {
    /// `--probe-token`: proves membership, not identity.
    pub shared: Option<Secret>,
    /// `--probe-tokens`: prove a name and a region.
    pub bound: ProbeTokens,
}

impl ProbeAuth {
    /// The credential a `Connect` presents; refused when tokens are configured and it has
    /// none of them.
    pub fn credential(&self, metadata: &MetadataMap) -> Result<ProbeCredential, CoordinatorError> {
        if !self.bound.is_empty() {
            let presented = authorization(metadata).and_then(bearer);
            if let Some((name, region)) = presented.and_then(|p| self.bound.lookup(p)) {
                return Ok(ProbeCredential::Token {
                    name: name.to_owned(),
                    region: region.to_owned(),
                });
            }
            if self.shared.is_none() {
                return Err(refusal(Audience::Probe, presented.is_some()));
            }
        }
        authenticate(self.shared.as_ref(), metadata, Audience::Probe)?;
        Ok(ProbeCredential::Unbound)
    }
}

/// Checks a probe's hello against what it proved: a per-probe token's name and region, and
/// the DNS names of its client certificate under mutual TLS (`cert_names`, `None` without).
/// `Ok(true)` when the identity is bound to a credential, so that its region may count
/// towards a quorum.
pub fn bind_identity(
    name: &str,
    region: &str,
    credential: &ProbeCredential,
    cert_names: Option<&[String]>,
) -> Result<bool, CoordinatorError> {
    let mut bound = false;
    if let ProbeCredential::Token {
        name: allowed,
        region: home,
    } = credential
    {
        if allowed != name {
            return Err(CoordinatorError::PermissionDenied(format!(
                "this token belongs to probe {allowed}; it cannot connect as {name}"
            )));
        }
        if home != region {
            return Err(CoordinatorError::PermissionDenied(format!(
                "the token of probe {name} is bound to region {home}; it cannot report {region}"
            )));
        }
        bound = true;
    }
    if let Some(names) = cert_names {
        if !names.iter().any(|n| certificate_name_matches(n, name)) {
            let shown = if names.is_empty() {
                "no DNS name".to_owned()
            } else {
                names.join(", ")
            };
            return Err(CoordinatorError::PermissionDenied(format!(
                "the client certificate is for {shown}; it cannot connect as {name} (issue \
                 each probe a certificate with its name as a DNS subject alternative name)"
            )));
        }
        bound = true;
    }
    Ok(bound)
}

/// Whether a certificate's DNS name covers a probe name: exactly, or as a wildcard for one
/// label (`*.eu-west.probes` covers `pod-7f9c.eu-west.probes`), so that the replicas of a
/// Deployment can share one certificate and still only take names under its suffix.
fn certificate_name_matches(certified: &str, name: &str) -> bool {
    match certified.strip_prefix("*.") {
        Some(suffix) => name
            .strip_suffix(suffix)
            .and_then(|head| head.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        None => certified == name,
    }
}

/// Whether an HTTP `Authorization` header carries the operator token: `Bearer TOKEN` for
/// scripts, or `Basic` with the token as the password (any user name) so that a browser's
/// login prompt opens the status page. Anyone is let in when no token is configured.
pub fn http_authorized(expected: Option<&Secret>, header: Option<&str>) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let Some(header) = header else {
        return false;
    };
    if let Some(token) = bearer(header) {
        return expected.matches(token.as_bytes());
    }
    let Some(encoded) = header.strip_prefix("Basic ") else {
        return false;
    };
    use base64::Engine;
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    match decoded.iter().position(|b| *b == b':') {
        Some(colon) => expected.matches(&decoded[colon + 1..]),
        None => false,
    }
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

    #[test]
    fn per_probe_tokens_bind_a_name_and_a_region() {
        let tokens = ProbeTokens::parse(
            "# probes\n0123456789abcdef-eu eu-1 eu-west\n0123456789abcdef-us us-1 us-east # east\n",
            "tokens",
        )
        .unwrap();
        let auth = ProbeAuth {
            shared: None,
            bound: tokens,
        };
        let eu = auth
            .credential(&with(Some("Bearer 0123456789abcdef-eu")))
            .unwrap();
        assert_eq!(
            eu,
            ProbeCredential::Token {
                name: "eu-1".into(),
                region: "eu-west".into()
            }
        );
        assert!(bind_identity("eu-1", "eu-west", &eu, None).unwrap());
        let err = bind_identity("eu-1", "us-east", &eu, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the token of probe eu-1 is bound to region eu-west; it cannot report us-east"
        );
        let err = bind_identity("us-1", "eu-west", &eu, None).unwrap_err();
        assert!(err.to_string().contains("belongs to probe eu-1"), "{err}");
        assert!(matches!(
            auth.credential(&with(Some("Bearer nope"))),
            Err(CoordinatorError::Unauthenticated(_))
        ));
        assert!(matches!(
            auth.credential(&with(None)),
            Err(CoordinatorError::Unauthenticated(_))
        ));
        // With a shared token as well, it is accepted but binds nothing.
        let both = ProbeAuth {
            shared: Some(Secret::new("shared-token")),
            bound: ProbeTokens::parse("0123456789abcdef-eu eu-1 eu-west", "t").unwrap(),
        };
        let shared = both.credential(&with(Some("Bearer shared-token"))).unwrap();
        assert_eq!(shared, ProbeCredential::Unbound);
        assert!(!bind_identity("x", "y", &shared, None).unwrap());
    }

    #[test]
    fn certificates_bind_the_name() {
        let names = vec!["probe-a".to_owned()];
        let open = ProbeCredential::Unbound;
        assert!(bind_identity("probe-a", "eu", &open, Some(&names)).unwrap());
        let err = bind_identity("probe-b", "eu", &open, Some(&names)).unwrap_err();
        assert!(matches!(err, CoordinatorError::PermissionDenied(_)));
        assert!(
            err.to_string()
                .starts_with("the client certificate is for probe-a")
        );
        let wildcard = vec!["*.eu-west.probes".to_owned()];
        for (name, ok) in [
            ("pod-7f9c.eu-west.probes", true),
            ("eu-west.probes", false),
            (".eu-west.probes", false),
            ("a.b.eu-west.probes", false),
            ("pod.us-east.probes", false),
            ("pod.xeu-west.probes", false),
        ] {
            assert_eq!(
                bind_identity(name, "eu", &open, Some(&wildcard)).is_ok(),
                ok,
                "{name}"
            );
        }
    }

    #[test]
    fn token_files_are_checked_line_by_line() {
        for (text, expected) in [
            (
                "abc eu-1",
                "t:1: expected `TOKEN NAME REGION`, found 2 fields",
            ),
            (
                "short eu-1 eu",
                "t:1: the token of eu-1 is shorter than 16 characters",
            ),
            (
                "0123456789abcdef-1 a r\n0123456789abcdef-2 a r",
                "t:2: probe a appears twice",
            ),
            (
                "0123456789abcdef-1 a r\n\n0123456789abcdef-1 b r",
                "t:3: the token of b is already another probe's",
            ),
        ] {
            assert_eq!(ProbeTokens::parse(text, "t").unwrap_err(), expected);
        }
    }

    #[test]
    fn the_status_page_takes_bearer_or_basic_credentials() {
        let token = Secret::new("op-token");
        let expected = Some(&token);
        assert!(http_authorized(None, None));
        assert!(!http_authorized(expected, None));
        assert!(http_authorized(expected, Some("Bearer op-token")));
        assert!(!http_authorized(expected, Some("Bearer nope")));
        // "admin:op-token" and ":op-token".
        assert!(http_authorized(
            expected,
            Some("Basic YWRtaW46b3AtdG9rZW4=")
        ));
        assert!(http_authorized(expected, Some("Basic Om9wLXRva2Vu")));
        assert!(!http_authorized(expected, Some("Basic YWRtaW46bm9wZQ==")));
        assert!(!http_authorized(expected, Some("Basic !!!!")));
        assert!(!http_authorized(expected, Some("Basic YWRtaW4=")));
    }
}
