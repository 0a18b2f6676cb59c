//! The canonical plan: the text that travels from the CLI to the coordinator and the probes.
//!
//! It is the validated plan serialised back into plan YAML. Plain variables are already
//! expanded; `${probe:…}` references are kept for the probes; a `${` that came out of a
//! variable's *value* is escaped (`$${`), so no later stage mistakes data for a reference.

use serde_json::Value;

use crate::model::Plan;

/// The plan as canonical YAML; loading it (coordinator: no variables; probe: `${probe:…}`)
/// gives the same plan back.
pub fn canonical_yaml(plan: &Plan) -> String {
    let mut value = serde_json::to_value(plan).unwrap_or(Value::Null);
    // A golden set's cases are data, never expanded: they travel as they are.
    let mut cases = Vec::new();
    if let Some(checks) = value.get_mut("checks").and_then(Value::as_array_mut) {
        for (index, check) in checks.iter_mut().enumerate() {
            if let Some(taken) = check.as_object_mut().and_then(|c| c.remove("cases")) {
                cases.push((index, taken));
            }
        }
    }
    escape_strings(&mut value);
    if let Some(checks) = value.get_mut("checks").and_then(Value::as_array_mut) {
        for (index, taken) in cases {
            if let Some(check) = checks.get_mut(index).and_then(Value::as_object_mut) {
                check.insert("cases".to_owned(), taken);
            }
        }
    }
    serde_saphyr::to_string(&value).unwrap_or_default()
}

fn escape_strings(value: &mut Value) {
    match value {
        Value::String(s) => *s = escape(s),
        Value::Array(items) => items.iter_mut().for_each(escape_strings),
        Value::Object(map) => map.values_mut().for_each(escape_strings),
        _ => {}
    }
}

/// Escapes every `${` that is neither already escaped nor a `${probe:`, `${step:` or `${case:`
/// reference.
fn escape(text: &str) -> String {
    if !text.contains("${") {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 4);
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'$') && bytes.get(i + 2) == Some(&b'{') {
            out.push_str("$${");
            i += 3;
            continue;
        }
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
            let rest = &text[i..];
            if !["${probe:", "${step:", "${case:"]
                .iter()
                .any(|kept| rest.starts_with(kept))
            {
                out.push('$');
            }
            out.push_str("${");
            i += 2;
            continue;
        }
        let c = text[i..].chars().next().unwrap_or_default();
        out.push(c);
        i += c.len_utf8().max(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::model::CheckKind;
    use crate::{Expander, parse_plan};

    #[test]
    fn escaping_rules() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a ${X} b"), "a $${X} b");
        assert_eq!(escape("$${X}"), "$${X}");
        assert_eq!(escape("${probe:X} and ${Y}"), "${probe:X} and $${Y}");
        assert_eq!(escape("é${Z}"), "é$${Z}");
    }

    #[test]
    fn variable_values_stay_data_through_every_stage() {
        let cli_env = HashMap::from([("TOKEN".to_owned(), "abc${NOT_A_VAR}".to_owned())]);
        let source = "name: p\ntarget: {base_url: \"http://${probe:HOST:-h}\", headers: {Authorization: \"Bearer ${TOKEN}\"}}\nchecks:\n  - name: c\n    http: {url: /x, body: \"literal $${KEEP}\"}\n";
        let on_cli = parse_plan(source, "p.yaml", Expander::plan(&cli_env)).unwrap();
        let canonical = canonical_yaml(&on_cli);
        let none: HashMap<String, String> = HashMap::new();
        let on_coordinator = parse_plan(&canonical, "canonical", Expander::plan(&none)).unwrap();
        assert_eq!(canonical_yaml(&on_coordinator), canonical, "stable");
        let probe_env = HashMap::from([("HOST".to_owned(), "10.0.0.1:8000".to_owned())]);
        let on_probe = parse_plan(&canonical, "canonical", Expander::probe(&probe_env)).unwrap();
        assert_eq!(
            on_probe.target.base_url.as_deref(),
            Some("http://10.0.0.1:8000")
        );
        assert_eq!(on_probe.target.headers[0].1, "Bearer abc${NOT_A_VAR}");
        let CheckKind::Http(http) = &on_probe.checks[0].kind else {
            panic!()
        };
        assert_eq!(
            http.request.body,
            crate::model::Body::Raw("literal ${KEEP}".into())
        );
    }
}
