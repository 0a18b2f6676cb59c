//! From YAML text to a validated [`Plan`].
//!
//! Parsing (syntax, unknown keys, types) stops at the first problem, because the YAML parser
//! cannot go on; validation then reports every problem it finds at once, each with its
//! position, so a broken plan is fixed in one round trip.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use serde_saphyr::{Location, MessageFormatter, Spanned, UserMessageFormatter};

use crate::duration::{PlanDuration, parse_duration};
use crate::error::{PlanError, PlanErrors, line_column};
use crate::model::*;
use crate::raw::*;
use crate::secrets::redact_url;
use crate::vars::{Expander, VarError, has_probe_reference};

#[cfg(test)]
mod tests;

/// Longest persistence a monitor may ask for: beyond this a rollback would never come.
const MAX_FAILING_ROUNDS: u32 = 1000;

/// The largest plan accepted, in bytes (4 MiB): generated plans with thousands of checks stay
/// far below it.
pub const MAX_PLAN_BYTES: usize = 4 << 20;
/// The most checks one plan may hold.
pub const MAX_CHECKS: usize = 10_000;
/// YAML nesting deeper than this is not a plan (a plan nests about 8 levels).
const MAX_YAML_DEPTH: usize = 32;
/// YAML values (nodes) in one plan, aliases replayed included.
const MAX_YAML_NODES: usize = 250_000;
/// Aliases and anchors: plans reuse a few blocks; thousands are an expansion bomb.
const MAX_YAML_ALIASES: usize = 1_000;
/// Problems listed in full; the rest are counted.
const MAX_REPORTED_ERRORS: usize = 50;

/// Parses and validates a plan. `origin` names the file in error messages; `expander` decides
/// which `${…}` references are expanded here (see [`crate::vars`]).
pub fn parse_plan(source: &str, origin: &str, expander: Expander<'_>) -> Result<Plan, PlanErrors> {
    let fail = |errors: Vec<PlanError>| PlanErrors {
        origin: origin.to_owned(),
        source: source.to_owned(),
        errors,
    };
    if source.trim().is_empty() {
        return Err(fail(vec![PlanError {
            line: 0,
            column: 0,
            message: "the plan is empty: it needs at least `name:` and `checks:`".to_owned(),
        }]));
    }
    if source.len() > MAX_PLAN_BYTES {
        return Err(fail(vec![PlanError {
            line: 0,
            column: 0,
            message: format!(
                "the plan is {} bytes; a plan may be at most {MAX_PLAN_BYTES} bytes",
                source.len()
            ),
        }]));
    }
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    // Bounds that hold whatever the text: depth (the parser recurses), values, aliases.
    options.budget = serde_saphyr::budget! {
        max_depth: MAX_YAML_DEPTH,
        flow_nesting_limit: MAX_YAML_DEPTH,
        max_nodes: MAX_YAML_NODES,
        max_total_scalar_bytes: MAX_PLAN_BYTES,
        max_aliases: MAX_YAML_ALIASES,
        max_anchors: MAX_YAML_ALIASES,
    };
    options.alias_limits.max_total_replayed_events = MAX_YAML_NODES;
    options.alias_limits.max_replay_stack_depth = MAX_YAML_DEPTH;
    let raw: RawPlan = serde_saphyr::from_str_with_options(source, options)
        .map_err(|e| fail(vec![syntax_error(source, &e)]))?;
    let mut ctx = Ctx {
        source,
        expander,
        errors: Vec::new(),
    };
    let plan = ctx.plan(raw);
    if ctx.errors.is_empty()
        && let Some(plan) = plan
    {
        return Ok(plan);
    }
    let mut errors = ctx.errors;
    errors.sort_by_key(|e| (e.line, e.column));
    errors.dedup();
    if errors.len() > MAX_REPORTED_ERRORS {
        let more = errors.len() - MAX_REPORTED_ERRORS;
        errors.truncate(MAX_REPORTED_ERRORS);
        errors.push(PlanError {
            line: 0,
            column: 0,
            message: format!("… and {more} more problems"),
        });
    }
    Err(fail(errors))
}

/// What a YAML budget breach means for a plan, in its terms.
fn budget_message(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    match breach {
        B::Depth { .. } => format!("the plan nests more than {MAX_YAML_DEPTH} levels deep"),
        B::Nodes { .. } | B::Events { .. } => {
            format!("the plan has more than {MAX_YAML_NODES} YAML values (aliases expanded)")
        }
        B::ScalarBytes { .. } => {
            format!(
                "the plan's text adds up to more than {MAX_PLAN_BYTES} bytes (aliases expanded)"
            )
        }
        B::Aliases { .. } | B::Anchors { .. } | B::AliasAnchorRatio { .. } => {
            format!("the plan uses too many YAML aliases or anchors (at most {MAX_YAML_ALIASES})")
        }
        other => format!("the plan is too large or too complex ({other:?})"),
    }
}

