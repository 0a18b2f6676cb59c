//! The validated plan: what executors and the verdict engine work with.
//!
//! Every value here has been checked and every default applied, so executors never re-validate.
//! The model serialises back into the plan's own YAML shape (the "canonical plan"), which is what
//! travels to the coordinator and the probes: `${probe:…}` references survive untouched, every
//! other variable is already expanded, and loading the canonical text gives the same plan again.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::duration::format_duration;

mod cases;
mod expr;
mod flow;
pub use cases::{CASE_PREFIX, Case, CaseSet, DEFAULT_MIN_PASS_RATE, MAX_CASES};
pub use expr::{JsonPathExpr, MAX_EXPRESSION_BYTES, MAX_EXPRESSION_NESTING, Pattern};
pub use flow::{
    FlowCheck, FlowStep, MAX_STEPS, STEP_PREFIX, StepAction, is_capture_name, step_references,
};

/// Default check timeout when neither the check nor `target.timeout` sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A validated plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// `[a-z0-9][a-z0-9-]*`, used as the plan's identity in history and rollback cooldowns.
    pub name: String,
    /// Free text for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Defaults for HTTP-like checks.
    pub target: Target,
    /// At least one; names are unique. Reports list checks in this order.
    pub checks: Vec<Check>,
    /// How results become a verdict.
    pub policy: Policy,
    /// When and how to roll back; `None` means a FAIL is only reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    /// Continuous validation after the migration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<Monitor>,
    /// How a run is compared with a baseline (`--against`); the defaults when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselinePolicy>,
    /// The environments a migration goes through, in order (`[staging, production]`): a run
    /// at a stage needs the same migration to have passed every earlier stage.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<String>,
}

/// How a run is compared with a baseline taken before the change.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BaselinePolicy {
    /// Fail a check when its p50 or p95 grew by more than this share (0.20 = 20%) and the
    /// one-sided Mann-Whitney test says later is slower.
    pub max_latency_increase: f64,
    /// Fail a check when its error rate grew by more than this (absolute, 0.02 = 2 points)
    /// and the one-sided Fisher exact test says errors are more frequent.
    pub max_error_rate_increase: f64,
    /// The p-value below which a test counts as evidence.
    pub significance: f64,
    /// Fewer samples on either side make that comparison inconclusive, never a failure.
    pub min_samples: u32,
    /// Whether JSON answers must keep their shape (every path and type of the baseline's
    /// answer still there).
    pub answers: AnswerComparison,
}

/// `baseline.answers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerComparison {
    /// Answers are not compared (the default: optional fields may come and go).
    #[default]
    Off,
    /// A check fails when its JSON answer lost a path or changed a type.
    SameShape,
}

/// Default `baseline.max_latency_increase`.
pub const DEFAULT_MAX_LATENCY_INCREASE: f64 = 0.20;
/// Default `baseline.max_error_rate_increase`.
pub const DEFAULT_MAX_ERROR_RATE_INCREASE: f64 = 0.02;
/// Default `baseline.significance`.
pub const DEFAULT_SIGNIFICANCE: f64 = 0.01;
/// Default `baseline.min_samples`.
pub const DEFAULT_MIN_SAMPLES: u32 = 8;

impl Default for BaselinePolicy {
    fn default() -> Self {
        Self {
            max_latency_increase: DEFAULT_MAX_LATENCY_INCREASE,
            max_error_rate_increase: DEFAULT_MAX_ERROR_RATE_INCREASE,
            significance: DEFAULT_SIGNIFICANCE,
            min_samples: DEFAULT_MIN_SAMPLES,
            answers: AnswerComparison::Off,
        }
    }
}

/// Defaults shared by every HTTP-like check of a plan.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Target {
    /// Base for relative check URLs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Sent with every request; a check's own headers of the same name win.
    #[serde(serialize_with = "ser_pairs", skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// Default timeout of every check.
    #[serde(
        serialize_with = "ser_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

/// How much a failing check weighs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A failure fails the verdict.
    #[default]
    Critical,
    /// A failure only counts as a warning.
    Warning,
}

