//! `steps:` checks: a multi-step flow (log in, use the session, verify the side effect in the
//! database, log out) judged as one check.
//!
//! Values captured from one step's JSON answer are used by later steps as `${step:NAME}`.
//! They are filled in by the executor at run time, never by the loader: a session id exists
//! only once the login step has run. In SQL they are bind parameters only.

use serde::{Serialize, Serializer};

use super::{DatabaseCheck, HttpCheck, JsonPathExpr};

/// The prefix of a reference to a captured value: `${step:NAME}`.
pub const STEP_PREFIX: &str = "${step:";

/// The most steps one flow may have: a flow is a user journey, not a load test.
pub const MAX_STEPS: usize = 32;

/// A `steps:` check.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowCheck {
    /// In order; names are unique.
    pub steps: Vec<FlowStep>,
}

impl Serialize for FlowCheck {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.steps.serialize(serializer)
    }
}

impl FlowCheck {
    /// The requests one execution can make: one per HTTP step.
    pub fn requests(&self) -> u64 {
        self.steps
            .iter()
            .filter(|s| matches!(s.action, StepAction::Http(_)))
            .count() as u64
    }
}

/// One step of a flow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowStep {
    /// Unique within the flow; messages name the step that failed.
    pub name: String,
    /// Runs even after an earlier step failed (clean-up: log out, delete the test data).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub always: bool,
    /// Values taken from this step's JSON answer, by name, for later steps.
    #[serde(serialize_with = "ser_captures", skip_serializing_if = "Vec::is_empty")]
    pub capture: Vec<(String, JsonPathExpr)>,
    /// What the step does.
    #[serde(flatten)]
    pub action: StepAction,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepAction {
    /// A request and its expectations.
    Http(HttpCheck),
    /// Queries whose `params` may hold captured values.
    Database(DatabaseCheck),
}

fn ser_captures<S: Serializer>(
    captures: &[(String, JsonPathExpr)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = serializer.serialize_map(Some(captures.len()))?;
    for (name, path) in captures {
        map.serialize_entry(name, path)?;
    }
    map.end()
}

/// The names of the `${step:NAME}` references in `text`, in order (repeats included).
pub fn step_references(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(STEP_PREFIX) {
        let after = &rest[at + STEP_PREFIX.len()..];
        match after.find('}') {
            Some(end) => {
                names.push(&after[..end]);
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    names
}

/// Whether `name` can be a capture's name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_capture_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_step_references() {
        assert_eq!(
            step_references("/s/${step:session}/x?u=${step:user_1}"),
            ["session", "user_1"]
        );
        assert_eq!(step_references("no refs ${probe:X}"), Vec::<&str>::new());
        assert_eq!(step_references("${step:open"), Vec::<&str>::new());
    }

    #[test]
    fn capture_names() {
        assert!(is_capture_name("session_id"));
        assert!(is_capture_name("_x1"));
        assert!(!is_capture_name("1x"));
        assert!(!is_capture_name("a-b"));
        assert!(!is_capture_name(""));
    }
}
