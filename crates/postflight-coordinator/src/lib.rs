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
