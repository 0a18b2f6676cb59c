//! Plan errors: every one names the problem and the file, line and column it is at, so an
//! operator can fix a broken plan in a CI log without guessing.

use std::fmt;

/// One problem in a plan. `line` and `column` are 1-based; 0 means "no position" (for example
/// an empty file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong, and what would be right.
    pub message: String,
}

/// Every problem found in one plan, with the text needed to show them in context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanErrors {
    /// The plan's file name as the user gave it.
    pub origin: String,
    /// The plan's text, for snippets.
    pub source: String,
    /// Sorted by position.
    pub errors: Vec<PlanError>,
}

impl std::error::Error for PlanErrors {}

impl fmt::Display for PlanErrors {
    /// One line per error, `file:line:column: message`, the form editors and CI logs link.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let first_line = e.message.lines().next().unwrap_or_default();
            if e.line == 0 {
                write!(f, "{}: {}", self.origin, first_line)?;
            } else {
                write!(f, "{}:{}:{}: {}", self.origin, e.line, e.column, first_line)?;
            }
        }
        Ok(())
    }
}

impl PlanErrors {
    /// Renders every error with the offending line and a caret under the column, like a
    /// compiler. The first line of each stays `file:line:column: error: message`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let lines: Vec<&str> = self.source.lines().collect();
        for e in &self.errors {
            let mut message_lines = e.message.lines();
            let first = message_lines.next().unwrap_or_default();
            if e.line == 0 {
                out.push_str(&format!("{}: error: {first}\n", self.origin));
            } else {
                out.push_str(&format!(
                    "{}:{}:{}: error: {first}\n",
                    self.origin, e.line, e.column
                ));
            }
            if let Some(text) = e.line.checked_sub(1).and_then(|i| lines.get(i)) {
                let number = e.line.to_string();
                let pad = " ".repeat(number.len());
                let (text, caret_pad) = snippet(text, e.column);
                out.push_str(&format!(
                    "{pad} |\n{number} | {text}\n{pad} | {caret_pad}^\n"
                ));
            }
            for more in message_lines {
                out.push_str(&format!("  {more}\n"));
            }
        }
        out
    }

    /// Number of errors.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// Whether there are none (never the case for a returned `PlanErrors`).
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Characters of a source line shown under an error: a generated or hostile line can be
/// megabytes long.
const SNIPPET_CHARS: usize = 120;

/// The part of `line` shown under an error at 1-based `column`, and the padding that puts a
/// caret under the column; a long line is cut around the column, with `…` where it is cut.
fn snippet(line: &str, column: usize) -> (String, String) {
    let chars: Vec<char> = line
        .chars()
        .map(|c| if c == '\t' { ' ' } else { c })
        .collect();
    let at = column.saturating_sub(1).min(chars.len());
    let start = if chars.len() <= SNIPPET_CHARS {
        0
    } else {
        at.saturating_sub(SNIPPET_CHARS / 3)
    };
    let end = (start + SNIPPET_CHARS).min(chars.len());
    let mut text = String::new();
    let mut pad = String::new();
    if start > 0 {
        text.push('…');
        pad.push(' ');
    }
    text.extend(&chars[start..end]);
    if end < chars.len() {
        text.push('…');
    }
    pad.extend(
        chars[start..at]
            .iter()
            .map(|c| if c.is_whitespace() { *c } else { ' ' }),
    );
    (text, pad)
}

/// 1-based line and column (in characters) of a byte offset in `source`.
pub(crate) fn line_column(source: &str, byte_offset: usize) -> (usize, usize) {
    let mut offset = byte_offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = source[line_start..offset].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_characters() {
        let src = "a: 1\nbé: ${X}\n";
        assert_eq!(line_column(src, 0), (1, 1));
        assert_eq!(line_column(src, 5), (2, 1));
        let dollar = src.find('$').unwrap();
        assert_eq!(line_column(src, dollar), (2, 5));
    }

    #[test]
    fn renders_file_line_column_and_a_caret() {
        let errors = PlanErrors {
            origin: "plan.yaml".into(),
            source: "name: x\nchecks:\n  - nme: a\n".into(),
            errors: vec![PlanError {
                line: 3,
                column: 5,
                message: "unknown field `nme`".into(),
            }],
        };
        assert_eq!(errors.to_string(), "plan.yaml:3:5: unknown field `nme`");
        assert_eq!(
            errors.render(),
            "plan.yaml:3:5: error: unknown field `nme`\n  |\n3 |   - nme: a\n  |     ^\n"
        );
    }

    #[test]
    fn long_lines_are_cut_around_the_column() {
        let line = format!("{}X{}", "a".repeat(10_000), "b".repeat(10_000));
        let (text, pad) = snippet(&line, 10_001);
        assert!(text.chars().count() <= SNIPPET_CHARS + 2, "{}", text.len());
        assert!(text.starts_with('…') && text.ends_with('…'));
        assert_eq!(text.chars().nth(pad.chars().count()), Some('X'));
        let (text, pad) = snippet("\tkey: value", 7);
        assert_eq!((text.as_str(), pad.as_str()), (" key: value", "      "));
    }
}
