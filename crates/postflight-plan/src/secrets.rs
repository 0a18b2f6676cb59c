//! Keeping secrets out of reports, logs and the database.
//!
//! Two layers: URLs are shown with their password masked, and every message that leaves a
//! check passes through [`Secrets::scrub`], which masks every secret value the plan holds
//! (URL passwords, sensitive headers, webhook secrets) wherever a driver or server echoed it.

use crate::model::{Body, CheckKind, HttpRequest, Plan, RollbackAction, StepAction};

/// What a masked secret looks like.
pub const MASK: &str = "****";

/// A URL with its password (and sensitive query parameters) masked; other text unchanged.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return redact_userinfo_text(url);
    };
    let mut changed = false;
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some(MASK));
        changed = true;
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                if is_sensitive_name(&k) {
                    changed = true;
                    (k.into_owned(), MASK.to_owned())
                } else {
                    (k.into_owned(), v.into_owned())
                }
            })
            .collect();
        if changed {
            parsed.query_pairs_mut().clear().extend_pairs(pairs);
        }
    }
    if changed {
        parsed.to_string().replace("%2A%2A%2A%2A", MASK)
    } else {
        url.to_owned()
    }
}

/// For strings that are not parseable URLs (`sqlite:` paths, broken text): mask
/// `user:password@` wherever it appears.
fn redact_userinfo_text(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let rest = &text[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return text.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return text.to_owned();
    };
    format!(
        "{}{}:{MASK}{}",
        &text[..scheme_end + 3],
        &userinfo[..colon],
        &text[scheme_end + 3 + at..]
    )
}

/// Header and parameter names whose values are credentials.
pub fn is_sensitive_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [
        "authorization",
        "token",
        "secret",
        "password",
        "passwd",
        "api-key",
        "api_key",
        "apikey",
        "cookie",
        "credential",
        "private",
        "session",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

/// The secret values of one plan, to mask wherever they might be echoed.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    values: Vec<String>,
}

impl Secrets {
    /// Collects every secret a plan holds after expansion.
    pub fn of_plan(plan: &Plan) -> Self {
        let mut secrets = Secrets::default();
        if let Some(base) = &plan.target.base_url {
            secrets.add_url(base);
        }
        secrets.add_headers(&plan.target.headers);
        for check in &plan.checks {
            match &check.kind {
                CheckKind::Http(http) => secrets.add_request(&http.request),
                CheckKind::Latency(latency) => secrets.add_request(&latency.request),
                CheckKind::Database(db) => secrets.add_url(&db.url),
                CheckKind::Tcp(_)
                | CheckKind::GrpcHealth(_)
                | CheckKind::Tls(_)
                | CheckKind::Dns(_) => {}
                CheckKind::Steps(flow) => {
                    for step in &flow.steps {
                        match &step.action {
                            StepAction::Http(http) => secrets.add_request(&http.request),
                            StepAction::Database(db) => secrets.add_url(&db.url),
                        }
                    }
                }
            }
        }
        if let Some(action) = plan.rollback.as_ref().and_then(|r| r.action.as_ref()) {
            secrets.add_action(action);
        }
        secrets
    }

    /// The secrets of a rollback action: a webhook's URL credentials and signing secret, and
    /// the values of a command's credential-looking arguments (`--token=…`, `--password …`),
    /// which its output or errors may echo.
    pub fn of_action(action: &RollbackAction) -> Self {
        let mut secrets = Secrets::default();
        secrets.add_action(action);
        secrets
    }

