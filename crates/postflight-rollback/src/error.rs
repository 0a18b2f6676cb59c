//! Why a rollback action failed. Each variant's message is the sentence the audit log, the
//! report and the operator read; callers match on the variant (a webhook's retry decision, a
//! test), never on the text.

use postflight_plan::duration::PlanDuration;

/// A failed rollback action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// A `command` action with no program.
    #[error("the command is empty")]
    EmptyCommand,
    /// The program does not exist on `PATH`.
    #[error("`{program}` was not found (is it installed and on PATH?)")]
    ProgramNotFound {
        /// The program as written.
        program: String,
    },
    /// The program exists but may not be run.
    #[error("`{program}` is not executable")]
    NotExecutable {
        /// The program as written.
        program: String,
    },
    /// The process could not be started or waited for.
    #[error("cannot start `{command}`: {reason}")]
    CannotStart {
        /// The command line.
        command: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The program ran past the action's time limit and was killed.
    #[error("`{command}` did not finish within {limit} and was killed")]
    ProgramTimedOut {
        /// The command line.
        command: String,
        /// The limit.
        limit: PlanDuration,
    },
    /// The program ended unsuccessfully.
    #[error("`{command}` {ending}: {output}")]
    ProgramFailed {
        /// The command line.
        command: String,
        /// "exited with 3" or "was killed by a signal".
        ending: String,
        /// The end of its standard error (else standard output), secrets masked by the caller.
        output: String,
    },
    /// The webhook receiver refused the decision with an answer retrying cannot change (a
    /// 4xx other than 429).
    #[error("{answer}")]
    WebhookRefused {
        /// "POST URL answered 403 Forbidden: …" (the URL's credentials masked).
        answer: String,
    },
    /// Every attempt to deliver the decision failed.
    #[error("{last} (after {attempts} attempts)")]
    WebhookFailed {
        /// What the last attempt got: "POST URL answered 503 …", "POST URL failed: …".
        last: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The webhook's attempts, retries included, ran past the action's time limit.
    #[error("the webhook did not succeed within {limit}, retries included")]
    WebhookTimedOut {
        /// The limit.
        limit: PlanDuration,
    },
    /// The Kubernetes API did not complete the undo within the action's time limit.
    #[error("the Kubernetes API did not answer within {limit}")]
    KubernetesTimedOut {
        /// The limit.
        limit: PlanDuration,
    },
    /// The HTTP client could not be built (the TLS configuration).
    #[error("cannot create the HTTP client: {0}")]
    Client(String),
    /// This binary was built without the Kubernetes API action.
    #[error(
        "this postflight was built without the Kubernetes API action (cargo feature \
         `kubernetes`); use the kubectl action"
    )]
    KubernetesNotBuilt,
    /// The Kubernetes API refused or failed a step of the undo.
    #[error("{0}")]
    Kubernetes(String),
}
