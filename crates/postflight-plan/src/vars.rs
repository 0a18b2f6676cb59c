//! `${VAR}` expansion in plan strings.
//!
//! Two scopes exist because a plan is written once but executed in many places:
//! - `${VAR}` and `${VAR:-default}` are expanded where the plan is loaded (the operator's CLI),
//!   so a plan can be parameterised per environment;
//! - `${probe:VAR}` and `${probe:VAR:-default}` are left untouched there and expanded by each
//!   probe from its own environment: per-region targets, and secrets that never leave the probe.
//!
//! `$${` writes a literal `${`. `${VAR-default}` (default only when unset, not when empty) is
//! accepted as in POSIX shells.

use std::borrow::Cow;
use std::collections::HashMap;

/// Where variable values come from. `Send + Sync` so that lookups can be used across tasks.
pub trait Lookup: Send + Sync {
    /// The value of `name`, or `None` when it is not set.
    fn get(&self, name: &str) -> Option<String>;

    /// Why `name` may not be read at all (it is outside what this source exposes), or `None`.
    fn refusal(&self, _name: &str) -> Option<String> {
        None
    }

    /// The values of secret-looking variables handed out so far, to be masked wherever they
    /// might be echoed back.
    fn secret_values(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The process environment, restricted to the names that match a pattern (`*` stands for
/// any run of characters): a probe's `--env-allow`. A plan comes from whoever may submit
/// one; without this, `${probe:AWS_SECRET_ACCESS_KEY}` in a URL would send the probe's cloud
/// credentials to any server. The values of secret-looking names it hands out are
/// remembered, so that the probe masks them in everything it sends.
pub struct AllowedEnv {
    source: Box<dyn Lookup>,
    patterns: Vec<String>,
    denied: Vec<String>,
    handed: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl std::fmt::Debug for AllowedEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AllowedEnv")
            .field("patterns", &self.patterns)
            .field("denied", &self.denied)
            .finish()
    }
}

impl AllowedEnv {
    /// Allows the process environment's names matching `patterns`, except `denied` (the
    /// probe's own credentials).
    pub fn new(patterns: Vec<String>, denied: &[&str]) -> Self {
        Self::over(Box::new(ProcessEnv), patterns, denied)
    }

    /// [`AllowedEnv::new`] over another source.
    pub fn over(source: Box<dyn Lookup>, patterns: Vec<String>, denied: &[&str]) -> Self {
        Self {
            source,
            patterns,
            denied: denied.iter().map(|d| (*d).to_owned()).collect(),
            handed: std::sync::Mutex::new(std::collections::BTreeSet::new()),
        }
    }

    fn allows(&self, name: &str) -> bool {
        !self.denied.iter().any(|d| d == name) && self.patterns.iter().any(|p| glob(p, name))
    }
}

/// Whether an environment variable's name says it holds a credential.
pub fn is_secret_variable(name: &str) -> bool {
    crate::secrets::is_sensitive_name(name) || name.to_ascii_uppercase().ends_with("KEY")
}

/// `*`-only glob matching, whole string.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|i| tail.is_char_boundary(*i))
                .any(|i| glob(rest, &tail[i..]))
        }
    }
}

impl Lookup for AllowedEnv {
    fn get(&self, name: &str) -> Option<String> {
        if !self.allows(name) {
            return None;
        }
        let value = self.source.get(name)?;
        if is_secret_variable(name) && !value.is_empty() {
            self.handed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(value.clone());
        }
        Some(value)
    }

    fn refusal(&self, name: &str) -> Option<String> {
        (!self.allows(name)).then(|| {
            if self.denied.iter().any(|d| d == name) {
                "it holds the probe's own credential".to_owned()
            } else {
                format!(
                    "the probe only exposes variables matching --env-allow ({})",
                    self.patterns.join(", ")
                )
            }
        })
    }

    fn secret_values(&self) -> Vec<String> {
        self.handed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Lookup for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Lookup for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl<F: Fn(&str) -> Option<String> + Send + Sync> Lookup for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// Which scopes to expand. A scope without a source is left verbatim for a later stage.
#[derive(Clone, Copy, Default)]
pub struct Expander<'a> {
    plan: Option<&'a dyn Lookup>,
    probe: Option<&'a dyn Lookup>,
}

impl std::fmt::Debug for Expander<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expander")
            .field("plan", &self.plan.is_some())
            .field("probe", &self.probe.is_some())
            .finish()
    }
}

