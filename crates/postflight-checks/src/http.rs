//! Sending a check's HTTP request and capturing the answer, with errors turned into sentences.

use std::time::{Duration, Instant};

use postflight_plan::model::{Body, HttpRequest, Plan};
use postflight_plan::secrets::redact_url;

use crate::expect::Answer;
use crate::http1;
use postflight_ops::http_client::{Connections, client, describe};

/// Bodies beyond this are cut: a check judges an API answer, not a download.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// A reqwest client built on first use. Plain-http checks go through [`crate::http1`] and never
/// need it, while building it loads the TLS roots and the proxy settings: an idle probe keeps
/// that code and memory out of its footprint until an https or proxied check arrives.
#[derive(Debug)]
pub struct LazyClient {
    connections: Connections,
    cell: std::sync::OnceLock<Result<reqwest::Client, String>>,
}

impl LazyClient {
    /// A client with `connections` behaviour, not built yet.
    pub fn new(connections: Connections) -> Self {
        Self {
            connections,
            cell: std::sync::OnceLock::new(),
        }
    }

    /// The client, built now if this is the first use.
    pub fn get(&self) -> Result<&reqwest::Client, String> {
        self.cell
            .get_or_init(|| client(self.connections))
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// The outcome of one request: an answer, or an error sentence; with the time it took.
#[derive(Debug)]
pub struct Exchange {
    /// The answer, or why there is none.
    pub result: Result<Answer, String>,
    /// From sending to the end of the body or the error.
    pub elapsed: Duration,
}

/// Sends `request` (resolved against the plan's target) and reads the whole answer within
/// `timeout`.
pub async fn send(
    client: &LazyClient,
    plan: &Plan,
    request: &HttpRequest,
    timeout: Duration,
) -> Exchange {
    let failed = |message: String| Exchange {
        result: Err(message),
        elapsed: Duration::ZERO,
    };
    let url = match plan.resolve_url(&request.url) {
        Ok(url) => url,
        Err(message) => return failed(message),
    };
    if url.scheme() == "http" && http1::applies(&url) {
        return send_direct(plan, request, &url, timeout).await;
    }
    let shown = format!("{} {}", request.method, redact_url(url.as_str()));
    let Ok(method) = reqwest::Method::from_bytes(request.method.as_bytes()) else {
        return failed(format!("`{}` is not an HTTP method", request.method));
    };
    let client = match client.get() {
        Ok(client) => client,
        Err(message) => return failed(message),
    };
    let mut builder = client.request(method, url);
    for (name, value) in plan.request_headers(request) {
        builder = builder.header(name, value);
    }
    builder = match &request.body {
        Body::None => builder,
        Body::Json(value) => builder.json(value),
        Body::Raw(text) => builder.body(text.clone()),
    };
    let prepared = match builder.build() {
        Ok(prepared) => prepared,
        Err(e) => return failed(format!("cannot build {shown}: {}", describe(&e))),
    };
    // The clock starts when the request is ready to go: building it is not the service's time.
    let started = Instant::now();
    let exchange = async {
        let mut response = client.execute(prepared).await?;
        let status = response.status().as_u16();
        let headers = http1::header_pairs(response.headers());
        let mut bytes: Vec<u8> = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response.chunk().await? {
            let room = MAX_BODY_BYTES - bytes.len();
            if chunk.len() > room {
                bytes.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok::<_, reqwest::Error>((status, headers, bytes, truncated, started.elapsed()))
    };
    let result = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Err(timeout_message(timeout, &shown)),
        Ok(Err(e)) => Err(format!("{shown} failed: {}", describe(&e))),
        Ok(Ok((status, headers, bytes, truncated, latency))) => Ok(Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            truncated,
            latency,
        }),
    };
    Exchange {
        result,
        elapsed: started.elapsed(),
    }
}

/// [`send`] on a fresh connection of postflight's own ([`http1`]): the same exchange on the
/// wire, at a fraction of the CPU.
async fn send_direct(
    plan: &Plan,
    request: &HttpRequest,
    url: &url::Url,
    timeout: Duration,
) -> Exchange {
    let target = match http1::Target::new(plan, request, url) {
        Ok(target) => target,
        Err(message) => {
            return Exchange {
                result: Err(message),
                elapsed: Duration::ZERO,
            };
        }
    };
    let started = Instant::now();
    let mut connection = None;
    let exchange = http1::exchange(&target, &mut connection, http1::Capture::Everything);
    let outcome = tokio::time::timeout(timeout, exchange).await;
    let latency = started.elapsed();
    let result = match outcome {
        Err(_) => Err(timeout_message(timeout, target.shown())),
        Ok(Err(message)) => Err(format!("{} failed: {message}", target.shown())),
        Ok(Ok(response)) => Ok(Answer {
            status: response.status,
            headers: response.headers,
            body: String::from_utf8_lossy(&response.body).into_owned(),
            truncated: response.truncated,
            latency,
        }),
    };
    Exchange {
        result,
        elapsed: latency,
    }
}

/// What a request that ran out of time says.
pub(crate) fn timeout_message(timeout: Duration, shown: &str) -> String {
    // The time a request had is often what was left of its check's timeout, measured to the
    // nanosecond; people read it to the millisecond.
    let millis = (timeout.as_nanos() + 500_000) / 1_000_000;
    let rounded = Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX));
    format!(
        "no complete answer within {} from {shown} (timeout)",
        postflight_plan::duration::PlanDuration(rounded)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_messages_quote_a_readable_duration() {
        assert_eq!(
            timeout_message(Duration::from_nanos(999_985_189), "GET http://h/"),
            "no complete answer within 1s from GET http://h/ (timeout)"
        );
        assert_eq!(
            timeout_message(Duration::from_millis(2500), "GET http://h/"),
            "no complete answer within 2s500ms from GET http://h/ (timeout)"
        );
        assert_eq!(
            timeout_message(Duration::from_micros(300), "x"),
            "no complete answer within 0s from x (timeout)"
        );
    }
}
