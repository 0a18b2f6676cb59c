//! `expect.tools`: what an agent's answer says it called. Three ways of writing a call are
//! read (OpenAI's `function.name` with `arguments` as JSON text, Anthropic's `tool_use`
//! blocks with `input`, and plain `{name, arguments}`), and every failure shows the calls that
//! were seen: "called search_invoices(query=INV-001), expected lookup_invoice(invoice_id=INV-001)".

use postflight_plan::model::{JsonPathExpr, ToolExpect, ToolFormat};
use serde_json::Value;

/// Where calls are looked for when the plan names no path, in this order.
const DEFAULT_PATHS: [&str; 3] = [
    "$.choices[0].message.tool_calls",
    "$.tool_calls",
    "$.content",
];

/// One call as read from the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The tool's name.
    pub name: String,
    /// Its arguments (`Null` when they could not be read).
    pub args: Value,
    /// Why the arguments could not be read (an OpenAI `arguments` string that is not JSON).
    pub unreadable: Option<String>,
}

/// The calls in `document`: from the plan's path, else from the first default path that
/// exists. `None` when no such list is in the answer.
pub fn calls_in(expect: &ToolExpect, document: &Value) -> Option<Vec<ToolCall>> {
    let list = match &expect.path {
        Some(path) => path.select(document)?,
        None => DEFAULT_PATHS.iter().find_map(|p| {
            JsonPathExpr::parse(p)
                .ok()
                .and_then(|path| path.select(document))
        })?,
    };
    let items = match list {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        single => vec![single],
    };
    Some(
        items
            .iter()
            .filter_map(|item| read_call(item, expect.format))
            .collect(),
    )
}

fn read_call(item: &Value, format: ToolFormat) -> Option<ToolCall> {
    let openai = || {
        let function = item.get("function")?;
        let name = function.get("name")?.as_str()?.to_owned();
        Some(match function.get("arguments") {
            Some(Value::String(text)) if text.trim().is_empty() => ToolCall {
                name,
                args: Value::Object(Default::default()),
                unreadable: None,
            },
            Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
                Ok(args) => ToolCall {
                    name,
                    args,
                    unreadable: None,
                },
                Err(e) => ToolCall {
                    unreadable: Some(format!(
                        "the arguments of {name} are not JSON ({e}): {}",
                        excerpt(text)
                    )),
                    name,
                    args: Value::Null,
                },
            },
            Some(args) => ToolCall {
                name,
                args: args.clone(),
                unreadable: None,
            },
            None => ToolCall {
                name,
                args: Value::Object(Default::default()),
                unreadable: None,
            },
        })
    };
    let anthropic = || {
        if item.get("type")?.as_str()? != "tool_use" {
            return None;
        }
        Some(ToolCall {
            name: item.get("name")?.as_str()?.to_owned(),
            args: item.get("input").cloned().unwrap_or(Value::Null),
            unreadable: None,
        })
    };
    let plain = || {
        let name = item
            .get("name")
            .or_else(|| item.get("tool"))?
            .as_str()?
            .to_owned();
        let args = ["arguments", "args", "input"]
            .iter()
            .find_map(|k| item.get(*k))
            .cloned()
            .unwrap_or(Value::Null);
        Some(ToolCall {
            name,
            args,
            unreadable: None,
        })
    };
    match format {
        ToolFormat::OpenAi => openai(),
        ToolFormat::Anthropic => anthropic(),
        ToolFormat::Plain => plain(),
        ToolFormat::Auto => {
            if item.get("function").is_some() {
                openai()
            } else if item.get("type").and_then(Value::as_str) == Some("tool_use") {
                anthropic()
            } else if item.get("type").and_then(Value::as_str) == Some("text") {
                None
            } else {
                plain()
            }
        }
    }
}

/// The verdict on an answer's tool calls: `Ok` when every expectation holds, else each that
/// does not, with the calls seen.
pub fn judge_tools(expect: &ToolExpect, document: &Value) -> Result<(), Vec<String>> {
    let Some(calls) = calls_in(expect, document) else {
        let looked = expect
            .path
            .as_ref()
            .map_or_else(|| DEFAULT_PATHS.join(", "), |p| p.as_str().to_owned());
        return Err(vec![format!(
            "no tool calls in the answer (looked at {looked}; got: {})",
            excerpt(&document.to_string())
        )]);
    };
    let seen = if calls.is_empty() {
        "no tool was called".to_owned()
    } else {
        format!(
            "called {}",
            calls.iter().map(describe).collect::<Vec<_>>().join(", ")
        )
    };
    let mut failures: Vec<String> = calls.iter().filter_map(|c| c.unreadable.clone()).collect();
    for tool in &expect.called {
        if !calls.iter().any(|c| &c.name == tool) {
            let wanted = expect
                .args
                .iter()
                .find(|(t, _)| t == tool)
                .map_or_else(|| format!("{tool}()"), |(t, a)| describe_args(t, a));
            failures.push(format!("{seen}, expected {wanted}"));
        }
    }
    for pattern in &expect.not_called {
        for call in calls.iter().filter(|c| glob(pattern, &c.name)) {
            failures.push(format!(
                "called {}, which must not be called ({pattern})",
                describe(call)
            ));
        }
    }
    for (tool, wanted) in &expect.args {
        let of_tool: Vec<&ToolCall> = calls.iter().filter(|c| &c.name == tool).collect();
        if of_tool.is_empty() {
            if !expect.called.contains(tool) {
                failures.push(format!("{seen}, expected {}", describe_args(tool, wanted)));
            }
            continue;
        }
        if !of_tool.iter().any(|c| contains(&c.args, wanted)) {
            failures.push(format!("{seen}, expected {}", describe_args(tool, wanted)));
        }
    }
    if expect.strict_order && !in_order(&expect.called, &calls) {
        failures.push(format!(
            "{seen}, expected them in the order {}",
            expect.called.join(" → ")
        ));
    }
    if let Some(most) = expect.max_calls
        && calls.len() > most as usize
    {
        failures.push(format!(
            "{} tool calls, at most {most} expected ({seen})",
            calls.len()
        ));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// `name(k=v, …)`, values in compact JSON (strings without quotes).
fn describe(call: &ToolCall) -> String {
    if call.unreadable.is_some() {
        return format!("{}(<unreadable arguments>)", call.name);
    }
    describe_args(&call.name, &call.args)
}

fn describe_args(name: &str, args: &Value) -> String {
    let inner = match args {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    excerpt(&format!("{name}({inner})"))
}

/// Whether `value` contains `subset`: every key of an object with a value that contains the
/// expected one; anything else equal (numbers compared as numbers).
fn contains(value: &Value, subset: &Value) -> bool {
    match (value, subset) {
        (Value::Object(have), Value::Object(want)) => want
            .iter()
            .all(|(k, w)| have.get(k).is_some_and(|h| contains(h, w))),
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

/// Whether the `called` tools appear in `calls` in that order (other calls may come between).
fn in_order(called: &[String], calls: &[ToolCall]) -> bool {
    let mut names = calls.iter().map(|c| c.name.as_str());
    called.iter().all(|tool| names.any(|n| n == tool))
}

/// `*` (any run of characters) and `?` (one character) patterns.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Classic two-pointer match with backtracking to the last `*`.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn excerpt(text: &str) -> String {
    const MAX: usize = 200;
    if text.chars().count() <= MAX {
        return text.to_owned();
    }
    let cut: String = text.chars().take(MAX).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests;
