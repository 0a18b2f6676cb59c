//! `postflight_grpc_request_duration_seconds{method}`: a tower layer in front of every gRPC
//! service that times each request until its response starts.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::http;

use crate::metrics::{MethodLabels, Metrics};

/// Methods kept as label values: every method of postflight's services, read from the
/// descriptor set the services are built from (so a new RPC is labelled by itself without
/// anyone remembering to list it), plus health and reflection. Any other path is counted as
/// `other`, so clients cannot grow the label set by calling made-up methods.
static KNOWN_METHODS: LazyLock<Vec<String>> = LazyLock::new(|| {
    use prost::Message;
    let mut methods: Vec<String> = [
        "Health/Check",
        "Health/Watch",
        "ServerReflection/ServerReflectionInfo",
    ]
    .map(str::to_owned)
    .to_vec();
    match prost_types::FileDescriptorSet::decode(postflight_proto::FILE_DESCRIPTOR_SET) {
        Ok(set) => {
            for service in set.file.iter().flat_map(|f| &f.service) {
                for method in &service.method {
                    methods.push(format!("{}/{}", service.name(), method.name()));
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "the built-in descriptor set is unreadable"),
    }
    methods
});

/// The label for a request path such as `/postflight.v1.ValidationService/GetReport`.
pub fn method_label(path: &str) -> &'static str {
    let short = path
        .trim_start_matches('/')
        .rsplit_once('.')
        .map_or("", |(_, tail)| tail);
    KNOWN_METHODS
        .iter()
        .find(|m| *m == short)
        .map_or("other", String::as_str)
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

    #[test]
    fn every_rpc_of_the_proto_has_its_own_label() {
        for path in [
            "/postflight.v1.ValidationService/StartMonitor",
            "/postflight.v1.ValidationService/GetMonitor",
            "/postflight.v1.ValidationService/ListMonitors",
            "/postflight.v1.ValidationService/WatchMonitor",
            "/postflight.v1.ValidationService/StopMonitor",
            "/postflight.v1.ProbeService/Connect",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ] {
            assert_ne!(method_label(path), "other", "{path}");
        }
        assert!(KNOWN_METHODS.len() >= 16, "{:?}", *KNOWN_METHODS);
    }
}
