//! Judging an HTTP answer against a check's expectations. Pure: the answer is already captured,
//! so every rule is unit-tested without a network.
//!
//! Every failure says what was expected and what was seen, because "check failed" at 3 a.m.
//! after a migration is worthless.

use std::time::Duration;

use postflight_plan::duration::{PlanDuration, human_duration};
use postflight_plan::model::{HttpExpect, JsonAssertion};
use serde_json::Value;

/// An HTTP answer as received.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Header names in lower case, in received order.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8).
    pub body: String,
    /// Whether the body was cut at the size limit.
    pub truncated: bool,
    /// From sending the request to the end of the body.
    pub latency: Duration,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The verdict on one answer: `Ok` with a short description of what held, or every
/// expectation that did not hold.
pub fn judge(expect: &HttpExpect, answer: &Answer) -> Result<String, Vec<String>> {
    let mut failures = Vec::new();
    if !expect.status.accepts(answer.status) {
        failures.push(format!(
            "status {}, expected {} (body: {})",
            answer.status,
            expect.status,
            excerpt(&answer.body)
        ));
        // The body of a wrong status is an error page: judging it further only adds noise.
        return Err(failures);
    }
    let mut held = 1;
    if !expect.json.is_empty() || expect.tools.is_some() {
        match serde_json::from_str::<Value>(&answer.body) {
            Ok(document) => {
                for assertion in &expect.json {
                    match judge_json(assertion, &document) {
                        Ok(()) => held += 1,
                        Err(message) => failures.push(message),
                    }
                }
                if let Some(tools) = &expect.tools {
                    match crate::tools::judge_tools(tools, &document) {
                        Ok(()) => held += 1,
                        Err(problems) => failures.extend(problems),
                    }
                }
            }
            Err(e) => failures.push(format!(
                "expected a JSON body for {}, got {} that is not JSON ({e}): {}",
                expect
                    .json
                    .iter()
                    .map(|a| a.path.as_str())
                    .chain(expect.tools.as_ref().map(|_| "expect.tools"))
                    .collect::<Vec<_>>()
                    .join(", "),
                answer
                    .header("content-type")
                    .unwrap_or("a body without content-type"),
                excerpt(&answer.body)
            )),
        }
    }
    for needle in &expect.body_contains {
        if answer.body.contains(needle.as_str()) {
            held += 1;
        } else {
            failures.push(format!(
                "body does not contain {} (got: {})",
                quote(needle),
                excerpt(&answer.body)
            ));
        }
    }
    for needle in &expect.body_not_contains {
        match answer.body.find(needle.as_str()) {
            None => held += 1,
            Some(at) => failures.push(format!(
                "body contains {}, expected it not to (at: {})",
                quote(needle),
                excerpt(&context(&answer.body, at, needle.len()))
            )),
        }
    }
    if let Some(pattern) = &expect.body_regex {
        if pattern.regex.is_match(&answer.body) {
            held += 1;
        } else {
            failures.push(format!(
                "body does not match /{}/ (got: {})",
                pattern.as_str(),
                excerpt(&answer.body)
            ));
        }
    }
    for (name, needle) in &expect.headers {
        match answer.header(name) {
            Some(value) if value.contains(needle.as_str()) => held += 1,
            Some(value) => failures.push(format!(
                "header {name} is {}, expected it to contain {}",
                quote(value),
                quote(needle)
            )),
            None => failures.push(format!("header {name} is missing")),
        }
    }
    if let Some(limit) = expect.max_latency {
        if answer.latency <= limit {
            held += 1;
        } else {
            failures.push(format!(
                "took {}, expected at most {}",
                human_duration(answer.latency),
                PlanDuration(limit)
            ));
        }
    }
    if answer.truncated && !failures.is_empty() {
        failures.push("(the body was longer than the size limit and was cut)".to_owned());
    }
    if failures.is_empty() {
        let expectations = if held == 1 {
            "1 expectation met".to_owned()
        } else {
            format!("all {held} expectations met")
        };
        Ok(format!(
            "status {} in {}, {expectations}",
            answer.status,
            human_duration(answer.latency)
        ))
    } else {
        Err(failures)
    }
}

