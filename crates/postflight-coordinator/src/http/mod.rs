//! The coordinator's HTTP side (`--http-listen`): Prometheus `/metrics`, `/healthz`
//! (the process answers), `/readyz` (the database answers too), and the read-only status page
//! at `/`. Plain HTTP, meant for a cluster-internal port; it shows no secrets (plans' secrets
//! are scrubbed before anything is stored).

mod status_page;

use std::future::Future;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::engine::Coordinator;
use crate::error::CoordinatorError;
use crate::storage::Store;

/// The routes, over `coordinator`.
pub fn router<S: Store>(coordinator: Coordinator<S>) -> Router {
    Router::new()
        .route("/", get(status_page::<S>))
        .route("/runs/{run_id}", get(run_page::<S>))
        .route("/metrics", get(metrics::<S>))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready::<S>))
        .with_state(coordinator)
}

/// Serves [`router`] on `listener` until `shutdown` completes.
pub async fn serve<S: Store>(
    coordinator: Coordinator<S>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(coordinator))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics<S: Store>(State(coordinator): State<Coordinator<S>>) -> Response {
    coordinator.refresh_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        coordinator.metrics().encode(),
    )
        .into_response()
}

async fn ready<S: Store>(State(coordinator): State<Coordinator<S>>) -> Response {
    match coordinator.list_runs(1, None).await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: the database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: the database does not answer: {e}\n"),
            )
                .into_response()
        }
    }
}

async fn status_page<S: Store>(State(coordinator): State<Coordinator<S>>) -> Response {
    let probes = coordinator.list_probes().await;
    let runs = coordinator.list_runs(25, None).await;
    match (probes, runs) {
        (Ok(probes), Ok(runs)) => {
            Html(status_page::overview(&probes, &runs, crate::now_ms())).into_response()
        }
        (Err(e), _) | (_, Err(e)) => error_page(&e),
    }
}

async fn run_page<S: Store>(
    State(coordinator): State<Coordinator<S>>,
    Path(run_id): Path<String>,
) -> Response {
    let record = match coordinator.get_run(&run_id).await {
        Ok((record, _)) => record,
        Err(e) => return error_page(&e),
    };
    let report = coordinator.report(&run_id).await.ok();
    Html(status_page::run(&record, report.as_ref())).into_response()
}

fn error_page(e: &CoordinatorError) -> Response {
    let code = match e {
        CoordinatorError::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, Html(status_page::error(&e.to_string()))).into_response()
}