impl Severity {
    /// The name used in plans and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One check of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// Unique within the plan.
    pub name: String,
    /// Free text for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How much a failure weighs.
    pub severity: Severity,
    /// Bound on the whole check, all samples included; resolved from the target's default.
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// How many times one execution runs the check (agents answer differently each time);
    /// 1 unless the plan says `repeat`.
    #[serde(skip_serializing_if = "is_one")]
    pub repeat: u32,
    /// How many of the repeats must pass.
    #[serde(skip_serializing_if = "PassWhen::is_all")]
    pub pass_when: PassWhen,
    /// A golden set replayed through the check's request (`http` checks only); written as
    /// the check's `cases` and `min_pass_rate`.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub cases: Option<Box<CaseSet>>,
    /// What the check does.
    #[serde(flatten)]
    pub kind: CheckKind,
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// `pass_when:` of a repeated check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PassWhen {
    /// Every repeat passes (pass^K).
    #[default]
    All,
    /// More than half pass.
    Majority,
    /// At least this many pass.
    AtLeast(u32),
}

impl PassWhen {
    /// Whether every repeat must pass.
    pub fn is_all(&self) -> bool {
        *self == PassWhen::All
    }

    /// How many of `repeat` runs must pass.
    pub fn needed(self, repeat: u32) -> u32 {
        match self {
            PassWhen::All => repeat,
            PassWhen::Majority => repeat / 2 + 1,
            PassWhen::AtLeast(n) => n.min(repeat),
        }
    }

    /// As written in a plan.
    pub fn describe(self) -> String {
        match self {
            PassWhen::All => "all".to_owned(),
            PassWhen::Majority => "majority".to_owned(),
            PassWhen::AtLeast(n) => n.to_string(),
        }
    }
}

impl Serialize for PassWhen {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            PassWhen::AtLeast(n) => serializer.serialize_u32(*n),
            other => serializer.serialize_str(&other.describe()),
        }
    }
}

/// The kinds of checks; each serialises under its plan key (`grpc_health`, …).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// One request and its expectations.
    Http(HttpCheck),
    /// Many requests and a percentile threshold.
    Latency(LatencyCheck),
    /// Schema objects and data invariants of a database.
    Database(DatabaseCheck),
    /// A TCP port accepts connections.
    Tcp(TcpCheck),
    /// A gRPC server says it is serving (the standard `grpc.health.v1` protocol).
    GrpcHealth(GrpcHealthCheck),
    /// A multi-step flow: requests in order, captures passed along, clean-up steps.
    Steps(FlowCheck),
    /// A TLS server's certificate: trusted chain, right name, enough days left.
    Tls(TlsCheck),
    /// A DNS name resolves, to the expected records.
    Dns(DnsCheck),
}

/// The record types a `dns` check asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DnsType {
    /// IPv4 addresses.
    A,
    /// IPv6 addresses.
    #[allow(clippy::upper_case_acronyms)]
    AAAA,
    /// An alias.
    #[allow(clippy::upper_case_acronyms)]
    CNAME,
    /// Text records (SPF, domain verification).
    #[allow(clippy::upper_case_acronyms)]
    TXT,
}

impl DnsType {
    /// As written in plans.
    pub fn as_str(self) -> &'static str {
        match self {
            DnsType::A => "A",
            DnsType::AAAA => "AAAA",
            DnsType::CNAME => "CNAME",
            DnsType::TXT => "TXT",
        }
    }
}

/// `dns` check: `name` has records of `type`, among them every value of `expect`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DnsCheck {
    /// The name asked for.
    pub name: String,
    /// The record type; `A` by default.
    #[serde(rename = "type")]
    pub record_type: DnsType,
    /// Values the answer must contain (addresses compare as addresses, names without case or
    /// trailing dot); other values may be there too. Empty: any answer passes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expect: Vec<String>,
    /// `ip:port` (or an IP, port 53) of the server to ask; the system's resolvers otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolver: Option<String>,
}

/// Default `tls.min_days_valid`: two weeks, time enough to renew before users see errors.
pub const DEFAULT_MIN_DAYS_VALID: u32 = 14;

