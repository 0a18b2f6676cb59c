//! postflight's check executors.
//!
//! Every check turns any error (timeout, refused connection, bad TLS, broken answer) into a
//! `fail` outcome whose message says what was expected and what was seen; nothing here aborts
//! a run. Judging answers is pure (`expect`, `latency::judge`, `database::judge`); sending
//! requests and querying databases is kept to `http` and the database engines.

pub mod cases;
pub mod database;
pub mod dns;
pub mod expect;
pub mod fill;
pub mod flow;
pub mod http;
pub mod http1;
pub mod latency;
pub mod network;
pub mod run;
pub mod tls;
pub mod tools;

pub use run::{Executor, RunOptions, run_plan};