/// A reference that could not be expanded; `offset` is the byte offset of its `$` in the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarError {
    /// `${NAME}` without a default, and `NAME` is not set.
    #[error("variable {name} is not set (write ${{{name}:-default}} to give it a default)")]
    Unset {
        /// The variable's name, with `probe:` for probe variables.
        name: String,
        /// Byte offset of the reference in the expanded text.
        offset: usize,
    },
    /// `${` not followed by a valid reference.
    #[error(
        "malformed variable reference `{text}`: expected ${{NAME}}, ${{NAME:-default}}, ${{probe:NAME}}, ${{step:NAME}} or ${{case:FIELD}}"
    )]
    Malformed {
        /// The offending text.
        text: String,
        /// Byte offset of the reference in the expanded text.
        offset: usize,
    },
    /// The source refuses to expose the variable (a probe's `--env-allow`).
    #[error("variable {name} may not be used here: {reason}")]
    NotAllowed {
        /// The variable's name, with `probe:` for probe variables.
        name: String,
        /// Why.
        reason: String,
        /// Byte offset of the reference in the expanded text.
        offset: usize,
    },
    /// Defaults nested deeper than [`MAX_NESTING`].
    #[error("variable defaults are nested more than {MAX_NESTING} deep")]
    TooDeep {
        /// Byte offset of the outermost reference.
        offset: usize,
    },
    /// Expansion made the text longer than [`MAX_EXPANDED_BYTES`].
    #[error("the text becomes longer than {MAX_EXPANDED_BYTES} bytes once variables are expanded")]
    TooLong {
        /// Byte offset of the reference that made it too long.
        offset: usize,
    },
}

impl VarError {
    /// Byte offset of the reference in the text it came from.
    pub fn offset(&self) -> usize {
        match self {
            VarError::Unset { offset, .. }
            | VarError::Malformed { offset, .. }
            | VarError::NotAllowed { offset, .. }
            | VarError::TooDeep { offset, .. }
            | VarError::TooLong { offset, .. } => *offset,
        }
    }

    fn malformed(text: &str, offset: usize) -> Self {
        VarError::Malformed {
            text: quote(text),
            offset,
        }
    }
}

/// Defaults may nest (`${A:-${B:-x}}`) this deep, in either scope: enough for any real
/// fallback chain, and expansion (which recurses once per level) stays far from the end of
/// any thread's stack.
pub const MAX_NESTING: usize = 8;
/// The longest a string may become by expansion: 1 MiB.
pub const MAX_EXPANDED_BYTES: usize = 1 << 20;