/// `tls` check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TlsCheck {
    /// `host:port` of the server.
    pub address: String,
    /// The host part.
    #[serde(skip)]
    pub host: String,
    /// The port.
    #[serde(skip)]
    pub port: u16,
    /// The name the certificate must be valid for (and sent as SNI); the host by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Fewer days left before the certificate (or an intermediate sent with it) expires fail
    /// the check.
    pub min_days_valid: u32,
    /// A PEM file of trusted CA certificates, on the machine that runs the check (a private
    /// CA); the system's trust store otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

/// `grpc_health` check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GrpcHealthCheck {
    /// `host:port` of the server.
    pub address: String,
    /// The service to ask about; empty asks about the server as a whole.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// Connect with TLS (the system's trusted certificates, or `ca`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// With `tls`: a PEM file of trusted CA certificates on the machine that runs the check
    /// (a private CA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

/// `tcp` check: a connection to `host:port` is accepted within the check's timeout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TcpCheck {
    /// `host:port` (an IPv6 address in brackets).
    pub address: String,
    /// The host part.
    #[serde(skip)]
    pub host: String,
    /// The port.
    #[serde(skip)]
    pub port: u16,
}

impl CheckKind {
    /// Every kind's name, in the order summaries list them.
    pub const NAMES: &'static [&'static str] = &[
        "http",
        "latency",
        "database",
        "tcp",
        "tls",
        "grpc_health",
        "dns",
        "steps",
    ];

    /// The kind's name: one of [`CheckKind::NAMES`], the check's key in a plan.
    pub fn as_str(&self) -> &'static str {
        match self {
            CheckKind::Http(_) => "http",
            CheckKind::Latency(_) => "latency",
            CheckKind::Database(_) => "database",
            CheckKind::Tcp(_) => "tcp",
            CheckKind::GrpcHealth(_) => "grpc_health",
            CheckKind::Steps(_) => "steps",
            CheckKind::Tls(_) => "tls",
            CheckKind::Dns(_) => "dns",
        }
    }
}

impl Check {
    /// The most requests one execution of this check can make: what a probe may claim for it.
    /// A result claiming more is invalid (it would outweigh honest regions in rates).
    pub fn max_requests(&self) -> u64 {
        let per_case = match &self.kind {
            CheckKind::Http(_) => 1,
            CheckKind::Latency(l) => u64::from(l.samples),
            CheckKind::Database(_) => 0,
            CheckKind::Tcp(_)
            | CheckKind::GrpcHealth(_)
            | CheckKind::Tls(_)
            | CheckKind::Dns(_) => 1,
            CheckKind::Steps(flow) => flow.requests(),
        };
        let cases = self.cases.as_ref().map_or(1, |c| c.cases.len() as u64);
        per_case * cases * u64::from(self.repeat.max(1))
    }
}

/// An HTTP request as a check sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequest {
    /// Upper-case method token.
    pub method: String,
    /// Absolute, or relative to `target.base_url`.
    pub url: String,
    /// Request headers; they override the target's headers of the same name.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Body,
}

/// A request body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// No body.
    None,
    /// Sent as `application/json`.
    Json(Value),
    /// Sent as written.
    Raw(String),
}

impl Serialize for HttpRequest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("method", &self.method)?;
        map.serialize_entry("url", &self.url)?;
        if !self.headers.is_empty() {
            map.serialize_entry("headers", &PairsRef(&self.headers))?;
        }
        match &self.body {
            Body::None => {}
            Body::Json(value) => map.serialize_entry("json", value)?,
            Body::Raw(text) => map.serialize_entry("body", text)?,
        }
        map.end()
    }
}

struct PairsRef<'a>(&'a [(String, String)]);

impl Serialize for PairsRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ser_pairs(self.0, serializer)
    }
}

/// `http` check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpCheck {
    /// What to send.
    #[serde(flatten)]
    pub request: HttpRequest,
    /// What must hold of the answer.
    pub expect: HttpExpect,
}

/// Which statuses are acceptable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StatusExpect {
    /// Any 2xx status (the default).
    #[default]
    Success,
    /// One of these codes.
    OneOf(Vec<u16>),
}

