//! The `webhook` action: POST the decision as JSON, signed so the receiver can trust it.
//!
//! Two signatures travel with every request. `X-Postflight-Signature` (`sha256=HMAC(body)`)
//! proves who sent the body. `X-Postflight-Signature-V2` (`t=…,id=…,v2=HMAC("t.id.body")`)
//! also covers when it was sent and which delivery it is: a receiver that refuses old
//! timestamps and delivery ids it has seen cannot be made to act twice by a replayed request.
//! The delivery id is the same for every retry of one decision.

use std::time::Duration;

use backon::BackoffBuilder;
use postflight_plan::model::Webhook;
use postflight_plan::rollback::RollbackContext;
use postflight_plan::secrets::redact_url;
use ring::hmac;

use crate::ActionError;

/// The signature header (body only).
pub const SIGNATURE_HEADER: &str = "X-Postflight-Signature";
/// The signature header that also covers a timestamp and the delivery id.
pub const SIGNATURE_V2_HEADER: &str = "X-Postflight-Signature-V2";
/// The delivery id, also inside [`SIGNATURE_V2_HEADER`]: equal for retries of one decision.
pub const DELIVERY_HEADER: &str = "X-Postflight-Delivery";
/// The sending time in Unix seconds, also inside [`SIGNATURE_V2_HEADER`].
pub const TIMESTAMP_HEADER: &str = "X-Postflight-Timestamp";
/// Bytes of an error answer read for the report: a receiver's error page may be huge.
const ERROR_BODY_BYTES: usize = 4096;

/// The delivery id of a body: the first 16 bytes of its SHA-256, in hex. A decision's body
/// names its run and the time it was taken, so every decision has its own, and every retry of
/// one has the same.
pub fn delivery_id(body: &[u8]) -> String {
    hex(&ring::digest::digest(&ring::digest::SHA256, body).as_ref()[..16])
}

/// `t=<timestamp>,id=<delivery>,v2=<hex HMAC-SHA256 of "<timestamp>.<delivery>.<body>">`.
pub fn signature_v2(secret: &str, timestamp: u64, delivery: &str, body: &[u8]) -> String {
    let prefix = format!("{timestamp}.{delivery}.");
    let tag = hmac_hex(secret, &[prefix.as_bytes(), body]);
    format!("t={timestamp},id={delivery},v2={tag}")
}

/// `sha256=<hex HMAC-SHA256 of body>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hmac_hex(secret, &[body]))
}

/// Hex HMAC-SHA256 of the concatenated `parts`.
fn hmac_hex(secret: &str, parts: &[&[u8]]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = hmac::Context::with_key(&key);
    for part in parts {
        signed.update(part);
    }
    hex(signed.sign().as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// POSTs the context; retries connection errors, timeouts, 429 and 5xx answers with growing
/// delays, at most `hook.retries` times after the first attempt.
pub async fn post(hook: &Webhook, context: &RollbackContext) -> Result<String, ActionError> {
    let client =
        postflight_ops::http_client::client(postflight_ops::http_client::Connections::Fresh)
            .map_err(ActionError::Client)?;
    let body = context.payload();
    let shown = redact_url(&hook.url);
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build();
    let delivery = delivery_id(&body);
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
        request = request.header(DELIVERY_HEADER, &delivery);
        if let Some(secret) = &hook.secret {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            request = request
                .header(SIGNATURE_HEADER, signature(secret, &body))
                .header(TIMESTAMP_HEADER, now.to_string())
                .header(
                    SIGNATURE_V2_HEADER,
                    signature_v2(secret, now, &delivery, &body),
                );
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    return Ok(format!("POST {shown} answered {status}"));
                }
                let excerpt = error_excerpt(response).await;
                last_error = format!("POST {shown} answered {status}: {excerpt}");
                if !(status.is_server_error() || status.as_u16() == 429) {
                    return Err(ActionError::WebhookRefused { answer: last_error });
                }
            }
            Err(e) => {
                last_error = format!(
                    "POST {shown} failed: {}",
                    postflight_ops::http_client::describe(&e)
                );
            }
        }
        tracing::warn!(attempt = attempt + 1, "{last_error}");
    }
    Err(ActionError::WebhookFailed {
        last: last_error,
        attempts: hook.retries + 1,
    })
}

/// The start of an error answer: at most [`ERROR_BODY_BYTES`] are read, 300 characters
/// kept.
async fn error_excerpt(mut response: reqwest::Response) -> String {
    let mut bytes: Vec<u8> = Vec::new();
    while bytes.len() < ERROR_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = ERROR_BODY_BYTES - bytes.len();
                bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&bytes).chars().take(300).collect()
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

    #[test]
    fn the_second_signature_covers_time_and_delivery() {
        let body = br#"{"run_id":"r"}"#;
        let id = delivery_id(body);
        assert_eq!(id.len(), 32);
        assert_eq!(id, delivery_id(body), "retries share it");
        assert_ne!(id, delivery_id(br#"{"run_id":"s"}"#));
        let v2 = signature_v2("secret", 1_700_000_000, &id, body);
        assert!(v2.starts_with(&format!("t=1700000000,id={id},v2=")), "{v2}");
        // It is the HMAC of "t.id.body".
        let mut signed = format!("1700000000.{id}.").into_bytes();
        signed.extend_from_slice(body);
        assert_eq!(
            v2.rsplit("v2=").next().unwrap(),
            signature("secret", &signed).trim_start_matches("sha256=")
        );
        assert_ne!(v2, signature_v2("secret", 1_700_000_001, &id, body));
    }
}
