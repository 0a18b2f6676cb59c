//! `postflight_grpc_request_duration_seconds{method}`: a tower layer in front of every gRPC
//! service that times each request until its response starts.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::http;

use crate::metrics::{MethodLabels, Metrics};

/// Methods kept as label values; any other path is counted as `other`, so clients cannot
/// grow the label set by calling made-up methods.
const KNOWN_METHODS: &[&str] = &[
    "ProbeService/Connect",
    "ValidationService/SubmitRun",
    "ValidationService/GetRun",
    "ValidationService/ListRuns",
    "ValidationService/GetReport",
    "ValidationService/WatchRun",
    "ValidationService/CancelRun",
    "ValidationService/ListProbes",
    "Health/Check",
    "Health/Watch",
    "ServerReflection/ServerReflectionInfo",
];

/// The label for a request path such as `/postflight.v1.ValidationService/GetReport`.
pub fn method_label(path: &str) -> &'static str {
    let short = path
        .trim_start_matches('/')
        .rsplit_once('.')
        .map_or("", |(_, tail)| tail);
    KNOWN_METHODS
        .iter()
        .find(|m| **m == short)
        .copied()
        .unwrap_or("other")
}

/// Wraps services in [`Timed`].
#[derive(Debug, Clone)]
pub struct TimingLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for TimingLayer {
    type Service = Timed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timed {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// A service whose requests are timed.
#[derive(Debug, Clone)]
pub struct Timed<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> tower::Service<http::Request<B>> for Timed<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await;
            metrics
                .grpc_duration
                .get_or_create(&MethodLabels {
                    method: method.to_owned(),
                })
                .observe(started.elapsed().as_secs_f64());
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_a_bounded_set_of_labels() {
        assert_eq!(
            method_label("/postflight.v1.ValidationService/GetReport"),
            "ValidationService/GetReport"
        );
        assert_eq!(method_label("/grpc.health.v1.Health/Check"), "Health/Check");
        assert_eq!(
            method_label("/postflight.v1.ValidationService/Nope"),
            "other"
        );
        assert_eq!(method_label("/x"), "other");
    }
}
