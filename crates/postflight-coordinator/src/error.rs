//! The coordinator's errors and their gRPC status codes, in one place.

use postflight_proto::ConvertError;
use tonic::Status;

use crate::seal::SealError;
use crate::storage::StoreError;

/// Everything a coordinator operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The request is malformed; `field` names the culprit.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The request field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An id that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is valid but cannot be served in the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Missing or wrong credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials that do not allow this (a probe token used for another name).
    #[error("{0}")]
    PermissionDenied(String),
    /// The thing exists already (a second live session for a probe name).
    #[error("{0}")]
    AlreadyExists(String),
    /// Not now: the coordinator is stopping; try again (elsewhere) shortly.
    #[error("{0}")]
    Unavailable(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored plan could not be unsealed.
    #[error(transparent)]
    Seal(#[from] SealError),
}

impl CoordinatorError {
    /// An `INVALID_ARGUMENT` for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        CoordinatorError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<ConvertError> for CoordinatorError {
    fn from(e: ConvertError) -> Self {
        CoordinatorError::InvalidArgument {
            field: e.field,
            reason: e.reason,
        }
    }
}

impl From<CoordinatorError> for Status {
    fn from(e: CoordinatorError) -> Self {
        match e {
            CoordinatorError::InvalidArgument { .. } => Status::invalid_argument(e.to_string()),
            CoordinatorError::NotFound(m) => Status::not_found(m),
            CoordinatorError::FailedPrecondition(m) => Status::failed_precondition(m),
            CoordinatorError::Unauthenticated(m) => Status::unauthenticated(m),
            CoordinatorError::PermissionDenied(m) => Status::permission_denied(m),
            CoordinatorError::AlreadyExists(m) => Status::already_exists(m),
            CoordinatorError::Unavailable(m) => Status::unavailable(m),
            CoordinatorError::Store(inner) => {
                tracing::error!(error = %inner, "storage failure");
                Status::internal("storage failure; see the coordinator's log")
            }
            CoordinatorError::Seal(inner) => {
                tracing::error!(error = %inner, "sealing failure");
                Status::internal("cannot read a stored plan; see the coordinator's log")
            }
        }
    }
}

/// Result of coordinator operations.
pub type CoordinatorResult<T> = Result<T, CoordinatorError>;

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn every_error_maps_to_its_code() {
        let status: Status = CoordinatorError::invalid("plan_yaml", "empty").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "plan_yaml: empty");
        assert_eq!(
            Status::from(CoordinatorError::NotFound("no run x".into())).code(),
            Code::NotFound
        );
        assert_eq!(
            Status::from(CoordinatorError::FailedPrecondition("running".into())).code(),
            Code::FailedPrecondition
        );
        assert_eq!(
            Status::from(CoordinatorError::Unauthenticated("token".into())).code(),
            Code::Unauthenticated
        );
        let storage = Status::from(CoordinatorError::Store(StoreError::UnsupportedUrl(
            "x".into(),
        )));
        assert_eq!(storage.code(), Code::Internal);
        assert!(!storage.message().contains('x'), "details stay in the log");
    }
}
