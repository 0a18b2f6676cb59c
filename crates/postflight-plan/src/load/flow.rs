//! `steps:` flows: each step is an `http` or `database` action with its name, captures and
//! `always` flag; every `${step:NAME}` must name a value an earlier step captures.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

impl Ctx<'_> {
    pub(super) fn flow(
        &mut self,
        raw: Spanned<Vec<Spanned<RawStep>>>,
        base_url: Option<&str>,
    ) -> Option<FlowCheck> {
        let loc = raw.referenced;
        if raw.value.is_empty() {
            self.error(&loc, "`steps` lists no steps: a flow needs at least one");
            return None;
        }
        if raw.value.len() > MAX_STEPS {
            self.error(
                &loc,
                format!(
                    "{} steps: a flow has at most {MAX_STEPS} (split a longer journey into several checks)",
                    raw.value.len()
                ),
            );
            return None;
        }
        let errors_before = self.errors.len();
        let mut names = BTreeSet::new();
        // Capture name → the step that captures it.
        let mut captured: BTreeMap<String, String> = BTreeMap::new();
        let mut steps = Vec::with_capacity(raw.value.len());
        for raw_step in raw.value {
            let step_loc = raw_step.referenced;
            let raw_step = raw_step.value;
            let name = self
                .text(&raw_step.name)
                .unwrap_or_default()
                .trim()
                .to_owned();
            if name.is_empty() || name.chars().any(char::is_control) {
                self.error(
                    &raw_step.name.referenced,
                    "a step name must be non-empty text on one line",
                );
            } else if !names.insert(name.clone()) {
                self.error(
                    &raw_step.name.referenced,
                    format!("two steps are named `{name}`: step names are unique within a flow"),
                );
            }
            let action = match (raw_step.http, raw_step.database) {
                (Some(http), None) => self.http(http, base_url).map(StepAction::Http),
                (None, Some(db)) => self.database(db).map(StepAction::Database),
                (Some(_), Some(_)) => {
                    self.error(
                        &step_loc,
                        format!("step `{name}` has both `http` and `database`: a step does one thing, split it in two"),
                    );
                    None
                }
                (None, None) => {
                    self.error(
                        &step_loc,
                        format!("step `{name}` does nothing: give it `http` or `database`"),
                    );
                    None
                }
            };
            let mut capture = Vec::new();
            for (key, path) in raw_step.capture.map(|c| c.0).unwrap_or_default() {
                let capture_name = key.value.clone();
                if !is_capture_name(&capture_name) {
                    self.error(
                        &key.referenced,
                        format!("`{capture_name}` cannot name a capture: use letters, digits and _, not starting with a digit"),
                    );
                    continue;
                }
                if let Some(earlier) = captured.get(&capture_name) {
                    self.error(
                        &key.referenced,
                        format!("`{capture_name}` is already captured by step `{earlier}`: give this one another name"),
                    );
                    continue;
                }
                if let Some(path) = self.json_path(&path) {
                    capture.push((capture_name, path));
                }
            }
            if let Some(action) = &action {
                if !capture.is_empty() && matches!(action, StepAction::Database(_)) {
                    self.error(
                        &step_loc,
                        format!("step `{name}` captures from a database step: captures are taken from an http step's JSON answer"),
                    );
                }
                let text = serde_json::to_string(action).unwrap_or_default();
                let mut unknown: Vec<&str> = step_references(&text)
                    .into_iter()
                    .filter(|r| !captured.contains_key(*r))
                    .collect();
                unknown.dedup();
                if let Some(first) = unknown.first() {
                    let known = if captured.is_empty() {
                        "no earlier step captures anything".to_owned()
                    } else {
                        format!(
                            "captured before it: {}",
                            captured.keys().cloned().collect::<Vec<_>>().join(", ")
                        )
                    };
                    self.error(
                        &step_loc,
                        format!(
                            "step `{name}` uses ${{step:{first}}}, which no earlier step captures ({known})"
                        ),
                    );
                }
            }
            for (capture_name, _) in &capture {
                captured.insert(capture_name.clone(), name.clone());
            }
            if let Some(action) = action {
                steps.push(FlowStep {
                    name,
                    always: raw_step.always.unwrap_or(false),
                    capture,
                    action,
                });
            }
        }
        (self.errors.len() == errors_before).then_some(FlowCheck { steps })
    }
}