impl StatusExpect {
    /// Whether `status` is acceptable.
    pub fn accepts(&self, status: u16) -> bool {
        match self {
            StatusExpect::Success => (200..300).contains(&status),
            StatusExpect::OneOf(codes) => codes.contains(&status),
        }
    }

    fn is_default(&self) -> bool {
        *self == StatusExpect::Success
    }
}

impl fmt::Display for StatusExpect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusExpect::Success => f.write_str("2xx"),
            StatusExpect::OneOf(codes) if codes.len() == 1 => write!(f, "{}", codes[0]),
            StatusExpect::OneOf(codes) => {
                let list: Vec<String> = codes.iter().map(u16::to_string).collect();
                write!(f, "one of {}", list.join(", "))
            }
        }
    }
}

impl Serialize for StatusExpect {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            StatusExpect::Success => serializer.serialize_none(),
            StatusExpect::OneOf(codes) => codes.serialize(serializer),
        }
    }
}

/// Expectations on an HTTP answer; all must hold.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct HttpExpect {
    /// Acceptable statuses.
    #[serde(skip_serializing_if = "StatusExpect::is_default")]
    pub status: StatusExpect,
    /// JSONPath assertions on the JSON body.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub json: Vec<JsonAssertion>,
    /// Substrings the body must contain.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub body_contains: Vec<String>,
    /// Substrings the body must not contain.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub body_not_contains: Vec<String>,
    /// A regular expression the body must match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_regex: Option<Pattern>,
    /// Response headers that must be present and contain the given substring.
    #[serde(serialize_with = "ser_pairs", skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// Upper bound on the request's latency.
    #[serde(
        serialize_with = "ser_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_latency: Option<Duration>,
    /// What the agent's tool calls in the answer must be.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Box<ToolExpect>>,
}

/// `expect.tools`: the tool calls an agent's answer must (and must not) contain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolExpect {
    /// Where the calls are; absent: `$.choices[0].message.tool_calls`, then `$.tool_calls`,
    /// then `$.content` (the first that exists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<JsonPathExpr>,
    /// How a call is written; `auto` recognises each call by its fields.
    #[serde(skip_serializing_if = "ToolFormat::is_auto")]
    pub format: ToolFormat,
    /// Tools that must be called.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub called: Vec<String>,
    /// Tools (`*` and `?` patterns) that must not be called.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_called: Vec<String>,
    /// Per tool, a JSON object its arguments must contain (a subset: more is fine).
    #[serde(
        serialize_with = "ser_value_pairs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub args: Vec<(String, Value)>,
    /// `strict`: the tools of `called` are called in that order.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub strict_order: bool,
    /// At most this many calls in all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_calls: Option<u32>,
}

/// How tool calls are written in an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolFormat {
    /// Recognised per call: `function.name` (OpenAI), `type: tool_use` (Anthropic), `name`.
    #[default]
    Auto,
    /// `{"type": "function", "function": {"name", "arguments": "<JSON text>"}}`.
    OpenAi,
    /// `{"type": "tool_use", "name", "input"}` among the content blocks.
    Anthropic,
    /// `{"name", "arguments"}` (or `args`, `input`).
    Plain,
}

impl ToolFormat {
    /// Whether calls are recognised by their fields.
    pub fn is_auto(&self) -> bool {
        *self == ToolFormat::Auto
    }
}

/// One JSONPath assertion: the path and every condition on what it selects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JsonAssertion {
    /// Where to look.
    pub path: JsonPathExpr,
    /// `Some(false)` asserts the path selects nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// The selected value must equal this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    /// The selected string contains this substring, or the selected array this element.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contains: Option<Value>,
    /// The selected string, array or object has at least this length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u64>,
    /// The selected string, array or object has at most this length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
}

/// `latency` check: `samples` requests, judged on a nearest-rank percentile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyCheck {
    /// What each sample sends.
    pub request: HttpRequest,
    /// Statuses that count as a successful sample.
    #[serde(skip_serializing_if = "StatusExpect::is_default")]
    pub expect_status: StatusExpect,
    /// The check fails when a larger share of samples failed.
    pub max_error_rate: f64,
    /// Number of requests.
    pub samples: u32,
    /// Requests in flight at once.
    pub concurrency: u32,
    /// Percentile judged, in (0, 100].
    pub percentile: f64,
    /// Below this the check passes.
    #[serde(serialize_with = "ser_duration")]
    pub pass_below: Duration,
    /// Below this (and not below `pass_below`) the check warns; otherwise it fails.
    #[serde(
        serialize_with = "ser_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub warn_below: Option<Duration>,
}

