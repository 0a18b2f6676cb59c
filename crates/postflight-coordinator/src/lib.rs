//! postflight's coordinator: dispatches plans to regional probes over gRPC, merges their
//! results (quorum, latency sketches) into one verdict, and keeps the history in SQLite or
//! PostgreSQL.

pub mod auth;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod seal;
pub mod storage;

pub use engine::{Config, Coordinator};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
