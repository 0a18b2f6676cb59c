//! `FeedbackService`: feedback about migrations, for people and tools that use gRPC (the
//! HTTP side takes the same reports at `POST /api/v1/feedback`).

use postflight_proto::v1;
use postflight_proto::v1::feedback_service_server::FeedbackService;
use tonic::{Request, Response, Status};

use crate::engine::{Coordinator, unix_ms_string};
use crate::storage::{FeedbackRecord, Store};

/// The feedback service.
pub struct FeedbackApi<S: Store> {
    coordinator: Coordinator<S>,
}

impl<S: Store> FeedbackApi<S> {
    /// Serves `coordinator`.
    pub fn new(coordinator: Coordinator<S>) -> Self {
        Self { coordinator }
    }
}

/// The wire form of a stored report.
pub fn feedback_message(r: FeedbackRecord) -> v1::Feedback {
    v1::Feedback {
        created_at: unix_ms_string(r.created_ms),
        feedback_id: r.feedback_id,
        migration: r.migration,
        kind: r.kind,
        text: r.text,
        source: r.source,
    }
}

#[tonic::async_trait]
impl<S: Store> FeedbackService for FeedbackApi<S> {
    async fn submit_feedback(
        &self,
        request: Request<v1::SubmitFeedbackRequest>,
    ) -> Result<Response<v1::Feedback>, Status> {
        let r = request.into_inner();
        let stored = self
            .coordinator
            .submit_feedback(&r.migration, &r.text, &r.kind, &r.source)
            .await?;
        Ok(Response::new(feedback_message(stored)))
    }

    async fn list_feedback(
        &self,
        request: Request<v1::ListFeedbackRequest>,
    ) -> Result<Response<v1::ListFeedbackResponse>, Status> {
        let r = request.into_inner();
        let migration = (!r.migration.is_empty()).then_some(r.migration.as_str());
        let found = self.coordinator.list_feedback(migration, r.limit).await?;
        Ok(Response::new(v1::ListFeedbackResponse {
            feedback: found.into_iter().map(feedback_message).collect(),
        }))
    }
}