/// `database` check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatabaseCheck {
    /// `postgres://…`, `postgresql://…`, `mysql://…` or `sqlite:…`.
    pub url: String,
    /// Schema (PostgreSQL) or database (MySQL; the URL's by default) for unqualified names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Tables that must exist (`schema.table` allowed on PostgreSQL).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Columns that must exist, per table.
    #[serde(serialize_with = "ser_columns", skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<(String, Vec<String>)>,
    /// Indexes that must exist.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<String>,
    /// Queries whose first value must meet an expectation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub queries: Vec<DbQuery>,
}

/// Which database engine a `database.url` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbEngine {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `sqlite:`.
    Sqlite,
    /// `mysql://` (MySQL and MariaDB).
    MySql,
}

impl DatabaseCheck {
    /// The engine named by the URL's scheme (validated at load time).
    pub fn engine(&self) -> DbEngine {
        if self.url.starts_with("sqlite:") {
            DbEngine::Sqlite
        } else if self.url.starts_with("mysql://") {
            DbEngine::MySql
        } else {
            DbEngine::Postgres
        }
    }
}

/// A query and what its first value must be.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DbQuery {
    /// Executed as written.
    pub sql: String,
    /// Bound to the query's placeholders (`$1`… on PostgreSQL and SQLite, `?` on MySQL) as
    /// text; in a flow they may hold `${step:NAME}`, which is how captured values reach SQL
    /// without ever being pasted into it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
    /// Conditions on the first column of the first row.
    pub expect: QueryExpect,
}

/// Conditions on a query's first value; an empty expectation only requires a row.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct QueryExpect {
    /// The value is a number at least this large.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The value is a number at most this large.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The value equals this (numbers compare numerically, other values as text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
}

/// How results become a verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// The verdict is WARN when warnings exceed this.
    pub max_warnings: u32,
    /// Regions that must report; empty means every connected probe's region.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// How many regions must fail a check for it to fail.
    pub quorum: Quorum,
    /// Probes per region that run the plan.
    pub probes_per_region: ProbesPerRegion,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_warnings: DEFAULT_MAX_WARNINGS,
            regions: Vec::new(),
            quorum: Quorum::Majority,
            probes_per_region: ProbesPerRegion::One,
        }
    }
}

/// The seed article's threshold: more than two warnings need a human.
pub const DEFAULT_MAX_WARNINGS: u32 = 2;

/// Regions that must fail a check for it to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quorum {
    /// One region.
    Any,
    /// More than half of the required regions.
    Majority,
    /// Every required region.
    All,
    /// This many regions (at most all of them).
    Count(u32),
}

impl Quorum {
    /// Failing regions needed out of `regions` required ones (at least 1).
    pub fn needed(self, regions: usize) -> usize {
        let regions = regions.max(1);
        match self {
            Quorum::Any => 1,
            Quorum::Majority => regions / 2 + 1,
            Quorum::All => regions,
            Quorum::Count(n) => (n as usize).clamp(1, regions),
        }
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quorum::Any => f.write_str("any"),
            Quorum::Majority => f.write_str("majority"),
            Quorum::All => f.write_str("all"),
            Quorum::Count(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for Quorum {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Quorum::Count(n) => serializer.serialize_u32(*n),
            other => serializer.serialize_str(&other.to_string()),
        }
    }
}

/// How many probes of a region run the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbesPerRegion {
    /// One healthy probe; another takes over when it disconnects.
    One,
    /// Every probe of the region.
    All,
}

impl Serialize for ProbesPerRegion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ProbesPerRegion::One => serializer.serialize_u32(1),
            ProbesPerRegion::All => serializer.serialize_str("all"),
        }
    }
}

