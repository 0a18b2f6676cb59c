//! The expressions a plan holds: JSONPath (RFC 9535) and regular expressions, compiled once
//! at load time with their source text kept, and bounded (length, nesting, compiled size) so
//! that a hostile plan cannot make a check expensive.

use serde::{Serialize, Serializer};
use serde_json::Value;

/// The longest JSONPath or regular expression a plan may hold.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// How deep brackets and parentheses may nest in a JSONPath.
pub const MAX_EXPRESSION_NESTING: usize = 32;
/// Memory one compiled regular expression may take (the engine's default is 10 MiB; a plan
/// may hold thousands).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The byte offset where brackets or parentheses first nest deeper than
/// [`MAX_EXPRESSION_NESTING`].
fn too_deep(source: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (at, b) in source.bytes().enumerate() {
        match b {
            b'(' | b'[' => {
                depth += 1;
                if depth > MAX_EXPRESSION_NESTING {
                    return Some(at);
                }
            }
            b')' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// A compiled RFC 9535 JSONPath with its source text.
#[derive(Debug, Clone)]
pub struct JsonPathExpr {
    source: String,
    path: serde_json_path::JsonPath,
    singular: bool,
}

impl JsonPathExpr {
    /// Compiles `source`; the error says what is wrong and at which byte of the expression.
    pub fn parse(source: &str) -> Result<Self, (String, usize)> {
        if !source.starts_with('$') {
            return Err((
                format!(
                    "invalid JSONPath `{source}`: a JSONPath starts with `$`, e.g. `$.response` or `$.items[0].id`"
                ),
                0,
            ));
        }
        // The JSONPath parser recurses once per bracket or parenthesis; bound the text and
        // its nesting before it sees them.
        if source.len() > MAX_EXPRESSION_BYTES {
            return Err((
                format!(
                    "invalid JSONPath: {} bytes, at most {MAX_EXPRESSION_BYTES}",
                    source.len()
                ),
                0,
            ));
        }
        if let Some(at) = too_deep(source) {
            return Err((
                format!("invalid JSONPath: brackets nest more than {MAX_EXPRESSION_NESTING} deep"),
                at,
            ));
        }
        let path = serde_json_path::JsonPath::parse(source).map_err(|e| {
            // The position is a 0-based character offset, despite the library's doc comment.
            let at = e.position().min(source.len());
            let caret = " ".repeat(source[..at].chars().count());
            (
                format!(
                    "invalid JSONPath `{source}`: {} at character {}\n{source}\n{caret}^",
                    match e.message() {
                        "parser error" => "unexpected or missing character",
                        other => other,
                    },
                    at + 1
                ),
                at,
            )
        })?;
        Ok(Self {
            source: source.to_owned(),
            path,
            singular: is_singular_path(source),
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// What the path selects: `None` when nothing matches; the value itself for a singular
    /// path (only names and indexes); otherwise every match, as an array.
    pub fn select(&self, document: &Value) -> Option<Value> {
        let nodes = self.path.query(document).all();
        if nodes.is_empty() {
            return None;
        }
        if self.singular && nodes.len() == 1 {
            return Some(nodes[0].clone());
        }
        Some(Value::Array(nodes.into_iter().cloned().collect()))
    }
}

impl PartialEq for JsonPathExpr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Serialize for JsonPathExpr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

/// A singular query (RFC 9535 §2.3.5.1) selects at most one node: it uses only name and index
/// selectors. Anything with wildcards, slices, filters, unions or descendants is not.
pub(super) fn is_singular_path(source: &str) -> bool {
    let mut quote: Option<char> = None;
    let mut prev = '\0';
    for c in source.chars() {
        match quote {
            Some(q) => {
                if c == q && prev != '\\' {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => quote = Some(c),
                '*' | '?' | ':' | ',' => return false,
                '.' if prev == '.' => return false,
                _ => {}
            },
        }
        prev = c;
    }
    true
}

/// A compiled regular expression with its source text.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// The compiled expression.
    pub regex: regex::Regex,
}

impl Pattern {
    /// Compiles `source`; the error quotes the regex engine's explanation.
    pub fn parse(source: &str) -> Result<Self, String> {
        if source.len() > MAX_EXPRESSION_BYTES {
            return Err(format!(
                "the regular expression is {} bytes, at most {MAX_EXPRESSION_BYTES}",
                source.len()
            ));
        }
        regex::RegexBuilder::new(source)
            .size_limit(REGEX_SIZE_LIMIT)
            .nest_limit(MAX_EXPRESSION_NESTING as u32)
            .build()
            .map(|regex| Self { regex })
            .map_err(|e| match e {
                regex::Error::Syntax(detail) => {
                    // The engine's text ends with `error: <reason>` under a caret drawing.
                    let reason = detail
                        .lines()
                        .rev()
                        .find_map(|l| l.strip_prefix("error: "))
                        .unwrap_or("syntax error");
                    let drawing: Vec<&str> = detail
                        .lines()
                        .filter(|l| {
                            !l.starts_with("regex parse error") && !l.starts_with("error: ")
                        })
                        .collect();
                    format!(
                        "invalid regular expression `{source}`: {reason}\n{}",
                        drawing.join("\n")
                    )
                }
                other => format!("invalid regular expression `{source}`: {other}"),
            })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}
