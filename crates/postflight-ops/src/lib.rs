//! Operational plumbing the three binaries share, so that a flag means the same thing in the
//! coordinator, the probe and the CLI: TLS material ([`tls`]), tokens read from flags or files
//! ([`secret`]), log output ([`logging`]), stopping on signals ([`shutdown`]), the outgoing
//! HTTP client ([`http_client`]), name resolution ([`dns`]) and the host's name and clock
//! ([`host`]).

pub mod channel;
pub mod dns;
pub mod host;
pub mod http_client;
pub mod logging;
pub mod secret;
pub mod shutdown;
pub mod tls;

/// What went wrong while reading operational settings (certificates, keys, token files); the
/// message names the flag and the file.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// A file could not be read.
    #[error("{flag} {path}: cannot read the file: {source}")]
    Read {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file was read but its content is unusable.
    #[error("{flag} {path}: {problem}")]
    Content {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Flags that do not go together, or one that needs another.
    #[error("{0}")]
    Usage(String),
}
