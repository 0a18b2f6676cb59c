//! The plan exactly as written in YAML, with the source position of every value that a later
//! validation step may need to point at. Nothing here is interpreted yet: strings still hold
//! `${VAR}` references and durations are text. `load` turns this into the domain model.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;

/// A string with its position.
pub(crate) type Text = Spanned<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlan {
    pub name: Text,
    pub description: Option<Text>,
    pub target: Option<RawTarget>,
    pub checks: Spanned<Vec<Spanned<RawCheck>>>,
    pub policy: Option<RawPolicy>,
    pub rollback: Option<Spanned<RawRollback>>,
    pub monitor: Option<Spanned<RawMonitor>>,
    pub baseline: Option<Spanned<RawBaseline>>,
    pub stages: Option<Spanned<Vec<Text>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBaseline {
    pub max_latency_increase: Option<Spanned<RawShare>>,
    pub max_error_rate_increase: Option<Spanned<RawShare>>,
    pub significance: Option<Spanned<f64>>,
    pub min_samples: Option<Spanned<u32>>,
    pub answers: Option<Text>,
}

/// A share written as a number (`0.2`) or a percentage (`20%`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawShare {
    Number(f64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTarget {
    pub base_url: Option<Text>,
    pub headers: Option<OrderedMap<Text>>,
    pub timeout: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheck {
    pub name: Text,
    pub description: Option<Text>,
    pub severity: Option<Spanned<RawSeverity>>,
    pub timeout: Option<Text>,
    pub repeat: Option<Spanned<u32>>,
    pub pass_when: Option<Spanned<RawPassWhen>>,
    pub http: Option<Spanned<RawHttp>>,
    pub latency: Option<Spanned<RawLatency>>,
    pub database: Option<Spanned<RawDatabase>>,
    pub tcp: Option<Spanned<RawTcp>>,
    pub grpc_health: Option<Spanned<RawGrpcHealth>>,
    pub steps: Option<Spanned<Vec<Spanned<RawStep>>>>,
    pub tls: Option<Spanned<RawTls>>,
    pub dns: Option<Spanned<RawDns>>,
    pub cases: Option<Spanned<Value>>,
    pub min_pass_rate: Option<Spanned<RawShare>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    pub name: Text,
    #[serde(rename = "type")]
    pub record_type: Option<Text>,
    pub expect: Option<Spanned<StringList>>,
    pub resolver: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub address: Text,
    pub server_name: Option<Text>,
    pub min_days_valid: Option<Spanned<u32>>,
    pub ca: Option<Text>,
}

/// One step of a `steps:` flow.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStep {
    pub name: Text,
    pub always: Option<bool>,
    pub capture: Option<OrderedMap<Text>>,
    pub http: Option<Spanned<RawHttp>>,
    pub database: Option<Spanned<RawDatabase>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGrpcHealth {
    pub address: Text,
    pub service: Option<Text>,
    pub tls: Option<bool>,
    pub ca: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTcp {
    pub address: Text,
}

/// `pass_when:` as written: `all`, `majority` or a number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawPassWhen {
    Count(u32),
    Word(String),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawSeverity {
    Critical,
    Warning,
}

/// The request part shared by `http` checks and `latency.request`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRequest {
    pub method: Option<Text>,
    pub url: Text,
    pub headers: Option<OrderedMap<Text>>,
    pub json: Option<Spanned<Value>>,
    pub body: Option<Text>,
}

/// An `http` check: a request plus its expectations. The request fields are repeated rather
/// than flattened because serde cannot combine `flatten` with `deny_unknown_fields`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    pub method: Option<Text>,
    pub url: Text,
    pub headers: Option<OrderedMap<Text>>,
    pub json: Option<Spanned<Value>>,
    pub body: Option<Text>,
    pub expect: Option<RawExpect>,
}

impl RawHttp {
    /// Splits the check into its request and its expectations.
    pub fn into_parts(self) -> (RawRequest, Option<RawExpect>) {
        let request = RawRequest {
            method: self.method,
            url: self.url,
            headers: self.headers,
            json: self.json,
            body: self.body,
        };
        (request, self.expect)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExpect {
    pub status: Option<Spanned<StatusSpec>>,
    pub json: Option<Vec<Spanned<RawJsonAssertion>>>,
    pub body_contains: Option<Spanned<StringList>>,
    pub body_not_contains: Option<Spanned<StringList>>,
    pub body_regex: Option<Text>,
    pub headers: Option<OrderedMap<Text>>,
    pub max_latency: Option<Text>,
    pub tools: Option<Spanned<RawTools>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTools {
    pub path: Option<Text>,
    pub format: Option<Text>,
    pub called: Option<Spanned<StringList>>,
    pub not_called: Option<Spanned<StringList>>,
    pub args: Option<OrderedMap<Spanned<Value>>>,
    pub order: Option<Text>,
    pub max_calls: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJsonAssertion {
    pub path: Text,
    pub exists: Option<bool>,
    pub equals: Option<Spanned<Value>>,
    pub contains: Option<Spanned<Value>>,
    pub min_length: Option<Spanned<u64>>,
    pub max_length: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLatency {
    pub request: Spanned<RawRequest>,
    pub expect_status: Option<Spanned<StatusSpec>>,
    pub max_error_rate: Option<Spanned<f64>>,
    pub samples: Option<Spanned<u32>>,
    pub concurrency: Option<Spanned<u32>>,
    pub percentile: Option<Spanned<f64>>,
    pub pass_below: Option<Text>,
    pub warn_below: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDatabase {
    pub url: Text,
    pub schema: Option<Text>,
    pub tables: Option<Vec<Text>>,
    pub columns: Option<OrderedMap<Vec<Text>>>,
    pub indexes: Option<Vec<Text>>,
    pub queries: Option<Vec<Spanned<RawQuery>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQuery {
    pub sql: Text,
    pub params: Option<Vec<Text>>,
    pub expect: Option<Spanned<RawQueryExpect>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQueryExpect {
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub equals: Option<Spanned<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub max_warnings: Option<Spanned<u32>>,
    pub regions: Option<Spanned<Vec<Text>>>,
    pub quorum: Option<Spanned<QuorumSpec>>,
    pub probes_per_region: Option<Spanned<PerRegionSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRollback {
    pub on_fail: Option<bool>,
    pub error_rate_above: Option<Spanned<f64>>,
    pub p99_latency_above: Option<Text>,
    pub action: Option<Spanned<RawAction>>,
    pub dry_run: Option<bool>,
    pub cooldown: Option<Text>,
    pub failing_rounds: Option<Spanned<u32>>,
    pub confidence: Option<Spanned<f64>>,
    pub on_inconclusive: Option<bool>,
    pub feedback_above: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAction {
    pub kubectl: Option<RawKube>,
    pub kubernetes: Option<RawKube>,
    pub webhook: Option<RawWebhook>,
    pub command: Option<Spanned<Vec<Text>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKube {
    pub deployment: Option<Text>,
    pub namespace: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    pub url: Text,
    pub secret: Option<Text>,
    pub timeout: Option<Text>,
    pub retries: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMonitor {
    pub phases: Option<Vec<Spanned<RawPhase>>>,
    pub window: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPhase {
    pub every: Text,
    #[serde(rename = "for")]
    pub for_: Text,
}

/// `status: 200` or `status: [200, 201]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatusSpec(pub Vec<u64>);

impl<'de> Deserialize<'de> for StatusSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StatusSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an HTTP status code such as 200, or a list such as [200, 204]")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusSpec, E> {
                Ok(StatusSpec(vec![v]))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusSpec, E> {
                u64::try_from(v)
                    .map(|v| StatusSpec(vec![v]))
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusSpec, E> {
                // `status: "200"` is what people write after quoting YAML once too often.
                v.trim()
                    .parse::<u64>()
                    .map(|v| StatusSpec(vec![v]))
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StatusSpec, A::Error> {
                let mut codes = Vec::new();
                while let Some(code) = seq.next_element::<u64>()? {
                    codes.push(code);
                }
                Ok(StatusSpec(codes))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `body_contains: text` or `body_contains: [a, b]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringList, E> {
                Ok(StringList(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringList, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(StringList(items))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `quorum: any | majority | all | N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum QuorumSpec {
    Word(String),
    Count(u64),
}

impl<'de> Deserialize<'de> for QuorumSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = QuorumSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any, majority, all, or a number of regions")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<QuorumSpec, E> {
                Ok(QuorumSpec::Count(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<QuorumSpec, E> {
                Err(E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<QuorumSpec, E> {
                Ok(QuorumSpec::Word(v.to_owned()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `probes_per_region: 1 | all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PerRegionSpec {
    Word(String),
    Count(u64),
}

impl<'de> Deserialize<'de> for PerRegionSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match QuorumSpec::deserialize(deserializer)? {
            QuorumSpec::Word(w) => Ok(PerRegionSpec::Word(w)),
            QuorumSpec::Count(n) => Ok(PerRegionSpec::Count(n)),
        }
    }
}

/// A YAML mapping with its keys' positions, in the order written (header order matters to
/// some servers, and error messages read better in source order).
#[derive(Debug)]
pub(crate) struct OrderedMap<V>(pub Vec<(Text, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedMap<V>, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<Text, V>()? {
                    entries.push((key, value));
                }
                Ok(OrderedMap(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}
