//! `cases:` golden sets: a JSONL file next to the plan (read through the caller's
//! [`ReadFile`]) or an inline list (the canonical form), one `{"input": …, "expect": {…}}` per
//! case; each case's `expect` has the keys of an http check's `expect`.

use super::*;

impl Ctx<'_> {
    pub(super) fn cases(
        &mut self,
        raw: Spanned<Value>,
        min_pass_rate: Option<Spanned<RawShare>>,
    ) -> Option<CaseSet> {
        let loc = raw.referenced;
        let errors_before = self.errors.len();
        // Each case with the label its messages use.
        let mut items: Vec<(String, Value)> = Vec::new();
        match raw.value {
            Value::String(name) => {
                let Some(read) = self.files else {
                    self.error(
                        &loc,
                        format!(
                            "cases file `{name}` can only be read where the plan is loaded from a file (postflight run, check); a plan sent whole carries its cases inline: cases: [{{input: …}}]"
                        ),
                    );
                    return None;
                };
                let text = match read(&name) {
                    Ok(text) => text,
                    Err(message) => {
                        self.error(&loc, message);
                        return None;
                    }
                };
                for (index, line) in text.lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let label = format!("{name}:{}", index + 1);
                    match serde_json::from_str::<Value>(line) {
                        Ok(value) => items.push((label, value)),
                        Err(e) => {
                            self.error(&loc, format!("{label}:{}: not JSON: {e}", e.column()))
                        }
                    }
                }
            }
            Value::Array(values) => {
                items = values
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (format!("cases[{i}]"), v))
                    .collect();
            }
            _ => {
                self.error(
                    &loc,
                    "cases is a JSONL file next to the plan (cases: golden.jsonl) or a list of cases",
                );
                return None;
            }
        }
        if items.is_empty() && self.errors.len() == errors_before {
            self.error(&loc, "the golden set has no cases");
        }
        if items.len() > MAX_CASES {
            self.error(
                &loc,
                format!(
                    "{} cases: a golden set has at most {MAX_CASES}",
                    items.len()
                ),
            );
            return None;
        }
        let mut cases = Vec::with_capacity(items.len());
        for (label, value) in items {
            if let Some(case) = self.case(&loc, label, value) {
                cases.push(case);
            }
        }
        let min_pass_rate = match &min_pass_rate {
            Some(raw) => self.share(raw, "min_pass_rate", 1.0)?,
            None => DEFAULT_MIN_PASS_RATE,
        };
        (self.errors.len() == errors_before).then_some(CaseSet {
            cases,
            min_pass_rate,
        })
    }

    /// One case; problems are reported at the `cases:` key, naming the case's line.
    fn case(&mut self, loc: &Location, label: String, value: Value) -> Option<Case> {
        let Value::Object(mut fields) = value else {
            self.error(
                loc,
                format!("{label}: a case is a JSON object like {{\"input\": \"Hi\"}}"),
            );
            return None;
        };
        if !fields.contains_key("input") {
            self.error(loc, format!("{label}: the case has no `input`"));
            return None;
        }
        let id = match fields.get("id") {
            Some(Value::String(id)) if !id.trim().is_empty() => id.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            _ => label.clone(),
        };
        let expect = match fields.remove("expect") {
            None | Some(Value::Null) => HttpExpect::default(),
            Some(expect @ Value::Object(_)) => self.case_expect(loc, &label, &expect)?,
            Some(_) => {
                self.error(
                    loc,
                    format!(
                        "{label}: `expect` is an object with the keys of an http check's expect"
                    ),
                );
                return None;
            }
        };
        // `${case:id}` names the case in requests too (a trace header, a test user).
        fields.insert("id".to_owned(), Value::String(id.clone()));
        Some(Case { id, fields, expect })
    }

    /// A case's `expect`, read with the http check's own rules: the JSON is YAML too, parsed
    /// and validated on its own; its problems are reported with the case's label.
    fn case_expect(&mut self, loc: &Location, label: &str, expect: &Value) -> Option<HttpExpect> {
        let text = expect.to_string();
        let raw: RawExpect = match serde_saphyr::from_str_with_options(&text, yaml_options()) {
            Ok(raw) => raw,
            Err(e) => {
                // The position is inside this one JSON line: the label already says where.
                let reason = e.to_string();
                let reason = reason.lines().next().unwrap_or_default();
                let reason = reason
                    .split(" at line ")
                    .next()
                    .unwrap_or(reason)
                    .to_owned();
                self.error(loc, format!("{label}: expect: {reason}"));
                return None;
            }
        };
        let mut inner = Ctx {
            source: &text,
            expander: Expander::none(),
            files: None,
            errors: Vec::new(),
        };
        let parsed = inner.expect(raw);
        if inner.errors.is_empty() {
            return Some(parsed);
        }
        for error in inner.errors {
            self.error(loc, format!("{label}: expect: {}", error.message));
        }
        None
    }
}
