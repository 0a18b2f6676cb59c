//! The shape of a JSON answer: which paths exist and what type each holds, so a comparison
//! can say "`$.invoice.total` was a number and is now missing" without caring about values.

use std::collections::BTreeMap;

use serde_json::Value;

/// Path (`$.invoice.total`, `$.items[].id`) → type (`object`, `array`, `string`, `number`,
/// `boolean`, `null`).
pub type JsonShape = BTreeMap<String, String>;

/// Paths kept per answer: an answer larger than this keeps the first ones (in path order).
pub const MAX_SHAPE_PATHS: usize = 256;
/// Nesting followed.
const MAX_DEPTH: usize = 16;
/// The longest path kept.
pub const MAX_SHAPE_PATH_BYTES: usize = 256;

/// The type names a shape uses.
pub const SHAPE_TYPES: [&str; 6] = ["object", "array", "string", "number", "boolean", "null"];

/// The shape of `value`. Array elements share one path (`[]`): their shapes are merged.
pub fn shape_of(value: &Value) -> JsonShape {
    let mut shape = JsonShape::new();
    walk(value, "$".to_owned(), 0, &mut shape);
    shape
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "boolean",
        Value::Null => "null",
    }
}

fn walk(value: &Value, path: String, depth: usize, shape: &mut JsonShape) {
    if shape.len() >= MAX_SHAPE_PATHS || path.len() > MAX_SHAPE_PATH_BYTES {
        return;
    }
    shape
        .entry(path.clone())
        .or_insert_with(|| type_of(value).to_owned());
    if depth >= MAX_DEPTH {
        return;
    }
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                walk(child, format!("{path}.{key}"), depth + 1, shape);
            }
        }
        Value::Array(items) => {
            for item in items {
                walk(item, format!("{path}[]"), depth + 1, shape);
            }
        }
        _ => {}
    }
}

/// What `after` lost or changed of `before`'s shape, in words; empty when every path of
/// `before` is still there with its type (new paths are fine).
pub fn shape_changes(before: &JsonShape, after: &JsonShape) -> Vec<String> {
    before
        .iter()
        .filter_map(|(path, kind)| match after.get(path) {
            None => Some(format!("{path} ({kind}) is missing")),
            Some(now) if now != kind => Some(format!("{path} was {kind}, now {now}")),
            Some(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn shapes_name_paths_and_types_and_arrays_merge_their_elements() {
        let shape = shape_of(&json!({
            "response": "Invoice INV-001: 120 EUR",
            "tool_calls": [{"name": "lookup", "args": {"id": 1}}, {"name": "sum", "extra": null}],
            "ok": true
        }));
        assert_eq!(shape["$"], "object");
        assert_eq!(shape["$.response"], "string");
        assert_eq!(shape["$.tool_calls"], "array");
        assert_eq!(shape["$.tool_calls[].name"], "string");
        assert_eq!(shape["$.tool_calls[].args.id"], "number");
        assert_eq!(shape["$.tool_calls[].extra"], "null");
        assert_eq!(shape["$.ok"], "boolean");
    }

    #[test]
    fn lost_and_retyped_paths_are_changes_new_ones_are_not() {
        let before = shape_of(&json!({"response": "x", "total": 12, "items": [{"id": 1}]}));
        let same = shape_of(&json!({"response": "y", "total": 13, "items": [{"id": 2}], "new": 1}));
        assert!(shape_changes(&before, &same).is_empty());
        let after = shape_of(&json!({"response": "y", "total": "12", "items": []}));
        assert_eq!(
            shape_changes(&before, &after),
            [
                "$.items[] (object) is missing",
                "$.items[].id (number) is missing",
                "$.total was number, now string"
            ]
        );
    }

    #[test]
    fn huge_or_deep_answers_are_bounded() {
        let wide: serde_json::Map<String, Value> =
            (0..1000).map(|i| (format!("k{i:04}"), json!(i))).collect();
        assert_eq!(shape_of(&Value::Object(wide)).len(), MAX_SHAPE_PATHS);
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!({"a": deep});
        }
        assert!(shape_of(&deep).len() <= MAX_DEPTH + 1);
    }
}
