//! From YAML text to a validated [`Plan`].
//!
//! Parsing (syntax, unknown keys, types) stops at the first problem, because the YAML parser
//! cannot go on; the sections and checks of a block-style plan are then read one by one so that
//! every shape problem is reported, not only the first. Validation reports every problem it
//! finds at once, each with its position, so a broken plan is fixed in one round trip. This file holds the parse and the
//! validation context; each plan section has its own file (`target.rs`, `checks.rs`,
//! `policy.rs`, `rollback.rs`, `monitor.rs`, `baseline.rs` with `stages`).

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

mod baseline;
mod cases;
mod checks;
mod flow;
mod monitor;
mod policy;
mod rollback;
mod target;
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
/// Sections and checks read again, at most, to find every shape problem of a plan.
const MAX_SECTION_READS: usize = 2_000;
/// Problems listed in full; the rest are counted.
const MAX_REPORTED_ERRORS: usize = 50;

/// Parses and validates a plan. `origin` names the file in error messages; `expander` decides
/// which `${…}` references are expanded here (see [`crate::vars`]).
pub fn parse_plan(source: &str, origin: &str, expander: Expander<'_>) -> Result<Plan, PlanErrors> {
    parse_plan_with_files(source, origin, expander, None)
}

/// Reads a file a plan names (a golden set's `cases: golden.jsonl`), by the name as written;
/// the caller decides where names are relative to and how much may be read.
pub type ReadFile<'a> = &'a dyn Fn(&str) -> Result<String, String>;

/// [`parse_plan`] for a plan loaded from a file, whose golden sets may name files next to it:
/// `files` reads them. Without it (a plan sent over gRPC), cases must be inline.
pub fn parse_plan_with_files(
    source: &str,
    origin: &str,
    expander: Expander<'_>,
    files: Option<ReadFile<'_>>,
) -> Result<Plan, PlanErrors> {
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
    let raw: RawPlan =
        serde_saphyr::from_str_with_options(source, yaml_options()).map_err(|e| {
            let first = syntax_error(source, &e);
            // A breached limit is reported alone: reading the plan again, section by
            // section, is what a hostile plan would want.
            fail(if breaches_a_limit(&e) {
                vec![first]
            } else {
                shape_errors(source, first)
            })
        })?;
    let mut ctx = Ctx {
        source,
        expander,
        files,
        errors: Vec::new(),
    };
    let plan = ctx.plan(raw);
    if ctx.errors.is_empty()
        && let Some(plan) = plan
    {
        return Ok(plan);
    }
    Err(fail(listed(ctx.errors)))
}

/// Problems in file order, each once, at most [`MAX_REPORTED_ERRORS`] and the rest counted.
fn listed(mut errors: Vec<PlanError>) -> Vec<PlanError> {
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
    errors
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

/// How plans are read: bounds that hold whatever the text (depth, since the parser recurses;
/// values; aliases), no snippet in messages (errors show their own).
fn yaml_options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
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
    options
}

/// A plan's top-level sections, each optional, for reading one section on its own.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Section {
    name: Option<Text>,
    description: Option<Text>,
    target: Option<RawTarget>,
    checks: Option<Vec<Spanned<RawCheck>>>,
    policy: Option<RawPolicy>,
    rollback: Option<Spanned<RawRollback>>,
    monitor: Option<Spanned<RawMonitor>>,
    baseline: Option<Spanned<RawBaseline>>,
    stages: Option<Spanned<Vec<Text>>>,
}

/// Every shape problem (an unknown key, a wrong type) of a block-style plan, not only the
/// first: the parser stops at `first`, so each top-level section and each check is read again
/// on its own, with its positions in the whole file. When that does not find `first` again
/// (a plan written in flow style, say), `first` alone is reported.
fn shape_errors(source: &str, first: PlanError) -> Vec<PlanError> {
    if first.line == 0 {
        return vec![first];
    }
    let lines: Vec<&str> = source.lines().collect();
    let top_level = |l: &str| {
        l.chars()
            .next()
            .is_some_and(|c| !c.is_whitespace() && c != '#' && c != '-')
    };
    let starts: Vec<usize> = (0..lines.len()).filter(|&i| top_level(lines[i])).collect();
    let mut errors = Vec::new();
    // Bounded work: a plan has few sections, and past the reported problems there is
    // nothing more to show.
    let mut reads = 0usize;
    let mut read = |text: String, shift: usize| {
        reads += 1;
        if reads > MAX_SECTION_READS || errors.len() > MAX_REPORTED_ERRORS {
            return;
        }
        if let Err(e) = serde_saphyr::from_str_with_options::<Section>(&text, yaml_options()) {
            let mut error = syntax_error(&text, &e);
            if error.line > 0 {
                error.line += shift;
                errors.push(error);
            }
        }
    };
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(lines.len());
        let is_block_checks = lines[start].trim_end() == "checks:";
        if !is_block_checks {
            read(lines[start..end].join("\n"), start);
            continue;
        }
        // One check at a time: each item of the sequence at its first indentation.
        let item = |l: &str| {
            let body = l.trim_start();
            (body.starts_with("- ") || body == "-").then(|| l.len() - body.len())
        };
        let indent = lines[start + 1..end].iter().find_map(|l| item(l));
        let items: Vec<usize> = (start + 1..end)
            .filter(|&i| indent.is_some() && item(lines[i]) == indent)
            .collect();
        for (j, &from) in items.iter().enumerate() {
            let to = items.get(j + 1).copied().unwrap_or(end);
            // `checks:` on the line before the item's first line.
            read(format!("checks:\n{}", lines[from..to].join("\n")), from - 1);
        }
    }
    if !errors
        .iter()
        .any(|e| e.line == first.line && e.column == first.column)
    {
        return vec![first];
    }
    listed(errors)
}

/// Whether the parser stopped on one of the plan's YAML bounds (size, depth, aliases).
fn breaches_a_limit(err: &serde_saphyr::Error) -> bool {
    let mut cause = err;
    while let serde_saphyr::Error::AliasError { error, .. }
    | serde_saphyr::Error::WithSnippet { error, .. } = cause
    {
        cause = error;
    }
    matches!(
        cause,
        serde_saphyr::Error::Budget { .. }
            | serde_saphyr::Error::AliasReplayLimitExceeded { .. }
            | serde_saphyr::Error::AliasExpansionLimitExceeded { .. }
            | serde_saphyr::Error::AliasReplayStackDepthExceeded { .. }
    ) || UserMessageFormatter
        .format_message(err)
        .ends_with("recursion limit exceeded")
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
    files: Option<ReadFile<'a>>,
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
        let baseline = raw.baseline.and_then(|b| self.baseline(b));
        let stages = raw.stages.map(|s| self.stages(s)).unwrap_or_default();
        Some(Plan {
            name: name?,
            description,
            target: target?,
            checks,
            policy: policy?,
            rollback,
            monitor,
            baseline,
            stages,
        })
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