    fn add_action(&mut self, action: &RollbackAction) {
        match action {
            RollbackAction::Webhook(hook) => {
                self.add_url(&hook.url);
                if let Some(secret) = &hook.secret {
                    self.add(secret);
                }
            }
            RollbackAction::Command(argv) => {
                let mut args = argv.iter().peekable();
                while let Some(arg) = args.next() {
                    let flag = arg.trim_start_matches('-');
                    match flag.split_once('=') {
                        Some((name, value)) if is_sensitive_name(name) => self.add(value),
                        None if arg.starts_with('-') && is_sensitive_name(flag) => {
                            if let Some(value) = args.peek() {
                                self.add(value);
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    fn add_request(&mut self, request: &HttpRequest) {
        self.add_url(&request.url);
        self.add_headers(&request.headers);
        if let Body::Json(json) = &request.body {
            self.add_json(json);
        }
    }

    /// String values under sensitive keys of a JSON body (`{"password": "…"}`).
    fn add_json(&mut self, value: &serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, item) in map {
                    match item {
                        serde_json::Value::String(s) if is_sensitive_name(key) => self.add(s),
                        other => self.add_json(other),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| self.add_json(i)),
            _ => {}
        }
    }

    fn add_headers(&mut self, headers: &[(String, String)]) {
        for (name, value) in headers {
            if is_sensitive_name(name) {
                self.add(value);
                // `Bearer abc`: the credential alone may be echoed too.
                if let Some((_, credential)) = value.split_once(' ') {
                    self.add(credential);
                }
            }
        }
    }

    fn add_url(&mut self, url: &str) {
        if let Ok(parsed) = url::Url::parse(url) {
            if let Some(password) = parsed.password() {
                self.add(password);
                if let Ok(decoded) = urlencoding_decode(password) {
                    self.add(&decoded);
                }
            }
            for (k, v) in parsed.query_pairs() {
                if is_sensitive_name(&k) {
                    self.add(&v);
                }
            }
        }
    }

    /// Adds one secret value. Very short values are ignored: masking every `a` in a message
    /// would destroy it, and a one-letter password is not protected by masking anyway.
    pub fn add(&mut self, value: &str) {
        let value = value.trim();
        if value.chars().count() >= 3 && !self.values.iter().any(|v| v == value) {
            self.values.push(value.to_owned());
            // Longest first, so a secret containing another is masked whole.
            self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    /// Whether there is any secret to mask.
    pub fn has_any(&self) -> bool {
        !self.values.is_empty()
    }

    /// `text` with every known secret masked.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.values {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        out
    }
}

fn urlencoding_decode(text: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes: Vec<u8> = url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())
        .unwrap_or_default();
    String::from_utf8(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_url_passwords_and_token_parameters() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db:5432/app?sslmode=require"),
            "postgres://app:****@db:5432/app?sslmode=require"
        );
        assert_eq!(
            redact_url("https://h/x?api_key=abc&q=1"),
            "https://h/x?api_key=****&q=1"
        );
        assert_eq!(redact_url("http://h/x"), "http://h/x");
        assert_eq!(redact_url("sqlite:app.db"), "sqlite:app.db");
        assert_eq!(redact_url("weird://u:p@ss@host/x"), "weird://u:****@host/x");
    }

    #[test]
    fn scrub_masks_every_secret_of_the_plan() {
        let mut secrets = Secrets::default();
        secrets.add_url("postgres://app:hunter2@db/app");
        secrets.add_headers(&[("Authorization".into(), "Bearer tok-123".into())]);
        secrets.add("x");
        assert_eq!(
            secrets.scrub("password hunter2 rejected; sent Bearer tok-123 and tok-123; x"),
            "password **** rejected; sent **** and ****; x"
        );
    }

    #[test]
    fn sensitive_names() {
        assert!(is_sensitive_name("Authorization"));
        assert!(is_sensitive_name("X-Api-Key"));
        assert!(is_sensitive_name("ROLLBACK_HMAC_SECRET"));
        assert!(!is_sensitive_name("Content-Type"));
    }

    #[test]
    fn command_arguments_that_look_like_credentials_are_secrets() {
        let action = RollbackAction::Command(
            [
                "deploy",
                "--token=abc123",
                "--password",
                "hunter22",
                "--region",
                "eu",
            ]
            .map(str::to_owned)
            .to_vec(),
        );
        let secrets = Secrets::of_action(&action);
        assert_eq!(
            secrets.scrub("deploy --token=abc123 --password hunter22 --region eu"),
            "deploy --token=**** --password **** --region eu"
        );
    }
}
