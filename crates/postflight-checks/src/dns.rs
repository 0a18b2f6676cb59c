//! `dns` checks: a name resolves to records of a type, among them the expected values, asked
//! of the system's resolvers or of a given server (hickory-resolver, UDP then TCP).
//!
//! After a migration the question is usually "does the name still point where it should":
//! the message lists what the server answered, so a stale record is seen at once.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use postflight_plan::duration::{PlanDuration, human_duration};
use postflight_plan::model::{DnsCheck, DnsType};
use postflight_plan::{CheckOutcome, CheckStatus, Sample};

/// Runs a `dns` check within `timeout`; the query time is its one sample.
pub async fn run(check: &DnsCheck, timeout: Duration) -> CheckOutcome {
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, answers(check, timeout)).await;
    let elapsed = started.elapsed();
    let server = check.resolver.as_deref().unwrap_or("the system resolver");
    let kind = check.record_type.as_str();
    let (status, message) = match result {
        Err(_) => (
            CheckStatus::Fail,
            format!(
                "no answer for {} {kind} from {server} within {} (timeout)",
                check.name,
                PlanDuration(timeout)
            ),
        ),
        Ok(Err(message)) => (CheckStatus::Fail, message),
        Ok(Ok(found)) => judge(check, &found, server, elapsed),
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

fn resolver(check: &DnsCheck, timeout: Duration) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match &check.resolver {
        None => Resolver::builder(provider)
            .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?,
        Some(text) => {
            let address: SocketAddr = text
                .parse()
                .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| format!("resolver `{text}` is not an IP address with a port"))?;
            let mut server = NameServerConfig::udp_and_tcp(address.ip());
            for connection in &mut server.connections {
                connection.port = address.port();
            }
            let mut builder = Resolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], vec![server]),
                provider,
            );
            // Asking a given server means asking that server, not /etc/hosts.
            builder.options_mut().use_hosts_file = ResolveHosts::Never;
            builder
        }
    };
    let options = builder.options_mut();
    options.timeout = timeout;
    options.attempts = 1;
    options.cache_size = 0;
    builder
        .build()
        .map_err(|e| format!("cannot set up the resolver: {e}"))
}

/// The values of the records of the check's type, as text.
async fn answers(check: &DnsCheck, timeout: Duration) -> Result<Vec<String>, String> {
    let resolver = resolver(check, timeout)?;
    let record_type = match check.record_type {
        DnsType::A => RecordType::A,
        DnsType::AAAA => RecordType::AAAA,
        DnsType::CNAME => RecordType::CNAME,
        DnsType::TXT => RecordType::TXT,
    };
    // A trailing dot: the name is absolute, no search domains are tried.
    let absolute = if check.name.ends_with('.') {
        check.name.clone()
    } else {
        format!("{}.", check.name)
    };
    let server = check.resolver.as_deref().unwrap_or("the system resolver");
    let lookup = match resolver.lookup(absolute.as_str(), record_type).await {
        Ok(lookup) => lookup,
        Err(e) if e.is_nx_domain() => {
            return Err(format!(
                "{} does not exist (NXDOMAIN from {server})",
                check.name
            ));
        }
        Err(e) if e.is_no_records_found() => return Ok(Vec::new()),
        Err(e) => {
            return Err(format!(
                "could not resolve {} {} via {server}: {e}",
                check.name, record_type
            ));
        }
    };
    Ok(lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) if record_type == RecordType::A => Some(a.0.to_string()),
            RData::AAAA(a) if record_type == RecordType::AAAA => Some(a.0.to_string()),
            RData::CNAME(name) if record_type == RecordType::CNAME => Some(name.0.to_string()),
            RData::TXT(txt) if record_type == RecordType::TXT => Some(
                txt.txt_data
                    .iter()
                    .map(|part| String::from_utf8_lossy(part).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect())
}

/// Whether `answer` is the expected `value` for records of `kind`.
fn same(kind: DnsType, expected: &str, answer: &str) -> bool {
    match kind {
        DnsType::A | DnsType::AAAA => {
            match (expected.parse::<IpAddr>(), answer.parse::<IpAddr>()) {
                (Ok(a), Ok(b)) => a == b,
                _ => expected == answer,
            }
        }
        DnsType::CNAME => expected
            .trim_end_matches('.')
            .eq_ignore_ascii_case(answer.trim_end_matches('.')),
        DnsType::TXT => expected == answer,
    }
}

/// The verdict on the values found.
fn judge(
    check: &DnsCheck,
    found: &[String],
    server: &str,
    elapsed: Duration,
) -> (CheckStatus, String) {
    let kind = check.record_type.as_str();
    if found.is_empty() {
        return (
            CheckStatus::Fail,
            format!("{} has no {kind} record (asked {server})", check.name),
        );
    }
    let shown = found
        .iter()
        .map(|v| {
            if check.record_type == DnsType::TXT {
                format!("{v:?}")
            } else {
                v.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let missing: Vec<&String> = check
        .expect
        .iter()
        .filter(|e| !found.iter().any(|f| same(check.record_type, e, f)))
        .collect();
    if !missing.is_empty() {
        let missing = missing
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        return (
            CheckStatus::Fail,
            format!(
                "{} {kind} is {shown}, expected {missing} among them (asked {server})",
                check.name
            ),
        );
    }
    (
        CheckStatus::Pass,
        format!(
            "{} {kind} is {shown} (asked {server} in {})",
            check.name,
            human_duration(elapsed)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: DnsType, expect: &[&str]) -> DnsCheck {
        DnsCheck {
            name: "api.test".to_owned(),
            record_type: kind,
            expect: expect.iter().map(|e| (*e).to_owned()).collect(),
            resolver: None,
        }
    }

    #[test]
    fn values_compare_by_their_kind() {
        assert!(same(DnsType::AAAA, "2001:db8::7", "2001:0db8:0:0:0:0:0:7"));
        assert!(same(DnsType::CNAME, "API.test", "api.test."));
        assert!(!same(DnsType::TXT, "v=spf1", "V=SPF1"));
    }

    #[test]
    fn every_expected_value_must_be_answered() {
        let found = vec!["203.0.113.7".to_owned(), "203.0.113.8".to_owned()];
        let (status, message) = judge(
            &check(DnsType::A, &["203.0.113.8"]),
            &found,
            "x",
            Duration::ZERO,
        );
        assert_eq!(status, CheckStatus::Pass, "{message}");
        let (status, message) = judge(
            &check(DnsType::A, &["198.51.100.1"]),
            &found,
            "127.0.0.1:53",
            Duration::ZERO,
        );
        assert_eq!(status, CheckStatus::Fail);
        assert_eq!(
            message,
            "api.test A is 203.0.113.7, 203.0.113.8, expected 198.51.100.1 among them (asked 127.0.0.1:53)"
        );
        let (status, message) = judge(&check(DnsType::TXT, &[]), &[], "x", Duration::ZERO);
        assert_eq!(status, CheckStatus::Fail);
        assert_eq!(message, "api.test has no TXT record (asked x)");
    }
}