/// A YAML or shape error, with the parser's message made friendlier where it is terse.
fn syntax_error(source: &str, err: &serde_saphyr::Error) -> PlanError {
    let err = err.without_snippet();
    let (line, column) = err
        .location()
        .map_or((0, 0), |l| (l.line() as usize, l.column() as usize));
    // Limits breached while an alias is replayed come wrapped in the alias's location.
    let mut cause = err;
    while let serde_saphyr::Error::AliasError { error, .. }
    | serde_saphyr::Error::WithSnippet { error, .. } = cause
    {
        cause = error;
    }
    let message = match cause {
        serde_saphyr::Error::Budget { breach, .. } => budget_message(breach),
        serde_saphyr::Error::AliasReplayLimitExceeded { .. }
        | serde_saphyr::Error::AliasExpansionLimitExceeded { .. }
        | serde_saphyr::Error::AliasReplayStackDepthExceeded { .. } => {
            format!("the plan's YAML aliases expand to more than {MAX_YAML_NODES} values")
        }
        _ => {
            let message = UserMessageFormatter.format_message(err).into_owned();
            if message.ends_with("recursion limit exceeded") {
                // The scanner's own guard on flow nesting (`[[[[…`).
                format!("the plan nests more than {MAX_YAML_DEPTH} levels deep")
            } else {
                improve_message(&message, source, line, column)
            }
        }
    };
    PlanError {
        line,
        column,
        message,
    }
}

fn improve_message(message: &str, source: &str, line: usize, column: usize) -> String {
    let found = token_at(source, line, column);
    let found = if found.is_empty() {
        String::new()
    } else {
        format!(", got `{found}`")
    };
    if let Some(kind) = message.strip_prefix("invalid ") {
        let expected = match kind {
            "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)",
            "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
            "f32" | "f64" => "a number",
            "bool" | "boolean" => "true or false",
            _ => return message.to_owned(),
        };
        return format!("expected {expected}{found}");
    }
    if message == "expected string scalar" {
        return format!("expected a text value{found}");
    }
    if message.starts_with("invalid type:") || message.starts_with("invalid value:") {
        return message.to_owned();
    }
    message.to_owned()
}

/// The scalar that starts at a 1-based position, for quoting in messages.
fn token_at(source: &str, line: usize, column: usize) -> String {
    let Some(text) = line.checked_sub(1).and_then(|i| source.lines().nth(i)) else {
        return String::new();
    };
    let rest: String = text.chars().skip(column.saturating_sub(1)).collect();
    let token = rest.split(" #").next().unwrap_or_default().trim();
    let token = token.trim_end_matches([',', ']', '}']);
    token.chars().take(60).collect()
}

struct Ctx<'a> {
    source: &'a str,
    expander: Expander<'a>,
    errors: Vec<PlanError>,
}

fn pos(loc: &Location) -> (usize, usize) {
    (loc.line() as usize, loc.column() as usize)
}

