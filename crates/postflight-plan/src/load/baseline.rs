//! `baseline:`: how a run is compared with a baseline (`--against`).

use super::*;

impl Ctx<'_> {
    pub(super) fn baseline(&mut self, raw: Spanned<RawBaseline>) -> Option<BaselinePolicy> {
        let raw = raw.value;
        let errors_before = self.errors.len();
        let defaults = BaselinePolicy::default();
        let max_latency_increase = raw
            .max_latency_increase
            .as_ref()
            .and_then(|s| self.share(s, "max_latency_increase", 100.0))
            .unwrap_or(defaults.max_latency_increase);
        let max_error_rate_increase = raw
            .max_error_rate_increase
            .as_ref()
            .and_then(|s| self.share(s, "max_error_rate_increase", 1.0))
            .unwrap_or(defaults.max_error_rate_increase);
        let significance = match raw.significance {
            Some(p) if !(p.value > 0.0 && p.value < 0.5) => {
                self.error(
                    &p.referenced,
                    format!(
                        "significance is a p-value above 0 and below 0.5 (0.01 is usual), got {}",
                        p.value
                    ),
                );
                defaults.significance
            }
            Some(p) => p.value,
            None => defaults.significance,
        };
        let min_samples = match raw.min_samples {
            Some(n) if !(2..=MAX_MIN_SAMPLES).contains(&n.value) => {
                self.error(
                    &n.referenced,
                    format!(
                        "min_samples is a number of samples from 2 to {MAX_MIN_SAMPLES}, got {}",
                        n.value
                    ),
                );
                defaults.min_samples
            }
            Some(n) => n.value,
            None => defaults.min_samples,
        };
        let answers = match raw.answers {
            None => defaults.answers,
            Some(a) => match a.value.as_str() {
                "off" => AnswerComparison::Off,
                "same_shape" => AnswerComparison::SameShape,
                other => {
                    self.error(
                        &a.referenced,
                        format!("answers is `off` or `same_shape`, got `{other}`"),
                    );
                    defaults.answers
                }
            },
        };
        (self.errors.len() == errors_before).then_some(BaselinePolicy {
            max_latency_increase,
            max_error_rate_increase,
            significance,
            min_samples,
            answers,
        })
    }

    /// A share from 0 up to `most`, written as a number (`0.2`) or a percentage (`20%`).
    pub(super) fn share(&mut self, raw: &Spanned<RawShare>, key: &str, most: f64) -> Option<f64> {
        let value = match &raw.value {
            RawShare::Number(n) => Some(*n),
            RawShare::Text(text) => text
                .trim()
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<f64>().ok())
                .map(|n| n / 100.0),
        };
        match value {
            Some(v) if v.is_finite() && (0.0..=most).contains(&v) => Some(v),
            _ => {
                let shown = match &raw.value {
                    RawShare::Number(n) => n.to_string(),
                    RawShare::Text(t) => format!("`{t}`"),
                };
                self.error(
                    &raw.referenced,
                    format!(
                        "{key} is a share from 0 to {most}, as a number (0.2) or a percentage (20%), got {shown}"
                    ),
                );
                None
            }
        }
    }
}

impl Ctx<'_> {
    /// `stages:`: the names of the environments a migration goes through, in order.
    pub(super) fn stages(&mut self, raw: Spanned<Vec<Text>>) -> Vec<String> {
        let mut stages: Vec<String> = Vec::new();
        if raw.value.len() > MAX_STAGES {
            self.error(
                &raw.referenced,
                format!("{} stages, at most {MAX_STAGES}", raw.value.len()),
            );
            return stages;
        }
        for stage in raw.value {
            let name = stage.value.trim();
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !valid {
                self.error(
                    &stage.referenced,
                    format!(
                        "`{name}` is not a stage name: lower-case letters, digits and dashes, at most 64"
                    ),
                );
            } else if stages.iter().any(|s| s == name) {
                self.error(&stage.referenced, format!("stage `{name}` is listed twice"));
            } else {
                stages.push(name.to_owned());
            }
        }
        stages
    }
}

/// Stages a plan may list.
const MAX_STAGES: usize = 16;

/// The most samples `min_samples` may ask for: a baseline keeps at most
/// [`crate::baseline::MAX_SAMPLES`] per check and region.
const MAX_MIN_SAMPLES: u32 = 1000;