/// When and how to roll back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rollback {
    /// A FAIL verdict triggers rollback.
    pub on_fail: bool,
    /// Request error rate (0..1) above which rollback triggers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rate_above: Option<f64>,
    /// Request p99, merged over all regions, above which rollback triggers.
    #[serde(
        serialize_with = "ser_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub p99_latency_above: Option<Duration>,
    /// What to execute; `None` records decisions without acting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<RollbackAction>,
    /// Decide and record, never act.
    pub dry_run: bool,
    /// No second rollback of this plan within this time.
    #[serde(serialize_with = "ser_duration")]
    pub cooldown: Duration,
    /// Monitors act only when a trigger holds in this many consecutive rounds (≥ 1).
    pub failing_rounds: u32,
    /// Rate triggers act when the Wilson lower bound of a region's error rate at this
    /// two-sided confidence exceeds the threshold; 0 compares the raw ratio.
    pub confidence: f64,
    /// Whether INCONCLUSIVE, cancelled and timed-out runs may execute an action.
    pub on_inconclusive: bool,
    /// Act when more than this many `regression` feedback reports about the run's migration
    /// arrived within the monitor window (`None`: feedback never acts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback_above: Option<u32>,
}

/// A monitor acts when a trigger held in this many consecutive rounds: one bad round is a blip.
pub const DEFAULT_FAILING_ROUNDS: u32 = 2;
/// Confidence of the Wilson bound that rate triggers act on.
pub const DEFAULT_CONFIDENCE: f64 = 0.95;

/// The seed article's thresholds, used when `rollback:` names none.
pub const DEFAULT_ERROR_RATE_ABOVE: f64 = 0.10;
/// The seed article's p99 threshold.
pub const DEFAULT_P99_LATENCY_ABOVE: Duration = Duration::from_secs(10);
/// Cooldown between two rollbacks of one plan.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(600);

/// A rollback action.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RollbackAction {
    /// `kubectl rollout undo deployment/<deployment> -n <namespace>`.
    Kubectl(KubeTarget),
    /// The same undo through the Kubernetes API.
    Kubernetes(KubeTarget),
    /// POST a signed JSON payload.
    Webhook(Webhook),
    /// Run this argv.
    Command(Vec<String>),
}

/// A deployment to undo; unset fields come from `$K8S_DEPLOYMENT` / `$K8S_NAMESPACE` at
/// execution time, then `agent-backend` / `default`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct KubeTarget {
    /// Deployment name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A webhook rollback action.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Webhook {
    /// Where to POST.
    pub url: String,
    /// HMAC-SHA256 key for `X-Postflight-Signature`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Per attempt.
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
}

/// Continuous validation after the migration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Monitor {
    /// Run the plan every `every` for `for`, phase after phase.
    pub phases: Vec<Phase>,
    /// Sliding window for error rate and p99.
    #[serde(serialize_with = "ser_duration")]
    pub window: Duration,
}

/// One monitoring phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Phase {
    /// Interval between rounds.
    #[serde(serialize_with = "ser_duration")]
    pub every: Duration,
    /// Length of the phase.
    #[serde(rename = "for", serialize_with = "ser_duration")]
    pub duration: Duration,
}

impl Monitor {
    /// The seed article's advice: intensively for 24 hours, then normally for 7 days.
    pub fn default_phases() -> Vec<Phase> {
        vec![
            Phase {
                every: Duration::from_secs(30),
                duration: Duration::from_secs(86_400),
            },
            Phase {
                every: Duration::from_secs(300),
                duration: Duration::from_secs(7 * 86_400),
            },
        ]
    }
}

/// Default sliding window of a monitor.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

impl Default for Monitor {
    fn default() -> Self {
        Self {
            phases: Monitor::default_phases(),
            window: DEFAULT_WINDOW,
        }
    }
}

impl Monitor {
    /// Length of every phase together.
    pub fn total(&self) -> Duration {
        self.phases.iter().map(|p| p.duration).sum()
    }

    /// The interval of the phase `elapsed` falls in; `None` once the last phase has ended.
    pub fn every_at(&self, elapsed: Duration) -> Option<Duration> {
        let mut end = Duration::ZERO;
        for phase in &self.phases {
            end += phase.duration;
            if elapsed < end {
                return Some(phase.every);
            }
        }
        None
    }
}

