//! `target:`: the base URL, headers and timeout every check starts from.

use super::*;

impl Ctx<'_> {
    pub(super) fn target(&mut self, raw: Option<RawTarget>) -> Option<Target> {
        let Some(raw) = raw else {
            return Some(Target::default());
        };
        let base_url = raw.base_url.as_ref().and_then(|u| {
            let url = self.text(u)?;
            if !has_probe_reference(&url) {
                match url::Url::parse(&url) {
                    Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                    Ok(parsed) => {
                        self.error(
                            &u.referenced,
                            format!(
                                "target.base_url uses scheme `{}`; expected http:// or https://",
                                parsed.scheme()
                            ),
                        );
                    }
                    Err(e) => self.error(
                        &u.referenced,
                        format!(
                            "target.base_url `{}` is not an absolute URL ({e}); expected e.g. http://localhost:8000",
                            redact_url(&url)
                        ),
                    ),
                }
            }
            Some(url)
        });
        let errors_before = self.errors.len();
        let headers = self.headers(raw.headers.as_ref());
        let timeout = raw.timeout.as_ref().and_then(|t| self.duration(t));
        (self.errors.len() == errors_before).then_some(Target {
            base_url,
            headers,
            timeout,
        })
    }

    pub(super) fn headers(&mut self, raw: Option<&OrderedMap<Text>>) -> Vec<(String, String)> {
        let Some(raw) = raw else {
            return Vec::new();
        };
        let mut headers = Vec::new();
        for (name, value) in &raw.0 {
            if !is_token(&name.value) {
                self.error(
                    &name.referenced,
                    format!("`{}` is not a valid HTTP header name", name.value),
                );
                continue;
            }
            let Some(expanded) = self.text(value) else {
                continue;
            };
            if expanded.contains(['\r', '\n', '\0']) {
                self.error(
                    &value.referenced,
                    format!("the value of header `{}` contains a line break", name.value),
                );
                continue;
            }
            headers.push((name.value.clone(), expanded));
        }
        headers
    }
}
