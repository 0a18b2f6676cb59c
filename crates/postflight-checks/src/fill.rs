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
        self.fill(text, false)
    }

    /// A URL with every reference replaced by its value, percent-encoded: a value from an
    /// answer cannot change the URL's host or path (`@evil.example`, `https://…`), and so
    /// cannot send the plan's headers elsewhere.
    pub fn url(&self, text: &str) -> Result<String, String> {
        self.fill(text, true)
    }

    fn fill(&self, text: &str, encode: bool) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find(self.prefix()) {
            out.push_str(&rest[..at]);
            let after = &rest[at + self.prefix().len()..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[at..]);
                return Ok(out);
            };
            let value = as_text(self.value(&after[..end])?);
            if encode {
                out.push_str(&percent_encode(&value));
            } else {
                out.push_str(&value);
            }
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
            url: self.url(&request.url)?,
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

/// Every byte but RFC 3986's unreserved characters as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A value as text: strings as they are, anything else as JSON.
pub fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_in_urls_are_percent_encoded_and_cannot_move_the_request() {
        let fields = serde_json::Map::from_iter([
            ("host".to_owned(), json!("@evil.example/x?y#z")),
            ("id".to_owned(), json!(42)),
        ]);
        let refs = Refs::Case(&fields);
        assert_eq!(
            refs.url("http://app${case:host}/items/${case:id}").unwrap(),
            "http://app%40evil.example%2Fx%3Fy%23z/items/42"
        );
        assert_eq!(
            refs.text("${case:host}").unwrap(),
            "@evil.example/x?y#z",
            "bodies and headers get the value as it is"
        );
    }
}
