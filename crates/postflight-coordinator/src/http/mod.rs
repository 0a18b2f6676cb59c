//! The coordinator's HTTP side (`--http-listen`): Prometheus `/metrics`, `/healthz`
//! (the process answers), `/readyz` (the database answers too), and the read-only status page
//! at `/`. Plain HTTP, meant for a cluster-internal port; it shows no secrets (plans' secrets
//! are scrubbed before anything is stored), and with an operator token its pages need it.

mod status_page;

use std::future::Future;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use postflight_ops::secret::Secret;

use crate::engine::Coordinator;
use crate::error::CoordinatorError;
use crate::storage::Store;

/// The routes, over `coordinator`. With an operator token, the pages (runs, their messages,
/// the rollback audit) need it as gRPC does; `/metrics`, `/healthz` and `/readyz` stay open
/// for Prometheus and load balancers.
pub fn router<S: Store>(coordinator: Coordinator<S>, operator_token: Option<Secret>) -> Router {
    let pages = Router::new()
        .route("/", get(status_page::<S>))
        .route("/runs/{run_id}", get(run_page::<S>))
        .route(
            "/api/v1/feedback",
            axum::routing::post(post_feedback::<S>).get(get_feedback::<S>),
        )
        .layer(axum::middleware::from_fn_with_state(
            std::sync::Arc::new(operator_token),
            require_operator,
        ));
    Router::new()
        .route("/metrics", get(metrics::<S>))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready::<S>))
        .merge(pages)
        .with_state(coordinator)
}

async fn require_operator(
    State(token): State<std::sync::Arc<Option<Secret>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if crate::auth::http_authorized(token.as_ref().as_ref(), header) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"postflight\"")],
        "this page needs the operator token: `Authorization: Bearer TOKEN`, or any user name \
         with the token as the password\n",
    )
        .into_response()
}

/// Serves [`router`] on `listener` until `shutdown` completes.
pub async fn serve<S: Store>(
    coordinator: Coordinator<S>,
    listener: TcpListener,
    operator_token: Option<Secret>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(coordinator, operator_token))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The body of `POST /api/v1/feedback`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    migration: String,
    text: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    source: String,
}

fn json_error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

fn feedback_json(r: crate::storage::FeedbackRecord) -> serde_json::Value {
    let wire = crate::grpc::feedback_message(r);
    serde_json::json!({
        "feedback_id": wire.feedback_id,
        "migration": wire.migration,
        "kind": wire.kind,
        "text": wire.text,
        "source": wire.source,
        "created_at": wire.created_at,
    })
}

/// `POST /api/v1/feedback`: `{"migration", "text", "kind"?, "source"?}` → 201 with the
/// stored report, 400 naming the field that is wrong.
async fn post_feedback<S: Store>(
    State(coordinator): State<Coordinator<S>>,
    body: axum::body::Bytes,
) -> Response {
    let body: FeedbackBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body is not a feedback object ({{\"migration\", \"text\", \"kind\", \"source\"}}): {e}"
                ),
            );
        }
    };
    match coordinator
        .submit_feedback(&body.migration, &body.text, &body.kind, &body.source)
        .await
    {
        Ok(stored) => (StatusCode::CREATED, axum::Json(feedback_json(stored))).into_response(),
        Err(e @ CoordinatorError::InvalidArgument { .. }) => {
            json_error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot store feedback");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot store the feedback".to_owned(),
            )
        }
    }
}

/// `GET /api/v1/feedback?migration=M`: the newest reports.
async fn get_feedback<S: Store>(
    State(coordinator): State<Coordinator<S>>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let migration = query.get("migration").map(String::as_str);
    match coordinator.list_feedback(migration, 0).await {
        Ok(found) => axum::Json(serde_json::json!({
            "feedback": found.into_iter().map(feedback_json).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(e @ CoordinatorError::InvalidArgument { .. }) => {
            json_error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
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
    let probes = coordinator.list_probes("", 200).await;
    let runs = coordinator.list_runs(25, None).await;
    let feedback = coordinator.list_feedback(None, 20).await;
    match (probes, runs, feedback) {
        (Ok((probes, more)), Ok(runs), Ok(feedback)) => Html(status_page::overview(
            &probes,
            more.is_some(),
            &runs,
            &feedback,
            postflight_ops::host::now_ms(),
        ))
        .into_response(),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => error_page(&e),
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
