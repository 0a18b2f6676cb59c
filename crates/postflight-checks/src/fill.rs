//! Filling `${step:NAME}` (a flow's captures) and `${case:FIELD}` (a golden set's case) into
//! a request at run time. A string that is exactly one reference becomes the value itself (a
//! number stays a number in a JSON body); elsewhere the value's text is inserted.

use std::collections::BTreeMap;

use postflight_plan::model::{Body, CASE_PREFIX, HttpRequest, STEP_PREFIX};
use serde_json::Value;

/// Where references get their values.
#[derive(Debug, Clone, Copy)]
pub enum Refs<'a> {
    /// `${step:NAME}`: what the flow's steps captured so far.
    Steps(&'a BTreeMap<String, Value>),
    /// `${case:FIELD}`: the fields of the case being replayed.
    Case(&'a serde_json::Map<String, Value>),
}

impl Refs<'_> {
    fn prefix(&self) -> &'static str {
        match self {
            Refs::Steps(_) => STEP_PREFIX,
            Refs::Case(_) => CASE_PREFIX,
        }
    }

    fn value(&self, name: &str) -> Result<&Value, String> {
        match self {
            Refs::Steps(captures) => captures.get(name).ok_or_else(|| {
                format!("${{step:{name}}} has no value: the step that captures it did not succeed")
            }),
            Refs::Case(fields) => fields.get(name).ok_or_else(|| {
                format!("${{case:{name}}} has no value: the case has no field `{name}`")
            }),
        }
    }

    /// `text` with every reference replaced by its value's text.
    pub fn text(&self, text: &str) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find(self.prefix()) {
            out.push_str(&rest[..at]);
            let after = &rest[at + self.prefix().len()..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[at..]);
                return Ok(out);
            };
            out.push_str(&as_text(self.value(&after[..end])?));
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A JSON body with references filled in.
    pub fn json(&self, value: &Value) -> Result<Value, String> {
        Ok(match value {
            Value::String(s) => match s
                .strip_prefix(self.prefix())
                .and_then(|r| r.strip_suffix('}'))
                .filter(|name| !name.contains('}'))
            {
                Some(name) => self.value(name)?.clone(),
                None => Value::String(self.text(s)?),
            },
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| self.json(item))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.json(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }

    /// The request with references filled in its URL, headers and body.
    pub fn request(&self, request: &HttpRequest) -> Result<HttpRequest, String> {
        Ok(HttpRequest {
            method: request.method.clone(),
            url: self.text(&request.url)?,
            headers: request
                .headers
                .iter()
                .map(|(name, value)| Ok((name.clone(), self.text(value)?)))
                .collect::<Result<_, String>>()?,
            body: match &request.body {
                Body::None => Body::None,
                Body::Json(value) => Body::Json(self.json(value)?),
                Body::Raw(text) => Body::Raw(self.text(text)?),
            },
        })
    }
}

/// A value as text: strings as they are, anything else as JSON.
pub fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