/// At most the first 60 characters of `text`, for an error message.
fn quote(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

const PROBE_PREFIX: &str = "probe:";
const STEP_PREFIX: &str = "step:";
const CASE_PREFIX: &str = "case:";

impl<'a> Expander<'a> {
    /// Expands nothing: every reference is kept as written (after syntax checking).
    pub fn none() -> Self {
        Self::default()
    }

    /// Expands `${VAR}` from `plan`; `${probe:VAR}` is kept for the probe.
    pub fn plan(plan: &'a dyn Lookup) -> Self {
        Self {
            plan: Some(plan),
            probe: None,
        }
    }

    /// Expands `${probe:VAR}` from `probe`; plain references must already be gone.
    pub fn probe(probe: &'a dyn Lookup) -> Self {
        Self {
            plan: None,
            probe: Some(probe),
        }
    }

    /// Expands both scopes, for a run where the loader is also the executor (`--local`).
    pub fn both(plan: &'a dyn Lookup, probe: &'a dyn Lookup) -> Self {
        Self {
            plan: Some(plan),
            probe: Some(probe),
        }
    }

    /// Whether `${probe:…}` references are expanded by this expander.
    pub fn expands_probe_scope(&self) -> bool {
        self.probe.is_some()
    }

    /// Expands every reference in `text` that this expander is responsible for.
    pub fn expand<'t>(&self, text: &'t str) -> Result<Cow<'t, str>, VarError> {
        if !text.contains('$') {
            return Ok(Cow::Borrowed(text));
        }
        let mut out = String::with_capacity(text.len());
        self.expand_into(text, 0, 0, &mut out)?;
        Ok(Cow::Owned(out))
    }

    /// Expands `text`, itself the default of a reference nested `depth` deep.
    fn expand_into(
        &self,
        text: &str,
        base: usize,
        depth: usize,
        out: &mut String,
    ) -> Result<(), VarError> {
        let mut i = 0;
        while let Some(rel) = text[i..].find('$') {
            let at = i + rel;
            out.push_str(&text[i..at]);
            let after = &text[at..];
            if after.starts_with("$${") {
                if self.keeps_escapes() {
                    out.push_str("$${");
                } else {
                    out.push_str("${");
                }
                i = at + 3;
                continue;
            }
            if !after.starts_with("${") {
                out.push('$');
                i = at + 1;
                continue;
            }
            let (close, nested) = matching_brace(text, at + 2)
                .ok_or_else(|| VarError::malformed(&text[at..], base + at))?;
            // Refused in every scope, also one this stage leaves for the probe.
            if depth + nested > MAX_NESTING {
                return Err(VarError::TooDeep { offset: base + at });
            }
            let reference = &text[at..=close];
            let body = &text[at + 2..close];
            self.expand_reference(reference, body, base + at, depth, out)?;
            if out.len() > MAX_EXPANDED_BYTES {
                return Err(VarError::TooLong { offset: base + at });
            }
            i = close + 1;
        }
        out.push_str(&text[i..]);
        if out.len() > MAX_EXPANDED_BYTES {
            return Err(VarError::TooLong { offset: base });
        }
        Ok(())
    }

    /// Escapes stay as written while a later stage (the probe) still has to expand this text.
    fn keeps_escapes(&self) -> bool {
        self.probe.is_none()
    }

    fn expand_reference(
        &self,
        reference: &str,
        body: &str,
        offset: usize,
        depth: usize,
        out: &mut String,
    ) -> Result<(), VarError> {
        // `${step:NAME}` is a flow's captured value and `${case:FIELD}` a field of a golden
        // set's case: both are filled in by the executor, never by a variable scope.
        if let Some(name) = body
            .strip_prefix(STEP_PREFIX)
            .or_else(|| body.strip_prefix(CASE_PREFIX))
        {
            if !crate::model::is_capture_name(name) {
                return Err(VarError::malformed(reference, offset));
            }
            out.push_str(reference);
            return Ok(());
        }
        let (scope, source, rest) = match body.strip_prefix(PROBE_PREFIX) {
            Some(rest) => (PROBE_PREFIX, self.probe, rest),
            None => ("", self.plan, body),
        };
        let name_len = rest
            .char_indices()
            .find(|&(idx, c)| {
                !(c == '_' || c.is_ascii_alphabetic() || (idx > 0 && c.is_ascii_digit()))
            })
            .map_or(rest.len(), |(idx, _)| idx);
        let (name, op) = rest.split_at(name_len);
        let malformed = || VarError::malformed(reference, offset);
        if name.is_empty() {
            return Err(malformed());
        }
        let default = if op.is_empty() {
            None
        } else if let Some(text) = op.strip_prefix(":-") {
            Some((text, true))
        } else if let Some(text) = op.strip_prefix('-') {
            Some((text, false))
        } else {
            return Err(malformed());
        };
        let Some(source) = source else {
            // Not this stage's scope: a later stage expands it.
            out.push_str(reference);
            return Ok(());
        };
        if let Some(reason) = source.refusal(name) {
            return Err(VarError::NotAllowed {
                name: format!("{scope}{name}"),
                reason,
                offset,
            });
        }
        let value = source.get(name);
        match (value, default) {
            (Some(v), Some((_, true))) if v.is_empty() => {}
            (Some(v), _) => {
                out.push_str(&v);
                return Ok(());
            }
            (None, None) => {
                return Err(VarError::Unset {
                    name: format!("{scope}{name}"),
                    offset,
                });
            }
            (None, Some(_)) => {}
        }
        let (default_text, _) = default.unwrap_or(("", false));
        let default_base = offset + reference.len() - 1 - default_text.len();
        self.expand_into(default_text, default_base, depth + 1, out)
    }
}