impl Ctx<'_> {
    fn error(&mut self, loc: &Location, message: impl Into<String>) {
        let (line, column) = pos(loc);
        self.errors.push(PlanError {
            line,
            column,
            message: message.into(),
        });
    }

    /// Expands a string; an unset or malformed variable is reported where it is written.
    fn text(&mut self, text: &Text) -> Option<String> {
        match self.expander.expand(&text.value) {
            Ok(expanded) => Some(expanded.into_owned()),
            Err(e) => {
                self.var_error(&text.referenced, &text.value, &e);
                None
            }
        }
    }

    fn var_error(&mut self, loc: &Location, value: &str, err: &VarError) {
        let (line, column) = self.var_position(loc, value, err.offset());
        self.errors.push(PlanError {
            line,
            column,
            message: err.to_string(),
        });
    }

    /// Points inside the scalar when its text appears verbatim in the source (plain and simple
    /// quoted scalars), else at the scalar.
    fn var_position(&self, loc: &Location, value: &str, offset: usize) -> (usize, usize) {
        let span = loc.span();
        if let (Some(start), Some(len)) = (span.byte_offset(), span.byte_len()) {
            let (start, len) = (start as usize, len as usize);
            if let Some(raw) = self.source.get(start..start + len) {
                let quote = usize::from(raw.starts_with(['"', '\'']));
                if raw.get(quote..quote + value.len()) == Some(value) {
                    return line_column(self.source, start + quote + offset);
                }
            }
        }
        pos(loc)
    }

    /// Expands every string inside a JSON value (a request body or an expected value).
    fn value(&mut self, value: &Spanned<Value>) -> Option<Value> {
        let mut first_error = None;
        let expanded = expand_value(&self.expander, &value.value, &mut first_error);
        if let Some((text, err)) = first_error {
            self.var_error(&value.referenced, &text, &err);
            return None;
        }
        Some(expanded)
    }

    fn duration(&mut self, text: &Text) -> Option<Duration> {
        let expanded = self.text(text)?;
        match parse_duration(&expanded) {
            Ok(d) if d.is_zero() => {
                self.error(&text.referenced, "expected a duration greater than zero");
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(&text.referenced, e.to_string());
                None
            }
        }
    }

    fn plan(&mut self, raw: RawPlan) -> Option<Plan> {
        let name = self.text(&raw.name);
        if let Some(name) = &name
            && !is_slug(name)
        {
            self.error(
                &raw.name.referenced,
                format!(
                    "plan name `{name}` must be lower-case letters, digits and dashes, starting \
                     with a letter or digit (e.g. agent-backend-migration)"
                ),
            );
        }
        let description = raw.description.as_ref().and_then(|d| self.text(d));
        let target = self.target(raw.target);
        if raw.checks.value.is_empty() {
            self.error(
                &raw.checks.referenced,
                "`checks` is empty: a plan needs at least one check",
            );
        }
        if raw.checks.value.len() > MAX_CHECKS {
            self.error(
                &raw.checks.referenced,
                format!(
                    "{} checks; a plan may hold at most {MAX_CHECKS} (split it into several plans)",
                    raw.checks.value.len()
                ),
            );
            return None;
        }
        let mut checks = Vec::new();
        // A set, not a scan: generated plans hold thousands of checks.
        let mut seen: HashMap<String, Location> = HashMap::with_capacity(raw.checks.value.len());
        for check in raw.checks.value {
            let name_loc = check.value.name.referenced;
            if let Some(first) = seen.get(&check.value.name.value) {
                let message = format!(
                    "duplicate check name `{}` (first used at line {}); check names must be unique",
                    check.value.name.value,
                    first.line()
                );
                self.error(&name_loc, message);
            } else {
                seen.insert(check.value.name.value.clone(), name_loc);
            }
            if let Some(check) = self.check(check, &target) {
                checks.push(check);
            }
        }
        let policy = self.policy(raw.policy);
        let rollback = raw.rollback.and_then(|r| self.rollback(r));
        let monitor = raw.monitor.and_then(|m| self.monitor(m));
        Some(Plan {
            name: name?,
            description,
            target: target?,
            checks,
            policy: policy?,
            rollback,
            monitor,
        })
    }

    fn target(&mut self, raw: Option<RawTarget>) -> Option<Target> {
        let Some(raw) = raw else {
            return Some(Target::default());
        };
        let base_url = raw.base_url.as_ref().and_then(|u| {
            let url = self.text(u)?;
            if !has_probe_reference(&url) {
                match url::Url::parse(&url) {
                    Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                    Ok(parsed) => {
                        self.error(
                            &u.referenced,
                            format!(
                                "target.base_url uses scheme `{}`; expected http:// or https://",
                                parsed.scheme()
                            ),
                        );
                    }
                    Err(e) => self.error(
                        &u.referenced,
                        format!(
                            "target.base_url `{}` is not an absolute URL ({e}); expected e.g. http://localhost:8000",
                            redact_url(&url)
                        ),
                    ),
                }
            }
            Some(url)
        });
        let errors_before = self.errors.len();
        let headers = self.headers(raw.headers.as_ref());
        let timeout = raw.timeout.as_ref().and_then(|t| self.duration(t));
        (self.errors.len() == errors_before).then_some(Target {
            base_url,
            headers,
            timeout,
        })
    }

    fn headers(&mut self, raw: Option<&OrderedMap<Text>>) -> Vec<(String, String)> {
        let Some(raw) = raw else {
            return Vec::new();
        };
        let mut headers = Vec::new();
        for (name, value) in &raw.0 {
            if !is_token(&name.value) {
                self.error(
                    &name.referenced,
                    format!("`{}` is not a valid HTTP header name", name.value),
                );
                continue;
            }
            let Some(expanded) = self.text(value) else {
                continue;
            };
            if expanded.contains(['\r', '\n', '\0']) {
                self.error(
                    &value.referenced,
                    format!("the value of header `{}` contains a line break", name.value),
                );
                continue;
            }
            headers.push((name.value.clone(), expanded));
        }
        headers
    }

    fn check(&mut self, raw: Spanned<RawCheck>, target: &Option<Target>) -> Option<Check> {
        let loc = raw.referenced;
        let raw = raw.value;
        let name = raw.name.value.trim().to_owned();
        if name.is_empty() || name.chars().any(char::is_control) {
            self.error(
                &raw.name.referenced,
                "a check name must be non-empty text on one line",
            );
        }
        let description = raw.description.as_ref().and_then(|d| self.text(d));
        let severity = match raw.severity.map(|s| s.value) {
            None | Some(RawSeverity::Critical) => Severity::Critical,
            Some(RawSeverity::Warning) => Severity::Warning,
        };
        let target_timeout = target.as_ref().and_then(|t| t.timeout);
        let timeout = match &raw.timeout {
            Some(t) => self.duration(t),
            None => Some(target_timeout.unwrap_or(DEFAULT_TIMEOUT)),
        };
        let base_url = target.as_ref().and_then(|t| t.base_url.clone());
        let kinds: Vec<&str> = [
            raw.http.as_ref().map(|_| "http"),
            raw.latency.as_ref().map(|_| "latency"),
            raw.database.as_ref().map(|_| "database"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let kind = match kinds.len() {
            0 => {
                self.error(
                    &loc,
                    format!("check `{name}` does nothing: give it one of `http`, `latency` or `database`"),
                );
                None
            }
            1 => {
                if let Some(http) = raw.http {
                    self.http(http, base_url.as_deref()).map(CheckKind::Http)
                } else if let Some(latency) = raw.latency {
                    self.latency(latency, base_url.as_deref())
                        .map(CheckKind::Latency)
                } else if let Some(database) = raw.database {
                    self.database(database).map(CheckKind::Database)
                } else {
                    None
                }
            }
            _ => {
                self.error(
                    &loc,
                    format!(
                        "check `{name}` has both `{}` and `{}`: a check does exactly one thing, split it in two",
                        kinds[0], kinds[1]
                    ),
                );
                None
            }
        };
        Some(Check {
            name,
            description,
            severity,
            timeout: timeout?,
            kind: kind?,
        })
    }

    fn request(
        &mut self,
        loc: &Location,
        parts: RawRequest,
        base_url: Option<&str>,
    ) -> Option<HttpRequest> {
        let errors_before = self.errors.len();
        let method = match &parts.method {
            None => "GET".to_owned(),
            Some(m) => {
                let method = self.text(m).unwrap_or_default().to_ascii_uppercase();
                if !is_token(&method) || method.is_empty() {
                    self.error(
                        &m.referenced,
                        format!("`{}` is not an HTTP method (e.g. GET, POST, PUT)", m.value),
                    );
                }
                method
            }
        };
        let url_expanded = self.text(&parts.url);
        let url = url_expanded.clone().unwrap_or_default();
        let base_is_final = base_url.is_none_or(|b| !has_probe_reference(b));
        if url_expanded.is_some()
            && !has_probe_reference(&url)
            && base_is_final
            && let Err(message) = resolve_url(base_url, &url)
        {
            self.error(&parts.url.referenced, redact_url_in(&message, &url));
        }
        let headers = self.headers(parts.headers.as_ref());
        let body = match (&parts.json, &parts.body) {
            (Some(json), Some(_)) => {
                self.error(
                    &json.referenced,
                    "a request has either `json` or `body`, not both",
                );
                Body::None
            }
            (Some(json), None) => self.value(json).map_or(Body::None, Body::Json),
            (None, Some(body)) => self.text(body).map_or(Body::None, Body::Raw),
            (None, None) => Body::None,
        };
        let _ = loc;
        (self.errors.len() == errors_before).then_some(HttpRequest {
            method,
            url,
            headers,
            body,
        })
    }

    fn status(&mut self, raw: Option<Spanned<StatusSpec>>) -> StatusExpect {
        let Some(raw) = raw else {
            return StatusExpect::Success;
        };
        if raw.value.0.is_empty() {
            self.error(
                &raw.referenced,
                "the status list is empty; list at least one code or leave it out for any 2xx",
            );
            return StatusExpect::Success;
        }
        let mut codes = Vec::new();
        for &code in &raw.value.0 {
            match u16::try_from(code) {
                Ok(c) if (100..=599).contains(&c) => codes.push(c),
                _ => self.error(
                    &raw.referenced,
                    format!("{code} is not an HTTP status code (100 to 599)"),
                ),
            }
        }
        StatusExpect::OneOf(codes)
    }

    fn http(&mut self, raw: Spanned<RawHttp>, base_url: Option<&str>) -> Option<HttpCheck> {
        let loc = raw.referenced;
        let (request, expect) = raw.value.into_parts();
        let errors_before = self.errors.len();
        let request = self.request(&loc, request, base_url);
        let expect = match expect {
            Some(e) => self.expect(e),
            None => HttpExpect::default(),
        };
        (self.errors.len() == errors_before).then_some(HttpCheck {
            request: request?,
            expect,
        })
    }

    fn expect(&mut self, raw: RawExpect) -> HttpExpect {
        let status = self.status(raw.status);
        let json = raw
            .json
            .unwrap_or_default()
            .into_iter()
            .filter_map(|a| self.json_assertion(a))
            .collect();
        let body_contains = self.string_list(raw.body_contains);
        let body_not_contains = self.string_list(raw.body_not_contains);
        let body_regex = raw.body_regex.as_ref().and_then(|r| {
            let source = self.text(r)?;
            if has_probe_reference(&source) {
                self.error(&r.referenced, "body_regex cannot use ${probe:…} variables");
                return None;
            }
            match Pattern::parse(&source) {
                Ok(p) => Some(p),
                Err(message) => {
                    self.error(&r.referenced, message);
                    None
                }
            }
        });
        let headers = self.headers(raw.headers.as_ref());
        let max_latency = raw.max_latency.as_ref().and_then(|d| self.duration(d));
        HttpExpect {
            status,
            json,
            body_contains,
            body_not_contains,
            body_regex,
            headers,
            max_latency,
        }
    }

    fn string_list(&mut self, raw: Option<Spanned<StringList>>) -> Vec<String> {
        let Some(raw) = raw else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in raw.value.0 {
            match self.expander.expand(&item) {
                Ok(s) => out.push(s.into_owned()),
                Err(e) => self.var_error(&raw.referenced, &item, &e),
            }
        }
        out
    }

    fn json_assertion(&mut self, raw: Spanned<RawJsonAssertion>) -> Option<JsonAssertion> {
        let loc = raw.referenced;
        let raw = raw.value;
        let source = self.text(&raw.path)?;
        if has_probe_reference(&source) {
            self.error(
                &raw.path.referenced,
                "a JSONPath cannot use ${probe:…} variables",
            );
            return None;
        }
        let path = match JsonPathExpr::parse(&source) {
            Ok(p) => p,
            Err((message, at)) => {
                let (line, column) = self.var_position(&raw.path.referenced, &raw.path.value, at);
                self.errors.push(PlanError {
                    line,
                    column,
                    message,
                });
                return None;
            }
        };
        let equals = match &raw.equals {
            Some(v) => Some(self.value(v)?),
            None => None,
        };
        let contains = match &raw.contains {
            Some(v) => Some(self.value(v)?),
            None => None,
        };
        let min_length = raw.min_length.as_ref().map(|m| m.value);
        let max_length = raw.max_length.as_ref().map(|m| m.value);
        let has_condition =
            equals.is_some() || contains.is_some() || min_length.is_some() || max_length.is_some();
        if raw.exists == Some(false) && has_condition {
            self.error(
                &loc,
                format!(
                    "`{source}`: `exists: false` cannot be combined with equals, contains, min_length or max_length"
                ),
            );
            return None;
        }
        if let (Some(min), Some(max)) = (&raw.min_length, &raw.max_length)
            && min.value > max.value
        {
            self.error(
                &max.referenced,
                format!("max_length {} is below min_length {}", max.value, min.value),
            );
            return None;
        }
        Some(JsonAssertion {
            path,
            exists: raw.exists,
            equals,
            contains,
            min_length,
            max_length,
        })
    }

    fn latency(
        &mut self,
        raw: Spanned<RawLatency>,
        base_url: Option<&str>,
    ) -> Option<LatencyCheck> {
        let loc = raw.referenced;
        let raw = raw.value;
        let errors_before = self.errors.len();
        let request_loc = raw.request.referenced;
        let request = self.request(&request_loc, raw.request.value, base_url);
        let expect_status = self.status(raw.expect_status);
        let samples = match raw.samples {
            None => 5,
            Some(s) if (1..=100_000).contains(&s.value) => s.value,
            Some(s) => {
                self.error(
                    &s.referenced,
                    format!("samples must be between 1 and 100000, got {}", s.value),
                );
                1
            }
        };
        let concurrency = match raw.concurrency {
            None => 1,
            Some(c) if c.value >= 1 => c.value.min(samples),
            Some(c) => {
                self.error(&c.referenced, "concurrency must be at least 1");
                1
            }
        };
        let percentile = match raw.percentile {
            None => 95.0,
            Some(p) if p.value > 0.0 && p.value <= 100.0 => p.value,
            Some(p) => {
                self.error(
                    &p.referenced,
                    format!(
                        "percentile must be above 0 and at most 100, got {}",
                        p.value
                    ),
                );
                95.0
            }
        };
        let max_error_rate = match raw.max_error_rate {
            None => 0.0,
            Some(r) if (0.0..=1.0).contains(&r.value) => r.value,
            Some(r) => {
                self.error(
                    &r.referenced,
                    format!(
                        "max_error_rate is a share between 0 and 1 (0.05 = 5%), got {}",
                        r.value
                    ),
                );
                0.0
            }
        };
        let pass = raw.pass_below.as_ref().and_then(|d| self.duration(d));
        let warn = raw.warn_below.as_ref().and_then(|d| self.duration(d));
        let (pass_below, warn_below) = match (&raw.pass_below, &raw.warn_below) {
            // The seed article's thresholds: p95 under 3 s passes, under 5 s warns.
            (None, None) => (Duration::from_secs(3), Some(Duration::from_secs(5))),
            (None, Some(w)) => {
                self.error(&w.referenced, "warn_below needs pass_below as well");
                (Duration::ZERO, None)
            }
            (Some(_), _) => (pass.unwrap_or_default(), warn),
        };
        if let (Some(w), Some(raw_w)) = (warn_below, &raw.warn_below)
            && raw.pass_below.is_some()
            && w <= pass_below
            && !pass_below.is_zero()
        {
            self.error(
                &raw_w.referenced,
                format!(
                    "warn_below ({}) must be greater than pass_below ({})",
                    PlanDuration(w),
                    PlanDuration(pass_below)
                ),
            );
        }
        let _ = loc;
        (self.errors.len() == errors_before).then_some(LatencyCheck {
            request: request?,
            expect_status,
            max_error_rate,
            samples,
            concurrency,
            percentile,
            pass_below,
            warn_below,
        })
    }

    fn names(&mut self, raw: Option<Vec<Text>>, what: &str) -> Vec<String> {
        let mut out = Vec::new();
        for item in raw.unwrap_or_default() {
            let Some(name) = self.text(&item) else {
                continue;
            };
            if name.trim().is_empty() {
                self.error(&item.referenced, format!("empty {what} name"));
            } else {
                out.push(name);
            }
        }
        out
    }

    fn database(&mut self, raw: Spanned<RawDatabase>) -> Option<DatabaseCheck> {
        let loc = raw.referenced;
        let raw = raw.value;
        let errors_before = self.errors.len();
        let url = self.text(&raw.url).unwrap_or_default();
        let is_sqlite = url.starts_with("sqlite:");
        if self.errors.len() == errors_before
            && !has_probe_reference(&url)
            && !(is_sqlite || url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            self.error(
                &raw.url.referenced,
                format!(
                    "database url `{}` is not supported: use postgres://… (or postgresql://…) or sqlite:…",
                    redact_url(&url)
                ),
            );
        }
        // `schema` only means something to PostgreSQL; SQLite ignores it, so one plan can
        // point at either engine through `${DATABASE_URL}`.
        let schema = raw.schema.as_ref().and_then(|s| self.text(s));
        let tables = self.names(raw.tables, "table");
        let mut columns = Vec::new();
        for (table, cols) in raw.columns.map(|c| c.0).unwrap_or_default() {
            let Some(table_name) = self.text(&table) else {
                continue;
            };
            let cols = self.names(Some(cols), "column");
            if cols.is_empty() {
                self.error(
                    &table.referenced,
                    format!("no columns listed for table `{table_name}`"),
                );
            }
            columns.push((table_name, cols));
        }
        let indexes = self.names(raw.indexes, "index");
        let mut queries = Vec::new();
        for q in raw.queries.unwrap_or_default() {
            let q_loc = q.referenced;
            let q = q.value;
            let Some(sql) = self.text(&q.sql) else {
                continue;
            };
            if sql.trim().is_empty() {
                self.error(&q_loc, "empty `sql`");
                continue;
            }
            let expect = match q.expect {
                None => QueryExpect::default(),
                Some(e) => {
                    let e_loc = e.referenced;
                    let e = e.value;
                    if let (Some(min), Some(max)) = (e.min, e.max)
                        && min > max
                    {
                        self.error(&e_loc, format!("min {min} is above max {max}"));
                    }
                    let equals = match &e.equals {
                        Some(v) => self.value(v),
                        None => None,
                    };
                    QueryExpect {
                        min: e.min,
                        max: e.max,
                        equals,
                    }
                }
            };
            queries.push(DbQuery { sql, expect });
        }
        if tables.is_empty() && columns.is_empty() && indexes.is_empty() && queries.is_empty() {
            self.error(
                &loc,
                "this database check checks nothing: list tables, columns, indexes or queries",
            );
        }
        (self.errors.len() == errors_before).then_some(DatabaseCheck {
            url,
            schema,
            tables,
            columns,
            indexes,
            queries,
        })
    }

    fn policy(&mut self, raw: Option<RawPolicy>) -> Option<Policy> {
        let Some(raw) = raw else {
            return Some(Policy::default());
        };
        let errors_before = self.errors.len();
        let max_warnings = raw.max_warnings.map_or(DEFAULT_MAX_WARNINGS, |m| m.value);
        let mut regions: Vec<String> = Vec::new();
        if let Some(list) = raw.regions {
            for r in list.value {
                let Some(name) = self.text(&r) else { continue };
                if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == ',') {
                    self.error(&r.referenced, format!("`{name}` is not a region name"));
                } else if regions.contains(&name) {
                    self.error(&r.referenced, format!("region `{name}` is listed twice"));
                } else {
                    regions.push(name);
                }
            }
            if regions.is_empty() && self.errors.len() == errors_before {
                self.error(&list.referenced, "`regions` is empty: list regions or leave it out for every connected probe's region");
            }
        }
        let quorum = match raw.quorum {
            None => Quorum::Majority,
            Some(q) => match &q.value {
                QuorumSpec::Word(w) => match w.as_str() {
                    "any" => Quorum::Any,
                    "majority" => Quorum::Majority,
                    "all" => Quorum::All,
                    other => {
                        self.error(&q.referenced, format!("unknown quorum `{other}`: expected any, majority, all or a number of regions"));
                        Quorum::Majority
                    }
                },
                QuorumSpec::Count(0) => {
                    self.error(&q.referenced, "quorum must be at least 1 region");
                    Quorum::Any
                }
                QuorumSpec::Count(n) => {
                    let n = u32::try_from(*n).unwrap_or(u32::MAX);
                    if !regions.is_empty() && n as usize > regions.len() {
                        self.error(
                            &q.referenced,
                            format!("quorum {n} is more than the {} required regions, so no check could ever fail", regions.len()),
                        );
                    }
                    Quorum::Count(n)
                }
            },
        };
        let probes_per_region = match raw.probes_per_region {
            None => ProbesPerRegion::One,
            Some(p) => match &p.value {
                PerRegionSpec::Count(1) => ProbesPerRegion::One,
                PerRegionSpec::Word(w) if w == "all" => ProbesPerRegion::All,
                _ => {
                    self.error(&p.referenced, "probes_per_region is 1 or all");
                    ProbesPerRegion::One
                }
            },
        };
        (self.errors.len() == errors_before).then_some(Policy {
            max_warnings,
            regions,
            quorum,
            probes_per_region,
        })
    }

    fn rollback(&mut self, raw: Spanned<RawRollback>) -> Option<Rollback> {
        let raw = raw.value;
        let errors_before = self.errors.len();
        let error_rate_above = raw.error_rate_above.as_ref().and_then(|r| {
            if (0.0..=1.0).contains(&r.value) {
                Some(r.value)
            } else {
                self.error(
                    &r.referenced,
                    format!(
                        "error_rate_above is a share between 0 and 1 (0.10 = 10%), got {}",
                        r.value
                    ),
                );
                None
            }
        });
        let p99 = raw
            .p99_latency_above
            .as_ref()
            .and_then(|d| self.duration(d));
        let (error_rate_above, p99_latency_above) =
            if raw.error_rate_above.is_none() && raw.p99_latency_above.is_none() {
                (
                    Some(DEFAULT_ERROR_RATE_ABOVE),
                    Some(DEFAULT_P99_LATENCY_ABOVE),
                )
            } else {
                (error_rate_above, p99)
            };
        let action = raw.action.and_then(|a| self.action(a));
        let cooldown = match &raw.cooldown {
            Some(c) => self.duration(c).unwrap_or(DEFAULT_COOLDOWN),
            None => DEFAULT_COOLDOWN,
        };
        let failing_rounds = match raw.failing_rounds {
            Some(n) if !(1..=MAX_FAILING_ROUNDS).contains(&n.value) => {
                self.error(
                    &n.referenced,
                    format!(
                        "failing_rounds is a number of consecutive rounds from 1 to {MAX_FAILING_ROUNDS} (1 acts on the first failing round), got {}",
                        n.value
                    ),
                );
                DEFAULT_FAILING_ROUNDS
            }
            Some(n) => n.value,
            None => DEFAULT_FAILING_ROUNDS,
        };
        let confidence = match raw.confidence {
            Some(c) if !(0.0..1.0).contains(&c.value) => {
                self.error(
                    &c.referenced,
                    format!(
                        "confidence is a probability from 0 up to (not including) 1, e.g. 0.95; 0 compares the raw error rate; got {}",
                        c.value
                    ),
                );
                DEFAULT_CONFIDENCE
            }
            Some(c) => c.value,
            None => DEFAULT_CONFIDENCE,
        };
        (self.errors.len() == errors_before).then_some(Rollback {
            on_fail: raw.on_fail.unwrap_or(true),
            error_rate_above,
            p99_latency_above,
            action,
            dry_run: raw.dry_run.unwrap_or(false),
            cooldown,
            failing_rounds,
            confidence,
            on_inconclusive: raw.on_inconclusive.unwrap_or(false),
        })
    }

    fn action(&mut self, raw: Spanned<RawAction>) -> Option<RollbackAction> {
        let loc = raw.referenced;
        let raw = raw.value;
        let given: Vec<&str> = [
            raw.kubectl.as_ref().map(|_| "kubectl"),
            raw.kubernetes.as_ref().map(|_| "kubernetes"),
            raw.webhook.as_ref().map(|_| "webhook"),
            raw.command.as_ref().map(|_| "command"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if given.len() != 1 {
            let message = if given.is_empty() {
                "the rollback action is empty: give one of kubectl, kubernetes, webhook or command"
                    .to_owned()
            } else {
                format!(
                    "a rollback has one action, this one has {}",
                    given.join(" and ")
                )
            };
            self.error(&loc, message);
            return None;
        }
        if let Some(k) = raw.kubectl {
            return Some(RollbackAction::Kubectl(self.kube(k)));
        }
        if let Some(k) = raw.kubernetes {
            return Some(RollbackAction::Kubernetes(self.kube(k)));
        }
        if let Some(w) = raw.webhook {
            let url = self.text(&w.url)?;
            if !has_probe_reference(&url)
                && let Err(message) = resolve_url(None, &url)
            {
                self.error(&w.url.referenced, redact_url_in(&message, &url));
            }
            let secret = w.secret.as_ref().and_then(|s| self.text(s));
            let timeout = match &w.timeout {
                Some(t) => self.duration(t)?,
                None => Duration::from_secs(10),
            };
            let retries = w.retries.map_or(3, |r| r.value);
            return Some(RollbackAction::Webhook(Webhook {
                url,
                secret,
                timeout,
                retries,
            }));
        }
        let argv = raw.command?;
        if argv.value.is_empty() {
            self.error(&argv.referenced, "the rollback command is empty: give the program and its arguments, e.g. [./rollback.sh, agent-backend]");
            return None;
        }
        let args: Vec<String> = argv.value.iter().filter_map(|a| self.text(a)).collect();
        (args.len() == argv.value.len()).then_some(RollbackAction::Command(args))
    }

    fn kube(&mut self, raw: RawKube) -> KubeTarget {
        KubeTarget {
            deployment: raw.deployment.as_ref().and_then(|d| self.text(d)),
            namespace: raw.namespace.as_ref().and_then(|n| self.text(n)),
        }
    }

    fn monitor(&mut self, raw: Spanned<RawMonitor>) -> Option<Monitor> {
        let raw = raw.value;
        let errors_before = self.errors.len();
        let phases = match raw.phases {
            None => Monitor::default_phases(),
            Some(list) => {
                let mut phases = Vec::new();
                for p in list {
                    let loc = p.referenced;
                    let every = self.duration(&p.value.every);
                    let length = self.duration(&p.value.for_);
                    if let (Some(every), Some(length)) = (every, length) {
                        if length < every {
                            self.error(
                                &loc,
                                format!(
                                    "a phase of {} cannot run every {}",
                                    PlanDuration(length),
                                    PlanDuration(every)
                                ),
                            );
                        }
                        phases.push(Phase {
                            every,
                            duration: length,
                        });
                    }
                }
                phases
            }
        };
        if phases.is_empty() && self.errors.len() == errors_before {
            return Some(Monitor {
                phases: Monitor::default_phases(),
                window: DEFAULT_WINDOW,
            });
        }
        let window = match &raw.window {
            Some(w) => self.duration(w)?,
            None => DEFAULT_WINDOW,
        };
        (self.errors.len() == errors_before).then_some(Monitor { phases, window })
    }
}

fn expand_value(
    expander: &Expander<'_>,
    value: &Value,
    error: &mut Option<(String, VarError)>,
) -> Value {
    match value {
        Value::String(s) => match expander.expand(s) {
            Ok(e) => Value::String(e.into_owned()),
            Err(e) => {
                if error.is_none() {
                    *error = Some((s.clone(), e));
                }
                value.clone()
            }
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| expand_value(expander, v, error))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), expand_value(expander, v, error)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `[a-z0-9][a-z0-9-]*`.
fn is_slug(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// An RFC 9110 token: header names and methods.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

/// A URL message with the URL's password masked.
fn redact_url_in(message: &str, url: &str) -> String {
    let redacted = redact_url(url);
    if redacted == url {
        message.to_owned()
    } else {
        message.replace(url, &redacted)
    }
}
