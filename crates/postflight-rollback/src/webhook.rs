//! The `webhook` action: POST the decision as JSON, signed so the receiver can trust it.

use std::time::Duration;

use backon::BackoffBuilder;
use postflight_plan::model::Webhook;
use postflight_plan::rollback::RollbackContext;
use postflight_plan::secrets::redact_url;
use ring::hmac;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Postflight-Signature";

/// `sha256=<hex HMAC-SHA256 of body>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// POSTs the context; retries connection errors, timeouts, 429 and 5xx answers with growing
/// delays, at most `hook.retries` times after the first attempt.
pub async fn post(hook: &Webhook, context: &RollbackContext) -> Result<String, String> {
    let client = postflight_checks::http::client(postflight_checks::http::Connections::Fresh)?;
    let body = context.payload();
    let shown = redact_url(&hook.url);
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build();
    let mut last_error = String::new();
    for attempt in 0..=hook.retries {
        if attempt > 0 {
            tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(10))).await;
        }
        let mut request = client
            .post(&hook.url)
            .timeout(hook.timeout)
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(secret) = &hook.secret {
            request = request.header(SIGNATURE_HEADER, signature(secret, &body));
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    return Ok(format!("POST {shown} answered {status}"));
                }
                let text = response.text().await.unwrap_or_default();
                let excerpt: String = text.chars().take(300).collect();
                last_error = format!("POST {shown} answered {status}: {excerpt}");
                if !(status.is_server_error() || status.as_u16() == 429) {
                    return Err(last_error);
                }
            }
            Err(e) => {
                last_error = format!(
                    "POST {shown} failed: {}",
                    postflight_checks::http::describe(&e)
                );
            }
        }
        tracing::warn!(attempt = attempt + 1, "{last_error}");
    }
    Err(format!(
        "{last_error} (after {} attempts)",
        hook.retries + 1
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_hex_hmac_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