/// One JSONPath assertion against a parsed document.
pub fn judge_json(assertion: &JsonAssertion, document: &Value) -> Result<(), String> {
    let path = assertion.path.as_str();
    let selected = assertion.path.select(document);
    let Some(value) = selected else {
        if assertion.exists == Some(false) {
            return Ok(());
        }
        return Err(format!(
            "{path} not found (got: {})",
            excerpt_json(document)
        ));
    };
    if assertion.exists == Some(false) {
        return Err(format!(
            "{path} exists, expected it not to (got: {})",
            excerpt_json(&value)
        ));
    }
    if let Some(expected) = &assertion.equals
        && !json_equal(&value, expected)
    {
        return Err(format!(
            "{path} is {}, expected {}",
            excerpt_json(&value),
            excerpt_json(expected)
        ));
    }
    if let Some(needle) = &assertion.contains {
        contains(path, &value, needle)?;
    }
    if assertion.min_length.is_some() || assertion.max_length.is_some() {
        let (length, unit) = match &value {
            Value::String(s) => (s.chars().count() as u64, "characters"),
            Value::Array(items) => (items.len() as u64, "items"),
            Value::Object(map) => (map.len() as u64, "keys"),
            other => {
                return Err(format!(
                    "{path} is {} ({}), which has no length",
                    excerpt_json(other),
                    type_name(other)
                ));
            }
        };
        if let Some(min) = assertion.min_length
            && length < min
        {
            return Err(format!(
                "{path} has {length} {unit}, expected at least {min} (got: {})",
                excerpt_json(&value)
            ));
        }
        if let Some(max) = assertion.max_length
            && length > max
        {
            return Err(format!(
                "{path} has {length} {unit}, expected at most {max} (got: {})",
                excerpt_json(&value)
            ));
        }
    }
    Ok(())
}

fn contains(path: &str, value: &Value, needle: &Value) -> Result<(), String> {
    let found = match (value, needle) {
        (Value::String(hay), Value::String(n)) => hay.contains(n.as_str()),
        (Value::String(hay), other) => hay.contains(&other.to_string()),
        (Value::Array(items), n) => items.iter().any(|item| {
            json_equal(item, n)
                || matches!((item, n), (Value::String(i), Value::String(n)) if i.contains(n.as_str()))
        }),
        (Value::Object(map), Value::String(key)) => map.contains_key(key),
        (other, _) => {
            return Err(format!(
                "{path} is {} ({}); `contains` needs a string, an array or an object",
                excerpt_json(other),
                type_name(other)
            ));
        }
    };
    if found {
        Ok(())
    } else {
        Err(format!(
            "{path} does not contain {} (got: {})",
            excerpt_json(needle),
            excerpt_json(value)
        ))
    }
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

const EXCERPT_CHARS: usize = 160;

/// A value as compact JSON, cut to a readable length.
pub fn excerpt_json(value: &Value) -> String {
    cut(&value.to_string())
}

/// A body quoted and cut to a readable length; an empty body says so.
pub fn excerpt(body: &str) -> String {
    if body.is_empty() {
        return "empty".to_owned();
    }
    let one_line: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    cut(&quote(one_line.trim()))
}

fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("\"{text}\""))
}

fn cut(text: &str) -> String {
    if text.chars().count() <= EXCERPT_CHARS {
        return text.to_owned();
    }
    let head: String = text.chars().take(EXCERPT_CHARS).collect();
    format!("{head}…")
}

/// Some text around a match, for "found X here".
fn context(body: &str, at: usize, len: usize) -> String {
    let start = body[..at]
        .char_indices()
        .rev()
        .nth(40)
        .map_or(0, |(i, _)| i);
    let end_from = (at + len).min(body.len());
    let end = body[end_from..]
        .char_indices()
        .nth(40)
        .map_or(body.len(), |(i, _)| end_from + i);
    body[start..end].to_owned()
}

#[cfg(test)]
mod tests;
