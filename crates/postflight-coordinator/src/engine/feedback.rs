//! Feedback about migrations: stored per migration, listed in reports, and counted for a
//! plan's `rollback.feedback_above` (the rule is `postflight_plan::feedback`'s).

use postflight_plan::feedback::{
    FeedbackItem, FeedbackKind, MAX_FEEDBACK_SOURCE, MAX_FEEDBACK_TEXT, feedback_trigger,
};

use super::*;
use crate::storage::FeedbackRecord;

/// Feedback reports listed at most at once.
pub const MAX_FEEDBACK_PAGE: u32 = 1000;
/// Feedback reports a run's report lists.
const REPORT_FEEDBACK: u32 = 20;

impl<S: Store> Coordinator<S> {
    /// Stores a feedback report after checking every field (the error names the field).
    pub async fn submit_feedback(
        &self,
        migration: &str,
        text: &str,
        kind: &str,
        source: &str,
    ) -> CoordinatorResult<FeedbackRecord> {
        if postflight_proto::check_name("migration", migration).is_err() {
            return Err(CoordinatorError::invalid(
                "migration",
                format!(
                    "a migration label of 1 to {} bytes without spaces, got {} bytes",
                    postflight_proto::MAX_NAME_BYTES,
                    migration.len()
                ),
            ));
        }
        if text.trim().is_empty() || text.len() > MAX_FEEDBACK_TEXT {
            return Err(CoordinatorError::invalid(
                "text",
                format!("1 to {MAX_FEEDBACK_TEXT} bytes of text, got {}", text.len()),
            ));
        }
        let Some(kind) = FeedbackKind::parse(kind) else {
            return Err(CoordinatorError::invalid(
                "kind",
                format!(
                    "`{}` is not regression, bug or info",
                    postflight_proto::cut_to_bytes(kind, 64)
                ),
            ));
        };
        if source.len() > MAX_FEEDBACK_SOURCE {
            return Err(CoordinatorError::invalid(
                "source",
                format!("at most {MAX_FEEDBACK_SOURCE} bytes"),
            ));
        }
        let record = FeedbackRecord {
            feedback_id: uuid::Uuid::now_v7().to_string(),
            migration: migration.to_owned(),
            kind: kind.as_str().to_owned(),
            text: text.to_owned(),
            source: source.to_owned(),
            created_ms: now_ms(),
        };
        self.inner.store.insert_feedback(&record).await?;
        tracing::info!(migration, kind = kind.as_str(), "feedback received");
        Ok(record)
    }

    /// Feedback reports, newest first, optionally about one migration.
    pub async fn list_feedback(
        &self,
        migration: Option<&str>,
        limit: u32,
    ) -> CoordinatorResult<Vec<FeedbackRecord>> {
        if migration.is_some_and(|m| m.len() > postflight_proto::MAX_NAME_BYTES) {
            return Err(CoordinatorError::invalid(
                "migration",
                "not a migration label (too long)",
            ));
        }
        let limit = page_limit(limit, MAX_FEEDBACK_PAGE)?;
        Ok(self.inner.store.list_feedback(migration, limit).await?)
    }

    /// The migration's newest feedback, for a run's report. A database error costs the
    /// listing, never the run.
    pub(super) async fn feedback_items(&self, migration: &str) -> Vec<FeedbackItem> {
        match self
            .inner
            .store
            .list_feedback(Some(migration), REPORT_FEEDBACK)
            .await
        {
            Ok(found) => found.into_iter().filter_map(item).collect(),
            Err(e) => {
                tracing::error!(migration, error = %e, "cannot read the migration's feedback");
                Vec::new()
            }
        }
    }

    /// The rollback reason when more regression reports about `migration` arrived within the
    /// plan's monitor window than `rollback.feedback_above` allows; `None` otherwise, without
    /// a query when the plan does not act on feedback.
    pub(super) async fn feedback_reason(&self, plan: &Plan, migration: &str) -> Option<String> {
        plan.rollback.as_ref()?.feedback_above?;
        let window = plan
            .monitor
            .as_ref()
            .map_or(postflight_plan::model::DEFAULT_WINDOW, |m| m.window);
        let since = now_ms() - window.as_millis() as i64;
        match self
            .inner
            .store
            .count_feedback(migration, FeedbackKind::Regression.as_str(), since)
            .await
        {
            Ok(regressions) => feedback_trigger(plan, migration, regressions, window),
            Err(e) => {
                tracing::error!(migration, error = %e, "cannot count the migration's feedback");
                None
            }
        }
    }
}

/// A stored report as the run's report lists it.
pub fn item(r: FeedbackRecord) -> Option<FeedbackItem> {
    Some(FeedbackItem {
        kind: FeedbackKind::parse(&r.kind)?,
        text: r.text,
        source: r.source,
        created_at: postflight_plan::report::rfc3339(
            UNIX_EPOCH + Duration::from_millis(r.created_ms.max(0) as u64),
        ),
    })
}