impl Plan {
    /// Consecutive failing rounds a monitor needs before it acts (the default without a
    /// `rollback:` section).
    pub fn failing_rounds(&self) -> u32 {
        self.rollback
            .as_ref()
            .map_or(DEFAULT_FAILING_ROUNDS, |r| r.failing_rounds)
            .max(1)
    }

    /// Confidence of rate triggers (the default without a `rollback:` section).
    pub fn confidence(&self) -> f64 {
        self.rollback
            .as_ref()
            .map_or(DEFAULT_CONFIDENCE, |r| r.confidence)
    }

    /// Whether missing data may act (never without a `rollback:` section).
    pub fn acts_on_inconclusive(&self) -> bool {
        self.rollback.as_ref().is_some_and(|r| r.on_inconclusive)
    }

    /// The URL a request goes to: `url` itself when absolute, else joined to `target.base_url`.
    ///
    /// Called at execution time, when every variable is expanded; a failure here (a
    /// `${probe:…}` value that is not a URL) becomes the check's failure message.
    pub fn resolve_url(&self, url: &str) -> Result<url::Url, String> {
        resolve_url(self.target.base_url.as_deref(), url)
    }

    /// Headers of a request: the target's, overridden by the request's own of the same name.
    pub fn request_headers<'a>(&'a self, request: &'a HttpRequest) -> Vec<(&'a str, &'a str)> {
        let mut headers: Vec<(&str, &str)> = self
            .target
            .headers
            .iter()
            .filter(|(name, _)| {
                !request
                    .headers
                    .iter()
                    .any(|(own, _)| own.eq_ignore_ascii_case(name))
            })
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        headers.extend(
            request
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str())),
        );
        headers
    }
}

/// Joins a check URL to a base URL; absolute URLs stand alone.
pub fn resolve_url(base: Option<&str>, url: &str) -> Result<url::Url, String> {
    match url::Url::parse(url) {
        Ok(absolute) => check_http_scheme(absolute, url),
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            let Some(base) = base else {
                return Err(format!(
                    "`{url}` is a relative URL but the plan has no target.base_url"
                ));
            };
            let base_url = url::Url::parse(base)
                .map_err(|e| format!("target.base_url `{base}` is not a valid URL: {e}"))?;
            // `/api` joined to `http://h/v1` should give `http://h/v1/api`, as people expect
            // from a "base" URL, not the RFC 3986 `http://h/api`.
            let joined = if base_url.path().ends_with('/') {
                base_url.join(url.trim_start_matches('/'))
            } else {
                let mut with_slash = base_url.clone();
                with_slash.set_path(&format!("{}/", base_url.path()));
                with_slash.join(url.trim_start_matches('/'))
            };
            let joined = joined.map_err(|e| format!("cannot join `{url}` to `{base}`: {e}"))?;
            check_http_scheme(joined, url)
        }
        Err(e) => Err(format!("`{url}` is not a valid URL: {e}")),
    }
}

fn check_http_scheme(url: url::Url, written: &str) -> Result<url::Url, String> {
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!(
            "`{written}` uses scheme `{other}`; HTTP checks need http:// or https://"
        )),
    }
}

fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

fn ser_opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration(d, s),
        None => s.serialize_none(),
    }
}