/// Index of the `}` closing a reference whose body starts at `start`, allowing nested `${…}`,
/// and how deep references nest inside it.
fn matching_brace(text: &str, start: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                deepest = deepest.max(depth);
                i += 2;
                continue;
            }
            b'}' if depth == 0 => return Some((i, deepest)),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Whether `text` still holds a `${probe:…}` reference, i.e. can only be judged on a probe.
pub fn has_probe_reference(text: &str) -> bool {
    text.contains("${probe:")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        HashMap::from([
            ("HOST".to_owned(), "api.example.com".to_owned()),
            ("EMPTY".to_owned(), String::new()),
            ("TOKEN".to_owned(), "s3cret".to_owned()),
        ])
    }

    #[test]
    fn expands_plain_variables_and_defaults() {
        let env = env();
        let x = Expander::plan(&env);
        assert_eq!(
            x.expand("https://${HOST}/x").unwrap(),
            "https://api.example.com/x"
        );
        assert_eq!(
            x.expand("${MISSING:-http://localhost:8000}").unwrap(),
            "http://localhost:8000"
        );
        assert_eq!(x.expand("${EMPTY:-fallback}").unwrap(), "fallback");
        assert_eq!(x.expand("${EMPTY-fallback}").unwrap(), "");
        assert_eq!(x.expand("Bearer ${MISSING:-}").unwrap(), "Bearer ");
        assert_eq!(x.expand("${MISSING:-${HOST}}").unwrap(), "api.example.com");
        assert_eq!(x.expand("costs $5").unwrap(), "costs $5");
    }

    #[test]
    fn leaves_probe_scope_for_the_probe() {
        let env = env();
        let x = Expander::plan(&env);
        assert_eq!(
            x.expand("http://${probe:POD_IP:-127.0.0.1}:${HOST}")
                .unwrap(),
            "http://${probe:POD_IP:-127.0.0.1}:api.example.com"
        );
        let p = Expander::probe(&env);
        assert_eq!(p.expand("Bearer ${probe:TOKEN}").unwrap(), "Bearer s3cret");
        assert_eq!(p.expand("${probe:NOPE:-x}").unwrap(), "x");
        assert_eq!(
            p.expand("${probe:NOPE}").unwrap_err(),
            VarError::Unset {
                name: "probe:NOPE".into(),
                offset: 0
            }
        );
    }

    #[test]
    fn unset_variable_names_itself_and_its_offset() {
        let env = env();
        let err = Expander::plan(&env)
            .expand("postgres://${DATABASE_URL}")
            .unwrap_err();
        assert_eq!(
            err,
            VarError::Unset {
                name: "DATABASE_URL".into(),
                offset: 11
            }
        );
        assert_eq!(
            err.to_string(),
            "variable DATABASE_URL is not set (write ${DATABASE_URL:-default} to give it a default)"
        );
    }

    #[test]
    fn malformed_references_are_errors() {
        let env = env();
        let x = Expander::plan(&env);
        assert!(matches!(x.expand("${}"), Err(VarError::Malformed { .. })));
        assert!(matches!(
            x.expand("a ${HOST"),
            Err(VarError::Malformed { offset: 2, .. })
        ));
        assert!(matches!(x.expand("${1X}"), Err(VarError::Malformed { .. })));
        assert!(matches!(
            x.expand("${HOST:+x}"),
            Err(VarError::Malformed { .. })
        ));
    }

    #[test]
    fn escape_writes_a_literal_reference() {
        let env = env();
        assert_eq!(
            Expander::both(&env, &env).expand("$${HOST}").unwrap(),
            "${HOST}"
        );
        // The probe stage still has to see the escape, so the plan stage keeps it.
        assert_eq!(Expander::plan(&env).expand("$${HOST}").unwrap(), "$${HOST}");
        assert_eq!(
            Expander::probe(&env).expand("$${probe:X}").unwrap(),
            "${probe:X}"
        );
    }

    /// 30,000 nested defaults (about 200 KB) overflowed the stack of whoever expanded them;
    /// now every scope refuses them quickly, also the plan stage that leaves probe references
    /// for the probe.
    #[test]
    fn deep_nesting_is_refused_in_every_scope() {
        let env = env();
        for scope in ["", "probe:"] {
            let mut text = String::from("x");
            for _ in 0..30_000 {
                text = format!("${{{scope}NOPE:-{text}}}");
            }
            for expander in [
                Expander::plan(&env),
                Expander::probe(&env),
                Expander::none(),
            ] {
                let err = expander.expand(&text).unwrap_err();
                assert_eq!(err, VarError::TooDeep { offset: 0 }, "{scope} {expander:?}");
            }
        }
        // The limit itself: MAX_NESTING levels inside the outermost reference are fine.
        let mut text = String::from("ok");
        for _ in 0..=MAX_NESTING {
            text = format!("${{NOPE:-{text}}}");
        }
        assert_eq!(Expander::plan(&env).expand(&text).unwrap(), "ok");
        let deeper = format!("${{NOPE:-{text}}}");
        assert!(matches!(
            Expander::plan(&env).expand(&deeper),
            Err(VarError::TooDeep { .. })
        ));
    }

    #[test]
    fn expansion_is_bounded_in_size() {
        let big = HashMap::from([("BIG".to_owned(), "x".repeat(100_000))]);
        let text = "${BIG}".repeat(20);
        let err = Expander::plan(&big).expand(&text).unwrap_err();
        assert!(matches!(err, VarError::TooLong { .. }), "{err}");
        assert!(Expander::plan(&big).expand(&"${BIG}".repeat(10)).is_ok());
    }

    #[test]
    fn malformed_references_are_quoted_briefly() {
        let text = format!("${{{}", "a".repeat(100_000));
        let err = Expander::plan(&env()).expand(&text).unwrap_err();
        assert!(err.to_string().len() < 300, "{err}");
    }

    #[test]
    fn the_probe_exposes_only_allowed_variables_and_remembers_secrets() {
        let process: HashMap<String, String> = [
            ("PF_TEST_AGENT_URL", "http://agent"),
            ("PF_TEST_SECRET_ACCESS_KEY", "AKIA-very-secret"),
            ("POSTFLIGHT_TOKEN", "probe-credential"),
            ("POSTFLIGHT_API_TOKEN", "api-token-value"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let env = AllowedEnv::over(
            Box::new(process),
            vec!["*_URL".into(), "POSTFLIGHT_*".into()],
            &["POSTFLIGHT_TOKEN"],
        );
        let probe = Expander::probe(&env);
        assert_eq!(
            probe.expand("${probe:PF_TEST_AGENT_URL}/x").unwrap(),
            "http://agent/x"
        );
        let err = probe
            .expand("http://evil/${probe:PF_TEST_SECRET_ACCESS_KEY}")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "variable probe:PF_TEST_SECRET_ACCESS_KEY may not be used here: the probe only \
             exposes variables matching --env-allow (*_URL, POSTFLIGHT_*)"
        );
        // Not even behind a default.
        assert!(
            probe
                .expand("${probe:PF_TEST_SECRET_ACCESS_KEY:-x}")
                .is_err()
        );
        let err = probe.expand("${probe:POSTFLIGHT_TOKEN}").unwrap_err();
        assert!(
            err.to_string().contains("the probe's own credential"),
            "{err}"
        );
        assert_eq!(
            probe
                .expand("Bearer ${probe:POSTFLIGHT_API_TOKEN}")
                .unwrap(),
            "Bearer api-token-value"
        );
        assert_eq!(env.secret_values(), ["api-token-value"]);
    }

    #[test]
    fn globs_match_whole_names() {
        for (pattern, name, ok) in [
            ("*_URL", "AGENT_URL", true),
            ("*_URL", "AGENT_URLS", false),
            ("POSTFLIGHT_*", "POSTFLIGHT_X", true),
            ("A*B*C", "AxxBxxC", true),
            ("A*B*C", "AxxBxx", false),
            ("EXACT", "EXACT", true),
            ("*", "ANY", true),
        ] {
            assert_eq!(glob(pattern, name), ok, "{pattern} {name}");
        }
    }
}
