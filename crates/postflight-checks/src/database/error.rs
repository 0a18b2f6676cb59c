//! Why a database check could not read what it judges. The message is the check's sentence;
//! the driver's own error is reduced to its reason by [`super::describe`].

/// A failed database inspection or query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    /// The URL does not parse (its password already masked in `url`).
    #[error("invalid database url {url}: {reason}")]
    InvalidUrl {
        /// The URL, secrets masked.
        url: String,
        /// The driver's reason.
        reason: String,
    },
    /// No connection to a server.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL, secrets masked.
        url: String,
        /// The driver's reason.
        reason: String,
    },
    /// A database file could not be opened (it is never created).
    #[error("cannot open {url}: {reason}")]
    Open {
        /// The URL.
        url: String,
        /// The driver's reason.
        reason: String,
    },
    /// The catalog (tables, indexes, columns) could not be read.
    #[error("cannot read {what}: {reason}")]
    Catalog {
        /// "the catalog", "the columns of invoices".
        what: String,
        /// The driver's reason.
        reason: String,
    },
    /// A query carried several statements; only one is run, read-only.
    #[error("a query must be a single statement")]
    MultipleStatements,
    /// The read-only transaction around a query could not be started or ended.
    #[error("cannot {step} read-only transaction: {reason}")]
    Transaction {
        /// "start a" or "end the".
        step: &'static str,
        /// The driver's reason.
        reason: String,
    },
    /// The query failed.
    #[error("{0}")]
    Query(String),
    /// The query's row has no columns to judge.
    #[error("the query returned a row without columns")]
    NoColumns,
    /// The first value could not be read as text.
    #[error("cannot read the first value: {0}")]
    FirstValue(String),
}