fn ser_pairs<S: Serializer>(pairs: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(pairs.len()))?;
    for (k, v) in pairs {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

/// Pairs as a map, the shape plans write them in (`args: {lookup_invoice: {…}}`).
fn ser_value_pairs<S: Serializer>(pairs: &[(String, Value)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(pairs.len()))?;
    for (k, v) in pairs {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

fn ser_columns<S: Serializer>(cols: &[(String, Vec<String>)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(cols.len()))?;
    for (table, columns) in cols {
        map.serialize_entry(table, columns)?;
    }
    map.end()
}

#[cfg(test)]
mod tests {
    use super::expr::is_singular_path;
    use super::*;
    use serde_json::json;

    #[test]
    fn relative_urls_join_under_the_base_path() {
        let join = |b: &str, u: &str| resolve_url(Some(b), u).map(|u| u.to_string());
        assert_eq!(
            join("http://h:8000", "/api/agent/chat").unwrap(),
            "http://h:8000/api/agent/chat"
        );
        assert_eq!(join("http://h/v1", "/api").unwrap(), "http://h/v1/api");
        assert_eq!(
            join("http://h/v1/", "api?q=1").unwrap(),
            "http://h/v1/api?q=1"
        );
        assert_eq!(
            join("http://h/v1", "https://other/x").unwrap(),
            "https://other/x"
        );
        assert!(
            resolve_url(None, "/api")
                .unwrap_err()
                .contains("no target.base_url")
        );
        assert!(join("ftp://h", "/x").unwrap_err().contains("scheme `ftp`"));
    }

    #[test]
    fn singular_paths_select_the_value_others_an_array() {
        let doc = json!({"items": [{"id": "a"}, {"id": "b"}], "one": [{"id": "x"}], "n": 1});
        let sel = |p: &str| JsonPathExpr::parse(p).unwrap().select(&doc);
        assert_eq!(sel("$.n"), Some(json!(1)));
        assert_eq!(sel("$.items[0].id"), Some(json!("a")));
        assert_eq!(sel("$['items'][1]['id']"), Some(json!("b")));
        assert_eq!(sel("$.items[*].id"), Some(json!(["a", "b"])));
        assert_eq!(sel("$.one[*].id"), Some(json!(["x"])));
        assert_eq!(sel("$..id"), Some(json!(["a", "b", "x"])));
        assert_eq!(sel("$.missing"), None);
        assert_eq!(sel("$['a.b']"), None);
        assert!(is_singular_path("$['with*star']"));
        assert!(!is_singular_path("$.items[0:1]"));
        assert!(!is_singular_path("$.items[?@.id == 'a']"));
    }

    #[test]
    fn monitor_phases_follow_each_other() {
        let m = Monitor::default();
        assert_eq!(m.total(), Duration::from_secs(8 * 86_400));
        assert_eq!(m.every_at(Duration::ZERO), Some(Duration::from_secs(30)));
        assert_eq!(
            m.every_at(Duration::from_secs(86_399)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            m.every_at(Duration::from_secs(86_400)),
            Some(Duration::from_secs(300))
        );
        assert_eq!(m.every_at(Duration::from_secs(8 * 86_400)), None);
    }

    #[test]
    fn quorum_counts_regions() {
        assert_eq!(Quorum::Majority.needed(3), 2);
        assert_eq!(Quorum::Majority.needed(2), 2);
        assert_eq!(Quorum::Majority.needed(1), 1);
        assert_eq!(Quorum::Majority.needed(4), 3);
        assert_eq!(Quorum::Any.needed(3), 1);
        assert_eq!(Quorum::All.needed(3), 3);
        assert_eq!(Quorum::Count(5).needed(3), 3);
        assert_eq!(Quorum::Count(2).needed(3), 2);
    }

    #[test]
    fn status_expectations() {
        assert!(StatusExpect::Success.accepts(204));
        assert!(!StatusExpect::Success.accepts(301));
        assert!(StatusExpect::OneOf(vec![200, 404]).accepts(404));
        assert_eq!(StatusExpect::OneOf(vec![200]).to_string(), "200");
        assert_eq!(
            StatusExpect::OneOf(vec![200, 201]).to_string(),
            "one of 200, 201"
        );
    }

    #[test]
    fn request_headers_override_target_headers_case_insensitively() {
        let plan = Plan {
            name: "p".into(),
            description: None,
            target: Target {
                base_url: None,
                headers: vec![
                    ("Authorization".into(), "a".into()),
                    ("X-Env".into(), "prod".into()),
                ],
                timeout: None,
            },
            checks: vec![],
            policy: Policy::default(),
            rollback: None,
            monitor: None,
            baseline: None,
            stages: Vec::new(),
        };
        let request = HttpRequest {
            method: "GET".into(),
            url: "/".into(),
            headers: vec![("authorization".into(), "b".into())],
            body: Body::None,
        };
        assert_eq!(
            plan.request_headers(&request),
            vec![("X-Env", "prod"), ("authorization", "b")]
        );
    }
}
