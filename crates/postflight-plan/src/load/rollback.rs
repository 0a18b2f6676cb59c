//! `rollback:`: triggers, confidence, failing rounds, cooldown and the action.

use super::*;

impl Ctx<'_> {
    pub(super) fn rollback(&mut self, raw: Spanned<RawRollback>) -> Option<Rollback> {
        let raw = raw.value;
        let errors_before = self.errors.len();
        let error_rate_above = raw.error_rate_above.as_ref().and_then(|r| {
            if (0.0..=1.0).contains(&r.value) {
                Some(r.value)
            } else {
                self.error(
                    &r.referenced,
                    format!(
                        "error_rate_above is a share between 0 and 1 (0.10 = 10%), got {}",
                        r.value
                    ),
                );
                None
            }
        });
        let p99 = raw
            .p99_latency_above
            .as_ref()
            .and_then(|d| self.duration(d));
        let (error_rate_above, p99_latency_above) =
            if raw.error_rate_above.is_none() && raw.p99_latency_above.is_none() {
                (
                    Some(DEFAULT_ERROR_RATE_ABOVE),
                    Some(DEFAULT_P99_LATENCY_ABOVE),
                )
            } else {
                (error_rate_above, p99)
            };
        let action = raw.action.and_then(|a| self.action(a));
        let cooldown = match &raw.cooldown {
            Some(c) => self.duration(c).unwrap_or(DEFAULT_COOLDOWN),
            None => DEFAULT_COOLDOWN,
        };
        let failing_rounds = match raw.failing_rounds {
            Some(n) if !(1..=MAX_FAILING_ROUNDS).contains(&n.value) => {
                self.error(
                    &n.referenced,
                    format!(
                        "failing_rounds is a number of consecutive rounds from 1 to {MAX_FAILING_ROUNDS} (1 acts on the first failing round), got {}",
                        n.value
                    ),
                );
                DEFAULT_FAILING_ROUNDS
            }
            Some(n) => n.value,
            None => DEFAULT_FAILING_ROUNDS,
        };
        let confidence = match raw.confidence {
            Some(c) if !(0.0..1.0).contains(&c.value) => {
                self.error(
                    &c.referenced,
                    format!(
                        "confidence is a probability from 0 up to (not including) 1, e.g. 0.95; 0 compares the raw error rate; got {}",
                        c.value
                    ),
                );
                DEFAULT_CONFIDENCE
            }
            Some(c) => c.value,
            None => DEFAULT_CONFIDENCE,
        };
        let feedback_above = match raw.feedback_above {
            Some(n) if n.value > MAX_FEEDBACK_ABOVE => {
                self.error(
                    &n.referenced,
                    format!(
                        "feedback_above is a number of regression reports from 0 to {MAX_FEEDBACK_ABOVE}, got {}",
                        n.value
                    ),
                );
                None
            }
            Some(n) => Some(n.value),
            None => None,
        };
        (self.errors.len() == errors_before).then_some(Rollback {
            on_fail: raw.on_fail.unwrap_or(true),
            error_rate_above,
            p99_latency_above,
            action,
            dry_run: raw.dry_run.unwrap_or(false),
            cooldown,
            failing_rounds,
            confidence,
            on_inconclusive: raw.on_inconclusive.unwrap_or(false),
            feedback_above,
        })
    }

    pub(super) fn action(&mut self, raw: Spanned<RawAction>) -> Option<RollbackAction> {
        let loc = raw.referenced;
        let raw = raw.value;
        let given: Vec<&str> = [
            raw.kubectl.as_ref().map(|_| "kubectl"),
            raw.kubernetes.as_ref().map(|_| "kubernetes"),
            raw.webhook.as_ref().map(|_| "webhook"),
            raw.command.as_ref().map(|_| "command"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if given.len() != 1 {
            let message = if given.is_empty() {
                "the rollback action is empty: give one of kubectl, kubernetes, webhook or command"
                    .to_owned()
            } else {
                format!(
                    "a rollback has one action, this one has {}",
                    given.join(" and ")
                )
            };
            self.error(&loc, message);
            return None;
        }
        if let Some(k) = raw.kubectl {
            return Some(RollbackAction::Kubectl(self.kube(k)));
        }
        if let Some(k) = raw.kubernetes {
            return Some(RollbackAction::Kubernetes(self.kube(k)));
        }
        if let Some(w) = raw.webhook {
            let url = self.text(&w.url)?;
            if !has_probe_reference(&url)
                && let Err(message) = resolve_url(None, &url)
            {
                self.error(&w.url.referenced, redact_url_in(&message, &url));
            }
            let secret = w.secret.as_ref().and_then(|s| self.text(s));
            let timeout = match &w.timeout {
                Some(t) => self.duration(t)?,
                None => Duration::from_secs(10),
            };
            let retries = w.retries.map_or(3, |r| r.value);
            return Some(RollbackAction::Webhook(Webhook {
                url,
                secret,
                timeout,
                retries,
            }));
        }
        let argv = raw.command?;
        if argv.value.is_empty() {
            self.error(&argv.referenced, "the rollback command is empty: give the program and its arguments, e.g. [./rollback.sh, agent-backend]");
            return None;
        }
        let args: Vec<String> = argv.value.iter().filter_map(|a| self.text(a)).collect();
        (args.len() == argv.value.len()).then_some(RollbackAction::Command(args))
    }

    pub(super) fn kube(&mut self, raw: RawKube) -> KubeTarget {
        KubeTarget {
            deployment: raw.deployment.as_ref().and_then(|d| self.text(d)),
            namespace: raw.namespace.as_ref().and_then(|n| self.text(n)),
        }
    }
}

/// The largest `feedback_above`.
const MAX_FEEDBACK_ABOVE: u32 = 100_000;
